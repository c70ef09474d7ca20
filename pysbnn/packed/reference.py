"""NumPy references of the bit-packed dense kernels (the validators of
``dense_kernels``), the dequantisation of Eq. 20 and the operation counts.

Products of a +-1 input with packed weights
-------------------------------------------
Activations ``x`` in {-1,+1} are packed as bits ``a = (x >= 0)`` (``bits.py``);
padding bits are 0 in every operand, so they drop out of every formula below.

* BNN, weights ``w`` in {-1,+1} packed as ``(w >= 0)``: each of the K bits
  adds +1 when the bits agree and -1 when they differ, so::

      x . w = K - 2 sum_words popcount(a ^ w)

* SBNN (Sec. 3.5), {0,1} weights ``w01``::

      z' = w01 . x = 2 popcount(w01 & a) - popcount(w01)
      q  = 1 . x   = 2 popcount(a) - K

  and the layer output is ``z = eta z' + xi eta q`` (Eq. 20, corrected).

Binary-operation counts (the paper's convention, Sec. 3.5 / 4.2)
-----------------------------------------------------------------
Counts are *bit* operations of the work a kernel actually does:

* :func:`bops_xnor_dense` -- dense BNN layer: ``2 K`` per output (K XNOR + K
  popcount bit-operations), ``2 B K M`` in all (the paper's ``O_BNN = 2N`` per
  output position). Padding bits and padded rows are not counted.
* :func:`bops_sbnn_wordskip` -- AND + popcount over every bit of every
  *non-zero* weight word visited: ``2 * 64 * nnz_words * B``.
* :func:`bops_sbnn_ones` -- bit-sliced SBNN path: the ones it touches, one
  operation per one and per sample (no XNOR): ``ones * B``
  (the paper's ``O_SBNN = EC N`` per output position).
"""

import numpy as np

from .bits import n_words, popcount_numpy, unpack_batch_sliced, unpack_bits

__all__ = ["xnor_gemm_reference", "sbnn_gemm_reference", "sbnn_sliced_reference",
           "input_dot_ones", "sbnn_dense_output", "bops_xnor_dense",
           "bops_sbnn_wordskip", "bops_sbnn_ones"]


def _check_words(a_bits, w_bits, K):
    a_bits = np.asarray(a_bits, dtype=np.uint64)
    w_bits = np.asarray(w_bits, dtype=np.uint64)
    if a_bits.ndim != 2 or w_bits.ndim != 2 or a_bits.shape[1] != w_bits.shape[1]:
        raise ValueError("expected a_bits (B, Kw) and w_bits (M, Kw), got %s and %s"
                         % (a_bits.shape, w_bits.shape))
    if a_bits.shape[1] != n_words(K):
        raise ValueError("K=%d needs %d words per row, got %d" % (K, n_words(K), a_bits.shape[1]))
    return a_bits, w_bits


