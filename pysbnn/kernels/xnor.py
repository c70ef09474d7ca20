r"""Dense BNN product on packed bits: ``z = x @ w.T`` for x, w in {-1,+1}.

Each of the K bit pairs adds +1 when the bits agree and -1 when they differ::

    x . w = K - 2 sum_words popcount(a ^ w)

(padding bits are 0 in both operands, so they agree and drop out).

Layout (:func:`prepare_xnor`, built once): weight rows re-packed into
*panels* of 64 output rows, ``panels[p, k, r]`` = word ``k`` of row
``64 p + r``. The kernel XORs one activation word against the same word of
64 rows at once, with the 64 accumulators on the stack (registers), so the
inner loop is ``vpbroadcastq`` + 8 x (``vpxorq``, ``vpopcntq``, ``vpaddq``)
on AVX-512 and the results of a panel land contiguously. Executed operations:
``2 K`` bit-operations per output (``analysis.bops_bnn_dense``).
"""

from typing import NamedTuple

import numpy as np

from .. import analysis
from .intrinsics import popcount64, scratch
from .jit import Twins, resolve_backend
from .words import n_words

PANEL = 64          # output rows per weight panel

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


class XnorWeights(NamedTuple):
    """+-1 weights for :func:`xnor_gemm`; rows past M are zero and never stored."""
    panels: np.ndarray      # uint64 (ceil(M / 64), Kw, 64)
    w_bits: np.ndarray      # uint64 (M, Kw), for the NumPy backend
    K: int


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


def prepare_xnor(w_bits, K):
    """Re-pack +-1 weight rows ``uint64 (M, Kw)`` into panels of 64 rows."""
    w_bits = as_words(w_bits, K)
    M, Kw = w_bits.shape
    n_panels = (M + PANEL - 1) // PANEL
    padded = np.zeros((n_panels * PANEL, Kw), np.uint64)
    padded[:M] = w_bits
    panels = np.ascontiguousarray(padded.reshape(n_panels, PANEL, Kw).transpose(0, 2, 1))
    return XnorWeights(panels, w_bits, int(K))


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
# Kernel

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


_TWINS = Twins({"xnor": _xnor_serial, "xnor_par": _xnor_parallel}, helpers=(_xnor_panel,))

_PAR_MIN_WORDS = 1 << 20       # B * M * Kw: below ~50 us of work two threads cost more


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
        B, Kw = a_bits.shape
        z = np.empty((B, w.w_bits.shape[0]), np.int32)
        counts = np.zeros(w.panels.shape[0], np.int64)
        if parallel is None:
            parallel = B * w.w_bits.shape[0] * Kw >= _PAR_MIN_WORDS
        _TWINS["xnor_par" if parallel else "xnor"](a_bits, w.panels, w.K, z, counts)
        ops = int(counts.sum())
    return (z, int(ops)) if return_ops else z
