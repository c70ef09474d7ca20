"""pysbnn: a readable NumPy + Numba reference implementation of Sparse Binary
Neural Networks (Schiavone, Galati, Zuluaga, ECML-PKDD 2023).

Start with ``examples/mnist_sbnn.py``; ``docs/math.md`` maps every equation of
the paper to the function that implements it and the test that checks it.
"""

from .layers import (AvgPool2d, BatchNorm, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Flatten,
                     GlobalAvgPool, HardTanh, Layer, MaxPool2d, Normalize, ReLU)
from .containers import Residual, Sequential
from .serialize import load_model, save_model
from .binary import BinaryConv2d, BinaryDense
from .levels import optimal_tau_phi
from .entropy import SparsityTarget, binary_entropy, gamma_lambda, inverse_binary_entropy, sparsity_penalty
from .mlp import binary_mlp, mlp
from .packed.pack import PackedModel, load_packed, pack
from .report import count_bops, kernel_histogram, summary
from .optim import SGD, Adam, clip_latent_weights, cosine_lr
from .train import evaluate, fit, random_crop_flip
from .data import load_cifar10, load_fashion_mnist, load_mnist, read_idx

__version__ = "0.1.0"
