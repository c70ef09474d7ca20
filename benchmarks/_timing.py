"""Interleaved median timing: the only fair comparison on a shared host.

The same measurement varies 1.5-2x between runs on a shared machine, so the
methods being compared are timed in one process, round-robin (the order
reversed every other round), and each is summarised by its median.
"""

import os
import platform
import statistics
import time

#: the CPU flags that decide which popcount / vector width the kernels get
FEATURES = ("avx2", "avx512f", "avx512vpopcntdq")


def interleaved_medians(fns, rounds=7, min_batch_seconds=2e-3, settle_seconds=0.0):
    """Median seconds per call of each callable in ``fns`` (a dict name -> f).

    Each function is called once to warm up (JIT compilation, caches), then
    timed in batches of ``n`` calls (``n`` chosen so a batch lasts at least
    ``min_batch_seconds``), ``rounds`` times, interleaved with the others.
    ``settle_seconds``: a pause before each batch, so that the worker threads
    of one OpenMP runtime stop spinning before another library's batch runs.
    """
    batch = {}
    for name, f in fns.items():
        f()
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        batch[name] = max(1, int(min_batch_seconds / max(dt, 1e-7)))
    samples = {name: [] for name in fns}
    order = list(fns)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            f, n = fns[name], batch[name]
            if settle_seconds:
                time.sleep(settle_seconds)
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(v) for name, v in samples.items()}


def host_load():
    """1-minute load average, or None where the OS does not report it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def cpu_features():
    """``(model name, {flag: bool})`` of this CPU for :data:`FEATURES`, from /proc/cpuinfo
    (``platform.processor()`` and no flags where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine(), {}
    lines = text.splitlines()
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor() or platform.machine())
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    return name, {f: f in flags for f in FEATURES}


def cpu_header():
    """One line for every benchmark's header: CPU, its flags, library versions, load."""
    import numpy as np
    name, flags = cpu_features()
    feats = " ".join(f"{f}={'yes' if v else 'no'}" for f, v in flags.items()) or "flags unknown"
    try:
        import numba
        jit = f"numba {numba.__version__}"
    except ImportError:
        jit = "no numba"
    return (f"{name}, {os.cpu_count()} cpus; {feats}; python {platform.python_version()}, "
            f"numpy {np.__version__}, {jit}; load {host_load()}")


def set_threads(n):
    """numba's and BLAS's thread counts for pysbnn (PyTorch's are set per call);
    BLAS through ``pysbnn.kernels.jit.blas_threads`` (about 30 us a call), left set."""
    import numba

    from pysbnn.kernels.jit import blas_threads
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    blas_threads(n)
