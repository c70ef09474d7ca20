r"""SBNN dense product skipping all-zero weight words (the word-skipping kernel).

With {0,1} weights ``w01`` and +-1 inputs packed as bits ``a`` (Sec. 3.5)::

    z' = w01 . x = 2 popcount(w01 & a) - popcount(w01)

Layout (:func:`prepare_wordskip`): CSR of the non-zero words of every row;
each weight word is ANDed with that word of 64 samples at once. With
unstructured sparsity almost every 64-bit word still holds a one down to ~5 %
density, so this kernel mostly shows why skipping words is not enough (see
``sliced`` for the kernel whose work scales with the ones). Executed
operations: ``2 * 64`` per non-zero weight word and sample
(``analysis.bops_wordskip``).
"""

from typing import NamedTuple

import numpy as np

from .. import analysis
from .intrinsics import popcount64, scratch
from .jit import Twins, resolve_backend
from .words import popcount_numpy
from .xnor import as_words, popcount_pairs, prepared

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


class WordSkipWeights(NamedTuple):
    """{0,1} weights for :func:`sbnn_gemm`: the non-zero words of row ``m`` are
    ``words[indptr[m]:indptr[m+1]]`` at word positions ``word_index[...]``."""
    indptr: np.ndarray      # int64 (M + 1,)
    word_index: np.ndarray  # uint32 (nnz,)
    words: np.ndarray       # uint64 (nnz,)
    ones: np.ndarray        # int64 (M,) popcount of each row
    w_bits: np.ndarray      # uint64 (M, Kw)
    K: int


def prepare_wordskip(w01_bits, K):
    """CSR of the non-zero words of packed {0,1} weight rows."""
    w01_bits = as_words(w01_bits, K)
    rows, cols = np.nonzero(w01_bits)
    indptr = np.zeros(w01_bits.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w01_bits.shape[0]), out=indptr[1:])
    return WordSkipWeights(indptr, cols.astype(np.uint32), w01_bits[rows, cols],
                           popcount_numpy(w01_bits).sum(axis=1), w01_bits, int(K))


def sbnn_gemm_reference(a_bits, w01_bits, K):
    r"""NumPy reference: ``z' = 2 \sum_{words} popcount(w01_m & a_b) - popcount(w01_m)``.

    Returns ``(z', ops)``: int32 (B, M) and ``analysis.bops_wordskip(w01_bits, B)``.
    """
    a_bits = as_words(a_bits, K, "packed activations (B, %d)")
    w01_bits = as_words(w01_bits, K)
    ones = popcount_numpy(w01_bits).sum(axis=1)
    z = 2 * popcount_pairs(np.bitwise_and, a_bits, w01_bits) - ones[None, :]
    return z.astype(np.int32), analysis.bops_wordskip(w01_bits, a_bits.shape[0])


def _wordskip_chunk(a3, indptr, word_index, words, ones, out, m0, c):
    """Rows ``m0 .. m0 + 15`` of z' for the 64 samples of chunk ``c``; returns bit-ops.

    ``a3[c, k, u]`` is word ``k`` of sample ``64 c + u`` (zero past B). One
    weight word is ANDed with that word of 64 samples at once: 8 AVX-512
    registers of accumulators, as in the XNOR panels with the batch in place
    of the rows. The 16 rows' sums go through a small tile so that ``out``
    is written a row at a time (a column at a time, with rows 16 KB apart,
    thrashes one L1 set).
    """
    m1 = min(m0 + 16, out.shape[1])
    tile = scratch(16 * 64, np.int64)
    acc = scratch(64, np.int64)
    n = min(64, out.shape[0] - 64 * c)
    ops = 0
    for r in range(m1 - m0):
        for u in range(64):
            acc[u] = 0
        ks = word_index[indptr[m0 + r]:indptr[m0 + r + 1]]     # slices: no index
        ws = words[indptr[m0 + r]:indptr[m0 + r + 1]]          # wrap-around
        for t in range(ks.shape[0]):
            k = ks[t]
            w = ws[t]
            for u in range(64):
                acc[u] += popcount64(a3[c, k, u] & w)
        for u in range(64):
            tile[r * 64 + u] = acc[u]
        ops += 2 * 64 * ks.shape[0] * n
    ones_blk = ones[m0:m1]
    for u in range(n):
        out_b = out[64 * c + u, m0:m1]
        for r in range(m1 - m0):
            out_b[r] = 2 * tile[r * 64 + u] - ones_blk[r]
    return ops


