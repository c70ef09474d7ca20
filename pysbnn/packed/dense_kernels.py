"""Numba kernels for bit-packed dense layers, and their dispatch.

Three products of packed +-1 inputs with packed weights (formulas and
operation counts: ``reference.py``, whose NumPy functions validate these):

* :func:`xnor_gemm` -- dense BNN baseline, ``z = K - 2 popcount(a ^ w)``.
  Weights are re-packed into *panels* of 64 output rows (``prepare_xnor``):
  one activation word is XORed against the same word of 64 rows at once, so
  the inner loop is ``vpbroadcastq`` + 8 x (``vpxorq``, ``vpopcntq``,
  ``vpaddq``) on AVX-512 and the results of a panel land contiguously.
* :func:`sbnn_gemm` -- SBNN with {0,1} weights, ``z' = 2 popcount(w & a) -
  popcount(w)``, skipping all-zero weight words (CSR of non-zero words);
  each weight word is ANDed with 64 samples at once. With unstructured
  sparsity almost every word holds a one down to ~5 % density, so this
  mostly shows why skipping words is not enough.
* :func:`sbnn_gemm_sliced` -- SBNN, batch in the word: activations are
  batch-sliced (``bits.pack_batch_sliced``: one word = one feature of 64
  samples), weights are the list of their ones per output row
  (``prepare_sliced``). For each row, the words of its ones are summed into
  bit-sliced counters (``ones, twos, fours, ...``, one bit per sample) by a
  tree of carry-save adders, 16 ones at a time, 8 words (512 samples, one
  AVX-512 register) per step. At the end 8x8 bit transposes turn the counter
  words of 64 rows into count bytes (a few operations per output). Work
  scales with the number of ones.

Every kernel is a plain Python function; ``_kernels()`` makes the jitted
twins on first use (numba is not imported with this module). With numba
missing or ``NUMBA_DISABLE_JIT=1`` the ``backend="auto"`` dispatch runs the
NumPy reference instead, with identical results; ``backend="numba"`` runs the
kernel code (uncompiled under ``NUMBA_DISABLE_JIT=1``).
"""

from typing import NamedTuple

import numpy as np

from .bits import (jit_kernel, n_words, popcount64, popcount_numpy, resolve_backend,
                   scratch, unpack_bits)
from .reference import sbnn_gemm_reference, sbnn_sliced_reference, xnor_gemm_reference

__all__ = ["XnorWeights", "WordSkipWeights", "SlicedWeights", "prepare_xnor",
           "prepare_wordskip", "prepare_sliced", "xnor_gemm", "sbnn_gemm",
           "sbnn_gemm_sliced", "block_sliced"]

PANEL = 64          # output rows per weight panel of the XNOR kernel
W = 8               # batch words per step of the sliced kernel (512 samples)
GROUP = 16          # ones per carry-save tree
MB = 64             # output rows converted to integers together
NL_MAX = 16         # bit-sliced counter levels: up to 65535 ones per row
_STATE_WORDS = NL_MAX * W           # counters of one output row
_BLOCK_WORDS = W * NL_MAX * MB      # counters of MB rows (64 KB of stack)

prange = range      # numba.prange in the parallel variants (bits.jit_kernel)

# Below about 50 us of work two threads cost more than they save.
_PAR_MIN_XNOR_WORDS = 1 << 20       # B * M * Kw word-operations
_PAR_MIN_SKIP_WORDS = 1 << 19       # B * non-zero weight words
_PAR_MIN_SLICED = 1 << 16           # ones * ceil(B / 512) + B * M / 16
_SKIP_CHUNK_MIN_BATCH = 4           # from here 64 samples per step beat 1 by 1


# ----------------------------------------------------------------------------
# Weight formats, built once at pack time (NumPy only)

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


def _as_words(w_bits, K):
    w_bits = np.ascontiguousarray(w_bits, dtype=np.uint64)
    if w_bits.ndim != 2 or w_bits.shape[1] != n_words(K):
        raise ValueError("expected uint64 (M, %d) words for K=%d, got %s"
                         % (n_words(K), K, w_bits.shape))
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


# ----------------------------------------------------------------------------
# Kernel 1: dense BNN, z = K - 2 popcount(a ^ w)

