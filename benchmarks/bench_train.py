"""Training speed, pysbnn against its PyTorch twin in one process: MLP epochs and
binarized ResNet-18 steps.

    python benchmarks/bench_train.py                   # everything, about 15 minutes
    python benchmarks/bench_train.py --only resnet --rounds 5
    python benchmarks/bench_train.py --quick           # a smoke run

* MLP 784-512-512-10, one epoch of 60,000 random samples at batch 128, Adam:
  ``float`` (Dense + ReLU) and ``bnn`` (``pysbnn.binary_mlp``: sign STE on
  weights and activations, learned tau/phi, BatchNorm); PyTorch twins
  ``_torch_twins.mlp_train`` / ``binary_mlp_train``.
* Binarized ResNet-18 (IR-Net blocks, ``quantizer="clipped"`` as the twin's
  sign STE), one training step on random 28x28 images, width 8 at batch 32
  and width 16 at batch 128; twin ``_torch_twins.binary_resnet18_train``.

A pysbnn step is what ``pysbnn.fit`` does without the sparsity penalty
(under fit's thread policy, ``pysbnn.train.training_threads``): forward, softmax cross-entropy, ``backward_params`` (no gradient for the
input images, as PyTorch computes none for a tensor that does not require
it), Adam with latent weights clipped to 1.5. Each comparison runs with 1
and with 2 threads for both libraries (numba and BLAS threads for pysbnn,
``torch.set_num_threads``), the two callables interleaved round-robin in one
process and summarised by medians (``_timing.interleaved_medians``). PyTorch
is imported before pysbnn so that its OpenMP runtime keeps its own defaults.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _torch_twins as tt  # noqa: E402

if tt.available():
    import torch  # noqa: E402,F401  (before pysbnn: see the docstring)

import numpy as np  # noqa: E402
from _timing import cpu_header, host_load, interleaved_medians, set_threads  # noqa: E402

import pysbnn  # noqa: E402
from pysbnn.functional import softmax_cross_entropy  # noqa: E402
from pysbnn.resnet import resnet18  # noqa: E402
from pysbnn.train import training_threads  # noqa: E402

RESNET_CASES = ((8, 32), (16, 128))




# ---------------------------------------------------------------------- MLP
def pysbnn_mlp(kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "float":
        return pysbnn.Sequential([pysbnn.Dense(784, 512, rng=rng), pysbnn.ReLU(),
                                  pysbnn.Dense(512, 512, rng=rng), pysbnn.ReLU(),
                                  pysbnn.Dense(512, 10, rng=rng)])
    return pysbnn.binary_mlp((784, 512, 512, 10), normalize=False, seed=seed)


def pysbnn_epoch_fn(kind, x, y, batch, threads):
    def epoch():
        set_threads(threads)
        model = pysbnn_mlp(kind)
        opt = pysbnn.Adam(model, lr=1e-3, post_step=[pysbnn.clip_latent_weights])
        for i in range(0, len(x) - batch + 1, batch):
            logits = model.forward(x[i:i + batch], training=True)
            _, d = softmax_cross_entropy(logits, y[i:i + batch])
            model.backward_params(d)
            opt.step()
    return epoch


def torch_epoch_fn(kind, x, y, batch, threads):
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()

    def epoch():
        tt.set_threads(threads)
        torch.manual_seed(0)
        net = tt.mlp_train() if kind == "float" else tt.binary_mlp_train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        lossf = torch.nn.CrossEntropyLoss()
        latent = tt.latent_weights(net)
        for i in range(0, len(x) - batch + 1, batch):
            opt.zero_grad(set_to_none=True)
            lossf(net(xt[i:i + batch]), yt[i:i + batch]).backward()
            opt.step()
            with torch.no_grad():
                for w in latent:
                    w.clamp_(-1.5, 1.5)
    return epoch


def measure_mlp(args):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.samples, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.samples)
    rows = []
    for kind in ("float", "bnn"):
        for threads in (1, 2):
            fns = {"pysbnn": pysbnn_epoch_fn(kind, x, y, args.batch, threads)}
            if tt.available():
                fns["torch"] = torch_epoch_fn(kind, x, y, args.batch, threads)
            rows.append(row(f"MLP {kind} epoch ({args.samples // 1000}k, batch {args.batch})", threads,
                            fns, args.repeats, "s"))
    return rows


# ------------------------------------------------------------------ ResNet
def pysbnn_step_fn(width, x, y, threads):
    model = resnet18(width=width, quantizer="clipped", seed=0)
    opt = pysbnn.Adam(model, lr=1e-3, post_step=[pysbnn.clip_latent_weights])

    def step():
        set_threads(threads)
        with training_threads(model):           # what pysbnn.fit trains under
            logits = model.forward(x, training=True)
            _, d = softmax_cross_entropy(logits, y)
            model.backward_params(d)
            opt.step()
    return step


def measure_resnet(args):
    rows = []
    for width, batch in RESNET_CASES:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, batch)
        for threads in (1, 2):
            fns = {"pysbnn": pysbnn_step_fn(width, x, y, threads)}
            if tt.available():
                fns["torch"] = tt.train_step_fn(tt.binary_resnet18_train(width), x, y, threads=threads)
            rows.append(row(f"ResNet-18 w{width} step (batch {batch})", threads, fns, args.rounds, "ms"))
    return rows


# ------------------------------------------------------------------ output
def row(case, threads, fns, rounds, unit):
    load0 = host_load()
    # settle: a pause before each batch, so one library's spinning OpenMP workers do not
    # take the other's cores
    med = interleaved_medians(fns, rounds=rounds, min_batch_seconds=0.0, settle_seconds=0.1)
    r = {"case": case, "threads": threads, "unit": unit, "pysbnn_s": med["pysbnn"],
         "torch_s": med.get("torch"), "load": (load0, host_load())}
    print(format_row(r), flush=True)
    return r


def format_row(r):
    scale = 1e3 if r["unit"] == "ms" else 1.0
    ours = f"{scale * r['pysbnn_s']:9.2f} {r['unit']}"
    if r["torch_s"] is None:
        theirs, ratio = f"{'n/a':>12s}", f"{'n/a':>6s}"
    else:
        theirs, ratio = f"{scale * r['torch_s']:9.2f} {r['unit']}", f"{r['pysbnn_s'] / r['torch_s']:6.2f}"
    load = "/".join("?" if v is None else f"{v:.1f}" for v in r["load"])
    return f"{r['case']:38s} {r['threads']:>2d} {ours:>12s} {theirs:>12s} {ratio} {load:>9s}"


def header():
    """``_timing.cpu_header()`` and the PyTorch version (or its absence)."""
    torch = f"PyTorch {__import__('torch').__version__}" if tt.available() else "no PyTorch"
    return f"{cpu_header()}; {torch}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("mlp", "resnet"), default=None)
    ap.add_argument("--batch", type=int, default=128, help="MLP batch size")
    ap.add_argument("--samples", type=int, default=60000, help="MLP samples per epoch")
    ap.add_argument("--repeats", type=int, default=3, help="MLP epochs per library and thread count")
    ap.add_argument("--rounds", type=int, default=7, help="ResNet rounds of interleaved steps")
    ap.add_argument("--quick", action="store_true", help="6,000 samples, 2 repeats, 3 rounds")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.repeats, args.rounds = 6000, 2, 3
    print(f"# {header()}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; medians of interleaved runs; ratio = pysbnn / PyTorch")
    print(f"{'case':38s} {'th':>2s} {'pysbnn':>12s} {'PyTorch':>12s} {'ratio':>6s} {'load':>9s}")
    rows = []
    if args.only in (None, "mlp"):
        rows += measure_mlp(args)
    if args.only in (None, "resnet"):
        rows += measure_resnet(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
