"""Wall clock of the Table 1 sweep with --jobs 1 and --jobs 2 on the same small grid.

    python benchmarks/bench_sweep.py              # 8 small trainings per run, ~5 min in all
    python benchmarks/bench_sweep.py --rounds 1   # one run each

Each run is a fresh ``examples/table1_domains.py`` process with its own empty
models directory (nothing reused), so the time includes starting the worker
processes and loading their JIT-compiled kernels. Runs go in ABBA order
(jobs 1, 2, 2, 1, ...) to cancel a drifting host load; the speed-up is the
ratio of the medians. It also checks that both give the same per-seed
accuracies. On a shared host the ratio is bounded by the cores the other
processes leave free: the 1-minute load average is printed beside it, and the
*host ceiling* (two pure-Python busy loops side by side against one after the
other in the same pool, 2.00x on an idle two-core machine) is measured before
and after.
"""

import argparse
import csv
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import cpu_header  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE1 = os.path.join(ROOT, "examples", "table1_domains.py")
GRID = ["--grid", "paper", "--seeds", "2", "--train-size", "1500", "--test-size", "2000", "--epochs", "2"]


def _busy(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def ceiling(n=20_000_000):
    """What two processes can get from the host right now: two busy loops one after
    the other in one process, then side by side in two; returns the time ratio (ideal 2.0)."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_busy, [1000, 1000])                    # start-up outside the timing
        t0 = time.perf_counter()
        pool.apply(_busy, (2 * n,))
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool.map(_busy, [n, n], chunksize=1)
        return serial / (time.perf_counter() - t0)


def one_run(jobs, extra):
    with tempfile.TemporaryDirectory() as out:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, TABLE1, *GRID, *extra, "--jobs", str(jobs), "--out", out],
                              capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        with open(os.path.join(out, "table1.csv"), newline="") as f:
            accs = {(r["row"], r["seed"]): r["accuracy"] for r in csv.DictReader(f)}
    return seconds, load, accs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="ABBA pairs of runs (default 2)")
    p.add_argument("extra", nargs="*", help="more table1_domains.py options, after --")
    args = p.parse_args(argv)
    print(f"# {cpu_header()}", flush=True)
    ceilings = [ceiling()]
    print(f"host ceiling before: two busy loops run {ceilings[0]:.2f}x faster side by side", flush=True)
    times, loads, accs = {1: [], 2: []}, [], {}
    order = [j for _ in range(args.rounds) for j in (1, 2, 2, 1)][:4 * args.rounds]
    order = order[:2] if args.rounds == 1 else order
    for jobs in order:
        seconds, load, accs[jobs] = one_run(jobs, args.extra)
        times[jobs].append(seconds)
        loads.append(load)
        print(f"--jobs {jobs}: {seconds:.1f} s (load average before {load:.1f})", flush=True)
    ceilings.append(ceiling())
    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    same = accs[1] == accs[2]
    print(f"\n{' '.join(GRID + args.extra)}: {len(accs[1])} trainings per run")
    print(f"median --jobs 1 {t1:.1f} s, --jobs 2 {t2:.1f} s: speed-up {t1 / t2:.2f}x "
          f"(load average {min(loads):.1f}-{max(loads):.1f}; {os.cpu_count()} CPUs)")
    print(f"host ceiling (two busy loops side by side vs one after the other): "
          f"{ceilings[0]:.2f}x before, {ceilings[1]:.2f}x after; ideal 2.00x")
    print(f"per-seed accuracies identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
