"""Packed binary layers: {0,1} weights as bits, integers inside, Eq. 20 at the edges.

A packed layer replaces a trained ``BinaryDense`` / ``BinaryConv2d`` at
inference. It keeps ``w01 = (w~ >= 0)`` packed into uint64 words (``w01``,
one row per output) and what ``pack()`` folded around it
(:mod:`pysbnn.packed.fold`): its kernels compute the integers
``z' = w01 . x`` and ``q = 1 . x`` (Sec. 3.5), and the layer emits either

* ``"bits"``: the bits of ``sign(BN(z)) >= 0`` for the next binary layer, by an
  integer threshold (:class:`Bits`, no floats between binary layers), or
* ``"affine"``: float32 ``A (z' + xi q) + C``, Eq. 20 with a folded BatchNorm
  (and input normalisation) -- the logits of a classifier.

A dense layer reads ``"raw"`` inputs (the pixels, its Normalize folded in:
exact integer sums of uint8 pixels), ``+-1`` floats, or :class:`Bits`.

Every forward records the binary operations it executed in ``last_ops`` and
the shape of its output in ``last_output_shape``; ``backend`` (set by
``pack(model, backend=)``) chooses the kernels.
"""

import numpy as np

from ..kernels import words
from ..kernels.jit import check_backend
from ..kernels.threshold import FixedThreshold, threshold_bits
from ..layers import Layer
from ..quantizers import sign
from ..validation import InputSpec
from . import dispatch
from .bits import Bits
from .fold import Affine, affine_output

OUTPUTS = ("bits", "affine")


class _PackedBinary(Layer):
    """Shared: the packed ones, (xi, eta), and the folded output."""

    def _setup(self, rows, output, backend, folded_bn):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        self.buffers["w01"] = np.zeros((rows, words.n_words(self.fan_in)), np.uint64)
        self.buffers["xi_eta"] = np.zeros(2, np.float64)
        if output == "bits":
            self.buffers["T"] = np.zeros(rows, np.int32)
            self.buffers["dir"] = np.zeros(rows, np.int8)
            self.buffers["fixed"] = np.zeros(3, np.int64)          # F, XI, G
        else:
            self.buffers["A"] = np.zeros(rows, np.float64)
            self.buffers["C"] = np.zeros(rows, np.float64)
        self.last_ops, self.last_output_shape, self.backend = 0, None, check_backend(backend)
        self.folded_bn = folded_bn

    def set_weights(self, w01_rows, xi, eta):
        """Store the {0,1} rows (out, fan_in) and the domain scalars."""
        self.buffers["w01"][...] = words.pack_bits(w01_rows)
        self.buffers["xi_eta"][...] = [xi, eta]
        self.parameters_changed()

    def set_affine(self, aff):
        """The folded float output ``A (z' + xi q) + C`` (:class:`fold.Affine`)."""
        self.buffers["A"][...], self.buffers["C"][...] = aff.A, aff.C
        self.parameters_changed()

    def set_threshold(self, th):
        """The folded integer test (:class:`kernels.threshold.FixedThreshold`)."""
        self.buffers["T"][...], self.buffers["dir"][...] = th.T, th.dir
        self.buffers["fixed"][...] = [th.F, th.XI, th.G]
        self.parameters_changed()

    @property
    def words(self):
        """The ones as a bitmap, uint64 (rows, n_words(fan_in))."""
        return self.buffers["w01"]

    @property
    def xi(self):
        return float(self.buffers["xi_eta"][0])

    @property
    def eta(self):
        return float(self.buffers["xi_eta"][1])

    @property
    def threshold(self):
        """The folded :class:`FixedThreshold` (``output == "bits"``)."""
        def make():
            F, XI, G = (int(v) for v in self.buffers["fixed"])
            return FixedThreshold(self.buffers["T"], self.buffers["dir"], F, XI, G)
        return self.cached("threshold", make)

    @property
    def affine(self):
        """The folded :class:`fold.Affine` (``output == "affine"``)."""
        return self.cached("affine", lambda: Affine(self.buffers["A"], self.xi, self.buffers["C"]))

    def ones_rows(self):
        """{0,1} weights as uint8 rows (out, fan_in)."""
        return words.unpack_bits(self.words, self.fan_in)

    def n_ones(self):
        """Number of ones of the layer."""
        return int(words.popcount_numpy(self.words).sum())

    def finish(self, z_prime, q):
        """The layer's output from ``z'`` (int (P, M)) and ``q`` (int (P,)):
        float32 Eq. 20 (:func:`fold.affine_output`) or the threshold bits, row layout."""
        if self.output == "affine":
            return affine_output(z_prime, q, self.affine)
        bits = threshold_bits(z_prime, q, self.threshold)
        return Bits(words.pack_bits(bits), bits.shape[1], len(bits), "rows", bits.sum(axis=1))

    def _record(self, out, ops):
        self.last_ops = int(ops)
        self.last_output_shape = out.shape
        return out


class PackedBinaryDense(_PackedBinary):
    """Inference-only dense layer with bit-packed {0,1} weights.

    Input: raw values (n, in_features) or images (n, ...) when
    ``binarize_input`` is False (the first layer; uint8 pixels take the exact
    integer kernel), else +-1 floats (n, in_features) or :class:`Bits`.
    Output: :class:`Bits` (``output="bits"``) or float32 (n, out_features).
    """

    def __init__(self, in_features, out_features, binarize_input=True, output="affine",
                 folded_bn=False, backend="auto"):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.fan_in = self.in_features
        self.binarize_input = bool(binarize_input)
        self._setup(self.out_features, output, backend, bool(folded_bn))

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    binarize_input=self.binarize_input, output=self.output, folded_bn=self.folded_bn)

    def input_spec(self, after=None):
        """Raw inputs (its Normalize folded in) may be any (n, ...) of ``in_features`` values."""
        return InputSpec((2,) if self.binarize_input else None, features=self.in_features)

    def forward(self, x, training=False):
        if self.binarize_input:
            out, ops = dispatch.binary_dense(self, x, self.backend)
        else:
            out, ops = dispatch.raw_dense(self, x, self.backend)
        return self._record(out, ops)


class PackedBinaryConv2d(_PackedBinary):
    """Inference-only binary convolution (NHWC) with bit-packed {0,1} kernels.

    3x3 kernels with a binarized input run on the SBNN conv kernels (K0
    kernels skipped, K1 kernels as shifted copies); other shapes fall back to
    an exact integer im2col product. Output: float32 (n, ho, wo, out_channels).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 binarize_input=True, folded_bn=False, backend="auto"):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = int(kernel_size), int(stride), int(padding)
        self.binarize_input = bool(binarize_input)
        self.fan_in = self.in_channels * self.kernel_size ** 2
        self._setup(self.out_channels, "affine", backend, bool(folded_bn))

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    binarize_input=self.binarize_input, folded_bn=self.folded_bn)

    def ones_kernels(self):
        """{0,1} weights (out, in, k, k) as uint8."""
        k = self.kernel_size
        return self.ones_rows().reshape(self.out_channels, self.in_channels, k, k)

    def forward(self, x, training=False):
        x = np.asarray(x, np.float32)
        z_prime, q, ops = dispatch.conv(self, sign(x) if self.binarize_input else x, self.backend)
        n, ho, wo, c = z_prime.shape
        z = self.finish(z_prime.reshape(-1, c), q.reshape(-1)).reshape(n, ho, wo, c)
        return self._record(z, ops)