def _xnor_panel(a, wp, K, out, p):
    """Rows ``64 p ..`` of ``out`` for all samples; returns the bit-ops done."""
    B, Kw = a.shape
    rows = min(PANEL, out.shape[1] - p * PANEL)
    acc = scratch(PANEL, np.int64)               # stack: stays in 8 zmm registers
    for b in range(B):
        for r in range(PANEL):
            acc[r] = 0
        for k in range(Kw):
            x = a[b, k]                          # broadcast to the panel
            for r in range(PANEL):
                acc[r] += popcount64(x ^ wp[p, k, r])
        out_b = out[b, p * PANEL:p * PANEL + rows]  # a slice: contiguous stores
        for r in range(rows):
            out_b[r] = K - 2 * acc[r]
    return 2 * K * rows * B


def _xnor_serial(a, wp, K, out, ops):
    for p in range(wp.shape[0]):
        ops[p] = _xnor_panel(a, wp, K, out, p)


def _xnor_parallel(a, wp, K, out, ops):
    for p in prange(wp.shape[0]):
        ops[p] = _xnor_panel(a, wp, K, out, p)


# ----------------------------------------------------------------------------
# Kernel 2a: SBNN skipping all-zero weight words

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


# ----------------------------------------------------------------------------
# Kernel 2b: SBNN, batch in the word, carry-save counters

def _csa(a, b, c):
    """Carry-save adder on bit-vectors: ``(carry, sum)`` with a+b+c = 2 carry + sum."""
    return (a & b) | (a & c) | (b & c), a ^ b ^ c


def _add16(s, xc, ks, j):
    """Add the 16 words ``xc[ks[u] * W + j]`` (u < 16) to the counters of word ``j``.

    ``xc`` is one block of the batch-sliced activations, flattened
    (``[feature][word]``), and ``ks`` the 16 feature indices of a group of
    ones. ``s[L * W + j]`` holds bit ``L`` of the 64 sample counts of batch
    word ``j``. A Harley-Seal tree of 15 carry-save adders folds the 16
    inputs into the levels 1, 2, 4, 8 and returns the carry of weight 16,
    which the caller adds to the higher levels with a chain of half adders.
    """
    ones = s[j]
    twos = s[W + j]
    fours = s[2 * W + j]
    eights = s[3 * W + j]
    two_a, ones = _csa(ones, xc[ks[0] * W + j], xc[ks[1] * W + j])
    two_b, ones = _csa(ones, xc[ks[2] * W + j], xc[ks[3] * W + j])
    four_a, twos = _csa(twos, two_a, two_b)
    two_a, ones = _csa(ones, xc[ks[4] * W + j], xc[ks[5] * W + j])
    two_b, ones = _csa(ones, xc[ks[6] * W + j], xc[ks[7] * W + j])
    four_b, twos = _csa(twos, two_a, two_b)
    eight_a, fours = _csa(fours, four_a, four_b)
    two_a, ones = _csa(ones, xc[ks[8] * W + j], xc[ks[9] * W + j])
    two_b, ones = _csa(ones, xc[ks[10] * W + j], xc[ks[11] * W + j])
    four_a, twos = _csa(twos, two_a, two_b)
    two_a, ones = _csa(ones, xc[ks[12] * W + j], xc[ks[13] * W + j])
    two_b, ones = _csa(ones, xc[ks[14] * W + j], xc[ks[15] * W + j])
    four_b, twos = _csa(twos, two_a, two_b)
    eight_b, fours = _csa(fours, four_a, four_b)
    carry, eights = _csa(eights, eight_a, eight_b)
    s[j] = ones
    s[W + j] = twos
    s[2 * W + j] = fours
    s[3 * W + j] = eights
    return carry


_BYTE = np.uint64(0xFF)
_EIGHT = np.uint64(8)
_T4, _T2, _T1 = np.uint64(0x0F0F0F0F0F0F0F0F), np.uint64(0x3333333333333333), np.uint64(0x5555555555555555)
_S4, _S2, _S1 = np.uint64(4), np.uint64(2), np.uint64(1)


def _swap(x, y, shift, mask):
    """Exchange the bits ``shift + q`` of ``x`` with the bits ``q`` of ``y`` (``mask``)."""
    t = ((x >> shift) ^ y) & mask
    return x ^ (t << shift), y ^ t


