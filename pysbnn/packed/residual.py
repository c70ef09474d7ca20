"""A packed IR-Net residual unit: ``HardTanh(BN(BinaryConv3x3(sign(h))) + shortcut(h))`` fused.

``pack()`` turns the pattern ``Residual(Sequential([BinaryConv2d 3x3,
BatchNorm2d]), shortcut) -> HardTanh`` of ``pysbnn.resnet`` into one
:class:`PackedResidualUnit`. It has two ways to run, chosen by batch size:

* **lanes** (``len(x) >= LANES_MIN_BATCH``): 64 images per word
  (:mod:`pysbnn.kernels.conv_lanes`). One kernel call per unit goes from the
  input's sign planes through Kernel B, Eq. 20 + the folded BatchNorm, the
  shortcut and HardTanh to the next float stream and, when the next layer is
  a unit too (``emits``, set by :func:`link_units`), the next unit's sign
  planes and sign sums: units hand each other a
  :class:`~pysbnn.packed.stream.LaneStream`, and only the last one converts
  back to NHWC.
* **images** (smaller batches): positions in the word, image by image, in
  three channel-major passes (:mod:`pysbnn.kernels.residual`): sign bits
  with the ones per position, Kernel B (K0 kernels skipped, K1 kernels a
  shifted copy), Eq. 20 + BatchNorm + shortcut + HardTanh. The unit returns
  the NHWC view ``(n, H_out, W_out, C_out)`` of its channel-major output, so
  the next unit reads it without a transpose.

Both run the same float32 operations in the same order per value, so with an
identity shortcut they give the same numbers bit for bit; the 1x1 shortcut's
BLAS GEMM has other shapes on the two layouts and may round differently.
The shortcut is the identity or a full-precision 1x1 conv with its BatchNorm
folded into the weights (``W' = s W``, ``b = beta - s mu``), float32 BLAS on
either layout; float layers (pooling, the classifier) see an ordinary NHWC
array.
"""

import numpy as np

from ..kernels import conv_lanes, lanes, residual
from ..kernels.conv_layout import conv_out_size
from ..kernels.conv_sbnn import SbnnConvPlan, sbnn_conv3x3_buffer
from ..containers import Sequential
from ..layers import Layer
from . import fold
from .stream import LaneStream

#: from this batch size on a unit runs on 64-image lanes (:mod:`pysbnn.kernels.conv_lanes`);
#: below it image by image (measured: docs/benchmarks.md, "Packed ResNet-18")
LANES_MIN_BATCH = 32


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
        self.emits = False          # set by PackedModel when the next layer is a unit too
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

    def _shortcut_lanes(self, h, H, W):
        """The shortcut of the lane stream h (G, C_in, H W, 64) -> (G, C_out, H_out W_out, 64)."""
        if not self.shortcut_stride:
            return h
        s, (G, C) = self.shortcut_stride, h.shape[:2]
        sub = h.reshape(G, C, H, W, lanes.LANES)[:, :, ::s, ::s]
        P = sub.shape[2] * sub.shape[3]
        w, b = self.buffers["shortcut_weight"], self.buffers["shortcut_bias"][:, None]
        out = np.empty((G, w.shape[0], P * lanes.LANES), np.float32)
        for g in range(G):             # a 2-D GEMM per group: 1.2x a broadcast matmul (1 thread)
            np.matmul(w, sub[g].reshape(C, P * lanes.LANES), out=out[g])
            out[g] += b
        return out.reshape(G, -1, P, lanes.LANES)

    def _plan(self):
        """Kernel B's plan of the unit's conv, kept until its parameters change."""
        conv = self.conv
        return conv.cached("conv3x3", lambda: SbnnConvPlan(conv.ones_kernels(), binary=True))

    def forward(self, x, training=False):
        conv = self.conv
        if np.shape(x)[3] != conv.in_channels:
            raise ValueError(f"expected {conv.in_channels} channels, got input of shape {np.shape(x)}")
        if isinstance(x, LaneStream) or len(x) >= LANES_MIN_BATCH:
            return self._forward_lanes(x if isinstance(x, LaneStream) else LaneStream.from_nhwc(x, conv.backend))
        return self._forward_images(x)

    def _forward_lanes(self, s):
        """64 images per word (:mod:`pysbnn.kernels.conv_lanes`); a LaneStream out when
        the consumer is a unit (``emits``), else NHWC."""
        conv, backend = self.conv, self.conv.backend
        planes, sums = s.packed(backend)
        plan = self._plan()
        aff = conv.affine
        h, pn, on, ops = conv_lanes.unit_lanes(planes, sums, plan, s.H, s.W, conv.stride, conv.padding,
                                               aff.A, aff.xi, aff.C, self._shortcut_lanes(s.h, s.H, s.W),
                                               self.clip, self.emits, s.n, backend=backend)
        H_out, W_out = conv_out_size(s.H, s.W, conv.stride, conv.padding)
        out = LaneStream(h, s.n, H_out, W_out, pn, on)
        conv.last_ops, conv.last_output_shape = int(ops["total"]), out.shape
        return out if self.emits else out.nhwc(backend)

    def _forward_images(self, x):
        """Positions in the word, image by image (:mod:`pysbnn.kernels.conv_sbnn`)."""
        conv, backend = self.conv, self.conv.backend
        h = channel_major(x)
        n, C, H, W = h.shape
        planes, ones = residual.pack_planes_counting(h, backend)
        q = residual.window_sums((2 * ones - C).reshape(n, H, W), conv.stride, conv.padding, backend)
        plan = self._plan()
        zbuf, R, ops = sbnn_conv3x3_buffer(planes, plan, H, W, conv.stride, conv.padding, backend=backend)
        aff = conv.affine
        out = residual.unit_output(zbuf, R, q, aff.A, aff.xi, aff.C, self._shortcut(h), self.clip,
                                   backend=backend)
        out = out.transpose(0, 2, 3, 1)
        conv.last_ops, conv.last_output_shape = int(ops["total"]), out.shape
        return out


def in_order(layer):
    """The layers a forward pass runs one after the other (Sequentials flattened)."""
    if isinstance(layer, Sequential):
        for child in layer.layers:
            yield from in_order(child)
    else:
        yield layer


def link_units(net):
    """Mark every layer that can hand on a :class:`LaneStream` (a unit, the packed stem:
    those with ``emits``) whose next layer is a unit: it then does, instead of an NHWC array."""
    order = list(in_order(net))
    for a, b in zip(order, order[1:] + [None]):
        if hasattr(a, "emits"):
            a.emits = isinstance(b, PackedResidualUnit)


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
    w, b = fold.conv_bn(conv1x1, bn)
    return w[:, :, 0, 0], b
