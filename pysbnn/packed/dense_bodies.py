"""Kernel bodies of the packed dense layers, and their lazily jitted twins.

The three kernels of ``dense_kernels`` as plain Python: the XNOR panels
(``_xnor_panel``), the word-skipping AND + popcount (``_wordskip_chunk`` /
``_wordskip_row``) and the batch-sliced carry-save counters (``_add16``,
``_transpose8``, ``_sliced_block``), each with a serial and a parallel driver
(one Python function per variant, as ``cache=True`` requires). ``_kernels()``
compiles the drivers on first use (numba is not imported with this module).
The block sizes below fix the weight layouts built by ``dense_layouts``; they
live here, next to the cached code that is compiled with them, so that
editing them invalidates numba's cache. ``dense_kernels`` validates the
arguments and calls the drivers.
"""

import numpy as np

from .bits import jit_kernel, popcount64, scratch

PANEL = 64          # output rows per weight panel of the XNOR kernel
W = 8               # batch words per step of the sliced kernel (512 samples)
GROUP = 16          # ones per carry-save tree
MB = 64             # output rows converted to integers together
NL_MAX = 16         # bit-sliced counter levels: up to 65535 ones per row
_STATE_WORDS = NL_MAX * W           # counters of one output row
_BLOCK_WORDS = W * NL_MAX * MB      # counters of MB rows (64 KB of stack)

prange = range      # numba.prange in the parallel variants (bits.jit_kernel)


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
# Jitted twins

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

