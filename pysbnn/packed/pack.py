"""``pack(model)``: a trained model -> a :class:`PackedModel` for bit-packed inference.

Binary layers become packed layers (:mod:`pysbnn.packed.layers`); every other
layer (full-precision convs, pooling, ...) is kept as it is and runs in float.
Inside a ``Sequential`` the linear neighbours of a binary layer are folded
into it (:mod:`pysbnn.packed.fold`):

* a one-channel ``Normalize`` (flattening) in front of a real-input binary
  dense layer: the packed layer takes the raw pixels, exact integers;
* the ``BatchNorm`` behind a binary layer;
* the sign of a following binary dense layer: then only bits travel on,
  tested by an integer threshold;
* a ResNet's stem ``Normalize -> Conv2d 3x3 -> BatchNorm2d`` in front of a
  fused unit into one :class:`~pysbnn.packed.stem.PackedStem` that writes
  the first unit's lanes.
"""

import copy

import numpy as np

from ..binary import BinaryConv2d, BinaryDense
from ..containers import Residual, Sequential
from ..kernels.jit import check_backend
from ..layers import BatchNorm, Conv2d, HardTanh, Layer, Normalize
from ..validation import check_finite_model, check_positive_int
from . import fold, mlp, storage
from .bits import Bits
from .layers import PackedBinaryConv2d, PackedBinaryDense
from .residual import PackedResidualUnit, fold_shortcut, is_unit, link_units
from .stem import fuse_stem


def _pack_layer(layer):
    if isinstance(layer, (BinaryDense, BinaryConv2d)):
        return _pack_binary(layer, None, None, False)
    if isinstance(layer, Sequential):
        return _pack_sequential(layer)
    if isinstance(layer, Residual):
        return Residual(_pack_layer(layer.body),
                        None if layer.shortcut is None else _pack_layer(layer.shortcut))
    return copy.deepcopy(layer)


def _pack_binary(layer, normalize, bn, sign_next):
    """The packed twin of a binary layer with its folded neighbours."""
    w01 = layer.ones().reshape(layer.ones().shape[0], -1)
    xi, eta = layer.xi_eta()
    if isinstance(layer, BinaryDense):
        packed = PackedBinaryDense(layer.in_features, layer.out_features, layer.binarize_input,
                                   output="bits" if sign_next else "affine", folded_bn=bn is not None)
    else:
        packed = PackedBinaryConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                    layer.stride, layer.padding, layer.binarize_input,
                                    folded_bn=bn is not None)
    packed.set_weights(w01, xi, eta)
    ones = w01.sum(axis=1)
    aff = fold.affine_of(xi, eta, w01.shape[0], normalize, ones, w01.shape[1], bn)
    if not sign_next:
        packed.set_affine(aff)
        return packed
    scale = 1.0 if layer.binarize_input else 255.0          # +-1 inputs, or uint8 pixels
    packed.set_threshold(fold.fixed_threshold(aff, scale * ones.max(initial=0), scale * w01.shape[1]))
    return packed


def _pack_unit(res):
    """A fused :class:`PackedResidualUnit` from ``Residual(Sequential([conv, bn]), shortcut)``."""
    conv, bn = res.body.layers
    if res.shortcut is None:
        return PackedResidualUnit(_pack_binary(conv, None, bn, False))
    sc_conv, sc_bn = res.shortcut.layers
    unit = PackedResidualUnit(_pack_binary(conv, None, bn, False), shortcut_stride=sc_conv.stride)
    unit.set_shortcut(*fold_shortcut(sc_conv, sc_bn))
    return unit


def _pack_sequential(seq):
    out, i, layers = [], 0, list(seq.layers)
    at = lambda j: layers[j] if j < len(layers) else None    # noqa: E731
    while i < len(layers):
        layer, normalize = layers[i], None
        nxt = at(i + 1)
        if (isinstance(layer, Normalize) and layer.flatten and fold.normalize_of(layer) is not None
                and isinstance(nxt, BinaryDense) and not nxt.binarize_input):
            normalize, i, layer = fold.normalize_of(layer), i + 1, nxt    # Normalize folded in
        if is_unit(layer, nxt, BinaryConv2d, BatchNorm, Conv2d, HardTanh):
            out.append(_pack_unit(layer))
            i += 2                                             # HardTanh fused
            continue
        if not isinstance(layer, (BinaryDense, BinaryConv2d)):
            out.append(_pack_layer(layer))
            i += 1
            continue
        bn = at(i + 1) if isinstance(at(i + 1), BatchNorm) else None
        after = at(i + 2) if bn is not None else at(i + 1)
        sign_next = (isinstance(layer, BinaryDense) and isinstance(after, BinaryDense)
                     and after.binarize_input)
        out.append(_pack_binary(layer, normalize, bn, sign_next))
        i += 2 if bn is not None else 1
    return Sequential(fuse_stem(out))


