"""Untrained MLPs with a chosen fraction of ones, for the export's tests and size tables.

Flash and instructions of an export depend on the shapes and the ones, not
on training, so a :func:`pysbnn.binary_mlp` with i.i.d. random {0,1} weights
at density ``p`` measures them. Its BatchNorms are calibrated on the images
it is given (the statistics of each pre-activation), with random gains of
both signs and a few zero gains, so the thresholds, ``dir = -1`` and the
constant bits of ``dir = 0`` all occur and the hidden bits vary.
"""

import numpy as np

from ..binary import BinaryDense
from ..layers import BatchNorm
from ..mlp import binary_mlp
from ..packed.pack import pack


def random_images(n, inputs=784, seed=0):
    """uint8 images (n, inputs) with MNIST-like statistics: ~80 % dark pixels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, inputs)).astype(np.uint8)
    x[rng.random((n, inputs)) < 0.8] = 0
    return x


def _densities(density, n_layers):
    d = np.broadcast_to(np.asarray(density, np.float64), (n_layers,))
    if ((d < 0) | (d > 1)).any():
        raise ValueError(f"densities must lie in [0, 1], got {density}")
    return d


def random_mlp(sizes=(784, 512, 512, 10), density=0.05, seed=0, images=None):
    """A float :func:`pysbnn.binary_mlp` with i.i.d. {0,1} weights at ``density``
    (one value, or one per layer) and BatchNorms calibrated on ``images``."""
    rng = np.random.default_rng(seed)
    model = binary_mlp(sizes, seed=seed)
    binary = [l for l in model.layers if isinstance(l, BinaryDense)]
    for layer, p in zip(binary, _densities(density, len(binary))):
        w = layer.params["weight"]
        magnitude = rng.uniform(0.01, 1.0, w.shape)
        layer.params["weight"] = np.where(rng.random(w.shape) < p, magnitude, -magnitude).astype(w.dtype)
    x = random_images(256, sizes[0], seed) if images is None else images
    h = np.asarray(x).reshape(len(x), 1, -1)          # (n, h, w) images for Normalize
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            _calibrate(layer, h, rng)
        h = layer.forward(h, training=False)
    return model


def _calibrate(bn, h, rng):
    """Running statistics of ``h``; gains N(1, 0.3) with 15 % negative and 3 % zero."""
    M = bn.num_features
    bn.buffers["running_mean"] = h.mean(axis=0).astype(np.float32)
    bn.buffers["running_var"] = (h.var(axis=0) + 1e-3).astype(np.float32)
    gamma = rng.normal(1.0, 0.3, M) * np.where(rng.random(M) < 0.15, -1.0, 1.0)
    gamma[rng.random(M) < 0.03] = 0.0
    bn.params["gamma"] = gamma.astype(np.float32)
    bn.params["beta"] = rng.normal(0.0, 0.3, M).astype(np.float32)


def random_packed_mlp(sizes=(784, 512, 512, 10), density=0.05, seed=0, images=None):
    """:func:`random_mlp`, packed (:func:`pysbnn.pack`)."""
    return pack(random_mlp(sizes, density, seed, images))
