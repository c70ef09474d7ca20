"""Dense XNOR-popcount GEMM: pysbnn's kernel against bnn-lab, the nearest C/OpenMP peer.

    python benchmarks/bench_xnor_peer.py                    # 5 shapes, 1 and 2 threads (~3 min)
    python benchmarks/bench_xnor_peer.py --threads 1 --shapes 64x4096x4096 --rounds 5
    python benchmarks/bench_xnor_peer.py --bnnlab /path/to/venv

bnn-lab is never a dependency. When its shared library is found (in the
venvs given by ``--bnnlab`` / ``$BNNLAB_VENV``, default ``/work/venvs/bnnlab``,
or on this interpreter's path) it is loaded with ctypes into this process and
its ``binary_gemm_u64`` is timed, which is what its Python wrapper calls;
otherwise the peer column says ``n/a`` and pysbnn is timed alone.

Like with like: the same packed bits go to every kernel and every output is
checked against the NumPy reference before timing (bnn-lab encodes -1 as bit 1,
the complement of pysbnn's; XOR popcounts do not change when both operands
are complemented and padding bits are zero in both). Two levels:

* ``kernel``: preallocated outputs, no Python checks: ``xnor.bind_kernel``
  (exactly what ``xnor_gemm`` calls) and bnn-lab's library call;
* ``api``: ``xnor_gemm(a, weights)`` (checks, allocates) and bnn-lab's call
  plus the allocation of its float32 output.

Columns: ``pysbnn`` is the kernel this CPU gets (``choose_kind``); on hosts
where that is the carry-save kernel, ``pysbnn direct`` is the 64-row panel
loop that AVX-512 VPOPCNTDQ hosts run, timed here for comparison. Interleaved
rounds (order reversed every other round, a 5 ms pause before each batch so
one OpenMP runtime's spinning threads do not eat into the next), medians.
With 1 thread the serial kernels run; with more, each library's size rule.
"""

import argparse
import ctypes
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import FEATURES as FLAGS, cpu_header, interleaved_medians  # noqa: E402

from pysbnn.kernels import jit, xnor  # noqa: E402  (sets OMP_WAIT_POLICY before bnn-lab loads)

SHAPES = [(1, 784, 512), (64, 784, 512), (1, 4096, 4096), (64, 4096, 4096), (256, 4096, 4096)]
DEFAULT_VENVS = [os.environ.get("BNNLAB_VENV", "/work/venvs/bnnlab")]


class BnnLab:
    """bnn-lab's native library, called through ctypes (``BnnLab.find`` or None)."""

    LIBRARY = os.path.join("bnn", "kernels", "_binary_gemm_native*.so")

    @classmethod
    def find(cls, venvs=DEFAULT_VENVS):
        roots = [d for v in venvs for d in glob.glob(os.path.join(v, "lib", "python*", "site-packages"))]
        for root in roots + [p for p in sys.path if p]:
            hits = sorted(glob.glob(os.path.join(root, cls.LIBRARY)))
            if hits:
                return cls(hits[0], root)
        return None

    def __init__(self, path, site):
        self.path = path
        lib = ctypes.CDLL(path)
        self.u64p, self.f32p = ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_float)
        lib.binary_gemm_u64.argtypes = [self.u64p, self.u64p, self.f32p] + [ctypes.c_int] * 4
        lib.binary_gemm_u64.restype = None
        lib.binary_gemm_set_num_threads.argtypes = [ctypes.c_int]
        lib.binary_gemm_kernel_id.restype = ctypes.c_int
        self.lib = lib
        self.kernel = {0: "scalar", 1: "avx2", 2: "avx512", 3: "neon"}.get(lib.binary_gemm_kernel_id(), "?")
        meta = glob.glob(os.path.join(site, "bnn_lab-*.dist-info"))
        self.version = os.path.basename(meta[0])[len("bnn_lab-"):-len(".dist-info")] if meta else "?"

    def set_threads(self, n):
        self.lib.binary_gemm_set_num_threads(int(n))

    def caller(self, a, w, K, out):
        """``f()`` computing ``out`` (float32 (B, M)) from packed ``a``, ``w``."""
        pa, pw, po = (a.ctypes.data_as(self.u64p), w.ctypes.data_as(self.u64p), out.ctypes.data_as(self.f32p))
        fn, (B, Kw), M = self.lib.binary_gemm_u64, a.shape, w.shape[0]
        return lambda: fn(pa, pw, po, B, M, Kw, K)


def header(bnn):
    host = jit.host_features()
    yes = lambda b: "yes" if b else "no"       # noqa: E731
    print("# " + cpu_header())
    print("# LLVM host cpu %s, features: " % host["cpu"] + ", ".join("%s=%s" % (f, yes(host[f])) for f in FLAGS))
    print("# OMP_WAIT_POLICY=%s; pysbnn kernel on this CPU: %s"
          % (os.environ.get("OMP_WAIT_POLICY"), xnor.choose_kind()))
    print("# bnn-lab: " + ("not found, peer column n/a" if bnn is None else
                           "%s, %s, runtime kernel %s" % (bnn.version, bnn.path, bnn.kernel)))
    print("# load average at start: %.2f %.2f %.2f" % os.getloadavg())


