"""Ready-made networks: float and binary MLPs (ResNet-18 lives in resnet.py).

Every builder takes one ``seed`` that fixes all initial weights, and puts a
:class:`~pysbnn.layers.Normalize` first so the model takes raw uint8 images.
"""

import numpy as np

from .binary import BinaryDense
from .layers import BatchNorm1d, Dense, Normalize, ReLU
from .containers import Sequential

#: MNIST pixel statistics (of the 60k training images, /255).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _sizes(sizes):
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least two positive layer widths, got {sizes}")
    return sizes


def mlp(sizes=(784, 512, 512, 10), seed=0, mean=MNIST_MEAN, std=MNIST_STD, normalize=True):
    """Float MLP with ReLU: ``Normalize -> (Dense -> ReLU)* -> Dense`` (logits)."""
    sizes = _sizes(sizes)
    rng = np.random.default_rng(seed)
    layers = [Normalize([mean], [std], flatten=True)] if normalize else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(a, b, rng=rng))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(layers)


def binary_mlp(sizes=(784, 512, 512, 10), domain="learned", seed=0, init="uniform",
               init_density=0.05, init_scale=None, mean=MNIST_MEAN, std=MNIST_STD, normalize=True,
               weight_quantizer="clipped", input_quantizer="clipped"):
    """Binary MLP: every Dense is a :class:`BinaryDense` followed by BatchNorm.

    ``Normalize -> BinaryDense(real input) -> BN -> [BinaryDense(sign input) -> BN]*``.
    The first layer keeps its input real-valued (pixels); the hidden layers see
    ``sign`` of the previous BatchNorm's output, so their products are exact
    XNOR-popcounts; the last BatchNorm's output are the logits.
    """
    sizes = _sizes(sizes)
    rng = np.random.default_rng(seed)
    layers = [Normalize([mean], [std], flatten=True)] if normalize else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(BinaryDense(a, b, domain=domain, binarize_input=i > 0, init=init,
                                  init_density=init_density, init_scale=init_scale, weight_quantizer=weight_quantizer,
                                  input_quantizer=input_quantizer, rng=rng))
        layers.append(BatchNorm1d(b))
    return Sequential(layers)
