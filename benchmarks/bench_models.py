"""Whole models, per image: the packed SBNN, the float simulation and PyTorch float32.

    python benchmarks/bench_models.py                 # MLP and ResNet-18, about 10 minutes
    python benchmarks/bench_models.py --quick         # a smoke run
    python benchmarks/bench_models.py --only mlp --json out.json

For the MLP 784-512-512-10 (BNN and SBNN at 90 / 95 / 99 % sparsity) and the
binarized ResNet-18 of width 16 on 28x28 images (BNN and SBNN at 95 / 99 %):
seconds per image at batch 1 and at batch 1000 (MLP) / 256 (ResNet) of

* ``packed``: ``pysbnn.pack(model)`` (bits between layers, integer thresholds);
* ``float``: the float simulation, ``model.forward(x, training=False)``
  (binarized weights cached once, as for any inference);
* ``torch``: a PyTorch float32 network of the same shapes under
  ``torch.inference_mode()`` (``_torch_twins``), when PyTorch happens to be
  installed (it is never a dependency).

Each method is timed with 1 and with 2 threads (numba / BLAS / torch) and the
better is kept; the methods of a model are interleaved in one process (per
thread count, set once: threadpoolctl costs milliseconds per call) and the
medians quoted (``_timing.interleaved_medians``). Models are random with the
given fraction of ones and BatchNorm statistics from a training-mode pass on
real MNIST images (the offline subset). Packed and float predictions are
checked to be equal before timing, and JIT compilation happens before it.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _torch_twins as tt  # noqa: E402
from _timing import cpu_header, interleaved_medians, set_threads  # noqa: E402

import pysbnn  # noqa: E402
from pysbnn.resnet import resnet18  # noqa: E402

MLP = {"name": "MLP 784-512-512-10", "batch": 1000, "densities": [("BNN", 0.5), ("SBNN 90%", 0.1),
                                                                   ("SBNN 95%", 0.05), ("SBNN 99%", 0.01)]}
RESNET = {"name": "ResNet-18 w16", "batch": 256, "densities": [("BNN", 0.5), ("SBNN 95%", 0.05),
                                                                ("SBNN 99%", 0.01)]}


def header():
    """:func:`_timing.cpu_header` and whether PyTorch is there."""
    torch = "PyTorch " + __import__("torch").__version__ if tt.available() else "no PyTorch"
    return f"{cpu_header()}; {torch}"


def sparse_model(model, density, x, seed=0):
    """Give the binary layers ``density`` ones; BatchNorm statistics from ``x``."""
    rng = np.random.default_rng(seed)
    for _, layer in model.named_layers():
        if getattr(layer, "latent_params", ()):
            w = layer.params["weight"]
            w[...] = -np.abs(w) - 1e-3
            w[rng.random(w.shape) < density] = 1e-2
    model.parameters_changed()
    for i in range(0, len(x), 250):
        model.forward(x[i:i + 250], training=True)          # BatchNorm running statistics
    return model


def build(kind, density, x):
    if kind == "mlp":
        return sparse_model(pysbnn.binary_mlp((784, 512, 512, 10), seed=0, init_scale=1e-2), density, x)
    return sparse_model(resnet18(width=16, seed=0), density, x)


def torch_twin(kind):
    if not tt.available():
        return None
    return tt.mlp_float32() if kind == "mlp" else tt.resnet18_float32(width=16)


def measure(kind, spec, x, quick):
    """Rows of one architecture: per model and batch, seconds per image of every method."""
    rows = []
    twin = torch_twin(kind)
    for label, density in spec["densities"][:2] if quick else spec["densities"]:
        model = build(kind, density, x[:500])
        packed = pysbnn.pack(model)
        test = x[:spec["batch"]]
        agree = agreement(packed, model, test)
        for batch in (1, spec["batch"]):
            xb, med = x[:batch], {}
            for n in (1, 2):                  # thread counts set once per round of interleaving
                set_threads(n)
                fns = {f"packed/{n}": lambda: packed.forward(xb),
                       f"float/{n}": lambda: model.forward(xb, training=False)}
                if twin is not None:
                    fns[f"torch/{n}"] = tt.inference_fn(twin, xb, threads=n)
                med.update(interleaved_medians(fns, rounds=3 if quick else 7))
            best = {m: min(med[f"{m}/1"], med[f"{m}/2"]) / batch for m in ("packed", "float", "torch")
                    if f"{m}/1" in med}
            row = {"arch": spec["name"], "model": label, "ones": density, "batch": batch,
                   "agree": agree, **{f"{m}_s": v for m, v in best.items()},
                   "threads": {m: 1 + (med[f"{m}/2"] < med[f"{m}/1"]) for m in best}}
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def agreement(packed, model, x):
    """``"yes"`` if packed and float predictions are equal on ``x``; ``"ties"`` if they
    differ only where the float simulation's two best logits are within float32
    rounding of each other (random models at 1 % ones have nearly constant logits, and
    the argmax of a tie depends on summation order); ``"NO"`` otherwise."""
    pk, fl = packed.predict(x), model.predict(x)
    if np.array_equal(pk, fl):
        return "yes"
    logits = np.sort(np.asarray(model.forward(x, training=False), np.float64), axis=1)
    margin = logits[:, -1] - logits[:, -2]
    tie = margin <= 16 * np.finfo(np.float32).eps * np.abs(logits[:, -1])
    return "ties" if np.all(tie[pk != fl]) else "NO"


def format_row(r):
    us = {m: 1e6 * r[f"{m}_s"] for m in ("packed", "float", "torch") if f"{m}_s" in r}
    torch = f"{us['torch']:10.2f}" if "torch" in us else f"{'n/a':>10s}"
    vs_t = f"{us['torch'] / us['packed']:9.2f}x" if "torch" in us else f"{'n/a':>10s}"
    return (f"{r['arch']:20s} {r['model']:9s} {r['batch']:5d} {us['packed']:10.2f} {us['float']:10.2f} "
            f"{torch} {us['float'] / us['packed']:9.2f}x {vs_t} {r['agree']:>5s}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("mlp", "resnet"), default=None)
    ap.add_argument("--quick", action="store_true", help="two models per architecture, 3 rounds")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)
    try:
        x_train, _, x_test, _ = pysbnn.load_mnist(verbose=False)
        x, data = np.concatenate([x_test, x_train]), "MNIST images"
    except FileNotFoundError:
        x, data = np.random.default_rng(0).integers(0, 256, (5000, 28, 28)).astype(np.uint8), "random pixels"
    print(f"# {header()}; inputs: {data}")
    print(f"{'architecture':20s} {'model':9s} {'batch':>5s} {'packed us':>10s} {'float us':>10s} "
          f"{'torch us':>10s} {'float/pk':>10s} {'torch/pk':>10s} {'agree':>5s}")
    rows = []
    for kind, spec in (("mlp", MLP), ("resnet", RESNET)):
        if args.only in (None, kind):
            rows += measure(kind, spec, x, args.quick)
    print("(microseconds per image, best of 1 and 2 threads per method; ratios > 1: packed is faster;"
          " agree 'ties': predictions differ only on images whose two best float logits are within"
          " float32 rounding)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
