"""Binarized ResNet-18 of the paper's CIFAR-10 experiments (Sec. 4.1, Fig. 2, Tables 1-2).

The layout follows IR-Net (Qin et al. 2020), the binarization strategy the
paper adopts: every binary 3x3 convolution has its own shortcut,

.. code-block:: text

    x -> BinaryConv3x3 -> BN --(+ shortcut(x))--> HardTanh     (first conv of a block)
    x -> BinaryConv3x3 -> BN --(+ x)----------->  HardTanh     (second conv)

where ``shortcut`` is the identity, or a full-precision 1x1 conv + BN when the
shape changes. Four stages of two BasicBlocks ([2, 2, 2, 2]) give the 16
binary convolutions, numbered 1..16 in forward order by
:func:`binary_conv_layers`. As in the reference code, the stem (3x3 conv + BN),
the 1x1 shortcuts and the classifier (BatchNorm1d + Dense after global average
pooling) stay full precision; every binary conv binarizes both its weights and
its input with ``sign`` and IR-Net's EDE straight-through estimator.

The model starts with :class:`~pysbnn.layers.Normalize`, so it takes raw uint8
images: ``(n, 28, 28)`` (grey, ``in_channels=1``) or ``(n, 32, 32, 3)``.
"""

import numpy as np

from .binary import BinaryConv2d
from .functional import conv_output_size
from .layers import BatchNorm1d, BatchNorm2d, Conv2d, Dense, GlobalAvgPool, HardTanh, Normalize
from .layers import check_positive_int
from .containers import Residual, Sequential

#: Per-channel pixel statistics (/255) used by default, by number of input channels.
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

#: BasicBlocks per stage of ResNet-18.
BLOCKS = (2, 2, 2, 2)


def _binary_unit(c_in, c_out, stride, shortcut, binary_kw, rng):
    """``HardTanh(BN(BinaryConv3x3(x)) + shortcut(x))`` as ``[Residual, HardTanh]``."""
    conv = BinaryConv2d(c_in, c_out, 3, stride=stride, padding=1, rng=rng, **binary_kw)
    return [Residual(Sequential([conv, BatchNorm2d(c_out)]), shortcut), HardTanh()]


def basic_block(c_in, c_out, stride, binary_kw, rng):
    """One IR-Net BasicBlock: two binary units; the first may downsample.

    (n, h, w, c_in) -> (n, ho, wo, c_out) with ``ho = (h - 1) // stride + 1``.
    """
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = Sequential([Conv2d(c_in, c_out, 1, stride=stride, bias=False, rng=rng),
                               BatchNorm2d(c_out)])
    return Sequential(_binary_unit(c_in, c_out, stride, shortcut, binary_kw, rng)
                      + _binary_unit(c_out, c_out, 1, None, binary_kw, rng))


def resnet18(num_classes=10, in_channels=1, width=16, domain="learned", seed=0, quantizer="ede",
             mean=None, std=None, init="uniform", init_scale=None, init_density=0.05):
    """Binarized ResNet-18 (IR-Net blocks), NHWC, taking raw uint8 images.

    Parameters
    ----------
    num_classes : int, size of the logits
    in_channels : 1 for grey (n, h, w) images, 3 for (n, h, w, 3)
    width : channels of the first stage; the stages have width, 2w, 4w, 8w
        (the paper's network has width 64)
    domain : binary domain of the 16 binary convs: ``"learned"`` (default, as
        the reference code), ``"alpha_beta"``, ``"sym"`` or ``"zero_one"``, or a
        config dict such as ``{"name": "alpha_beta", "grad": "exact"}``
    seed : fixes every initial weight
    quantizer : sign STE of the binary weights and inputs (``"ede"``: IR-Net's)
    mean, std : per-channel pixel statistics of :class:`Normalize` (default:
        Fashion-MNIST's for one channel, CIFAR-10's for three)
    init, init_scale, init_density : latent-weight init of the binary convs
        (see :func:`pysbnn.binary.init_latent`)

    Returns
    -------
    Sequential mapping images (n, h, w[, c]) to logits (n, num_classes).
    Stage ``s`` (1..4) downsamples by 2 for ``s >= 2``: 28 -> 28, 14, 7, 4 and
    32 -> 32, 16, 8, 4.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    width = check_positive_int("width", width)
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    if mean is None:
        mean = FASHION_MNIST_MEAN if in_channels == 1 else CIFAR10_MEAN
    if std is None:
        std = FASHION_MNIST_STD if in_channels == 1 else CIFAR10_STD
    if len(np.atleast_1d(mean)) not in (1, in_channels):
        raise ValueError(f"mean needs 1 or {in_channels} values, got {mean!r}")
    rng = np.random.default_rng(seed)
    binary_kw = dict(domain=domain, binarize_input=True, weight_quantizer=quantizer,
                     input_quantizer=quantizer, init=init, init_scale=init_scale,
                     init_density=init_density)
    layers = [Normalize(mean, std),
              Conv2d(in_channels, width, 3, padding=1, bias=False, rng=rng), BatchNorm2d(width)]
    c_in = width
    for stage, blocks in enumerate(BLOCKS):
        c_out = width * 2 ** stage
        stage_blocks = []
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            stage_blocks.append(basic_block(c_in, c_out, stride, binary_kw, rng))
            c_in = c_out
        layers.append(Sequential(stage_blocks))
    layers += [GlobalAvgPool(), BatchNorm1d(c_in), Dense(c_in, num_classes, rng=rng)]
    return Sequential(layers)


def binary_conv_layers(model):
    """The model's :class:`BinaryConv2d` layers in forward order (layer k is item k-1).

    For :func:`resnet18` there are 16; the paper's Fig. 2 shows the 5th, 10th
    and 15th, i.e. ``binary_conv_layers(model)[4]``, ``[9]`` and ``[14]``.
    """
    return [layer for _, layer in model.named_layers() if isinstance(layer, BinaryConv2d)]


def binary_conv_positions(model, image_size):
    """Output positions ``ho * wo`` of each binary conv for ``image_size``-square inputs.

    Follows the binary convs in forward order; in :func:`resnet18` each one
    reads the previous one's output (the stem keeps the image size). These are
    the ``positions`` that :func:`pysbnn.analysis.bops_pr_k0k1` weights by:
    for 28x28 images ``[784] * 4 + [196] * 4 + [49] * 4 + [16] * 4``.
    """
    size, out = check_positive_int("image_size", image_size), []
    for layer in binary_conv_layers(model):
        size = conv_output_size(size, layer.kernel_size, layer.stride, layer.padding)
        out.append(size * size)
    return out
