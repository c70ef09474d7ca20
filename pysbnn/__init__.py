"""pysbnn: a readable NumPy + Numba reference implementation of Sparse Binary
Neural Networks (Schiavone, Galati, Zuluaga, ECML-PKDD 2023).

Start with ``examples/mnist_sbnn.py``; ``docs/math.md`` maps every equation of
the paper to the function that implements it and the test that checks it.

The training floors are imported here; inference (``pack``, ``PackedModel``,
``load_packed``), the reports (``summary``, ``count_bops``,
``kernel_histogram``) and the C export (``export_c``) load on first use, so
that ``import pysbnn`` (or ``pysbnn.binary``) never imports ``pysbnn.packed``.
"""

import importlib

from .layers import (AvgPool2d, BatchNorm, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Flatten,
                     GlobalAvgPool, HardTanh, Layer, MaxPool2d, Normalize, ReLU)
from .containers import Residual, Sequential
from .serialize import load_model, save_model
from .binary import BinaryConv2d, BinaryDense
from .levels import optimal_tau_phi
from .entropy import SparsityTarget, binary_entropy, gamma_lambda, inverse_binary_entropy, sparsity_penalty
from .mlp import binary_mlp, mlp
from .optim import SGD, Adam, clip_latent_weights, cosine_lr
from .train import DivergenceError, evaluate, fit, random_crop_flip
from .data import load_cifar10, load_fashion_mnist, load_mnist
from .idx import read_idx

__version__ = "0.1.0"

__all__ = [
    "AvgPool2d", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dense", "Flatten",
    "GlobalAvgPool", "HardTanh", "Layer", "MaxPool2d", "Normalize", "ReLU",
    "Residual", "Sequential", "load_model", "save_model", "BinaryConv2d", "BinaryDense",
    "optimal_tau_phi", "SparsityTarget", "binary_entropy", "gamma_lambda",
    "inverse_binary_entropy", "sparsity_penalty", "binary_mlp", "mlp",
    "PackedModel", "load_packed", "pack", "count_bops", "kernel_histogram", "summary", "export_c",
    "SGD", "Adam", "clip_latent_weights", "cosine_lr", "DivergenceError", "evaluate", "fit",
    "random_crop_flip",
    "load_cifar10", "load_fashion_mnist", "load_mnist", "read_idx",
]

#: public names of the inference floors, imported on first access
_LAZY = {"PackedModel": "packed.pack", "load_packed": "packed.pack", "pack": "packed.pack",
         "count_bops": "report", "kernel_histogram": "report", "summary": "report",
         "export_c": "export.c"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module("." + _LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