def _transpose8(S, j, l0, r):
    """Transpose the 8x8 bit blocks of the words ``S[j, l0:l0 + 8, r]`` in place.

    Before: bit ``8 p + a`` of word ``l0 + L`` is bit ``L`` of the count of
    sample ``8 p + a``. After: byte ``p`` of word ``l0 + a`` is that count
    (its levels ``l0 .. l0 + 7``). Three rounds of masked swaps, as in
    Hacker's Delight's ``transpose8``, done on the 8 bytes of a word at once.
    """
    x0, x1, x2, x3 = S[j, l0, r], S[j, l0 + 1, r], S[j, l0 + 2, r], S[j, l0 + 3, r]
    x4, x5, x6, x7 = S[j, l0 + 4, r], S[j, l0 + 5, r], S[j, l0 + 6, r], S[j, l0 + 7, r]
    x0, x4 = _swap(x0, x4, _S4, _T4)
    x1, x5 = _swap(x1, x5, _S4, _T4)
    x2, x6 = _swap(x2, x6, _S4, _T4)
    x3, x7 = _swap(x3, x7, _S4, _T4)
    x0, x2 = _swap(x0, x2, _S2, _T2)
    x1, x3 = _swap(x1, x3, _S2, _T2)
    x4, x6 = _swap(x4, x6, _S2, _T2)
    x5, x7 = _swap(x5, x7, _S2, _T2)
    x0, x1 = _swap(x0, x1, _S1, _T1)
    x2, x3 = _swap(x2, x3, _S1, _T1)
    x4, x5 = _swap(x4, x5, _S1, _T1)
    x6, x7 = _swap(x6, x7, _S1, _T1)
    S[j, l0, r], S[j, l0 + 1, r], S[j, l0 + 2, r], S[j, l0 + 3, r] = x0, x1, x2, x3
    S[j, l0 + 4, r], S[j, l0 + 5, r], S[j, l0 + 6, r], S[j, l0 + 7, r] = x4, x5, x6, x7


