r"""Dense BNN product on packed bits: ``z = x @ w.T`` for x, w in {-1,+1}.

Each of the K bit pairs adds +1 when the bits agree and -1 when they differ::

    x . w = K - 2 sum_words popcount(a ^ w)

(padding bits are 0 in both operands, so they agree and drop out).

Layout (:func:`prepare_xnor`, built once): weight rows re-packed into
*panels* of R output rows, ``panels[p, k, r]`` = word ``k`` of row
``R p + r``, 64-byte aligned. One activation word is broadcast and XORed
against the same word of a whole panel. Two kernels, chosen by the CPU
(:func:`choose_kind`):

``"direct"`` (R = 64; AVX-512 VPOPCNTDQ, or no AVX2)
    One ``llvm.ctpop`` per word into 64 accumulators on the stack (registers):
    the inner loop is ``vpbroadcastq`` + 8 x (``vpxorq``, ``vpopcntq``,
    ``vpaddq``) on AVX-512, where a vector popcount is one instruction.
``"hs"`` (R = 8; AVX2 without VPOPCNTDQ)
    On AVX2 a popcount is a ``vpshufb`` nibble lookup (~7 instructions per
    256 bits) and a carry-save adder 5 logic instructions, so counting is
    Harley-Seal: per 8 words, 7 carry-save adders fold the XOR words of a row
    into bit-sliced counters ``ones, twos, fours`` and only the carry of weight
    8 is popcounted, by bytes, added as bytes for up to 31 steps. A panel is
    two ``u64x4`` vectors (:mod:`pysbnn.kernels.vec4`) whose counters stay in
    ymm registers for the whole row. Both operands keep every odd word of the
    steps as the XOR of its pair (:func:`pair_words`), so the adder that takes
    ``ones`` and a pair of XOR words costs 4 operations instead of 5
    (:func:`_csa_pair`): 46 vector operations per step and vector instead of
    50, 5-7 % faster. 1.7 instructions per row-word against 2.8 for
    ``"direct"`` on AVX2 (``docs/benchmarks.md``).
    Rows under 24 words (K <= 1472) skip the trees (their per-sample epilogue
    costs more than they save): 32-row blocks, one byte popcount per word.

Executed operations: ``2 K`` bit-operations per output (``analysis.bops_bnn_dense``).
"""

from typing import NamedTuple

import numpy as np

from .. import analysis
from . import vec4
from .intrinsics import popcount64, scratch
from .jit import Twins, host_features, resolve_backend
from .vec4 import vaddb, vbcast, vbytesum, vget, vload, vpopcnt8, vshl, vstore_z, vzero
from .words import n_words

PANEL = 64          # output rows per panel of the direct kernel
N = vec4.LANES      # rows per vector of the hs kernel
HS_ROWS = 2 * N     # output rows per hs panel (two vectors share each broadcast)
GROUP = 8           # words per carry-save step
CHUNK = 31          # steps (or single words) per byte-counter flush: 31 * 8 <= 255
LUT_BLOCKS = 4      # hs panels per short-row block (32 rows)
HS_MIN_WORDS = 24   # shorter rows: one byte popcount per word (crossover measured at Kw = 24)
KINDS = ("hs", "direct")

prange = range      # numba.prange in the parallel kernels (see jit.Twins)


class XnorWeights(NamedTuple):
    """+-1 weights for :func:`xnor_gemm`; rows past M are zero and never stored."""
    panels: np.ndarray      # uint64 (P, Kw, R): R = 64 ("direct") or 8 ("hs", P a multiple of 4)
    w_bits: np.ndarray      # uint64 (M, Kw), for the NumPy backend
    K: int
    kind: str               # "direct" | "hs", the kernel the panels are laid out for


def as_words(w_bits, K, what="uint64 (M, %d) words"):
    """``w_bits`` as contiguous uint64 rows of ``n_words(K)`` words, or a ValueError."""
    w_bits = np.ascontiguousarray(w_bits, dtype=np.uint64)
    if w_bits.ndim != 2 or w_bits.shape[1] != n_words(K):
        raise ValueError("expected %s for K=%d, got %s" % (what % n_words(K), K, w_bits.shape))
    return w_bits


