"""A packed IR-Net residual unit: ``HardTanh(BN(BinaryConv3x3(sign(h))) + shortcut(h))`` fused.

``pack()`` turns the pattern ``Residual(Sequential([BinaryConv2d 3x3,
BatchNorm2d]), shortcut) -> HardTanh`` of ``pysbnn.resnet`` into one
:class:`PackedResidualUnit`. Its forward makes three passes over the stream
(:mod:`pysbnn.kernels.residual`), all channel-major:

1. sign bits of ``h`` into Kernel B's planes, with the ones per position;
2. Kernel B (K0 kernels skipped, K1 kernels a shifted copy);
3. Eq. 20 + the folded BatchNorm + the shortcut + HardTanh into the next ``h``.

The shortcut is the identity or a full-precision 1x1 conv with its BatchNorm
folded into the weights (``W' = s W``, ``b = beta - s mu``), one float32 GEMM
per image on the channel-major stream. The unit returns the NHWC view
``(n, H_out, W_out, C_out)`` of its channel-major output, so the next unit
reads it without a transpose, and float layers (pooling, the classifier) see
an ordinary NHWC array.
"""

import numpy as np

from ..kernels import residual
from ..kernels.conv_sbnn import SbnnConvPlan, sbnn_conv3x3_buffer
from ..layers import Layer


def channel_major(x):
    """``x`` (n, H, W, C) as a contiguous (n, C, H, W) array (a view when it already is one)."""
    return np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2))


class PackedResidualUnit(Layer):
    """One fused IR-Net unit around a :class:`PackedBinaryConv2d` (3x3, BatchNorm folded).

    Input and output: float32 NHWC (n, H, W, C) (views of channel-major buffers).
    ``shortcut_stride`` is 0 for the identity shortcut, else the stride of the
    folded 1x1 conv, whose weight (C_out, C_in) and bias (C_out,) are buffers.
    """

    def __init__(self, conv, shortcut_stride=0, clip=True):
        super().__init__()
        self.conv, self.shortcut_stride, self.clip = conv, int(shortcut_stride), bool(clip)
        if self.shortcut_stride:
            self.buffers["shortcut_weight"] = np.zeros((conv.out_channels, conv.in_channels), np.float32)
            self.buffers["shortcut_bias"] = np.zeros(conv.out_channels, np.float32)

    @classmethod
    def build(cls, config, children):
        return cls(*children, **config)

    def children(self):
        return [self.conv]

    def get_config(self):
        return dict(shortcut_stride=self.shortcut_stride, clip=self.clip)

    def set_shortcut(self, weight, bias):
        """The folded 1x1 shortcut: weight (C_out, C_in), bias (C_out,)."""
        self.buffers["shortcut_weight"][...] = weight
        self.buffers["shortcut_bias"][...] = bias

    def _shortcut(self, h):
        """The shortcut of the channel-major stream h (n, C_in, H, W) -> (n, C_out, H_out, W_out)."""
        if not self.shortcut_stride:
            return h
        s = self.shortcut_stride
        sub = h[:, :, ::s, ::s]
        n, c, ho, wo = sub.shape
        out = np.matmul(self.buffers["shortcut_weight"], sub.reshape(n, c, ho * wo))
        out += self.buffers["shortcut_bias"][None, :, None]
        return out.reshape(n, -1, ho, wo)

    def forward(self, x, training=False):
        conv, backend = self.conv, self.conv.backend
        h = channel_major(x)
        n, C, H, W = h.shape
        if C != conv.in_channels:
            raise ValueError(f"expected {conv.in_channels} channels, got input of shape {np.shape(x)}")
        planes, ones = residual.pack_planes_counting(h, backend)
        q = residual.window_sums((2 * ones - C).reshape(n, H, W), conv.stride, conv.padding, backend)
        plan = conv.cached("conv3x3", lambda: SbnnConvPlan(conv.ones_kernels(), binary=True))
        zbuf, R, ops = sbnn_conv3x3_buffer(planes, plan, H, W, conv.stride, conv.padding, backend=backend)
        aff = conv.affine
        out = residual.unit_output(zbuf, R, q, aff.A, aff.xi, aff.C, self._shortcut(h), self.clip,
                                   backend=backend)
        out = out.transpose(0, 2, 3, 1)
        conv.last_ops, conv.last_output_shape = int(ops["total"]), out.shape
        return out


def is_unit(residual_layer, nxt, binary_conv, batchnorm, conv2d, hardtanh):
    """True for ``Residual(Sequential([BinaryConv2d 3x3, BatchNorm]), shortcut) -> HardTanh``
    with an identity or ``Sequential([Conv2d 1x1, BatchNorm])`` shortcut."""
    body = getattr(residual_layer, "body", None)
    layers = getattr(body, "layers", None)
    if not (isinstance(nxt, hardtanh) and layers is not None and len(layers) == 2):
        return False
    conv, bn = layers
    if not (isinstance(conv, binary_conv) and conv.kernel_size == 3 and conv.binarize_input
            and conv.padding in (0, 1) and conv.stride in (1, 2) and isinstance(bn, batchnorm)):
        return False
    sc = residual_layer.shortcut
    if sc is None:
        return conv.stride == 1 and conv.in_channels == conv.out_channels
    sc_layers = getattr(sc, "layers", [])
    return (len(sc_layers) == 2 and isinstance(sc_layers[0], conv2d) and sc_layers[0].kernel_size == 1
            and sc_layers[0].padding == 0 and isinstance(sc_layers[1], batchnorm))


def fold_shortcut(conv1x1, bn):
    """A 1x1 conv + BatchNorm as ``(weight (C_out, C_in), bias (C_out,))`` float32."""
    s = bn.params["gamma"].astype(np.float64) / np.sqrt(bn.buffers["running_var"].astype(np.float64) + bn.eps)
    w = conv1x1.params["weight"][:, :, 0, 0].astype(np.float64) * s[:, None]
    b = bn.params["beta"] - s * bn.buffers["running_mean"]
    if "bias" in conv1x1.params:
        b = b + s * conv1x1.params["bias"]
    return w.astype(np.float32), b.astype(np.float32)

