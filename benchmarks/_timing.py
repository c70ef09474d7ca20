"""Interleaved median timing: the only fair comparison on a shared host.

The same measurement varies 1.5-2x between runs on a shared machine, so the
methods being compared are timed in one process, round-robin (the order
reversed every other round), and each is summarised by its median.
"""

import os
import statistics
import time


def interleaved_medians(fns, rounds=7, min_batch_seconds=2e-3):
    """Median seconds per call of each callable in ``fns`` (a dict name -> f).

    Each function is called once to warm up (JIT compilation, caches), then
    timed in batches of ``n`` calls (``n`` chosen so a batch lasts at least
    ``min_batch_seconds``), ``rounds`` times, interleaved with the others.
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


def cpu_description():
    """CPU model, cores, the flags that decide the kernels (avx2, avx512f,
    avx512vpopcntdq) and the library versions, for a benchmark's header."""
    import platform
    import numpy as np
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        info = ""
    lines = info.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    feats = " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512vpopcntdq"))
    libs = [f"numpy {np.__version__}"]
    for name in ("numba", "torch"):
        try:
            libs.append(f"{'PyTorch' if name == 'torch' else name} {__import__(name).__version__}")
        except ImportError:
            libs.append(f"no {name}")
    load = host_load()
    return (f"{model}, {os.cpu_count()} cpus; {feats}; {', '.join(libs)}; "
            f"load {'?' if load is None else f'{load:.1f}'}")