def random_bits(rng, rows, K):
    """Packed random rows with zero padding bits."""
    x = rng.integers(0, 2 ** 64 - 1, (rows, (K + 63) // 64), dtype=np.uint64, endpoint=True)
    if K % 64:
        x[:, -1] &= np.uint64((1 << (K % 64)) - 1)
    return x


def _callers(level, a, w, K, layouts, bnn, parallel):
    """{column: f()} for one shape, plus the outputs to check."""
    B, M = a.shape[0], w.shape[0]
    outs = {name: np.empty((B, M), np.int32) for name in layouts}
    if level == "kernel":
        fns = {name: xnor.bind_kernel(a, L, outs[name], parallel) for name, L in layouts.items()}
    else:
        fns = {name: (lambda L=L: xnor.xnor_gemm(a, L, parallel=parallel)) for name, L in layouts.items()}
    if bnn is not None:
        outs["bnn-lab"] = np.empty((B, M), np.float32)
        call = bnn.caller(a, w, K, outs["bnn-lab"])
        fns["bnn-lab"] = call if level == "kernel" else (lambda: (np.empty((B, M), np.float32), call()))
    return fns, outs


def time_shape(B, K, M, threads, level, bnn, rng, rounds, batch_ms=20.0):
    """Medians (seconds) of every column at one shape, outputs checked first."""
    a, w = random_bits(rng, B, K), random_bits(rng, M, K)
    ref, _ = xnor.xnor_gemm_reference(a, w, K)
    kind = xnor.choose_kind()
    layouts = {"pysbnn": xnor.prepare_xnor(w, K)}
    if kind != "direct":
        layouts["pysbnn direct"] = xnor.prepare_xnor(w, K, kind="direct")
    parallel = False if threads == 1 else None
    fns, outs = _callers(level, a, w, K, layouts, bnn, parallel)
    for name, f in fns.items():
        z = f()
        got = outs[name] if level == "kernel" or name == "bnn-lab" else z
        if not np.array_equal(got.astype(np.int64), ref.astype(np.int64)):
            raise AssertionError("%s output differs from the reference at %dx%dx%d" % (name, B, K, M))
    return interleaved_medians(fns, rounds=rounds, min_batch_seconds=batch_ms / 1e3, settle_seconds=5e-3)


def set_threads(n, bnn):
    import numba
    numba.set_num_threads(n)
    if bnn is not None:
        bnn.set_threads(n)


def peer_cases(quick=False, seed=1):
    """Rows for ``bench_kernels.py``: bnn-lab at the dense shapes (api level,
    the current numba thread count), ``dense_binary_seconds`` = pysbnn's
    ``xnor_gemm`` timed in the same interleaved rounds. No rows without bnn-lab."""
    import numba
    bnn = BnnLab.find()
    if bnn is None:
        print("bnn-lab not found: no peer rows (benchmarks/bench_xnor_peer.py --bnnlab VENV)")
        return []
    threads = numba.get_num_threads()
    set_threads(threads, bnn)
    rng = np.random.default_rng(seed)
    rows = []
    for B, K, M in ([(64, 4096, 4096)] if quick else SHAPES):
        t = time_shape(B, K, M, threads, "api", bnn, rng, rounds=3 if quick else 7)
        rows.append(dict(kernel="bnn-lab %s dense" % bnn.version, shape="%dx%d" % (K, M), batch=B,
                         density=1.0, seconds=t["bnn-lab"], float32_blas_seconds=None,
                         dense_binary_seconds=t["pysbnn"]))
    return rows


def print_table(results, columns, rounds):
    print()
    print("Medians of %d interleaved rounds, microseconds; ratio = the other's time / pysbnn's "
          "(> 1: pysbnn faster)" % rounds)
    print()
    others = [c for c in columns if c != "pysbnn"]
    print("| level | B x K x M | threads | " + " | ".join(columns) + " | "
          + " | ".join("vs " + c for c in others) + " | T binary MAC/s |")
    print("|---" * (4 + len(columns) + len(others)) + "|")
    for (level, (B, K, M), threads), t in results:
        cells = ["%.1f" % (t[c] * 1e6) if c in t else "n/a" for c in columns]
        ratios = ["%.2fx" % (t[c] / t["pysbnn"]) if c in t else "n/a" for c in others]
        print("| %s | %d x %d x %d | %d | %s | %s | %.2f |" % (
            level, B, K, M, threads, " | ".join(cells), " | ".join(ratios), B * K * M / t["pysbnn"] / 1e12))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shapes", nargs="+", default=["%dx%dx%d" % s for s in SHAPES], help="BxKxM")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--level", choices=["kernel", "api", "both"], default="both")
    ap.add_argument("--bnnlab", nargs="+", default=DEFAULT_VENVS, metavar="VENV",
                    help="venvs to look for bnn-lab in (default: $BNNLAB_VENV or /work/venvs/bnnlab)")
    args = ap.parse_args()
    bnn = BnnLab.find(args.bnnlab)
    header(bnn)
    columns = ["pysbnn"] + (["pysbnn direct"] if xnor.choose_kind() != "direct" else []) + ["bnn-lab"]
    levels = ["kernel", "api"] if args.level == "both" else [args.level]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    rng = np.random.default_rng(20261201)
    results = []
    for threads in args.threads:
        set_threads(threads, bnn)
        for shape in shapes:
            for level in levels:
                t = time_shape(*shape, threads, level, bnn, rng, args.rounds)
                results.append(((level, shape, threads), t))
                print("%-6s %-15s thr=%d  " % (level, "x".join(map(str, shape)), threads)
                      + "  ".join("%s %.1f us" % (c, s * 1e6) for c, s in t.items()), flush=True)
    print_table(results, columns, args.rounds)
    print("# load average at end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