def _sliced_block(xb, indptr, idx, ones, levels, B, out, m0):
    """z' of output rows ``m0 .. m0 + MB - 1`` for all samples; returns bit-ops.

    For each 512-sample block ``c`` and row ``m``: the counters ``s`` (8 or 16
    levels x 8 batch words, on the stack so they stay in registers) add the
    activation words of the row's ones, 16 per carry-save tree; then they are
    parked in ``S[word, level, row]``. Once the block's rows are done, the
    counts are read out row-vectorised and ``z' = 2 count - ones`` is stored.
    The bit-operations recorded are one per one-weight and valid sample.
    """
    m1 = min(m0 + MB, out.shape[1])
    ones_blk = ones[m0:m1]               # slices: indices from 0 let LLVM use
    nl = 4                               # plain vector loads instead of gathers
    for n in levels[m0:m1]:
        nl = max(nl, n)
    nl = 8 if nl <= 8 else NL_MAX        # two fixed depths: loops fully unrolled
    s = scratch(_STATE_WORDS, np.uint64)                       # one row: [level][word]
    S = scratch(_BLOCK_WORDS, np.uint64).reshape((W, NL_MAX, MB))   # the block
    ops = 0
    for c in range(xb.shape[0]):         # 512 samples at a time
        xc = xb[c]                       # (K + 1) * W words, [feature][word]
        for r in range(m1 - m0):
            m = m0 + r
            for t in range(nl * W):
                s[t] = 0
            # the level loops have constant bounds so that they unroll and
            # the loop over the 8 batch words vectorises (one zmm register)
            if nl == 8:
                for g in range(indptr[m], indptr[m + 1], GROUP):
                    ks = idx[g:g + GROUP]
                    for j in range(W):
                        carry = _add16(s, xc, ks, j)
                        for level in range(4, 8):
                            t = s[level * W + j] & carry
                            s[level * W + j] ^= carry
                            carry = t
            else:
                for g in range(indptr[m], indptr[m + 1], GROUP):
                    ks = idx[g:g + GROUP]
                    for j in range(W):
                        carry = _add16(s, xc, ks, j)
                        for level in range(4, NL_MAX):
                            t = s[level * W + j] & carry
                            s[level * W + j] ^= carry
                            carry = t
            for j in range(W):
                for level in range(nl):
                    S[j, level, r] = s[level * W + j]
            ops += ones_blk[r] * min(64 * W, B - 64 * W * c)
        # bit-sliced counts -> integers: 8x8 bit transposes turn the 8 level
        # words of a row into count bytes, then one shift + mask per output
        n_valid = min(64 * W, B - 64 * W * c)
        for j in range((n_valid + 63) // 64):
            for level0 in range(0, nl, 8):
                for r in range(m1 - m0):             # vectorised over the rows
                    _transpose8(S, j, level0, r)
        for bl in range(n_valid):
            j, a, shift = bl // 64, bl % 8, np.uint64(8 * (bl % 64 // 8))
            out_b = out[64 * W * c + bl, m0:m1]
            if nl == 8:
                for r in range(m1 - m0):
                    v = (S[j, a, r] >> shift) & _BYTE
                    out_b[r] = 2 * np.int64(v) - ones_blk[r]
            else:
                for r in range(m1 - m0):
                    v = ((S[j, a, r] >> shift) & _BYTE) | (((S[j, 8 + a, r] >> shift) & _BYTE) << _EIGHT)
                    out_b[r] = 2 * np.int64(v) - ones_blk[r]
    return ops


def _sliced_serial(xb, indptr, idx, ones, levels, B, out, ops):
    for blk in range(ops.shape[0]):
        ops[blk] = _sliced_block(xb, indptr, idx, ones, levels, B, out, blk * MB)


def _sliced_parallel(xb, indptr, idx, ones, levels, B, out, ops):
    for blk in prange(ops.shape[0]):
        ops[blk] = _sliced_block(xb, indptr, idx, ones, levels, B, out, blk * MB)


# ----------------------------------------------------------------------------
# Jitted twins and dispatch

_HELPERS = (_xnor_panel, _wordskip_chunk, _wordskip_row, _csa, _add16, _swap, _transpose8, _sliced_block)
_KERNELS = {}


def _kernels():
    """The jitted kernels (made once; compiled or loaded from cache on first call)."""
    if not _KERNELS:
        from numba.extending import register_jitable
        for fn in _HELPERS:
            register_jitable(inline="always" if fn in (_csa, _add16, _swap, _transpose8) else "never")(fn)
        _KERNELS.update(
            xnor=jit_kernel(_xnor_serial),
            xnor_par=jit_kernel(_xnor_parallel, parallel=True),
            wordskip=jit_kernel(_wordskip_serial),
            wordskip_par=jit_kernel(_wordskip_parallel, parallel=True),
            sliced=jit_kernel(_sliced_serial),
            sliced_par=jit_kernel(_sliced_parallel, parallel=True),
        )
    return _KERNELS


def _activations(a_bits, K):
    a_bits = np.ascontiguousarray(a_bits, dtype=np.uint64)
    if a_bits.ndim != 2 or a_bits.shape[1] != n_words(K):
        raise ValueError("expected packed activations (B, %d) for K=%d, got %s"
                         % (n_words(K), K, a_bits.shape))
    return a_bits


def _weights(w, kind, prepare, K):
    if isinstance(w, kind):
        if K is not None and int(K) != w.K:
            raise ValueError("K=%d does not match the prepared weights (K=%d)" % (K, w.K))
        return w
    if K is None:
        raise ValueError("K is needed with raw packed weights")
    return prepare(w, K)


def _result(z, ops, return_ops):
    return (z, int(ops)) if return_ops else z


def xnor_gemm(a_bits, w, K=None, *, backend="auto", parallel=None, return_ops=False):
    r"""Dense BNN layer on packed bits: ``z = x @ w.T`` for x, w in {-1,+1}.

    .. math:: z_{bm} = K - 2 \sum_{words} \mathrm{popcount}(a_b \oplus w_m)

    Parameters
    ----------
    a_bits : uint64 (B, Kw) activations from ``bits.pack_signs``.
    w : uint64 (M, Kw) packed weight signs, or :class:`XnorWeights`
        (``prepare_xnor``; prepare once when calling repeatedly).
    K : features per row (needed with raw weights).
    backend : ``"auto"`` | ``"numba"`` | ``"numpy"`` (see ``bits.resolve_backend``).
    parallel : force the threaded (True) or serial (False) kernel; default by size.
    return_ops : also return the bit-operations executed, ``2 B K M``.

    Returns int32 (B, M) [, ops].
    """
    w = _weights(w, XnorWeights, prepare_xnor, K)
    a_bits = _activations(a_bits, w.K)
    if resolve_backend(backend) == "numpy":
        z, ops = xnor_gemm_reference(a_bits, w.w_bits, w.K)
        return _result(z, ops, return_ops)
    B, Kw = a_bits.shape
    M = w.w_bits.shape[0]
    out = np.empty((B, M), np.int32)
    ops = np.zeros(w.panels.shape[0], np.int64)
    if parallel is None:
        parallel = B * M * Kw >= _PAR_MIN_XNOR_WORDS
    _kernels()["xnor_par" if parallel else "xnor"](a_bits, w.panels, w.K, out, ops)
    return _result(out, ops.sum(), return_ops)


def sbnn_gemm(a_bits, w, K=None, *, backend="auto", parallel=None, return_ops=False):
    r"""SBNN layer with {0,1} weights, skipping all-zero weight words.

    .. math:: z'_{bm} = 2 \sum_{w_{mk} \neq 0} \mathrm{popcount}(w_{mk} \,\&\, a_{bk})
              - \mathrm{popcount}(w_m)

    Parameters
    ----------
    a_bits : uint64 (B, Kw) activations from ``bits.pack_signs``.
    w : uint64 (M, Kw) packed {0,1} weights (``bits.pack_bits``) or
        :class:`WordSkipWeights` (``prepare_wordskip``).
    return_ops : also return the bit-operations executed,
        ``2 * 64 * nnz_words * B`` (``reference.bops_sbnn_wordskip``).

    Returns int32 (B, M) ``z'`` [, ops]; dequantise with
    ``reference.sbnn_dense_output``.
    """
    w = _weights(w, WordSkipWeights, prepare_wordskip, K)
    a_bits = _activations(a_bits, w.K)
    if resolve_backend(backend) == "numpy":
        z, ops = sbnn_gemm_reference(a_bits, w.w_bits, w.K)
        return _result(z, ops, return_ops)
    B = a_bits.shape[0]
    M = w.ones.shape[0]
    out = np.empty((B, M), np.int32)
    ops = np.zeros(M, np.int64)
    if parallel is None:
        parallel = B * w.words.shape[0] >= _PAR_MIN_SKIP_WORDS
    if B >= _SKIP_CHUNK_MIN_BATCH:       # batch in the vector lanes, 64 at a time
        n_chunks = (B + 63) // 64
        a3 = np.zeros((n_chunks * 64, a_bits.shape[1]), np.uint64)
        a3[:B] = a_bits
        a3 = np.ascontiguousarray(a3.reshape(n_chunks, 64, -1).transpose(0, 2, 1))
    else:                                # one sample at a time
        a3 = np.zeros((0, a_bits.shape[1], 64), np.uint64)
    _kernels()["wordskip_par" if parallel else "wordskip"](
        a_bits, a3, w.indptr, w.word_index, w.words, w.ones, out, ops)
    return _result(out, ops.sum(), return_ops)


def sbnn_gemm_sliced(x_sliced, w, B, K=None, *, backend="auto", parallel=None,
                     return_ops=False):
    r"""SBNN layer, batch in the word: ``z' = w01 @ x`` from batch-sliced bits.

    For each output row the activation words of its ones (64 samples each)
    are added into bit-sliced counters with carry-save adders, so the work is
    proportional to the number of ones:

    .. math:: z'_{bm} = 2 \sum_{k: w_{mk} = 1} a_{bk} - \mathrm{popcount}(w_m)

    Parameters
    ----------
    x_sliced : uint64 (K, ceil(B / 64)) from ``bits.pack_batch_sliced``.
    w : uint64 (M, Kw) packed {0,1} weights or :class:`SlicedWeights`.
    B : number of samples.
    return_ops : also return the bit-operations executed: one per one-weight
        and sample, ``ones * B`` (``reference.bops_sbnn_ones``).

    Returns int32 (B, M) ``z'`` [, ops].
    """
    w = _weights(w, SlicedWeights, prepare_sliced, K)
    x_sliced = np.asarray(x_sliced, dtype=np.uint64)
    if x_sliced.shape != (w.K, n_words(B)):
        raise ValueError("expected x_sliced (%d, %d), got %s" % (w.K, n_words(B), x_sliced.shape))
    if resolve_backend(backend) == "numpy":
        z, ops = sbnn_sliced_reference(x_sliced, w.w_bits, B, w.K)
        return _result(z, ops, return_ops)
    M = w.ones.shape[0]
    out = np.empty((B, M), np.int32)
    n_blocks = (M + MB - 1) // MB
    ops = np.zeros(n_blocks, np.int64)
    xb = block_sliced(x_sliced, w.K).reshape(-1, (w.K + 1) * W)
    if parallel is None:
        parallel = (w.indices.shape[0] * xb.shape[0] + B * M // 16 >= _PAR_MIN_SLICED
                    and n_blocks > 1)
    _kernels()["sliced_par" if parallel else "sliced"](
        xb, w.indptr, w.indices, w.ones, w.levels, B, out, ops)
    return _result(out, ops.sum(), return_ops)
