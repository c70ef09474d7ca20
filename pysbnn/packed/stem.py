"""A packed ResNet's stem: ``Normalize -> Conv2d 3x3 -> BatchNorm2d`` as one layer.

``pack()`` replaces that pattern (a 3x3 conv, padding 1, stride 1: the head
of a ``pysbnn.resnet`` model) with a :class:`PackedStem`: the BatchNorm folded into the conv (``W' = s W``,
``b' = beta + s (b - mu)``, :func:`pysbnn.packed.fold.conv_bn`), and on the
64-image lanes (``len(x) >= LANES_MIN_BATCH``) the conv computed straight
into the :class:`~pysbnn.packed.stream.LaneStream` the first unit reads
(:mod:`pysbnn.kernels.stem`). Smaller batches run the float conv (im2col +
GEMM) and hand on NHWC, as the unfused layers did. Full precision either
way: the stem's float32 values agree with the float model's to rounding.
"""

import numpy as np

from .. import functional as F
from ..kernels import stem
from ..kernels.jit import check_backend
from ..layers import BatchNorm, Conv2d, Layer, Normalize
from ..validation import InputSpec
from . import fold
from . import residual
from .residual import PackedResidualUnit, in_order
from .stream import LaneStream


class PackedStem(Layer):
    """Normalised images -> the stem conv with its BatchNorm folded in.

    Input: images as ``normalize`` (a :class:`~pysbnn.layers.Normalize`, not
    flattening) takes them. Output: float32 NHWC ``(n, H, W, out_channels)``,
    or a LaneStream when the next layer is a residual unit (``emits``, set by
    :func:`~pysbnn.packed.residual.link_units`) and the batch is large enough.
    Buffers: ``weight`` (out_channels, in_channels, 3, 3), ``bias`` (out_channels,).
    """

    def __init__(self, normalize, in_channels, out_channels, backend="auto"):
        super().__init__()
        self.normalize, self.in_channels, self.out_channels = normalize, int(in_channels), int(out_channels)
        self.emits, self.backend = False, check_backend(backend)
        self.buffers["weight"] = np.zeros((self.out_channels, self.in_channels, 3, 3), np.float32)
        self.buffers["bias"] = np.zeros(self.out_channels, np.float32)

    @classmethod
    def build(cls, config, children):
        return cls(*children, **config)

    def children(self):
        return [self.normalize]

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels)

    def input_spec(self, after=None):
        return self.normalize.input_spec(InputSpec((4,), channels=self.in_channels, min_side=1))

    def output_features(self, features_in=None):
        return self.out_channels

    def set_weights(self, weight, bias):
        """The folded conv: weight (out_channels, in_channels, 3, 3), bias (out_channels,)."""
        self.buffers["weight"][...] = weight
        self.buffers["bias"][...] = bias

    def forward(self, x, training=False):
        xn = np.asarray(self.normalize.forward(x), np.float32)
        w, b = self.buffers["weight"], self.buffers["bias"]
        if self.emits and len(xn) >= residual.LANES_MIN_BATCH:     # the units' lane threshold
            n, H, W, _ = xn.shape
            return LaneStream(stem.stem_lanes(xn, w, b, self.backend), n, H, W)
        out, _ = F.conv2d_forward(xn, w, b, 1, 1, self.backend)
        return out


def is_stem(normalize, conv, bn):
    """True for ``Normalize -> Conv2d 3x3 (padding 1, stride 1) -> BatchNorm``."""
    return (isinstance(normalize, Normalize) and not normalize.flatten and isinstance(conv, Conv2d)
            and conv.kernel_size == 3 and conv.padding == 1 and conv.stride == 1
            and isinstance(bn, BatchNorm))


def fuse_stem(layers):
    """``layers`` (a packed Sequential's list) with a stem pattern that a residual
    unit follows replaced by its :class:`PackedStem` (elsewhere the three layers stay:
    without a unit to hand lanes to there is nothing to gain)."""
    out = list(layers)
    for i in range(len(out) - 3):
        first = next(in_order(out[i + 3]), None)
        if is_stem(*out[i:i + 3]) and isinstance(first, PackedResidualUnit):
            return out[:i] + [pack_stem(*out[i:i + 3])] + out[i + 3:]
    return out


def pack_stem(normalize, conv, bn):
    """The :class:`PackedStem` of the three layers (their inference statistics)."""
    layer = PackedStem(Normalize(normalize.mean, normalize.std, normalize.scale), conv.in_channels,
                       conv.out_channels)
    layer.set_weights(*fold.conv_bn(conv, bn))
    return layer
