"""Seconds of one training epoch of a 784-512-512-10 MLP on 60,000 samples.

Prints pysbnn's time and, when PyTorch happens to be installed (it is never a
dependency), PyTorch's time for the same network, optimiser and batch size in
the same run, methods interleaved, with the ratio. Random data: the point is
speed. Usage::

    python benchmarks/bench_train.py [--model float|bnn|both] [--batch 128] [--repeats 3]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pysbnn  # noqa: E402
from _timing import cpu_header  # noqa: E402
from pysbnn.functional import softmax_cross_entropy  # noqa: E402


def pysbnn_mlp(kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "float":
        return pysbnn.Sequential([pysbnn.Dense(784, 512, rng=rng), pysbnn.ReLU(),
                                  pysbnn.Dense(512, 512, rng=rng), pysbnn.ReLU(),
                                  pysbnn.Dense(512, 10, rng=rng)])
    from pysbnn.mlp import binary_mlp
    return binary_mlp((784, 512, 512, 10), normalize=False, seed=seed)


def pysbnn_epoch(model, x, y, batch):
    opt = pysbnn.Adam(model, lr=1e-3, post_step=[pysbnn.clip_latent_weights])
    t0 = time.perf_counter()
    for i in range(0, len(x) - batch + 1, batch):
        logits = model.forward(x[i:i + batch], training=True)
        _, d = softmax_cross_entropy(logits, y[i:i + batch])
        model.backward(d)
        opt.step()
    return time.perf_counter() - t0


def torch_setup(kind):
    import torch
    from torch import nn

    class SignSTE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.where(x >= 0, 1.0, -1.0)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (x.abs() <= 1)

    class BinaryLinear(nn.Linear):
        def __init__(self, i, o, binarize_input):
            super().__init__(i, o, bias=False)
            self.binarize_input = binarize_input
            self.tau = nn.Parameter(torch.ones(()))
            self.phi = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            if self.binarize_input:
                x = SignSTE.apply(x)
            w = self.tau * SignSTE.apply(self.weight) + self.phi
            return x @ w.t()

    if kind == "float":
        net = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    else:
        net = nn.Sequential(BinaryLinear(784, 512, False), nn.BatchNorm1d(512), nn.Hardtanh(),
                            BinaryLinear(512, 512, True), nn.BatchNorm1d(512), nn.Hardtanh(),
                            BinaryLinear(512, 10, True), nn.BatchNorm1d(10))
    return torch, net


def torch_epoch(torch, net, x, y, batch):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    t0 = time.perf_counter()
    for i in range(0, len(x) - batch + 1, batch):
        opt.zero_grad()
        loss = lossf(net(xt[i:i + batch]), yt[i:i + batch])
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["float", "bnn", "both"], default="both")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.samples, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.samples)
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    print(f"# {cpu_header()}; batch {args.batch}, {args.samples} samples, medians of {args.repeats}")
    kinds = ["float", "bnn"] if args.model == "both" else [args.model]
    print(f"{'model':6s} {'pysbnn s':>9s} {'torch s':>9s} {'ratio':>7s}")
    for kind in kinds:
        ours, theirs = [], []
        if have_torch:
            torch, net = torch_setup(kind)
            torch.manual_seed(0)
        for _ in range(args.repeats):
            ours.append(pysbnn_epoch(pysbnn_mlp(kind), x, y, args.batch))
            if have_torch:
                theirs.append(torch_epoch(torch, net, x, y, args.batch))
        o = float(np.median(ours))
        if have_torch:
            t = float(np.median(theirs))
            print(f"{kind:6s} {o:9.2f} {t:9.2f} {o / t:7.2f}")
        else:
            print(f"{kind:6s} {o:9.2f} {'n/a':>9s} {'n/a':>7s}  (PyTorch not installed)")


if __name__ == "__main__":
    main()
