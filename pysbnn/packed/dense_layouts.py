"""Weight layouts of the packed dense kernels, built once at pack time (NumPy only).

``XnorWeights`` / ``prepare_xnor`` (panels of 64 rows for ``xnor_gemm``),
``WordSkipWeights`` / ``prepare_wordskip`` (CSR of non-zero words for
``sbnn_gemm``), ``SlicedWeights`` / ``prepare_sliced`` (lists of ones for
``sbnn_gemm_sliced``) and ``block_sliced``, the kernel layout of batch-sliced
activations. The block sizes come from ``dense_bodies`` (the kernels they
must match); everything is re-exported by ``dense_kernels``.
"""

from typing import NamedTuple

import numpy as np

from .bits import n_words, popcount_numpy, unpack_bits
from .dense_bodies import GROUP, PANEL, W

__all__ = ["XnorWeights", "WordSkipWeights", "SlicedWeights", "prepare_xnor",
           "prepare_wordskip", "prepare_sliced", "block_sliced"]


# ----------------------------------------------------------------------------
# Weight formats

class XnorWeights(NamedTuple):
    """+-1 weights for :func:`xnor_gemm`: ``panels[p, k, r]`` is word ``k`` of
    output row ``64 p + r`` (rows past M are zero and never stored)."""
    panels: np.ndarray      # uint64 (ceil(M / 64), Kw, 64)
    w_bits: np.ndarray      # uint64 (M, Kw), for the NumPy backend
    K: int


class WordSkipWeights(NamedTuple):
    """{0,1} weights for :func:`sbnn_gemm`: the non-zero words of row ``m`` are
    ``words[indptr[m]:indptr[m+1]]`` at word positions ``word_index[...]``."""
    indptr: np.ndarray      # int64 (M + 1,)
    word_index: np.ndarray  # uint32 (nnz,)
    words: np.ndarray       # uint64 (nnz,)
    ones: np.ndarray        # int64 (M,) popcount of each row
    w_bits: np.ndarray      # uint64 (M, Kw)
    K: int


class SlicedWeights(NamedTuple):
    """{0,1} weights for :func:`sbnn_gemm_sliced`: the input indices of the ones
    of row ``m`` are ``indices[indptr[m]:indptr[m+1]]``, padded to a multiple
    of 16 with index ``K`` (an all-zero activation row)."""
    indptr: np.ndarray      # int64 (M + 1,)
    indices: np.ndarray     # uint32 (nnz padded,)
    ones: np.ndarray        # int64 (M,) number of ones per row
    levels: np.ndarray      # int64 (M,) bits needed to count them
    w_bits: np.ndarray      # uint64 (M, Kw)
    K: int


def _as_words(w_bits, K, what="uint64 (M, %d) words"):
    """``w_bits`` as contiguous uint64 rows of ``n_words(K)`` words, or a ValueError."""
    w_bits = np.ascontiguousarray(w_bits, dtype=np.uint64)
    if w_bits.ndim != 2 or w_bits.shape[1] != n_words(K):
        raise ValueError("expected %s for K=%d, got %s" % (what % n_words(K), K, w_bits.shape))
    return w_bits


def prepare_xnor(w_bits, K):
    """Re-pack +-1 weight rows ``(M, Kw)`` into panels of 64 rows."""
    w_bits = _as_words(w_bits, K)
    M, Kw = w_bits.shape
    n_panels = (M + PANEL - 1) // PANEL
    padded = np.zeros((n_panels * PANEL, Kw), np.uint64)
    padded[:M] = w_bits
    panels = np.ascontiguousarray(padded.reshape(n_panels, PANEL, Kw).transpose(0, 2, 1))
    return XnorWeights(panels, w_bits, int(K))


def prepare_wordskip(w01_bits, K):
    """CSR of the non-zero words of packed {0,1} weight rows."""
    w01_bits = _as_words(w01_bits, K)
    rows, cols = np.nonzero(w01_bits)
    indptr = np.zeros(w01_bits.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w01_bits.shape[0]), out=indptr[1:])
    return WordSkipWeights(indptr, cols.astype(np.uint32), w01_bits[rows, cols],
                           popcount_numpy(w01_bits).sum(axis=1), w01_bits, int(K))


def prepare_sliced(w01_bits, K):
    """Per-row lists of the ones of packed {0,1} weights, padded to groups of 16."""
    w01_bits = _as_words(w01_bits, K)
    M = w01_bits.shape[0]
    if K >= 1 << 16:
        raise ValueError("prepare_sliced supports K < 65536 (16 counter levels)")
    rows, cols = np.nonzero(unpack_bits(w01_bits, K))
    ones = np.bincount(rows, minlength=M).astype(np.int64)
    padded = (ones + GROUP - 1) // GROUP * GROUP
    indptr = np.zeros(M + 1, np.int64)
    np.cumsum(padded, out=indptr[1:])
    indices = np.full(indptr[-1], K, np.uint32)
    rank = np.arange(rows.size) - np.repeat(np.cumsum(ones) - ones, ones)
    indices[indptr[rows] + rank] = cols
    levels = np.array([int(n).bit_length() for n in ones], np.int64)
    return SlicedWeights(indptr, indices, ones, levels, w01_bits, int(K))


def block_sliced(x_sliced, K):
    """Kernel layout of batch-sliced activations: ``(ceil(Bw / 8), K + 1, 8)``.

    Block ``c`` holds batch words ``8c .. 8c + 7`` (samples ``512 c ..``) of
    every feature, plus an all-zero row ``K`` that the padding indices read.
    """
    x_sliced = np.asarray(x_sliced, dtype=np.uint64)
    Kx, Bw = x_sliced.shape
    if Kx != K:
        raise ValueError("x_sliced has %d features, expected K=%d" % (Kx, K))
    n_blocks = (Bw + W - 1) // W
    xb = np.zeros((n_blocks, K + 1, W), np.uint64)
    for c in range(n_blocks):
        width = min(W, Bw - c * W)
        xb[c, :K, :width] = x_sliced[:, c * W:c * W + width]
    return xb

