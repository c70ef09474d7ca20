r"""SBNN dense product with the batch in the word: ``z' = w01 @ x``.

Activations are batch-sliced (``words.pack_batch_sliced``: one word = one
feature of 64 samples); weights are the list of their ones per output row
(:func:`prepare_sliced`). For each row, the activation words of its ones are
added into bit-sliced counters (``ones, twos, fours, ...``, one bit per
sample) by a tree of carry-save adders, 16 ones at a time, 8 words (512
samples, one AVX-512 register) per step; at the end 8x8 bit transposes turn
the counter words of 64 rows into count bytes (a few operations per output).
Work scales with the number of ones (Sec. 3.5: no XNOR, popcount over the
ones only)::

    z'[b, m] = 2 sum_{k: w01[m, k] = 1} a[b, k] - popcount(w01[m])

Executed operations: one per one-weight and sample (``analysis.bops_sparse``).
"""

from typing import NamedTuple

import numpy as np

from .. import analysis
from .intrinsics import scratch
from .jit import Twins, resolve_backend
from .threshold import HELPERS, fires, shift_round, threshold_bits
from .words import n_words, pack_last_axis, unpack_batch_sliced, unpack_bits
from .xnor import as_words, prepared

W = 8               # batch words per step (512 samples)
GROUP = 16          # ones per carry-save tree
MB = 64             # output rows converted to integers together
NL_MAX = 16         # bit-sliced counter levels: up to 65535 ones per row
_STATE_WORDS = NL_MAX * W           # counters of one output row
_BLOCK_WORDS = W * NL_MAX * MB      # counters of MB rows (64 KB of stack)

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


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


def prepare_sliced(w01_bits, K):
    """Per-row lists of the ones of packed {0,1} weights, padded to groups of 16."""
    w01_bits = as_words(w01_bits, K)
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
# NumPy reference

def sbnn_sliced_reference(x_sliced, w01_bits, B, K):
    """NumPy reference of :func:`sbnn_gemm_sliced`, independent of any bit trick.

    Unpack to {0,1}, then ``z' = 2 (b @ w01.T) - popcount(w01)`` in float64
    (exact: every partial sum is an integer below 2^53).
    Returns ``(z', ops)``: int32 (B, M) and ``analysis.bops_sparse(w01, B)``.
    """
    bits_ = unpack_batch_sliced(np.asarray(x_sliced, dtype=np.uint64), B).astype(np.float64)
    w01 = unpack_bits(np.asarray(w01_bits, dtype=np.uint64), K).astype(np.float64)
    if bits_.shape[1] != K:
        raise ValueError("x_sliced has %d features, expected K=%d" % (bits_.shape[1], K))
    z = 2 * (bits_ @ w01.T) - w01.sum(axis=1)[None, :]
    return np.rint(z).astype(np.int32), analysis.bops_sparse(w01, B, binary=True)


# ----------------------------------------------------------------------------
# Kernel

def _csa(a, b, c):
    """Carry-save adder on bit-vectors: ``(carry, sum)`` with a+b+c = 2 carry + sum."""
    return (a & b) | (a & c) | (b & c), a ^ b ^ c


def _add4(ones, twos, xc, ks, u, j):
    """Add the words ``xc[ks[u + i] * W + j]`` (i < 4) to the levels ``ones, twos``:
    three carry-save adders; returns ``(carry of weight 4, ones, twos)``."""
    two_a, ones = _csa(ones, xc[ks[u] * W + j], xc[ks[u + 1] * W + j])
    two_b, ones = _csa(ones, xc[ks[u + 2] * W + j], xc[ks[u + 3] * W + j])
    four, twos = _csa(twos, two_a, two_b)
    return four, ones, twos


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
    four_a, ones, twos = _add4(ones, twos, xc, ks, 0, j)
    four_b, ones, twos = _add4(ones, twos, xc, ks, 4, j)
    eight_a, fours = _csa(fours, four_a, four_b)
    four_a, ones, twos = _add4(ones, twos, xc, ks, 8, j)
    four_b, ones, twos = _add4(ones, twos, xc, ks, 12, j)
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


def _depth(levels, m0, m1):
    """Counter levels of rows ``m0 .. m1``: 8 or 16 (two fixed depths: loops unroll)."""
    nl = 4
    for n in levels[m0:m1]:
        nl = max(nl, n)
    return 8 if nl <= 8 else NL_MAX


