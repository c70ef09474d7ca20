"""What the boundary checks of issue 14 cost: ``predict`` at batch 1 with and
without them, and the divergence check's share of a training step.

"Without" runs exactly what ``predict`` runs after its checks (``_forward`` on
each batch, argmax, concatenate); "checks" times the two check lines alone,
a bound on their share that host noise disturbs less than the difference of
two medians. Methods are timed in one process, interleaved, medians
(``_timing.py``). Usage::

    python benchmarks/bench_validation.py [--rounds 15] [--threads 1]
"""

import argparse
import contextlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import pysbnn  # noqa: E402
from pysbnn import train  # noqa: E402
from pysbnn.functional import softmax_cross_entropy  # noqa: E402
from _timing import cpu_header, interleaved_medians  # noqa: E402


def unchecked_predict(forward, x, batch_size=1024):
    """``predict`` minus its two check lines (``check_input``, ``check_positive_int``)."""
    out = [forward(x[i:i + batch_size]).argmax(axis=-1) for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def predict_rows(rounds):
    model = pysbnn.binary_mlp((784, 512, 512, 10), seed=0)
    packed = pysbnn.pack(model)
    x8 = np.random.default_rng(0).integers(0, 256, (1, 28, 28)).astype(np.uint8)
    rows = []
    for label, x in [("uint8", x8), ("float32", x8.astype(np.float32))]:
        for kind, m, fwd in [("model", model, lambda b: model._forward(b, training=False)),
                             ("packed", packed, packed._forward)]:
            net = getattr(m, "net", m)
            t = interleaved_medians({"with": lambda: m.predict(x), "without": lambda: unchecked_predict(fwd, x),
                                     "checks": lambda: (net.check_input(x, min_samples=0),
                                                        pysbnn.layers.check_positive_int("batch_size", 1024))},
                                    rounds=rounds)
            rows.append((f"{kind}.predict, batch 1, {label}", t["with"], t["without"], t["checks"]))
    return rows


def step_row(rounds, batch=64):
    """One training step of the same MLP vs the divergence check run after it."""
    model = pysbnn.binary_mlp((784, 512, 512, 10), seed=0)
    opt = pysbnn.Adam(model, lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, batch)

    def step():
        loss, d = softmax_cross_entropy(model._forward(x, training=True), y)
        model.backward(d)
        opt.step()
        return loss

    loss = step()
    t = interleaved_medians({"step": step, "check": lambda: train._check_finite_step(model, loss, opt, 0, 1, 1, 1)},
                            rounds=rounds)
    return (f"fit step, batch {batch} (divergence check)", t["step"] + t["check"], t["step"], t["check"])


def limit_threads(n):
    """Numba and (with threadpoolctl) BLAS on ``n`` threads; a context manager."""
    try:
        import numba
        numba.set_num_threads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(n)
    except ImportError:
        print("threadpoolctl missing: BLAS keeps its own thread count")
        return contextlib.nullcontext()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="threads for kernels and BLAS")
    args = ap.parse_args()
    limit = limit_threads(args.threads) if args.threads else contextlib.nullcontext()
    print(f"# {cpu_header()}; threads {args.threads or 'default'}")
    print(f"{'call':40s} {'with us':>9s} {'without us':>11s} {'ratio':>6s} {'checks us':>10s} {'share':>6s}")
    with limit:
        rows = predict_rows(args.rounds) + [step_row(args.rounds)]
    for label, with_, without, checks in rows:
        print(f"{label:40s} {with_ * 1e6:9.1f} {without * 1e6:11.1f} {with_ / without:6.3f} "
              f"{checks * 1e6:10.2f} {checks / without:6.1%}")


if __name__ == "__main__":
    main()
