"""Benchmark of the bit-packed dense kernels against float32 BLAS.

    python benchmarks/bench_kernels.py                 # full table (about a minute)
    python benchmarks/bench_kernels.py --quick         # few-second smoke run
    python benchmarks/bench_kernels.py --json out.json
    python benchmarks/bench_kernels.py --threads 1     # kernels and BLAS on one core

For batch 1, 64 and 256 and layers 784x512 and 4096x4096 it times, in one
process with the methods of each (layer, batch) interleaved and medians
quoted (``_timing.interleaved_medians``):

* ``float32 BLAS``      -- ``x @ w.T`` in NumPy float32 (the baseline);
* ``xnor dense``        -- ``kernels.xnor.xnor_gemm`` on packed bits;
* ``sbnn sliced``       -- ``kernels.sliced.sbnn_gemm_sliced`` (batch in the word)
  at weight densities 0.5, 0.1, 0.05, 0.01;
* ``sbnn wordskip``     -- ``kernels.wordskip.sbnn_gemm`` (skips all-zero words);
* ``... +pack`` rows    -- the same kernels starting from float activations
  (sign-and-pack included), and the packing alone;
* ``bnn-lab ... dense`` -- the nearest C/OpenMP peer's dense kernel, only when
  bnn-lab happens to be installed (``bench_xnor_peer.py``; never a dependency),
  its "vs xnor" measured against ``xnor_gemm`` in the same interleaved rounds.

Kernels run on activations that are already packed, as between two binary
layers; weights are prepared once (pack time). "GMAC/s" counts the B*K*M
binary multiply-accumulates of the dense layer, for every method.

Cases are functions ``f(quick) -> list of row dicts`` collected in ``CASES``;
every row has the keys of ``ROW_KEYS`` (null where not measured), so another
kernel family adds its rows by appending one function.
"""

import argparse
import contextlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import cpu_header, host_load, interleaved_medians  # noqa: E402

from pysbnn.kernels import jit, sliced, words, wordskip, xnor  # noqa: E402

ROW_KEYS = ("kernel", "shape", "batch", "density", "seconds",
            "float32_blas_seconds", "dense_binary_seconds")
DENSITIES = (0.5, 0.1, 0.05, 0.01)


def _dense_group(K, M, B, densities, rng, rounds):
    """Time every method on one (layer, batch); return the rows."""
    x = rng.standard_normal((B, K)).astype(np.float32)
    w = rng.standard_normal((M, K)).astype(np.float32)
    a, xs = words.pack_signs(x), words.pack_batch_sliced(x)
    w_xnor = xnor.prepare_xnor(words.pack_signs(w), K)
    sparse = {}
    for d in densities:
        w01_bits = words.pack_bits(rng.random((M, K)) < d)
        sparse[d] = (sliced.prepare_sliced(w01_bits, K), wordskip.prepare_wordskip(w01_bits, K))

    fns = {"float32 BLAS": lambda: x @ w.T,
           "xnor dense": lambda: xnor.xnor_gemm(a, w_xnor),
           "xnor dense +pack": lambda: xnor.xnor_gemm(words.pack_signs(x), w_xnor),
           "pack_signs": lambda: words.pack_signs(x),
           "pack_batch_sliced": lambda: words.pack_batch_sliced(x)}
    for d, (w_sl, w_sk) in sparse.items():
        fns["sbnn sliced@%g" % d] = lambda w_sl=w_sl: sliced.sbnn_gemm_sliced(xs, w_sl, B)
        fns["sbnn wordskip@%g" % d] = lambda w_sk=w_sk: wordskip.sbnn_gemm(a, w_sk)
    if 0.05 in sparse:
        w_sl = sparse[0.05][0]
        fns["sbnn sliced@0.05 +pack"] = lambda: sliced.sbnn_gemm_sliced(words.pack_batch_sliced(x), w_sl, B)
    t = interleaved_medians(fns, rounds=rounds)

    shape = "%dx%d" % (K, M)
    rows = []
    for name, sec in t.items():
        kernel, _, dens = name.partition("@")
        density = None
        if dens:
            dens, _, suffix = dens.partition(" ")
            density = float(dens)
            kernel = kernel + (" " + suffix if suffix else "")
        elif kernel.startswith(("float32", "xnor")):
            density = 1.0
        rows.append(dict(kernel=kernel, shape=shape, batch=B, density=density, seconds=sec,
                         float32_blas_seconds=t["float32 BLAS"],
                         dense_binary_seconds=t["xnor dense"]))
    return rows


