"""Packed binary layers: {0,1} weights stored as bits, outputs by Eq. 20.

A packed layer replaces a trained ``BinaryDense`` / ``BinaryConv2d`` at
inference. It keeps ``w01 = (w~ >= 0)`` packed into uint64 words and the
layer's (xi, eta) (Eq. 4), and computes

    z = eta z' + xi eta q,   z' = w01 . x,   q = 1 . x       (Eq. 20, corrected)

with popcount kernels when the input is binarized. When the layer is followed
by BatchNorm and another binary layer, BatchNorm + sign fold into one
threshold per channel on ``u = z' + xi q`` (z', q integers), so only bits
travel to the next layer (:class:`Bits`).

Every forward records the binary operations it executed in ``last_ops`` and
the shape of its output in ``last_output_shape``; ``backend`` (set by
``pack(model, backend=)``) chooses the kernels.
"""

import numpy as np

from ..functional import conv2d_forward
from ..kernels import words
from ..kernels.jit import check_backend
from ..layers import Layer
from ..levels import sbnn_output
from ..quantizers import sign
from . import dispatch


class Bits:
    """Packed +-1 activations travelling between folded layers.

    ``words``: uint64 (n, n_words(K)), bit ``(x >= 0)`` of feature k at bit
    ``k % 64`` of word ``k // 64``; ``K``: features per row.
    """

    def __init__(self, words, K):
        self.words, self.K = words, int(K)

    def __len__(self):
        return len(self.words)

    def signs(self, dtype=np.float32):
        """The +-1 values, (n, K)."""
        return words.unpack_signs(self.words, self.K, dtype)


def fold_threshold(xi, eta, bn):
    """BatchNorm + sign after ``z = eta (z' + xi q)`` as a per-channel test on ``u = z' + xi q``.

    ``sign(BN(z)) = +1`` iff ``A (u - T) >= 0`` ... written without division:
    with ``s = gamma / sqrt(var + eps)``, ``A = s eta`` and ``C = s mean - beta``,
    the bit is ``u >= C/A`` when ``A > 0``, ``u <= C/A`` when ``A < 0`` and the
    constant ``C <= 0`` when ``A = 0``.

    Returns ``(threshold, direction)``: float64 (c,) and int8 (c,) in {+1, -1, 0};
    for direction 0 the threshold holds 1.0 if the bit is constantly on else -1.0.
    """
    s = bn.params["gamma"].astype(np.float64) / np.sqrt(bn.buffers["running_var"].astype(np.float64) + bn.eps)
    A = s * eta
    C = s * bn.buffers["running_mean"].astype(np.float64) - bn.params["beta"].astype(np.float64)
    direction = np.sign(A).astype(np.int8)
    safe = np.where(A == 0, 1.0, A)
    threshold = np.where(A == 0, np.where(C <= 0, 1.0, -1.0), C / safe)
    return threshold, direction


def apply_threshold(u, threshold, direction):
    """Bits of ``sign(BN(z))`` from ``u`` (n, c) float64, see :func:`fold_threshold`."""
    return np.where(direction > 0, u >= threshold,
                    np.where(direction < 0, u <= threshold, threshold > 0))


class _PackedBinary(Layer):
    """Shared: (xi, eta), the packed ones, optional folded threshold.

    The ones are stored either as a bitmap (``w01``: uint64 words per output
    row) or, when that is smaller, as their column indices (``w01_cols``:
    uint16, ``w01_rowptr``: int32 CSR row pointers): a layer with few ones
    then costs ~16 bits per one instead of 1 bit per weight. ``words`` is
    always the bitmap the kernels use (rebuilt once from CSR).
    """

    def _init_storage(self, rows, storage, n_ones):
        if storage not in ("bitmap", "csr"):
            raise ValueError(f"storage must be 'bitmap' or 'csr', got {storage!r}")
        self.storage, self.n_ones = storage, int(n_ones)
        if storage == "bitmap":
            self.buffers["w01"] = np.zeros((rows, words.n_words(self.fan_in)), np.uint64)
        else:
            self.buffers["w01_cols"] = np.zeros(self.n_ones, np.uint16)
            self.buffers["w01_rowptr"] = np.zeros(rows + 1, np.int32)
        self.buffers["xi_eta"] = np.zeros(2, np.float64)

    @staticmethod
    def choose_storage(w01_rows):
        """``("csr", ones)`` when column indices take fewer bytes than the bitmap."""
        rows, fan_in = w01_rows.shape
        ones = int(np.count_nonzero(w01_rows))
        csr = 2 * ones + 4 * (rows + 1)
        bitmap = 8 * rows * words.n_words(fan_in)
        return ("csr" if fan_in < (1 << 16) and csr < bitmap else "bitmap"), ones

    def _store(self, w01_rows, xi, eta):
        if self.storage == "bitmap":
            self.buffers["w01"][...] = words.pack_bits(w01_rows)
        else:
            r, c = np.nonzero(w01_rows)
            self.buffers["w01_cols"][...] = c
            self.buffers["w01_rowptr"][1:] = np.cumsum(np.bincount(r, minlength=len(w01_rows)))
        self.buffers["xi_eta"][...] = [xi, eta]

    @property
    def words(self):
        """The ones as a bitmap, uint64 (rows, n_words(fan_in))."""
        if self.storage == "bitmap":
            return self.buffers["w01"]
        if getattr(self, "_words", None) is None:
            ptr = self.buffers["w01_rowptr"]
            rows = np.zeros((len(ptr) - 1, self.fan_in), bool)
            rows[np.repeat(np.arange(len(ptr) - 1), np.diff(ptr)), self.buffers["w01_cols"]] = True
            self._words = words.pack_bits(rows)
        return self._words

    @property
    def xi(self):
        return float(self.buffers["xi_eta"][0])

    @property
    def eta(self):
        return float(self.buffers["xi_eta"][1])

    def set_threshold(self, threshold, direction):
        self.fold = True
        self.buffers["threshold"] = np.asarray(threshold, np.float64)
        self.buffers["direction"] = np.asarray(direction, np.int8)

    def ones_rows(self):
        """{0,1} weights as uint8 rows (out, fan_in)."""
        return words.unpack_bits(self.words, self.fan_in)

    def _storage_config(self):
        return dict(storage=self.storage, n_ones=self.n_ones)

    def dequantize(self, z_prime, q):
        """The layer's output from ``z' = w01 . x`` (int (P, M)) and ``q = 1 . x`` (int (P,)).

        Eq. 20 (:func:`pysbnn.levels.sbnn_output`) in float32, or, with a
        folded BatchNorm, the bits of ``sign(BN(z))`` (:class:`Bits`).
        """
        if self.fold:
            u = z_prime.astype(np.float64) + self.xi * q[:, None]
            bits = apply_threshold(u, self.buffers["threshold"], self.buffers["direction"])
            return Bits(words.pack_bits(bits), bits.shape[1])
        return sbnn_output(z_prime, q[:, None], self.xi, self.eta).astype(np.float32)

    def _record(self, out, ops):
        self.last_ops = int(ops)
        self.last_output_shape = (len(out), out.K) if isinstance(out, Bits) else out.shape
        return out