def prepared(w, kind, prepare, K):
    """``w`` if it is already a ``kind`` layout (checking ``K``), else ``prepare(w, K)``."""
    if isinstance(w, kind):
        if K is not None and int(K) != w.K:
            raise ValueError("K=%d does not match the prepared weights (K=%d)" % (K, w.K))
        return w
    if K is None:
        raise ValueError("K is needed with raw packed weights")
    return prepare(w, K)


def choose_kind(features=None):
    """``"hs"`` on AVX2 without AVX-512 VPOPCNTDQ, else ``"direct"``.

    ``features``: a dict like :func:`pysbnn.kernels.jit.host_features` (default:
    this host). With VPOPCNTDQ a vector popcount is one instruction and
    carry-save trees only add work; without AVX2 nothing vectorises them well.
    """
    f = host_features() if features is None else features
    return "hs" if f.get("avx2") and not f.get("avx512vpopcntdq") else "direct"


def hs_words(Kw):
    """Words of a row that the hs kernel folds by carry-save steps (the rest one by one)."""
    return Kw // GROUP * GROUP if Kw >= HS_MIN_WORDS else 0


def aligned(arr, align=64):
    """C-contiguous copy of ``arr`` starting on an ``align``-byte boundary.

    NumPy's buffers are only 16-byte aligned, so half of the 32-byte loads
    could straddle cache lines (measured ~10 % slower on a load-heavy variant)."""
    buf = np.empty(arr.nbytes + align, np.uint8)
    off = (-buf.ctypes.data) % align
    out = buf[off:off + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


def prepare_xnor(w_bits, K, kind=None):
    """Re-pack +-1 weight rows ``uint64 (M, Kw)`` into panels for ``kind``
    (``"hs"`` | ``"direct"`` | None: :func:`choose_kind`)."""
    w_bits = as_words(w_bits, K)
    kind = choose_kind() if kind is None else kind
    if kind not in KINDS:
        raise ValueError("kind must be one of %s or None, got %r" % (KINDS, kind))
    M, Kw = w_bits.shape
    R = HS_ROWS if kind == "hs" else PANEL
    P = (M + R - 1) // R
    if kind == "hs":
        P = (P + LUT_BLOCKS - 1) // LUT_BLOCKS * LUT_BLOCKS    # short rows take 4 panels at a time
    padded = np.zeros((P * R, Kw), np.uint64)
    padded[:M] = w_bits
    if kind == "hs":
        padded = pair_words(padded, hs_words(Kw))
    panels = aligned(padded.reshape(P, R, Kw).transpose(0, 2, 1))
    return XnorWeights(panels, w_bits, int(K), kind)


# ----------------------------------------------------------------------------
# NumPy reference

def popcount_pairs(op, a_bits, w_bits):
    """``sum_words popcount(op(a[b], w[m]))`` for all pairs, int64 (B, M), in row chunks."""
    B, Kw = a_bits.shape
    M = w_bits.shape[0]
    out = np.empty((B, M), np.int64)
    chunk = max(1, (1 << 22) // max(1, M * Kw))
    for b0 in range(0, B, chunk):
        pairs = op(a_bits[b0:b0 + chunk, None, :], w_bits[None, :, :])
        out[b0:b0 + chunk] = np.bitwise_count(pairs).sum(axis=-1, dtype=np.int64)
    return out


def xnor_gemm_reference(a_bits, w_bits, K):
    r"""NumPy reference: ``z = K - 2 \sum_{words} popcount(a_b ^ w_m)``.

    a_bits : uint64 (B, Kw); w_bits : uint64 (M, Kw); K : bits per row.
    Returns ``(z, ops)``: int32 (B, M) and ``analysis.bops_bnn_dense(M, K, B)``.
    """
    a_bits = as_words(a_bits, K, "packed activations (B, %d)")
    w_bits = as_words(w_bits, K)
    z = K - 2 * popcount_pairs(np.bitwise_xor, a_bits, w_bits)
    return z.astype(np.int32), analysis.bops_bnn_dense(w_bits.shape[0], K, a_bits.shape[0])


# ----------------------------------------------------------------------------
# Kernel "direct": one popcount per word, 64-row panels

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
# Kernel "hs": Harley-Seal over 8-word steps, 8 rows x 1 sample in registers

def _csa(a, b, c):
    """Carry-save adder: ``(carry, sum)`` with ``a + b + c = 2 carry + sum`` bitwise."""
    u = a ^ b
    return (a & b) | (u & c), u ^ c


def _csa_pair(a, b, d):
    """:func:`_csa` of ``a, b, c`` given ``d = b ^ c`` instead of ``c``, in 4
    operations instead of 5: the sum is ``a ^ d``, and the carry (the majority)
    is ``a`` where ``b`` and ``c`` differ, else ``b``: ``b ^ ((a ^ b) & d)``."""
    return b ^ ((a ^ b) & d), a ^ d


def pair_words(bits, n):
    """Copy of the uint64 rows ``bits`` (R, Kw) whose odd words ``k < n`` (``n`` even)
    hold ``bits[:, k - 1] ^ bits[:, k]``. Both operands of the hs kernel take this
    form: the XOR of their odd words is ``(x0 ^ x1) ^ (w0 ^ w1) = d`` of :func:`_csa_pair`."""
    out = bits.copy()
    out[:, 1:n:2] ^= bits[:, 0:n:2]
    return out


def _count(ones, twos, fours, eights, singles):
    """Lane totals ``8 eights + singles + 4 pc(fours) + 2 pc(twos) + pc(ones)``:
    the three popcounts by bytes, added as bytes (at most 56), one byte sum."""
    low = vaddb(vaddb(vshl(vpopcnt8(fours), 2), vshl(vpopcnt8(twos), 1)), vpopcnt8(ones))
    return vshl(eights, 3) + singles + vbytesum(low)


def _put(out, b, m0, n, K, cnt):
    """``out[b, m0:m0+n] = K - 2 cnt`` for the first ``n`` lanes (none if ``n <= 0``)."""
    if n == N:
        vstore_z(out, b, m0, cnt, K)
    else:
        for r in range(n):
            out[b, m0 + r] = K - 2 * vget(cnt, r)


def _hs_steps(a, b, wq, g0, g1, o0, t0, f0, o1, t1, f1):
    """Carry-save steps over words ``g0 .. g1`` (at most 31 steps) of sample ``b``
    against the 8 rows of panel ``wq``, both in :func:`pair_words` form; returns
    the counters and the weight-8 counts, ``o0, t0, f0, o1, t1, f1, e0, e1``.

    A step folds the 8 XOR words of a row into ``ones`` (o), ``twos`` (t) and
    ``fours`` (f) by 7 adders (the 4 that take ``ones`` and a pair:
    :func:`_csa_pair`); its carry of weight 8 is popcounted by bytes into
    ``cb``, summed to 64-bit lanes at the end (31 x 8 fits a byte). Rows 0-3
    and 4-7 are two vectors sharing each broadcast; their adders interleave so
    that each broadcast dies right after its two uses."""
    cb0, cb1 = vzero(), vzero()
    for g in range(g0, g1, GROUP):
        x0, x1 = vbcast(a, b, g), vbcast(a, b, g + 1)
        ta0, o0 = _csa_pair(o0, x0 ^ vload(wq, g, 0), x1 ^ vload(wq, g + 1, 0))
        ta1, o1 = _csa_pair(o1, x0 ^ vload(wq, g, N), x1 ^ vload(wq, g + 1, N))
        x2, x3 = vbcast(a, b, g + 2), vbcast(a, b, g + 3)
        tb0, o0 = _csa_pair(o0, x2 ^ vload(wq, g + 2, 0), x3 ^ vload(wq, g + 3, 0))
        tb1, o1 = _csa_pair(o1, x2 ^ vload(wq, g + 2, N), x3 ^ vload(wq, g + 3, N))
        fa0, t0 = _csa(t0, ta0, tb0)
        fa1, t1 = _csa(t1, ta1, tb1)
        x4, x5 = vbcast(a, b, g + 4), vbcast(a, b, g + 5)
        ta0, o0 = _csa_pair(o0, x4 ^ vload(wq, g + 4, 0), x5 ^ vload(wq, g + 5, 0))
        ta1, o1 = _csa_pair(o1, x4 ^ vload(wq, g + 4, N), x5 ^ vload(wq, g + 5, N))
        x6, x7 = vbcast(a, b, g + 6), vbcast(a, b, g + 7)
        tb0, o0 = _csa_pair(o0, x6 ^ vload(wq, g + 6, 0), x7 ^ vload(wq, g + 7, 0))
        tb1, o1 = _csa_pair(o1, x6 ^ vload(wq, g + 6, N), x7 ^ vload(wq, g + 7, N))
        fb0, t0 = _csa(t0, ta0, tb0)
        e0, f0 = _csa(f0, fa0, fb0)
        cb0 = vaddb(cb0, vpopcnt8(e0))
        fb1, t1 = _csa(t1, ta1, tb1)
        e1, f1 = _csa(f1, fa1, fb1)
        cb1 = vaddb(cb1, vpopcnt8(e1))
    return o0, t0, f0, o1, t1, f1, vbytesum(cb0), vbytesum(cb1)


def _hs_block(a, wr, K, hs_words, out, o):
    """Rows ``8 o .. 8 o + 7`` of ``out`` for all samples; returns the bit-ops done.

    The first ``hs_words`` words (a multiple of 8) go through :func:`_hs_steps`,
    31 steps at a time; the others are popcounted one by one (bytes, into ``u``)."""
    B, M, Kw = out.shape[0], out.shape[1], a.shape[1]
    wq = wr[o]
    m0 = o * HS_ROWS
    rows = min(HS_ROWS, M - m0)
    if rows <= 0:                       # a padding panel (P is a multiple of 4)
        return 0
    for b in range(B):
        o0, t0, f0, s0 = vzero(), vzero(), vzero(), vzero()
        o1, t1, f1, s1 = vzero(), vzero(), vzero(), vzero()
        for c in range(0, hs_words, GROUP * CHUNK):
            o0, t0, f0, o1, t1, f1, e0, e1 = _hs_steps(a, b, wq, c, min(c + GROUP * CHUNK, hs_words),
                                                       o0, t0, f0, o1, t1, f1)
            s0, s1 = s0 + e0, s1 + e1
        u0, u1 = vzero(), vzero()
        for c in range(hs_words, Kw, CHUNK):
            cb0, cb1 = vzero(), vzero()
            for k in range(c, min(c + CHUNK, Kw)):
                x = vbcast(a, b, k)
                cb0 = vaddb(cb0, vpopcnt8(x ^ vload(wq, k, 0)))
                cb1 = vaddb(cb1, vpopcnt8(x ^ vload(wq, k, N)))
            u0, u1 = u0 + vbytesum(cb0), u1 + vbytesum(cb1)
        _put(out, b, m0, min(N, rows), K, _count(o0, t0, f0, s0, u0))
        _put(out, b, m0 + N, rows - N, K, _count(o1, t1, f1, s1, u1))
    return 2 * K * rows * B


def _hs_block_one(a, wr, K, out, o):
    """:func:`_hs_block` for rows of one run of at most 31 steps (``Kw`` a multiple
    of 8, <= 248): no flush or tail loops around every sample (2-5 % faster)."""
    B, M, Kw = out.shape[0], out.shape[1], a.shape[1]
    wq = wr[o]
    m0 = o * HS_ROWS
    rows = min(HS_ROWS, M - m0)
    if rows <= 0:                       # a padding panel
        return 0
    z = vzero()
    for b in range(B):
        o0, t0, f0, o1, t1, f1, e0, e1 = _hs_steps(a, b, wq, 0, Kw, z, z, z, z, z, z)
        _put(out, b, m0, min(N, rows), K, _count(o0, t0, f0, e0, z))
        _put(out, b, m0 + N, rows - N, K, _count(o1, t1, f1, e1, z))
    return 2 * K * rows * B


def _lut_block(a, wr, K, out, q):
    """Rows ``32 q .. 32 q + 31`` (panels ``4 q .. 4 q + 3``) for all samples,
    one byte popcount per word (short rows); returns the bit-ops done.

    Eight vectors share each broadcast: per word and 32 rows one
    ``vpbroadcastq`` + 8 x (XOR, byte popcount, byte add); the per-sample
    byte sums and stores are spread over 32 rows."""
    B, M, Kw = out.shape[0], out.shape[1], a.shape[1]
    w0, w1, w2, w3 = wr[4 * q], wr[4 * q + 1], wr[4 * q + 2], wr[4 * q + 3]
    m0 = LUT_BLOCKS * HS_ROWS * q
    rows = min(LUT_BLOCKS * HS_ROWS, M - m0)
    for b in range(B):
        u0, u1, u2, u3, u4, u5, u6, u7 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
        for c in range(0, Kw, CHUNK):
            c0, c1, c2, c3, c4, c5, c6, c7 = (vzero(), vzero(), vzero(), vzero(),
                                              vzero(), vzero(), vzero(), vzero())
            for k in range(c, min(c + CHUNK, Kw)):
                x = vbcast(a, b, k)
                c0 = vaddb(c0, vpopcnt8(x ^ vload(w0, k, 0)))
                c1 = vaddb(c1, vpopcnt8(x ^ vload(w0, k, N)))
                c2 = vaddb(c2, vpopcnt8(x ^ vload(w1, k, 0)))
                c3 = vaddb(c3, vpopcnt8(x ^ vload(w1, k, N)))
                c4 = vaddb(c4, vpopcnt8(x ^ vload(w2, k, 0)))
                c5 = vaddb(c5, vpopcnt8(x ^ vload(w2, k, N)))
                c6 = vaddb(c6, vpopcnt8(x ^ vload(w3, k, 0)))
                c7 = vaddb(c7, vpopcnt8(x ^ vload(w3, k, N)))
            u0, u1, u2, u3 = u0 + vbytesum(c0), u1 + vbytesum(c1), u2 + vbytesum(c2), u3 + vbytesum(c3)
            u4, u5, u6, u7 = u4 + vbytesum(c4), u5 + vbytesum(c5), u6 + vbytesum(c6), u7 + vbytesum(c7)
        _put(out, b, m0, min(N, rows), K, u0)
        _put(out, b, m0 + N, min(N, rows - N), K, u1)
        _put(out, b, m0 + 2 * N, min(N, rows - 2 * N), K, u2)
        _put(out, b, m0 + 3 * N, min(N, rows - 3 * N), K, u3)
        _put(out, b, m0 + 4 * N, min(N, rows - 4 * N), K, u4)
        _put(out, b, m0 + 5 * N, min(N, rows - 5 * N), K, u5)
        _put(out, b, m0 + 6 * N, min(N, rows - 6 * N), K, u6)
        _put(out, b, m0 + 7 * N, min(N, rows - 7 * N), K, u7)
    return 2 * K * max(rows, 0) * B


def _hs_serial(a, wr, K, hs_words, out, ops):
    if hs_words == 0:                   # short rows: no steps, no pairs
        for q in range(wr.shape[0] // LUT_BLOCKS):
            ops[q] = _lut_block(a, wr, K, out, q)
    else:
        ap, one = pair_words(a, hs_words), hs_words == a.shape[1] and hs_words <= GROUP * CHUNK
        for o in range(wr.shape[0]):
            ops[o] = _hs_block_one(ap, wr, K, out, o) if one else _hs_block(ap, wr, K, hs_words, out, o)


def _hs_parallel(a, wr, K, hs_words, out, ops):
    if hs_words == 0:                   # short rows: no steps, no pairs
        for q in prange(wr.shape[0] // LUT_BLOCKS):
            ops[q] = _lut_block(a, wr, K, out, q)
    else:
        ap, one = pair_words(a, hs_words), hs_words == a.shape[1] and hs_words <= GROUP * CHUNK
        for o in prange(wr.shape[0]):
            ops[o] = _hs_block_one(ap, wr, K, out, o) if one else _hs_block(ap, wr, K, hs_words, out, o)


_TWINS = Twins({"xnor": _xnor_serial, "xnor_par": _xnor_parallel,
                "xnor_hs": _hs_serial, "xnor_hs_par": _hs_parallel},
               helpers=(_xnor_panel, _csa, _csa_pair, pair_words, _count, _put, _hs_steps, _hs_block, _hs_block_one, _lut_block),
               inline=(_csa, _csa_pair, _count, _put, _hs_steps), setup=(vec4.register,))

_PAR_MIN_WORDS = 1 << 20       # B * M * Kw: below ~50 us of work two threads cost more


def bind_kernel(a_bits, w, z, parallel=None):
    """The jitted driver :func:`xnor_gemm` runs, bound to checked arguments:
    ``f()`` fills ``z`` (int32 (B, M), C-contiguous) and returns the bit-ops
    recorded per panel. No checks, no allocation: for benchmarks.
    ``parallel=None``: threads when ``B * M * Kw >= 2**20``."""
    if parallel is None:
        parallel = z.shape[0] * z.shape[1] * a_bits.shape[1] >= _PAR_MIN_WORDS
    counts = np.zeros(w.panels.shape[0], np.int64)
    if w.kind == "hs":
        fn, hw = _TWINS["xnor_hs_par" if parallel else "xnor_hs"], hs_words(w.panels.shape[1])
        return lambda: (fn(a_bits, w.panels, w.K, hw, z, counts), counts)[1]
    fn = _TWINS["xnor_par" if parallel else "xnor"]
    return lambda: (fn(a_bits, w.panels, w.K, z, counts), counts)[1]


def xnor_gemm(a_bits, w, K=None, *, backend="auto", parallel=None, return_ops=False):
    r"""Dense BNN layer on packed bits: ``z = x @ w.T`` for x, w in {-1,+1}.

    .. math:: z_{bm} = K - 2 \sum_{words} \mathrm{popcount}(a_b \oplus w_m)

    Parameters
    ----------
    a_bits : uint64 (B, Kw) activations from ``words.pack_signs``.
    w : uint64 (M, Kw) packed weight signs, or :class:`XnorWeights`
        (``prepare_xnor``; prepare once when calling repeatedly).
    K : features per row (needed with raw weights).
    backend : ``"auto"`` | ``"numba"`` | ``"numpy"`` (see :mod:`pysbnn.kernels.jit`).
    parallel : force the threaded (True) or serial (False) kernel; default by size.
    return_ops : also return the bit-operations executed, ``2 B K M``.

    Returns int32 (B, M) [, ops].
    """
    w = prepared(w, XnorWeights, prepare_xnor, K)
    a_bits = as_words(a_bits, w.K, "packed activations (B, %d)")
    if resolve_backend(backend) == "numpy":
        z, ops = xnor_gemm_reference(a_bits, w.w_bits, w.K)
    else:
        z = np.empty((a_bits.shape[0], w.w_bits.shape[0]), np.int32)
        ops = int(bind_kernel(a_bits, w, z, parallel)().sum())
    return (z, int(ops)) if return_ops else z


def kernel_asm(kind="hs"):
    """Assembly of the serial driver of ``kind``, compiled afresh (cached code
    cannot be inspected), for numba's target CPU (``NUMBA_CPU_NAME=icelake-server``
    shows the AVX-512 code on any x86 host). ``intrinsics.loop_ops`` reads it."""
    import numba
    from numba import types
    _ = _TWINS["xnor"]                              # registers the helpers and intrinsics
    u64, i32 = (lambda nd: types.Array(types.uint64, nd, "C")), types.Array(types.int32, 2, "C")
    ops, i64 = types.Array(types.int64, 1, "C"), types.int64
    fn, sig = ((_hs_serial, (u64(2), u64(3), i64, i64, i32, ops)) if kind == "hs"
               else (_xnor_serial, (u64(2), u64(3), i64, i32, ops)))
    d = numba.njit(cache=False, nogil=True)(fn)
    d.compile(sig)
    return d.inspect_asm(d.signatures[0])