def dense_cases(quick=False, seed=0):
    """Rows for the dense layers (784x512 and 4096x4096) at batch 1, 64, 256."""
    rng = np.random.default_rng(seed)
    if quick:
        plan = [(784, 512, 1), (784, 512, 64), (4096, 4096, 64)]
        densities, rounds = (0.05,), 3
    else:
        plan = [(K, M, B) for K, M in ((784, 512), (4096, 4096)) for B in (1, 64, 256)]
        densities, rounds = DENSITIES, 7
    rows = []
    for K, M, B in plan:
        rows += _dense_group(K, M, B, densities, rng, rounds)
    return rows


import bench_conv  # noqa: E402  (3x3 conv rows: dense binary conv vs SBNN conv)
import bench_xnor_peer  # noqa: E402  (bnn-lab's dense kernel, when it is installed)

CASES = [dense_cases, bench_conv.conv_cases, bench_xnor_peer.peer_cases]


def _macs(row):
    K, M = (int(v) for v in row["shape"].split("x"))
    return row["batch"] * K * M


def print_table(rows):
    head = "%-24s %-10s %5s %7s %11s %9s %8s %9s" % (
        "kernel", "shape", "batch", "density", "us", "GMAC/s", "vs f32", "vs xnor")
    print(head)
    print("-" * len(head))
    for r in rows:
        dens = "" if r["density"] is None else "%g" % r["density"]
        vs_f32 = r["float32_blas_seconds"] / r["seconds"] if r.get("float32_blas_seconds") else None
        vs_bin = r["dense_binary_seconds"] / r["seconds"] if r.get("dense_binary_seconds") else None
        macs = _macs(r) / r["seconds"] / 1e9 if "x" in r["shape"] and "pack" not in r["kernel"] else None
        print("%-24s %-10s %5d %7s %11.1f %9s %8s %9s" % (
            r["kernel"], r["shape"], r["batch"], dens, r["seconds"] * 1e6,
            "" if macs is None else "%.0f" % macs,
            "" if vs_f32 is None else "%.1fx" % vs_f32,
            "" if vs_bin is None else "%.2fx" % vs_bin))


def _find(rows, kernel, shape, batch, density=None):
    for r in rows:
        if (r["kernel"] == kernel and r["shape"] == shape and r["batch"] == batch
                and (density is None or r["density"] == density)):
            return r
    return None


def check_targets(rows):
    """Print each target with the measured number and met / MISSED."""
    def report(text, value, ok):
        print("target: %-62s %s -> %s" % (text, value, "met" if ok else "MISSED"))

    r = _find(rows, "xnor dense", "4096x4096", 64)
    if r is not None:
        ratio = r["float32_blas_seconds"] / r["seconds"]
        report("xnor dense >= 15x faster than float32 BLAS at 64x4096x4096", "%.1fx" % ratio, ratio >= 15)
        rate = _macs(r) / r["seconds"]
        report("xnor dense >= 1.2 T binary MAC/s at 64x4096x4096", "%.2f T" % (rate / 1e12), rate >= 1.2e12)
    for r in rows:
        if r["kernel"].startswith("bnn-lab") and r["shape"] == "4096x4096" and r["batch"] == 64:
            ratio = r["seconds"] / r["dense_binary_seconds"]
            report("xnor dense at least as fast as %s at 64x4096x4096" % r["kernel"][:-6],
                   "%.2fx" % ratio, ratio >= 1)
    for shape in ("4096x4096", "784x512"):
        r = _find(rows, "sbnn sliced", shape, 256, 0.05)
        if r is not None:
            ratio = r["dense_binary_seconds"] / r["seconds"]
            report("sbnn sliced at 5%% >= 3x faster than xnor dense, 256x%s" % shape,
                   "%.2fx" % ratio, ratio >= 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few-second smoke run")
    ap.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for the kernels and for BLAS (default: all cores)")
    args = ap.parse_args()
    limit = contextlib.nullcontext()
    try:
        import numba
        if args.threads:
            numba.set_num_threads(args.threads)
        threads = numba.get_num_threads()
    except ImportError:
        threads = None
    if args.threads:
        try:
            from threadpoolctl import threadpool_limits
            limit = threadpool_limits(args.threads)
        except ImportError:
            print("threadpoolctl missing: BLAS keeps its own thread count")
    print("# %s" % cpu_header())
    print("backend: %s, numba threads: %s, BLAS threads: %s"
          % (jit.resolve_backend("auto"), threads, args.threads or "default"))
    rows = []
    with limit:
        for case in CASES:
            rows += case(args.quick)
    print_table(rows)
    print("host load after: %s (a busy host slows the threaded kernels most)" % host_load())
    check_targets(rows)
    bench_conv.check_targets(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: r.get(k) for k in ROW_KEYS} for r in rows], f, indent=1)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