class PackedBinaryDense(_PackedBinary):
    """Inference-only dense layer with bit-packed {0,1} weights.

    Input: float (n, in_features), or :class:`Bits` from a folded layer.
    Output: float32 (n, out_features), or :class:`Bits` when a threshold is folded in.
    """

    def __init__(self, in_features, out_features, binarize_input=True, fold=False,
                 storage="bitmap", n_ones=0, backend="auto"):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.fan_in = self.in_features
        self.binarize_input, self.fold = bool(binarize_input), bool(fold)
        self._init_storage(self.out_features, storage, n_ones)
        if fold:
            self.set_threshold(np.zeros(out_features), np.zeros(out_features, np.int8))
        self.last_ops, self.last_output_shape, self.backend = 0, None, check_backend(backend)

    @classmethod
    def from_layer(cls, layer):
        storage, ones = cls.choose_storage(layer.ones())
        packed = cls(layer.in_features, layer.out_features, layer.binarize_input,
                     storage=storage, n_ones=ones)
        packed._store(layer.ones(), *layer.xi_eta())
        return packed

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    binarize_input=self.binarize_input, fold=self.fold, **self._storage_config())

    def forward(self, x, training=False):
        if not self.binarize_input:
            x = np.asarray(x, np.float64)                   # real input: float products
            if getattr(self, "_w01_float", None) is None:
                self._w01_float = self.ones_rows().T.astype(np.float64)
            return self._record(self.dequantize(x @ self._w01_float, x.sum(axis=1)), 0)
        x = x.words if isinstance(x, Bits) else np.asarray(x, np.float32)
        z_prime, q, ops = dispatch.sbnn_dense(self, x, self.backend)
        return self._record(self.dequantize(z_prime, q), ops)


class PackedBinaryConv2d(_PackedBinary):
    """Inference-only binary convolution (NHWC) with bit-packed {0,1} kernels.

    3x3 kernels with a binarized input run on the SBNN conv kernels (K0
    kernels skipped, K1 kernels as shifted copies); other shapes fall back to
    an exact integer im2col product.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 binarize_input=True, storage="bitmap", n_ones=0, backend="auto"):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = int(kernel_size), int(stride), int(padding)
        self.binarize_input, self.fold = bool(binarize_input), False
        self.fan_in = self.in_channels * self.kernel_size ** 2
        self._init_storage(self.out_channels, storage, n_ones)
        self.last_ops, self.last_output_shape, self.backend = 0, None, check_backend(backend)

    @classmethod
    def from_layer(cls, layer):
        rows = layer.ones().reshape(layer.out_channels, -1)
        storage, ones = cls.choose_storage(rows)
        packed = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                     layer.padding, layer.binarize_input, storage=storage, n_ones=ones)
        packed._store(rows, *layer.xi_eta())
        return packed

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    binarize_input=self.binarize_input, **self._storage_config())

    def ones_kernels(self):
        """{0,1} weights (out, in, k, k) as uint8."""
        k = self.kernel_size
        return self.ones_rows().reshape(self.out_channels, self.in_channels, k, k)

    def forward(self, x, training=False):
        x = np.asarray(x, np.float32)
        if self.binarize_input:
            z_prime, q, ops = dispatch.sbnn_conv(self, sign(x), self.backend)
        else:
            w01 = self.ones_kernels()
            z_prime, _ = conv2d_forward(x.astype(np.float64), w01.astype(np.float64), None,
                                        self.stride, self.padding)
            ones = np.ones((1, self.in_channels, self.kernel_size, self.kernel_size))
            q, _ = conv2d_forward(x.astype(np.float64), ones, None, self.stride, self.padding)
            ops = 0
        n, ho, wo, c = z_prime.shape
        z = self.dequantize(z_prime.reshape(-1, c), q.reshape(-1)).reshape(n, ho, wo, c)
        return self._record(z, ops)
