"""Golomb / Rice coding of the gaps between the ones of a flattened {0,1} array.

Gaps. With ones at positions ``x_0 < x_1 < ... < x_{n-1}`` of a flattened
array of N bits, gap ``g_i = x_i - x_{i-1} - 1`` (with ``x_{-1} = -1``) is the
number of zeros before one ``i``; it *starts* at ``s_i = x_{i-1} + 1``.

Codeword of a gap for divisor ``m >= 1``: ``q = g // m`` in unary (q zeros,
then a one), then ``r = g % m`` in truncated binary with ``b = ceil(log2 m)``,
``t = 2**b - m``, ``h = 2**(b-1)``: ``r < t`` is written in ``b - 1`` bits,
``t <= r < h`` in ``b`` bits, ``r >= h`` as ``r + t`` in ``b`` bits. Length
``q + 1 + b - [r < t]``. For ``m = 2**k`` (Rice), ``t = 0`` and the remainder
is plain ``k`` bits; ``m = 1`` writes the gap in unary.

End of stream. The codewords of the n gaps are concatenated and nothing else
is written: the stream ends after the codeword of the last one, i.e. exactly at
``n_bits``, and the zeros after the last one are implied by N. A decoder stops
when its read position reaches ``n_bits``; a codeword crossing ``n_bits``, a
one at position ``>= N``, or bits left once position N is reached is an error.

Per-row parameters (``row_m``). The array is seen as M rows of K; the gap that
starts at ``s`` uses ``row_m[s // K]``. A decoder always knows ``s`` so no
marker is needed, and gaps still run across row boundaries. One row
(``K = N``) is the per-layer code.
"""
import numpy as np

from ..kernels.jit import Twins
from .bitio import U64, read_bits, read_unary, write_fields

RICE_KS = np.arange(21)
ERRORS = {1: "stream truncated inside a codeword", 2: "gap runs past the end of the array",
          3: "bits remain after the last position of the array"}


def bit_length(x):
    """Elementwise ``int.bit_length`` of non-negative int arrays (< 2**53)."""
    return np.frexp(np.asarray(x, np.float64))[1].astype(np.int64)


def ones_and_gaps(bits):
    """Positions (n,) of the ones of a flattened array, their gaps and gap starts."""
    x = np.flatnonzero(np.asarray(bits).reshape(-1))
    starts = np.concatenate(([0], x[:-1] + 1)).astype(np.int64) if x.size else x.astype(np.int64)
    return x, x - starts, starts


def _params(m):
    """(b, t, h) of the truncated-binary remainder for divisor(s) m."""
    m = np.asarray(m, np.int64)
    b = bit_length(m - 1)
    return b, (np.int64(1) << b) - m, (np.int64(1) << b) >> 1


def golomb_lengths(gaps, m):
    """Bits of each gap's codeword, (n,), for divisor m (scalar or (n,))."""
    gaps = np.asarray(gaps, np.int64)
    b, t, _ = _params(m)
    return gaps // m + 1 + b - ((gaps % m) < t)


def golomb_fields(gaps, m):
    """Writer fields of each codeword: (values, widths), both (n, 3).

    Columns: q zeros, the terminating one, the remainder.
    """
    gaps = np.asarray(gaps, np.int64)
    b, t, h = _params(m)
    q, r = gaps // m, gaps % m
    short = r < t
    rem = np.where(short | (r < h), r, r + t)
    widths = np.stack([q, np.ones_like(q), np.broadcast_to(b - short, q.shape)], 1)
    values = np.stack([np.zeros_like(q), np.ones_like(q), rem], 1)
    return values, widths