def pack(model, backend="auto"):
    """Pack a trained model's binary layers into {0,1} bits.

    Parameters
    ----------
    model : Sequential (possibly with Residual blocks) holding BinaryDense /
        BinaryConv2d layers
    backend : ``"auto" | "numba" | "numpy"``: the kernels of the packed layers
        (``"numpy"``: the NumPy references); every backend gives the same
        logits and operation counts

    Returns
    -------
    PackedModel whose ``forward(x)`` gives the same logits as
    ``model.forward(x, training=False)`` (to float rounding) and ``predict(x)``
    the same class ids.
    """
    check_backend(backend)
    if isinstance(model, PackedModel):
        return model.with_backend(backend)
    if not isinstance(model, Layer):
        raise TypeError(f"pack expects a pysbnn model, got {type(model).__name__}")
    check_finite_model(model, "pack")
    root = _pack_layer(model)
    return PackedModel(root if isinstance(root, Sequential) else Sequential([root])).with_backend(backend)


class PackedModel:
    """Inference-only model with bit-packed binary layers.

    ``forward(x)`` -> float32 logits, ``predict(x)`` -> class ids,
    ``save(path)`` / :func:`load_packed`, ``size_bytes()``.
    """

    def __init__(self, net):
        self.net = net
        for layers in (l.layers for _, l in net.named_layers() if isinstance(l, Sequential)):
            for a, b in zip(layers, layers[1:]):           # bits go out as the next kernel reads them
                if isinstance(a, PackedBinaryDense) and isinstance(b, PackedBinaryDense):
                    a.consumer = b
        link_units(net)                                     # lane streams between ResNet units

    def with_backend(self, backend):
        """Run the packed layers on ``backend`` (``"auto" | "numba" | "numpy"``); returns self."""
        self.net.set_backend(backend)
        return self

    def forward(self, x):
        """Logits (n, classes) for inputs as the original model takes them."""
        return self._forward(self.net.check_input(x))

    def _forward(self, x):
        layers = self.__dict__.get("_chain", ())
        if layers == ():
            layers = self._chain = mlp.chain(self.net)
        if mlp.usable(layers, x):
            return mlp.forward(layers, x)               # small batches: one fused kernel call
        out = self.net._forward(x, training=False)
        return out.signs() if isinstance(out, Bits) else out

    def predict(self, x, batch_size=1024):
        """Class ids ``argmax(forward(x))``, in batches."""
        x = self.net.check_input(x, min_samples=0)
        batch_size = check_positive_int("batch_size", batch_size)
        out = [self._forward(x[i:i + batch_size]).argmax(axis=-1) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def packed_layers(self):
        """``[(name, layer)]`` of the packed binary layers, in order."""
        return [(n, l) for n, l in self.net.named_layers()
                if isinstance(l, (PackedBinaryDense, PackedBinaryConv2d))]

    def save(self, path):
        """Write an ``.npz`` (no pickle), atomically, the binary weights coded near
        their entropy bound (:mod:`pysbnn.packed.storage`, ``docs/format.md``).
        A NaN/inf array is refused (ValueError naming the layer)."""
        check_finite_model(self.net, "PackedModel.save")
        storage.save_packed(self.net, self.packed_layers(), path)

    def storage_report(self):
        """Per binary layer (``[(name, dict)]``): weights N, ones, the coding method and
        its ``stored`` bytes (header included), the ``bound`` ceil(N h(p) / 8), and the
        ``bnn`` (N / 8) and ``float32`` (4 N) bytes of the same weights."""
        rows = []
        for name, layer in self.packed_layers():
            enc = storage.encode_weights(layer)
            n, ones = layer.ones_rows().size, layer.n_ones()
            rows.append((name, {"weights": n, "ones": ones, "method": enc.method,
                                "stored": storage.coding.stored_bytes(enc),
                                "bound": storage.coding.entropy_bound_bytes(layer.ones_rows()),
                                "bnn": (n + 7) // 8, "float32": 4 * n}))
        return rows

    def size_bytes(self):
        """Bytes of every array inference needs (packed bits, thresholds, float layers)."""
        return int(sum(a.nbytes for _, a in self.net.named_parameters())
                   + sum(a.nbytes for _, a in self.net.named_buffers()))

    def _float_bytes(self):
        """Bytes of the non-binary layers' arrays (kept in float32)."""
        total = 0
        for _, layer in self.net.named_layers():
            if isinstance(layer, (PackedBinaryDense, PackedBinaryConv2d, Sequential, Residual)):
                continue
            total += sum(a.size * 4 for a in layer.params.values())
            total += sum(a.size * 4 for a in layer.buffers.values())
        return total

    def _folded_bn_bytes(self):
        """float32 bytes of the BatchNorms folded into the packed layers (4 arrays per channel)."""
        return sum(16 * len(l.words) for _, l in self.packed_layers() if l.folded_bn)

    def _binary_weights(self):
        return sum(l.fan_in * (l.out_features if hasattr(l, "out_features") else l.out_channels)
                   for _, l in self.packed_layers())

    def bytes_float32(self):
        """The same network with every weight in float32 (4 bytes each)."""
        return (self._float_bytes() + self._folded_bn_bytes() + 4 * self._binary_weights()
                + 8 * len(self.packed_layers()))

    def bytes_bnn(self):
        """The same network as a plain BNN: 1 bit per binary weight + float32 for the rest."""
        return (self._float_bytes() + self._folded_bn_bytes() + (self._binary_weights() + 7) // 8
                + 8 * len(self.packed_layers()))

    def __repr__(self):
        return f"PackedModel({self.net!r})"


def load_packed(path, backend="auto"):
    """Load a :class:`PackedModel` written by ``PackedModel.save`` (weights decoded once)."""
    net, _ = storage.load_packed_net(path)
    return PackedModel(net).with_backend(backend)