def _count_block(xc, indptr, idx, m0, m1, nl, n_valid, S):
    """Bit-sliced counts of rows ``m0 .. m1`` over one 512-sample block, as bytes.

    For each row the counters ``s`` (8 or 16 levels x 8 batch words, on the
    stack so they stay in registers) add the activation words of the row's
    ones, 16 per carry-save tree; they are parked in ``S[word, level, row]``.
    Then 8x8 bit transposes (vectorised over the rows) leave the count of
    sample ``64 j + 8 p + a`` in byte ``p`` of ``S[j, a, r]`` (levels 0-7)
    and of ``S[j, 8 + a, r]`` (levels 8-15).
    """
    s = scratch(_STATE_WORDS, np.uint64)                       # one row: [level][word]
    for r in range(m1 - m0):
        m = m0 + r
        for t in range(nl * W):
            s[t] = 0
        # the level loops have constant bounds so that they unroll and
        # the loop over the 8 batch words vectorises
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
    for j in range((n_valid + 63) // 64):
        for level0 in range(0, nl, 8):
            for r in range(m1 - m0):             # vectorised over the rows
                _transpose8(S, j, level0, r)


def _count(S, j, a, shift, r, nl):
    """The count of sample ``64 j + 8 (shift / 8) + a`` of row ``r`` (after :func:`_count_block`)."""
    v = (S[j, a, r] >> shift) & _BYTE
    if nl > 8:
        v |= ((S[j, 8 + a, r] >> shift) & _BYTE) << _EIGHT
    return np.int64(v)


def _sliced_block(xb, indptr, idx, ones, levels, B, out, m0):
    """z' (B, M) of output rows ``m0 .. m0 + MB - 1`` for all samples; returns bit-ops
    (one per one-weight and valid sample)."""
    m1 = min(m0 + MB, out.shape[1])
    ones_blk = ones[m0:m1]               # slices: indices from 0 let LLVM use
    nl = _depth(levels, m0, m1)          # plain vector loads instead of gathers
    S = scratch(_BLOCK_WORDS, np.uint64).reshape((W, NL_MAX, MB))
    ops = 0
    for c in range(xb.shape[0]):         # 512 samples at a time
        n_valid = min(64 * W, B - 64 * W * c)
        _count_block(xb[c], indptr, idx, m0, m1, nl, n_valid, S)
        for r in range(m1 - m0):
            ops += ones_blk[r] * n_valid
        for bl in range(n_valid):        # one shift + mask per output, vectorised over rows
            j, a, shift = bl // 64, bl % 8, np.uint64(8 * (bl % 64 // 8))
            out_b = out[64 * W * c + bl, m0:m1]
            for r in range(m1 - m0):
                out_b[r] = 2 * _count(S, j, a, shift, r, nl) - ones_blk[r]
    return ops


def _sliced_bits_block(xb, indptr, idx, ones, levels, B, T, d, F, t, bits, ones_b, m0):
    """The threshold bits (``kernels.threshold.fires``) of rows ``m0 .. m0 + MB - 1``,
    batch-sliced into ``bits`` (M, n_words(B)); each sample's ones among these rows
    into ``ones_b`` (B,). Returns the bit-ops, as :func:`_sliced_block`."""
    m1 = min(m0 + MB, bits.shape[0])
    ones_blk, T_blk, d_blk = ones[m0:m1], T[m0:m1], d[m0:m1]
    nl = _depth(levels, m0, m1)
    S = scratch(_BLOCK_WORDS, np.uint64).reshape((W, NL_MAX, MB))
    acc = scratch(MB, np.uint64)
    ops = 0
    for c in range(xb.shape[0]):
        n_valid = min(64 * W, B - 64 * W * c)
        _count_block(xb[c], indptr, idx, m0, m1, nl, n_valid, S)
        for r in range(m1 - m0):
            ops += ones_blk[r] * n_valid
        for j in range((n_valid + 63) // 64):
            for r in range(MB):
                acc[r] = 0
            for i in range(min(64, n_valid - 64 * j)):
                a, shift, b = i % 8, np.uint64(8 * (i // 8)), 64 * (W * c + j) + i
                tb, n = t[b], 0
                for r in range(m1 - m0):             # vectorised over the rows
                    bit = fires(2 * _count(S, j, a, shift, r, nl) - ones_blk[r], tb, T_blk[r], d_blk[r], F)
                    acc[r] |= np.uint64(bit) << np.uint64(i)
                    n += bit
                ones_b[b] = n
            for r in range(m1 - m0):
                bits[m0 + r, W * c + j] = acc[r]
    return ops


def _sliced_serial(xb, indptr, idx, ones, levels, B, out, ops):
    for blk in range(ops.shape[0]):
        ops[blk] = _sliced_block(xb, indptr, idx, ones, levels, B, out, blk * MB)


def _sliced_parallel(xb, indptr, idx, ones, levels, B, out, ops):
    for blk in prange(ops.shape[0]):
        ops[blk] = _sliced_block(xb, indptr, idx, ones, levels, B, out, blk * MB)


def _bits_serial(xb, indptr, idx, ones, levels, B, T, d, F, t, bits, ones_part, ops):
    for blk in range(ops.shape[0]):
        ops[blk] = _sliced_bits_block(xb, indptr, idx, ones, levels, B, T, d, F, t, bits,
                                      ones_part[blk], blk * MB)


def _bits_parallel(xb, indptr, idx, ones, levels, B, T, d, F, t, bits, ones_part, ops):
    for blk in prange(ops.shape[0]):
        ops[blk] = _sliced_bits_block(xb, indptr, idx, ones, levels, B, T, d, F, t, bits,
                                      ones_part[blk], blk * MB)


_TWINS = Twins({"sliced": _sliced_serial, "sliced_par": _sliced_parallel,
                "bits": _bits_serial, "bits_par": _bits_parallel},
               helpers=HELPERS + (_csa, _add4, _add16, _swap, _transpose8, _depth, _count_block, _count,
                                  _sliced_block, _sliced_bits_block),
               inline=(fires, _csa, _add4, _add16, _swap, _transpose8, _count))

_PAR_MIN_WORK = 1 << 16           # ones * ceil(B / 512) + B * M / 16


def sbnn_gemm_sliced(x_sliced, w, B, K=None, *, backend="auto", parallel=None,
                     return_ops=False):
    r"""SBNN layer, batch in the word: ``z' = w01 @ x`` from batch-sliced bits.

    .. math:: z'_{bm} = 2 \sum_{k: w_{mk} = 1} a_{bk} - \mathrm{popcount}(w_m)

    Parameters
    ----------
    x_sliced : uint64 (K, ceil(B / 64)) from ``words.pack_batch_sliced``.
    w : uint64 (M, Kw) packed {0,1} weights or :class:`SlicedWeights`.
    B : number of samples.
    backend : ``"auto"`` | ``"numba"`` | ``"numpy"``.
    return_ops : also return the bit-operations executed: one per one-weight
        and sample, ``ones * B``.

    Returns int32 (B, M) ``z'`` [, ops].
    """
    w = prepared(w, SlicedWeights, prepare_sliced, K)
    x_sliced = np.asarray(x_sliced, dtype=np.uint64)
    if x_sliced.shape != (w.K, n_words(B)):
        raise ValueError("expected x_sliced (%d, %d), got %s" % (w.K, n_words(B), x_sliced.shape))
    if resolve_backend(backend) == "numpy":
        z, ops = sbnn_sliced_reference(x_sliced, w.w_bits, B, w.K)
        return (z, int(ops)) if return_ops else z
    M = w.ones.shape[0]
    z = np.empty((B, M), np.int32)
    n_blocks = (M + MB - 1) // MB
    counts = np.zeros(n_blocks, np.int64)
    xb = block_sliced(x_sliced, w.K).reshape(-1, (w.K + 1) * W)
    if parallel is None:
        parallel = w.indices.shape[0] * xb.shape[0] + B * M // 16 >= _PAR_MIN_WORK and n_blocks > 1
    _TWINS["sliced_par" if parallel else "sliced"](xb, w.indptr, w.indices, w.ones, w.levels, B, z, counts)
    return (z, int(counts.sum())) if return_ops else z


def sbnn_sliced_bits(x_sliced, w, B, th, q, K=None, *, backend="auto", parallel=None, return_ops=False):
    r"""An SBNN layer with its BatchNorm + sign folded in, batch-sliced bits in and out.

    The bits of ``dir * u_F >= T`` (:mod:`pysbnn.kernels.threshold`) for
    ``z' = w01 @ x`` (:func:`sbnn_gemm_sliced`) and ``q`` (B,), tested as the
    counts are read out: no integer matrix is stored and no bits repacked.

    Returns ``(bits, ones[, ops])``: uint64 (M, n_words(B)) batch-sliced bits,
    int64 (B,) ones per sample, and the bit-operations of :func:`sbnn_gemm_sliced`.
    """
    w = prepared(w, SlicedWeights, prepare_sliced, K)
    x_sliced = np.asarray(x_sliced, dtype=np.uint64)
    if x_sliced.shape != (w.K, n_words(B)):
        raise ValueError("expected x_sliced (%d, %d), got %s" % (w.K, n_words(B), x_sliced.shape))
    M = w.ones.shape[0]
    if resolve_backend(backend) == "numpy":
        z, ops = sbnn_sliced_reference(x_sliced, w.w_bits, B, w.K)
        fired = threshold_bits(z, q, th)
        out = (pack_last_axis(fired.T), fired.sum(axis=1).astype(np.int64))
        return out + (int(ops),) if return_ops else out
    n_blocks = (M + MB - 1) // MB
    counts = np.zeros(n_blocks, np.int64)
    xb = block_sliced(x_sliced, w.K).reshape(-1, (w.K + 1) * W)
    t = shift_round(np.int64(th.XI) * np.asarray(q, np.int64), th.G - th.F)      # t_b, as sample_offset
    bits = np.empty((M, n_words(B)), np.uint64)
    ones_part = np.empty((n_blocks, B), np.int64)
    if parallel is None:
        parallel = w.indices.shape[0] * xb.shape[0] + B * M // 16 >= _PAR_MIN_WORK and n_blocks > 1
    _TWINS["bits_par" if parallel else "bits"](xb, w.indptr, w.indices, w.ones, w.levels, B, th.T, th.dir,
                                               th.F, t, bits, ones_part, counts)
    out = (bits, ones_part.sum(axis=0))
    return out + (int(counts.sum()),) if return_ops else out
