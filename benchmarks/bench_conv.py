"""Benchmark of the 3x3 conv kernels: float32 BLAS (im2col), dense binary
(Kernel A) and SBNN (Kernel B) at several weight densities.

    python benchmarks/bench_conv.py              # batch 1 and 64, one thread
    python benchmarks/bench_conv.py --quick      # batch 1, fewer rounds
    python benchmarks/bench_conv.py --threads 2  # parallel kernels, 2 BLAS threads

Layer: 3x3 conv 64 -> 64 channels on 32x32 inputs, stride 1, padding 1. Per
batch, in one process, methods interleaved and medians quoted
(``_timing.interleaved_medians``):

* ``float32 BLAS im2col`` -- im2col with sliding windows + one float32 GEMM;
* ``dense binary (A)``    -- ``kernels.conv_bnn.bnn_conv3x3_packed`` (XNOR/popcount);
* ``SBNN (B) ...``        -- ``kernels.conv_sbnn.sbnn_conv3x3_packed`` with uniform
  random {0,1} weights at densities 0.5, 0.1, 0.05, 0.01, 0 (0: the fixed
  cost floor) and with the K0/K1 mix of Table 2's SBNN 95% and 99% rows;
* ``... + contiguous NHWC copy`` -- Kernel B's NHWC view copied contiguous;
* ``pack_*``              -- packing float activations for each kernel.

Kernels run on packed activations (as between binary layers), weights prepared
once. By default everything is single-threaded (serial kernels; BLAS limited by
threadpoolctl when installed): on a shared, oversubscribed host any 2-thread
kernel, BLAS or prange, can stall for whole scheduler slices at its barriers
(2-thread timings were 10-40x worse than 1-thread ones here at load 10).

``conv_cases(quick)`` returns rows with the keys of ``bench_kernels.ROW_KEYS``
(plus the kernel statistics ``k0, k1, bops_pr_k0k1, sparse_ops_ratio``), so
``bench_kernels.CASES.append(bench_conv.conv_cases)`` merges the two.
"""
import argparse
import contextlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import cpu_header, host_load, interleaved_medians  # noqa: E402

from pysbnn import analysis  # noqa: E402
from pysbnn.kernels import conv_bnn, conv_layout, conv_sbnn  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:                    # pragma: no cover
    threadpool_limits = None

C_IN = C_OUT = 64
H = W = 32
SHAPE = "conv3 64-64 32*32 s1 p1"      # no "x": bench_kernels parses "KxM" dense shapes
TABLE2_ROWS = [("Table2 SBNN 95% mix", 0.771, 0.118),     # (label, K0, K1)
               ("Table2 SBNN 99% mix", 0.946, 0.033)]
NHWC_COPY = "SBNN (B) uniform 0.05 + contiguous NHWC copy"


def uniform_weights(density, rng):
    """Bool (C_OUT, C_IN, 3, 3), each weight a one with probability density."""
    return rng.random((C_OUT, C_IN, 3, 3)) < density


def k0k1_weights(k0, k1, rng):
    """Bool weights whose kernels are K0 / K1 / Hamming weight >= 2 in the
    given fractions; HW h >= 2 with P(h) ~ 2^-(h-2); ones placed uniformly."""
    n = C_OUT * C_IN
    cls = rng.choice(3, size=n, p=[k0, k1, 1 - k0 - k1])
    p_h = 0.5 ** np.arange(8)
    hw = np.where(cls == 0, 0, np.where(cls == 1, 1, 2 + rng.choice(8, size=n, p=p_h / p_h.sum())))
    w = np.zeros((n, 9), bool)
    for k in range(n):
        w[k, rng.choice(9, size=hw[k], replace=False)] = True
    return w.reshape(C_OUT, C_IN, 3, 3)


def im2col_conv(x, w2, padding=1):
    """float32 3x3 conv, stride 1: im2col with sliding windows + one BLAS GEMM."""
    n, h, wd, c = x.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))  # n,h,w,c,3,3
    cols = cols.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * wd, 9 * c)
    return (cols @ w2).reshape(n, h, wd, -1)


def _ratio(a, b):
    return a / b if b else float("inf")