def _popcount_rows(op, a_bits, w_bits):
    """``sum_words popcount(op(a[b], w[m]))`` for all pairs, in row chunks."""
    B, Kw = a_bits.shape
    M = w_bits.shape[0]
    out = np.empty((B, M), np.int64)
    chunk = max(1, (1 << 22) // max(1, M * Kw))
    for b0 in range(0, B, chunk):
        pairs = op(a_bits[b0:b0 + chunk, None, :], w_bits[None, :, :])
        out[b0:b0 + chunk] = np.bitwise_count(pairs).sum(axis=-1, dtype=np.int64)
    return out


def xnor_gemm_reference(a_bits, w_bits, K):
    r"""Dense BNN product of packed +-1 rows: ``x @ w.T`` as int32.

    .. math:: z_{bm} = K - 2 \sum_{words} \mathrm{popcount}(a_b \oplus w_m)

    Parameters
    ----------
    a_bits : uint64 (B, Kw) packed activations; w_bits : uint64 (M, Kw) packed
    +-1 weights; K : number of real bits per row (Kw = ceil(K / 64)).

    Returns ``(z, ops)``: int32 (B, M) and ``bops_xnor_dense(B, K, M)``.
    """
    a_bits, w_bits = _check_words(a_bits, w_bits, K)
    z = K - 2 * _popcount_rows(np.bitwise_xor, a_bits, w_bits)
    return z.astype(np.int32), bops_xnor_dense(a_bits.shape[0], K, w_bits.shape[0])


def sbnn_gemm_reference(a_bits, w01_bits, K):
    r"""SBNN product with packed {0,1} weights and +-1 inputs (Sec. 3.5).

    .. math:: z'_{bm} = w^{01}_m \cdot x_b
              = 2 \sum_{words} \mathrm{popcount}(w^{01}_m \,\&\, a_b) - \mathrm{popcount}(w^{01}_m)

    Returns ``(z', ops)``: int32 (B, M) and the count of the word-skipping
    kernel, ``bops_sbnn_wordskip(w01_bits, B)`` (all-zero words add 0 here).
    """
    a_bits, w01_bits = _check_words(a_bits, w01_bits, K)
    ones = popcount_numpy(w01_bits).sum(axis=1)
    z = 2 * _popcount_rows(np.bitwise_and, a_bits, w01_bits) - ones[None, :]
    return z.astype(np.int32), bops_sbnn_wordskip(w01_bits, a_bits.shape[0])


def sbnn_sliced_reference(x_sliced, w01_bits, B, K):
    """SBNN product from batch-sliced activations (``bits.pack_batch_sliced``).

    Same ``z'`` as :func:`sbnn_gemm_reference`, computed independently of any
    bit trick: unpack to {0,1}, then ``z' = 2 (b @ w01.T) - popcount(w01)`` in
    float64 (exact: every partial sum is an integer below 2^53).

    Returns ``(z', ops)``: int32 (B, M) and ``bops_sbnn_ones(w01, B)``.
    """
    bits_ = unpack_batch_sliced(np.asarray(x_sliced, dtype=np.uint64), B).astype(np.float64)
    w01 = unpack_bits(np.asarray(w01_bits, dtype=np.uint64), K).astype(np.float64)
    if bits_.shape[1] != K:
        raise ValueError("x_sliced has %d features, expected K=%d" % (bits_.shape[1], K))
    z = 2 * (bits_ @ w01.T) - w01.sum(axis=1)[None, :]
    return np.rint(z).astype(np.int32), bops_sbnn_ones(w01, B)


def input_dot_ones(a_bits, K):
    r"""``q = 1 . x = 2 popcount(a) - K`` for each packed input row (int64, (B,)).

    Computed once per input and shared by every output unit (Sec. 3.5).
    """
    return 2 * popcount_numpy(a_bits).sum(axis=-1) - int(K)


def sbnn_dense_output(z_prime, q, xi, eta):
    r"""Dequantised SBNN layer output, Eq. 20, corrected.

    .. math:: z = \eta z' + \xi \eta q

    Eq. 20, corrected: the paper prints xi z'; see docs/errata.md. With
    ``w = (w01 + xi) eta`` (Eq. 4), ``w . x = eta (w01 . x) + xi eta (1 . x)``.

    Parameters
    ----------
    z_prime : int (B, M) ``w01 . x`` from the packed kernels.
    q : int (B,) ``1 . x`` per input row (:func:`input_dot_ones`).
    xi, eta : the layer's domain scalars (or arrays broadcasting to (M,)).

    Returns float64 (B, M).
    """
    z_prime = np.asarray(z_prime, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    return eta * z_prime + xi * eta * q[..., None]


# ----------------------------------------------------------------------------
# Analytic operation counts (tests compare them with the counts the kernels
# record while they run)

def bops_xnor_dense(B, K, M):
    """Dense BNN layer: ``2 K`` bit-operations per output, ``2 B K M`` in all."""
    return 2 * int(B) * int(K) * int(M)


def bops_sbnn_wordskip(w_bits, B):
    """Word-skipping SBNN kernel: ``2 * 64`` per non-zero weight word and sample."""
    return 2 * 64 * int(np.count_nonzero(np.asarray(w_bits))) * int(B)


def bops_sbnn_ones(w01, B):
    """Bit-sliced SBNN kernel: one operation per one-weight and sample.

    ``w01`` is the {0,1} weight matrix (M, K), unpacked.
    """
    return int(np.count_nonzero(np.asarray(w01))) * int(B)