def golomb_encode(bits, m, row_m=None, row_len=None):
    """Encode a {0,1} array with divisor m (or per-row ``row_m``): (words, n_bits)."""
    _, gaps, starts = ones_and_gaps(bits)
    if row_m is not None:
        m = np.asarray(row_m, np.int64)[starts // row_len]
    values, widths = golomb_fields(gaps, m)
    return write_fields(values, widths)


def rice_encode(bits_1d, k):
    """Rice code (divisor ``2**k``) of the gaps of ``bits_1d``: (words uint64, n_bits)."""
    return golomb_encode(bits_1d, 1 << int(k))


def _golomb_loop(words, n_bits, pos, s, stop, n, row_m, row_b, row_t, row_len, base, out):
    """Decode codewords from bit ``pos``, the next gap starting at position ``s``.

    Sets ``out[x - base]`` for each one ``x < stop``; stops at ``n_bits`` or at
    the first one ``>= stop``. Returns (count, status, pos) with status 0 or a
    key of ERRORS; on a stop at ``stop``, pos is that codeword's start.
    """
    count = 0
    while pos < n_bits:
        if s >= n:
            return count, 3, pos
        start = pos
        row = s // row_len
        m, b, t = row_m[row], row_b[row], row_t[row]
        q, pos = read_unary(words, n_bits, pos)
        if q < 0:
            return count, 1, pos
        if q > (n - s - 1) // m:
            return count, 2, pos
        r = 0
        if b > 0:
            if pos + b > n_bits + 1:
                return count, 1, pos
            r = np.int64(read_bits(words, pos, b - 1))
            pos += b - 1
            if r >= t:
                if pos >= n_bits:
                    return count, 1, pos
                if np.int64(read_bits(words, pos, 1)) == 1:
                    r += (1 << (b - 1)) - t
                pos += 1
        x = s + q * m + r
        if x >= n:
            return count, 2, pos
        if x >= stop:
            return count, 0, start
        out[x - base] = True
        count += 1
        s = x + 1
    return count, 0, pos


_TWINS = Twins({"golomb": _golomb_loop}, helpers=(read_bits, read_unary))


def golomb_loop(*args):
    """The decode loop, compiled when numba runs (:meth:`~pysbnn.kernels.jit.Twins.function`)."""
    return _TWINS.function("golomb")(*args)


def check_stream(words, n_bits):
    """Validate a (words, n_bits) pair; returns contiguous uint64 words."""
    words = np.ascontiguousarray(words)
    if words.dtype != U64 and words.dtype != np.uint64:
        raise ValueError(f"payload words must be uint64, got {words.dtype}")
    if not 0 <= n_bits <= words.size * 64:
        raise ValueError(f"stream truncated: {n_bits} bits declared, {words.size * 64} present")
    return words.astype(U64, copy=False)


def golomb_decode(words, n_bits, n, m=1, pos=0, row_m=None, row_len=None):
    """Decode the gap stream in bits ``pos..n_bits`` to a bool array (n,).

    ``m``: divisor; or ``row_m`` (M,) with ``row_len`` K (M*K = n). Raises
    ValueError on any malformed stream.
    """
    words = check_stream(words, n_bits)
    if row_m is None:
        row_m, row_len = [m], max(int(n), 1)
    row_m = np.asarray(row_m, np.int64)
    if np.any(row_m < 1) or np.any(row_m > 1 << 32):
        raise ValueError(f"Golomb divisor out of range: {row_m.min()}..{row_m.max()}")
    b, t, _ = _params(row_m)
    out = np.zeros(int(n), bool)
    _, status, _ = golomb_loop(words, int(n_bits), int(pos), 0, int(n), int(n), row_m, b, t,
                               int(row_len), 0, out)
    if status:
        raise ValueError(f"corrupt Golomb stream: {ERRORS[status]}")
    return out


def rice_decode(words, n_bits, N, k):
    """Inverse of :func:`rice_encode`: bool array (N,)."""
    if not 0 <= int(k) <= 31:
        raise ValueError(f"Rice parameter k must be in 0..31, got {k}")
    return golomb_decode(words, n_bits, N, 1 << int(k))


def rice_sizes(gaps, ks=RICE_KS):
    """Exact coded bits ``sum_i (g_i >> k) + 1 + k`` for each k in ``ks``: (len(ks),)."""
    gaps = np.asarray(gaps, np.int64)
    return np.array([int((gaps >> k).sum()) + gaps.size * (1 + int(k)) for k in ks], np.int64)


def golomb_candidates(gaps, max_count=2048):
    """Divisors to try: powers of two up to 2**20 and the integers around the
    Gallager-van Voorhis optimum ``ceil(log(2-p) / -log(1-p))``, p = 1/(mean gap + 1)."""
    cands = [1 << k for k in RICE_KS]
    if gaps.size:
        p = 1.0 / (gaps.mean() + 1.0)
        m_opt = 1 if p >= 0.5 else int(np.ceil(np.log(2 - p) / -np.log1p(-p)))
        lo, hi = max(1, m_opt // 2), 2 * m_opt + 1
        span = np.arange(lo, hi + 1) if hi - lo < max_count else np.geomspace(lo, hi, max_count)
        cands.extend(np.unique(np.round(span).astype(np.int64)).tolist())
    return np.unique(np.asarray(cands, np.int64))


def golomb_sizes(gaps, ms, chunk_elems=1 << 21):
    """Exact coded bits for each divisor in ``ms``: (len(ms),)."""
    gaps = np.asarray(gaps, np.int64)
    ms = np.asarray(ms, np.int64)
    out = np.empty(ms.size, np.int64)
    step = max(1, chunk_elems // max(gaps.size, 1))
    for i in range(0, ms.size, step):
        mm = ms[i:i + step]
        out[i:i + step] = golomb_lengths(gaps[:, None], mm[None, :]).sum(0)
    return out


def best_rice_k(gaps):
    """(k, bits) of the smallest Rice code among k = 0..20."""
    sizes = rice_sizes(gaps)
    k = int(np.argmin(sizes))
    return k, int(sizes[k])


def best_golomb_m(gaps):
    """(m, bits) of the smallest Golomb code among :func:`golomb_candidates`."""
    ms = golomb_candidates(np.asarray(gaps, np.int64))
    sizes = golomb_sizes(gaps, ms)
    i = int(np.argmin(sizes))
    return int(ms[i]), int(sizes[i])
