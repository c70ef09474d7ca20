"""Backends and the one registry of compiled kernels.

A kernel of :mod:`pysbnn.kernels` is a plain Python function (NumPy arrays
in, NumPy arrays out). Its jitted twin is made by :class:`Twins` on first
use, with ``cache=True`` so that it compiles once per machine; numba is
imported then, never at module import. Under ``NUMBA_DISABLE_JIT=1`` numba
hands the Python functions back, so the very same kernel code runs
uncompiled (slowly, but with identical results).

Every public kernel function takes ``backend=``:

* ``"numpy"``: the NumPy reference (vectorised array code, no kernel);
* ``"numba"``: the kernel code (compiled, or plain Python under
  ``NUMBA_DISABLE_JIT=1``);
* ``"auto"``: ``"numba"`` when numba is installed and JIT is enabled, else
  ``"numpy"``.

Parallel kernels loop with ``prange``: a module holding one sets the global
``prange = range`` and :class:`Twins` rebinds it to ``numba.prange`` before
compiling (``numba.prange`` called from Python behaves as ``range``).
"""

import importlib.util
import os

# Numba's OpenMP threads spin while they wait by default: on a shared two-core
# machine a two-thread kernel then ran 6-8x slower than a serial one whenever
# another process held a core (measured). Passive waiting costs a little
# wake-up latency and never collapses; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BACKENDS = ("auto", "numba", "numpy")

_STATE = {}


def numba_available():
    """True when numba can be imported (it is not imported by this call)."""
    if "available" not in _STATE:
        _STATE["available"] = importlib.util.find_spec("numba") is not None
    return _STATE["available"]


def jit_disabled():
    """True under ``NUMBA_DISABLE_JIT=1`` (imports numba; False without numba)."""
    if not numba_available():
        return False
    import numba
    return bool(numba.config.DISABLE_JIT)


def host_features():
    """What LLVM reports about this CPU: ``{"cpu", "avx2", "avx512f", "avx512vpopcntdq"}``.

    Kernels whose best loop depends on the CPU (:mod:`pysbnn.kernels.xnor`)
    choose with it; benchmarks print it. Imports ``llvmlite`` (not numba);
    without llvmlite, or with ``NUMBA_CPU_NAME`` set (numba then compiles for
    that CPU, not this one), no feature is reported.
    """
    if "host" not in _STATE:
        host = dict(cpu="unknown", avx2=False, avx512f=False, avx512vpopcntdq=False)
        if importlib.util.find_spec("llvmlite") is not None and not os.environ.get("NUMBA_CPU_NAME"):
            import llvmlite.binding as ll
            try:
                features = ll.get_host_cpu_features()
            except RuntimeError:        # hosts where LLVM cannot list the features
                features = {}
            host.update({f: bool(features.get(f, False)) for f in ("avx2", "avx512f", "avx512vpopcntdq")},
                        cpu=ll.get_host_cpu_name())
        _STATE["host"] = host
    return dict(_STATE["host"])


def check_backend(backend):
    """``backend`` if it names a backend, else a ValueError (imports nothing)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def resolve_backend(backend="auto"):
    """Map ``"auto" | "numba" | "numpy"`` to ``"numba"`` or ``"numpy"``.

    ``"numba"`` runs the kernel code even under ``NUMBA_DISABLE_JIT=1`` (then
    uncompiled); it raises ImportError when numba is not installed.
    """
    key = ("resolved", check_backend(backend))
    if key not in _STATE:
        if backend == "numba" and not numba_available():
            raise ImportError("backend='numba' needs numba, which is not installed")
        if backend == "auto":
            _STATE[key] = "numba" if numba_available() and not jit_disabled() else "numpy"
        else:
            _STATE[key] = backend
    return _STATE[key]


def num_threads(backend="auto", work=None, min_work=0):
    """Threads a compiled kernel should use: numba's current count, or 1 for
    NumPy and for ``work`` below ``min_work`` (waking a second thread costs
    tens of microseconds, and on a busy shared machine it may not run at all
    until a time slice frees up)."""
    if resolve_backend(backend) != "numba" or (work is not None and work < min_work):
        return 1
    import numba
    return int(numba.get_num_threads())


def blas_threads(n):
    """Context manager: BLAS (numpy's OpenBLAS or MKL) on at most ``n`` threads
    inside the block, restored after it (threadpoolctl; about 30 us per use).

    Why it is needed: OpenBLAS's worker threads keep spinning for a while after
    every multithreaded call, so a numba-parallel kernel that follows finds its
    second core taken. Measured on a 2-core Zen 3: a ResNet-18 training step
    (width 16, batch 128) took 566 ms with numba and BLAS on 2 threads, 369 ms
    with BLAS on 1.
    """
    if "blas" not in _STATE:
        from threadpoolctl import ThreadpoolController
        _STATE["blas"] = ThreadpoolController()
    return _STATE["blas"].limit(limits=n, user_api="blas")


class Twins:
    """The jitted twins of one module's kernels, compiled together on first use.

    Parameters
    ----------
    kernels : dict name -> plain Python function. A name ending in ``_par``
        compiles with ``parallel=True``. Serial and parallel variants must be
        different Python functions: with ``cache=True``, two dispatchers made
        from one function can load each other's cache entry.
    helpers : functions the kernels call, registered with numba's
        ``register_jitable`` (``inline="always"`` for those in ``inline``).
    setup : callables run once before compiling (e.g. registering LLVM IR
        twins of helpers); skipped under ``NUMBA_DISABLE_JIT=1``.
    error_model : numba's ``"python"`` (the default: a float division checks its
        divisor to raise ZeroDivisionError, which keeps the loop from
        vectorising) or ``"numpy"`` (IEEE results, inf or nan, as NumPy gives).

    ``twins[name]`` returns the compiled dispatcher (compiling, or loading from
    the cache, on the first access of any name).
    """

    def __init__(self, kernels, helpers=(), inline=(), setup=(), error_model="python"):
        self.kernels, self.helpers, self.inline, self.setup = dict(kernels), helpers, inline, setup
        self.error_model = error_model
        self._compiled = {}

    def __getitem__(self, name):
        if not self._compiled:
            self._compile()
        return self._compiled[name]

    def function(self, name, backend="auto"):
        """The compiled twin when ``backend`` resolves to numba, else the plain function.

        For kernels whose plain-Python code is their own reference (the decode
        loops of :mod:`pysbnn.coding`): the same code either way.
        """
        return self[name] if resolve_backend(backend) == "numba" else self.kernels[name]

    def _compile(self):
        import numba
        from numba.extending import register_jitable

        from . import intrinsics
        if not numba.config.DISABLE_JIT:
            intrinsics.register()
            for fn in self.setup:
                fn()
        for fn in self.helpers:
            register_jitable(inline="always" if fn in self.inline else "never")(fn)
        for name, fn in self.kernels.items():
            parallel = name.endswith("_par")
            if parallel:
                fn.__globals__["prange"] = numba.prange
            # no fastmath: integer kernels gain nothing, and x >= 0 on NaN must stay False
            self._compiled[name] = numba.njit(cache=True, parallel=parallel, nogil=True,
                                              error_model=self.error_model)(fn)
