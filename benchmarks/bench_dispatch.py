"""Where the packed MLP's kernel choices cross over, measured on this CPU.

    python benchmarks/bench_dispatch.py            # about two minutes
    python benchmarks/bench_dispatch.py --quick    # a smoke run
    python benchmarks/bench_dispatch.py --json out.json

``pysbnn.packed`` picks a kernel per batch from three thresholds; this script
measures each crossover and prints it beside the value the library uses:

* ``dispatch.SLICED_MIN_BATCH`` / ``SLICED_MAX_DENSITY`` -- a hidden 512x512
  layer on +-1 bits, through ``PackedBinaryDense.forward``: the bit-sliced
  kernel (batch in the word, work ~ ones, threshold fused) against one
  XNOR-popcount pass (work ~ all weights), each fed the layout it reads, per
  batch and fraction of ones;
* ``mlp.SMALL_BATCH`` -- the whole MLP 784-512-512-10: the fused per-sample
  kernel against the layer-by-layer path, per batch;
* ``gather.COLUMN_ADDS`` -- first layer, one sample: the cost of one 32-output
  vector add of a weight column (non-zero pixels x outputs) in scalar gathered
  adds (pixels under the ones).

The library's values were measured with this script on an AVX2 Zen 3
(docs/benchmarks.md, "Dispatch"). On another CPU, run it: when its
recommendations differ, set the module constants (e.g.
``pysbnn.packed.dispatch.SLICED_MAX_DENSITY = 0.3``; ``COLUMN_ADDS`` is
compiled into the fused kernel, so it needs an edit of ``kernels/gather.py``).
Interleaved medians (``_timing``); models random with BatchNorm statistics from
real MNIST images, as in ``bench_models.py``.
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _timing import cpu_header, interleaved_medians  # noqa: E402
from bench_models import build  # noqa: E402

import pysbnn  # noqa: E402
from pysbnn.kernels import gather  # noqa: E402
from pysbnn.packed import dispatch, mlp  # noqa: E402

NEVER, ALWAYS = 10 ** 9, 0


def _force_sliced(on):
    """Make ``dispatch.uses_sliced`` always (on) or never choose the bit-sliced kernel."""
    dispatch.SLICED_MIN_BATCH = 1 if on else NEVER
    dispatch.SLICED_MAX_DENSITY = 1.0 if on else -1.0


def hidden_layer(x, batches, densities, rounds):
    """Rows (batch, ones, sliced_s, xnor_s): the hidden layer's forward, per call."""
    saved = dispatch.SLICED_MIN_BATCH, dispatch.SLICED_MAX_DENSITY
    rows = []
    try:
        for density in densities:
            packed = pysbnn.pack(build("mlp", density, x[:500]))
            first, hidden = packed.net.layers[:2]
            for batch in batches:
                h = first.forward(x[:batch])
                inputs = {"sliced": h.as_layout("sliced"), "xnor": h.as_layout("rows")}

                def run(kind):
                    def f():
                        _force_sliced(kind == "sliced")
                        hidden.forward(inputs[kind])
                    return f
                med = interleaved_medians({k: run(k) for k in inputs}, rounds=rounds)
                rows.append({"batch": batch, "ones": density, "sliced_s": med["sliced"], "xnor_s": med["xnor"]})
                print(f"hidden 512x512  batch {batch:5d} ones {density:5.2f}  sliced {1e6 * med['sliced']:9.1f} us"
                      f"  xnor {1e6 * med['xnor']:9.1f} us  -> {'sliced' if med['sliced'] < med['xnor'] else 'xnor'}",
                      flush=True)
    finally:
        dispatch.SLICED_MIN_BATCH, dispatch.SLICED_MAX_DENSITY = saved
    return rows


def small_batches(x, batches, densities, rounds):
    """Rows (batch, ones, fused_s, layered_s): the whole MLP's forward, per call."""
    saved = mlp.SMALL_BATCH
    rows = []
    try:
        for density in densities:
            packed = pysbnn.pack(build("mlp", density, x[:500]))
            for batch in batches:
                xb = x[:batch]

                def run(limit):
                    def f():
                        mlp.SMALL_BATCH = limit
                        packed.forward(xb)
                    return f
                med = interleaved_medians({"fused": run(NEVER), "layered": run(ALWAYS)}, rounds=rounds)
                rows.append({"batch": batch, "ones": density, "fused_s": med["fused"], "layered_s": med["layered"]})
                print(f"MLP            batch {batch:5d} ones {density:5.2f}  fused {1e6 * med['fused']:9.1f} us"
                      f"  layered {1e6 * med['layered']:9.1f} us", flush=True)
    finally:
        mlp.SMALL_BATCH = saved
    return rows