def conv_cases(quick=False, batches=None, threads=1, seed=0):
    """Measure all cases; list of row dicts (``kernel, shape, batch, density,
    seconds, float32_blas_seconds, dense_binary_seconds``; SBNN rows also
    ``k0, k1, bops_pr_k0k1, sparse_ops_ratio``)."""
    rng = np.random.default_rng(seed)
    batches = batches or ((1,) if quick else (1, 64))
    weight_sets = [(f"uniform {d:g}", uniform_weights(d, rng)) for d in (0.5, 0.1, 0.05, 0.01, 0.0)]
    weight_sets += [(label, k0k1_weights(k0, k1, rng)) for label, k0, k1 in TABLE2_ROWS]
    w_latent = rng.standard_normal((C_OUT, C_IN, 3, 3)).astype(np.float32)
    bplan = conv_bnn.prepare_bnn_conv3x3(w_latent)
    splans = [("SBNN (B) " + label, w01, conv_sbnn.prepare_sbnn_conv3x3(w01)) for label, w01 in weight_sets]
    w2 = np.where(w_latent >= 0, 1, -1).astype(np.float32).transpose(2, 3, 1, 0).reshape(9 * C_IN, C_OUT)
    rows = []
    for batch in batches:
        par = threads > 1 and batch > 1
        x = np.where(rng.random((batch, H, W, C_IN)) < 0.5, -1, 1).astype(np.float32)
        xp, planes = conv_layout.pack_pixels(x, 1), conv_layout.pack_planes(x)
        funcs = {"float32 BLAS im2col": lambda: im2col_conv(x, w2),
                 "dense binary (A)": lambda: conv_bnn.bnn_conv3x3_packed(xp, bplan, H, W, 1, 1, par)}
        for name, _, sp in splans:
            funcs[name] = lambda sp=sp: conv_sbnn.sbnn_conv3x3_packed(planes, sp, H, W, 1, 1, par)
        sp5 = splans[2][2]
        funcs[NHWC_COPY] = lambda: np.ascontiguousarray(
            conv_sbnn.sbnn_conv3x3_packed(planes, sp5, H, W, 1, 1, par)[0])
        funcs["pack_pixels for A (Numba)"] = lambda: conv_layout.pack_pixels(x, 1)
        funcs["pack_planes for B (Numba)"] = lambda: conv_layout.pack_planes(x)
        limit = threadpool_limits(threads) if threadpool_limits else contextlib.nullcontext()
        with limit:
            t = interleaved_medians(funcs, rounds=5 if quick else 9)
        base = {"shape": SHAPE, "batch": batch, "float32_blas_seconds": t["float32 BLAS im2col"],
                "dense_binary_seconds": t["dense binary (A)"]}
        for name in ("float32 BLAS im2col", "dense binary (A)"):
            rows.append(dict(base, kernel=name, density=None, seconds=t[name]))
        positions = H * W
        for name, w01, _ in splans:
            k0, k1 = analysis.k0_k1(w01)[:2]
            rows.append(dict(base, kernel=name, density=float(w01.mean()), seconds=t[name],
                             k0=k0, k1=k1, bops_pr_k0k1=analysis.bops_pr_k0k1(w01, positions),
                             sparse_ops_ratio=_ratio(analysis.bops_bnn(C_OUT, C_IN, 3, positions),
                                                     analysis.bops_sparse(w01, positions))))
        rows.append(dict(base, kernel=NHWC_COPY, density=float(splans[2][1].mean()), seconds=t[NHWC_COPY]))
        for name in ("pack_pixels for A (Numba)", "pack_planes for B (Numba)"):
            rows.append(dict(base, kernel=name, density=None, seconds=t[name]))
    return rows


def print_table(rows):
    print(f"{'kernel':46s} {'batch':>5s} {'ones':>6s} {'us':>9s} {'vs f32':>7s} {'vs A':>6s}"
          f" | {'K0':>6s} {'K1':>5s} {'PR K0/K1':>8s} {'=> x':>6s} {'2N/ones':>7s}")
    for r in rows:
        ones = "" if r["density"] is None else f"{r['density']:.3f}"
        line = (f"{r['kernel']:46s} {r['batch']:5d} {ones:>6s} {r['seconds'] * 1e6:9.1f}"
                f" {r['float32_blas_seconds'] / r['seconds']:6.1f}x"
                f" {r['dense_binary_seconds'] / r['seconds']:5.2f}x")
        if "k0" in r:
            pr = r["bops_pr_k0k1"]
            line += (f" | {r['k0']:6.1%} {r['k1']:5.1%} {pr:8.1%} {_ratio(1, 1 - pr):5.1f}x"
                     f" {r['sparse_ops_ratio']:6.1f}x")
        print(line)


def check_targets(rows):
    for name in ("SBNN (B) uniform 0.05", "SBNN (B) Table2 SBNN 95% mix"):
        for r in rows:
            if r["kernel"] == name and r["batch"] == 1:
                ratio = r["dense_binary_seconds"] / r["seconds"]
                print(f"target: {name} >= 3x faster than dense binary at batch 1: {ratio:.2f}x"
                      f" -> {'met' if ratio >= 3 else 'MISSED'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1, choices=(1, 2))
    args = ap.parse_args()
    print(f"# {cpu_header()}")
    print(f"3x3 conv {C_IN}->{C_OUT}, {H}x{W}, stride 1, padding 1; interleaved medians;"
          f" {args.threads} thread(s); load average {host_load()}")
    print("vs f32 / vs A: speed-up over float32 BLAS / over the dense binary conv. PR K0/K1: the"
          " paper's BOPs PR (ops of K0+K1 kernels removed); => x: the speed-up it implies;"
          " 2N/ones: BNN ops / executed SBNN ops")
    rows = conv_cases(args.quick, threads=args.threads)
    print_table(rows)
    check_targets(rows)


if __name__ == "__main__":
    main()