def _wordskip_row(a, indptr, word_index, words, ones, out, m):
    """Row ``m`` of z' sample by sample (``a`` is (B, Kw)), for tiny batches."""
    ks = word_index[indptr[m]:indptr[m + 1]]
    ws = words[indptr[m]:indptr[m + 1]]
    for b in range(a.shape[0]):
        acc = 0
        for t in range(ks.shape[0]):
            acc += popcount64(a[b, ks[t]] & ws[t])
        out[b, m] = 2 * acc - ones[m]
    return 2 * 64 * (indptr[m + 1] - indptr[m]) * a.shape[0]


def _wordskip_serial(a, a3, indptr, word_index, words, ones, out, ops):
    if a3.shape[0] == 0:
        for m in range(ones.shape[0]):
            ops[m] = _wordskip_row(a, indptr, word_index, words, ones, out, m)
    for c in range(a3.shape[0]):           # chunk outside: its words stay in L1
        for blk in range((ones.shape[0] + 15) // 16):
            ops[blk] += _wordskip_chunk(a3, indptr, word_index, words, ones, out, 16 * blk, c)


def _wordskip_parallel(a, a3, indptr, word_index, words, ones, out, ops):
    if a3.shape[0] == 0:
        for m in prange(ones.shape[0]):
            ops[m] = _wordskip_row(a, indptr, word_index, words, ones, out, m)
    for c in range(a3.shape[0]):
        for blk in prange((ones.shape[0] + 15) // 16):
            ops[blk] += _wordskip_chunk(a3, indptr, word_index, words, ones, out, 16 * blk, c)

_TWINS = Twins({"wordskip": _wordskip_serial, "wordskip_par": _wordskip_parallel},
               helpers=(_wordskip_chunk, _wordskip_row))

_PAR_MIN_WORDS = 1 << 19          # B * non-zero weight words
_CHUNK_MIN_BATCH = 4              # from here 64 samples per step beat 1 by 1


def sbnn_gemm(a_bits, w, K=None, *, backend="auto", parallel=None, return_ops=False):
    r"""SBNN layer with {0,1} weights, skipping all-zero weight words.

    .. math:: z'_{bm} = 2 \sum_{w_{mk} \neq 0} \mathrm{popcount}(w_{mk} \,\&\, a_{bk})
              - \mathrm{popcount}(w_m)

    Parameters
    ----------
    a_bits : uint64 (B, Kw) activations from ``words.pack_signs``.
    w : uint64 (M, Kw) packed {0,1} weights (``words.pack_bits``) or
        :class:`WordSkipWeights` (``prepare_wordskip``).
    return_ops : also return the bit-operations executed, ``2 * 64 * nnz_words * B``.

    Returns int32 (B, M) ``z'`` [, ops].
    """
    w = prepared(w, WordSkipWeights, prepare_wordskip, K)
    a_bits = as_words(a_bits, w.K, "packed activations (B, %d)")
    if resolve_backend(backend) == "numpy":
        z, ops = sbnn_gemm_reference(a_bits, w.w_bits, w.K)
        return (z, int(ops)) if return_ops else z
    B = a_bits.shape[0]
    M = w.ones.shape[0]
    z = np.empty((B, M), np.int32)
    counts = np.zeros(M, np.int64)
    if parallel is None:
        parallel = B * w.words.shape[0] >= _PAR_MIN_WORDS
    if B >= _CHUNK_MIN_BATCH:       # batch in the vector lanes, 64 at a time
        n_chunks = (B + 63) // 64
        a3 = np.zeros((n_chunks * 64, a_bits.shape[1]), np.uint64)
        a3[:B] = a_bits
        a3 = np.ascontiguousarray(a3.reshape(n_chunks, 64, -1).transpose(0, 2, 1))
    else:                           # one sample at a time
        a3 = np.zeros((0, a_bits.shape[1], 64), np.uint64)
    _TWINS["wordskip_par" if parallel else "wordskip"](
        a_bits, a3, w.indptr, w.word_index, w.words, w.ones, z, counts)
    return (z, int(counts.sum())) if return_ops else z
