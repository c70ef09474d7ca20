"""Interleaved median timing: the only fair comparison on a shared host.

The same measurement varies 1.5-2x between runs on a shared machine, so the
methods being compared are timed in one process, round-robin (the order
reversed every other round), and each is summarised by its median.
"""

import os
import statistics
import time


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