def column_adds(x, densities, rounds):
    """Rows (ones, per_gathered_add_s, per_column_add_s) of one sample's first layer."""
    rows = []
    xb = np.ascontiguousarray(x[:1].reshape(1, -1))
    nonzero = int(np.count_nonzero(xb))
    for density in densities:
        w01 = np.random.default_rng(0).random((512, 784)) < density
        plan = gather.prepare_gather(w01)
        M, Q = 512, np.empty(1, np.int64)
        z = np.empty((1, M), np.int32)
        fns = {"samples": lambda: gather._TWINS["samples"](xb, plan.indptr, plan.indices, z, Q),
               "columns": lambda: gather._TWINS["columns"](xb, plan.w01t, z, Q)}
        med = interleaved_medians(fns, rounds=rounds)
        per_gathered = med["samples"] / max(int(w01.sum()), 1)
        per_column = med["columns"] / (nonzero * M / gather.SB)
        rows.append({"ones": density, "per_gathered_add_s": per_gathered, "per_column_add_s": per_column})
        print(f"first layer    1 sample  ones {density:5.2f}  {1e9 * per_gathered:6.2f} ns per gathered add,"
              f" {1e9 * per_column:6.2f} ns per {gather.SB}-output column add"
              f" = {per_column / per_gathered:5.1f} gathered adds", flush=True)
    return rows


def _least_regret(rows, candidates, choose):
    """The candidate whose choices lose least over all measured rows: the sum over
    rows of (time of the chosen kernel) / (time of the faster one)."""
    def regret(c):
        return sum(r[choose(c, r)] / min(r[k] for k in r if k.endswith("_s")) for r in rows)
    return min(candidates, key=regret)


def recommend(hidden, small, columns):
    """The thresholds these measurements imply: for each rule the setting whose
    choices, over the grid measured, lose least time against always picking the
    faster kernel (ties go to the smaller setting)."""
    batches = sorted({r["batch"] for r in hidden})
    densities = sorted({r["ones"] for r in hidden})
    min_batch, max_density = _least_regret(
        hidden, [(b, d) for b in batches for d in densities],
        lambda c, r: "sliced_s" if r["batch"] >= c[0] and r["ones"] <= c[1] else "xnor_s")
    small_batches = sorted({r["batch"] for r in small}) + [max(r["batch"] for r in small) + 1]
    small_batch = _least_regret(small, small_batches,
                                lambda c, r: "fused_s" if r["batch"] < c else "layered_s")
    ratio = float(np.median([r["per_column_add_s"] / r["per_gathered_add_s"] for r in columns]))
    return {"SLICED_MIN_BATCH": (min_batch, dispatch.SLICED_MIN_BATCH),
            "SLICED_MAX_DENSITY": (max_density, dispatch.SLICED_MAX_DENSITY),
            "SMALL_BATCH": (small_batch, mlp.SMALL_BATCH),
            "COLUMN_ADDS": (round(ratio, 1), gather.COLUMN_ADDS)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few batches and densities, 3 rounds")
    ap.add_argument("--json", default=None, help="write the rows and recommendations here")
    ap.add_argument("--threads", type=int, default=None, help="numba threads (default: all cores)")
    args = ap.parse_args(argv)
    if args.threads:
        import numba
        numba.set_num_threads(args.threads)
    try:
        x_train, _, x_test, _ = pysbnn.load_mnist(verbose=False)
        x = np.concatenate([x_test, x_train])
    except FileNotFoundError:
        x = np.random.default_rng(0).integers(0, 256, (5000, 28, 28)).astype(np.uint8)
    print(f"# {cpu_header()}; numba threads {args.threads or 'all'}")
    rounds = 3 if args.quick else 7
    hidden = hidden_layer(x, [32, 64, 256, 1000] if args.quick else [16, 32, 64, 128, 256, 1000],
                          [0.05, 0.5] if args.quick else [0.01, 0.05, 0.1, 0.2, 0.3, 0.5], rounds)
    small = small_batches(x, [1, 8, 32] if args.quick else [1, 2, 4, 8, 16, 32, 64],
                          [0.05] if args.quick else [0.05, 0.5], rounds)
    columns = column_adds(x, [0.05] if args.quick else [0.01, 0.05, 0.2, 0.5], rounds)
    rec = recommend(hidden, small, columns)
    print("\nthreshold            measured here   library")
    for name, (measured, current) in rec.items():
        print(f"{name:20s} {str(measured):>14s} {current:>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": cpu_header(), "hidden": hidden, "small": small, "columns": columns,
                       "recommended": {k: v[0] for k, v in rec.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
