"""``pack(model)``: a trained model -> a :class:`PackedModel` for bit-packed inference.

Binary layers become packed layers (:mod:`pysbnn.packed.layers`); every other
layer (input normalisation, full-precision convs, pooling, the last
BatchNorm) is kept as it is and runs in float. Inside a ``Sequential``, the
pattern ``binary dense -> BatchNorm -> binary dense (sign input)`` is folded:
BatchNorm + sign become one threshold per channel and only bits travel on.
"""

import copy

import numpy as np

from ..binary import BinaryConv2d, BinaryDense
from ..containers import Residual, Sequential
from ..kernels.jit import check_backend
from ..layers import BatchNorm, Layer, check_positive_int
from ..serialize import load_model, save_model
from ..validation import check_finite_model
from .layers import Bits, PackedBinaryConv2d, PackedBinaryDense, fold_threshold


def _pack_layer(layer):
    if isinstance(layer, BinaryDense):
        return PackedBinaryDense.from_layer(layer)
    if isinstance(layer, BinaryConv2d):
        return PackedBinaryConv2d.from_layer(layer)
    if isinstance(layer, Sequential):
        return _pack_sequential(layer)
    if isinstance(layer, Residual):
        return Residual(_pack_layer(layer.body),
                        None if layer.shortcut is None else _pack_layer(layer.shortcut))
    return copy.deepcopy(layer)


def _pack_sequential(seq):
    out, i, layers = [], 0, seq.layers
    while i < len(layers):
        layer = layers[i]
        foldable = (isinstance(layer, BinaryDense) and i + 2 < len(layers)
                    and isinstance(layers[i + 1], BatchNorm)
                    and isinstance(layers[i + 2], BinaryDense) and layers[i + 2].binarize_input)
        packed = _pack_layer(layer)
        out.append(packed)
        if foldable:
            packed.set_threshold(*fold_threshold(packed.xi, packed.eta, layers[i + 1]))
            i += 2                           # BatchNorm folded away
        else:
            i += 1
    return Sequential(out)


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

    def with_backend(self, backend):
        """Run the packed layers on ``backend`` (``"auto" | "numba" | "numpy"``); returns self."""
        self.net.set_backend(backend)
        return self

    def forward(self, x):
        """Logits (n, classes) for inputs as the original model takes them."""
        return self._forward(self.net.check_input(x))

    def _forward(self, x):
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
        """Write an ``.npz`` (no pickle), atomically."""
        save_model(self.net, path, kind="packed")

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
        """float32 bytes of the BatchNorms folded into thresholds (4 arrays per channel)."""
        return sum(16 * len(l.buffers["threshold"]) for _, l in self.packed_layers() if l.fold)

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
    """Load a :class:`PackedModel` written by ``PackedModel.save``."""
    return PackedModel(load_model(path, kind="packed")).with_backend(backend)
