r"""BatchNorm + sign of a binary layer as an integer test, fused with bit packing.

A binary layer followed by BatchNorm and a sign emits, for output ``m`` and
input ``b``, the bit ``sign(A_m (z'_bm + xi q_b) + C_m) >= 0`` (Eq. 20 with
the BatchNorm folded in, ``pysbnn.packed.fold``), where ``z' = w01 . x`` and
``q = 1 . x`` are integers and ``xi`` is the layer's domain scalar. Dividing by
``A_m`` turns it into a threshold on ``u = z' + xi q``::

    bit = dir_m * u >= T_m          (dir_m = sign(A_m) in {-1, 0, +1})

``u`` is not an integer (``xi`` is real), so the test is evaluated in fixed
point, in integers only (as the exported C code does, with no floating point):

    u_F  = (z' << F) + t_b,          t_b = round(XI q_b / 2^(G - F)),  XI = round(xi 2^G)
    bit  = dir_m * u_F >= T_m        (T_m an int32 on the same 2^-F grid)

``F`` is chosen per layer so that ``|u_F| < 2^30`` for every reachable
``(z', q)`` (so int32 arithmetic is exact), ``G >= F`` so that ``XI`` keeps
about 30 significant bits of ``xi``. The decision then differs from the exact
real one only when ``u`` is within ``2^-F`` of the threshold (a relative
precision of 2^-30 of the layer's range, finer than the float32 simulation).

:func:`threshold_bits` is the NumPy reference; :func:`pack_threshold` computes
the same bits with a kernel and packs them in the layout the next layer reads
(``"rows"``: bit ``m`` of sample ``b`` at word ``m // 64`` of row ``b``;
``"sliced"``: bit ``b`` of neuron ``m`` at word ``b // 64`` of row ``m``), with
each sample's count of ones (the next layer's ``q = 2 ones - M``).
"""

from typing import NamedTuple

import numpy as np

from .jit import Twins, resolve_backend
from .words import n_words, pack_last_axis, popcount_numpy

prange = range      # numba.prange in the parallel kernels (see jit.Twins)


class FixedThreshold(NamedTuple):
    """The integer test ``dir * u_F >= T`` of one layer (see the module docstring)."""
    T: np.ndarray       # int32 (M,)
    dir: np.ndarray     # int8 (M,) in {-1, 0, +1}
    F: int              # fractional bits of u_F
    XI: int             # round(xi 2^G)
    G: int              # fractional bits of XI


def shift_round(v, s):
    """``round(v / 2^s)`` (half up) of int64 values for ``s > 0``, ``v << -s`` otherwise."""
    v = np.asarray(v, dtype=np.int64)
    if s > 0:
        return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)
    return v << np.int64(-s)


def threshold_bits(z_prime, q, th):
    """NumPy reference: the bits ``dir * u_F >= T`` as bool (B, M).

    z_prime : (B, M), ``w01 . x``; q : (B,), ``1 . x``; th : :class:`FixedThreshold`.
    Integer inputs are tested exactly as the kernels and the exported C code do;
    float inputs (a real-valued first layer) with ``u_F = 2^F (z' + xi q)`` in float64.
    """
    z_prime, q = np.asarray(z_prime), np.asarray(q)
    if z_prime.dtype.kind == "f" or q.dtype.kind == "f":
        u = z_prime * 2.0 ** th.F + (th.XI * 2.0 ** (th.F - th.G)) * q[:, None]
        return th.dir * u >= th.T
    t = shift_round(np.int64(th.XI) * q.astype(np.int64), th.G - th.F)
    u = (z_prime.astype(np.int64) << np.int64(th.F)) + t[:, None]
    return th.dir.astype(np.int64) * u >= th.T.astype(np.int64)


# ----------------------------------------------------------------------------
# Kernels

def sample_offset(q, XI, G, F):
    """``t_b = round(XI q_b / 2^(G - F))`` of one sample, int64 (kernel helper)."""
    s = G - F
    v = np.int64(XI) * np.int64(q)
    if s > 0:
        return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)
    return v << np.int64(-s)


def fires(z, t, T, d, F):
    """The bit of one output: ``d * ((z << F) + t) >= T`` (kernel helper).

    int32 arithmetic is exact: ``fold.fixed_threshold`` bounds ``|z << F|``,
    ``|t|`` and ``|u_F|`` by 2^30, and int32 lets loops over outputs vectorise.
    """
    u = (np.int32(z) << np.int32(F)) + np.int32(t)
    return np.int32(d) * u >= np.int32(T)


def _sample_offsets(q, XI, G, F, t):
    for b in range(q.shape[0]):
        t[b] = sample_offset(q[b], XI, G, F)


def emit_rows(z, t, T, d, F, out):
    """The bits of one sample's outputs ``z`` (M,) (offset ``t``) packed into the
    words ``out``; returns their number of ones (kernel helper)."""
    M = z.shape[0]
    count = 0
    for w in range(out.shape[0]):
        word = np.uint64(0)
        for r in range(min(64, M - 64 * w)):
            m = 64 * w + r
            if fires(z[m], t, T[m], d[m], F):
                word |= np.uint64(1) << np.uint64(r)
                count += 1
        out[w] = word
    return count


def _pack_rows_serial(z, q, T, d, F, XI, G, out, ones, t):
    _sample_offsets(q, XI, G, F, t)
    for b in range(z.shape[0]):
        ones[b] = emit_rows(z[b], t[b], T, d, F, out[b])


def _pack_rows_parallel(z, q, T, d, F, XI, G, out, ones, t):
    _sample_offsets(q, XI, G, F, t)
    for b in prange(z.shape[0]):
        ones[b] = emit_rows(z[b], t[b], T, d, F, out[b])


def _sliced_from(zt, t, T, d, F, out, m):
    """Output ``m``: the bits of its B samples (zt[m, b]) packed into ``out[m]``."""
    B = zt.shape[1]
    for j in range(out.shape[1]):
        word = np.uint64(0)
        for i in range(min(64, B - 64 * j)):
            if fires(zt[m, 64 * j + i], t[64 * j + i], T[m], d[m], F):
                word |= np.uint64(1) << np.uint64(i)
        out[m, j] = word


def _pack_sliced_serial(zt, q, T, d, F, XI, G, out, t):
    _sample_offsets(q, XI, G, F, t)
    for m in range(zt.shape[0]):
        _sliced_from(zt, t, T, d, F, out, m)


def _pack_sliced_parallel(zt, q, T, d, F, XI, G, out, t):
    _sample_offsets(q, XI, G, F, t)
    for m in prange(zt.shape[0]):
        _sliced_from(zt, t, T, d, F, out, m)


#: the scalar helpers other kernels call (each registers them with its twins)
HELPERS = (sample_offset, fires, emit_rows)

_TWINS = Twins({"rows": _pack_rows_serial, "rows_par": _pack_rows_parallel,
                "sliced": _pack_sliced_serial, "sliced_par": _pack_sliced_parallel},
               helpers=HELPERS + (_sample_offsets, _sliced_from), inline=(fires,))

_PAR_MIN = 1 << 17          # outputs B * M from which two threads pay


def pack_threshold(z, q, th, layout, *, neuron_major=False, backend="auto", parallel=None):
    """The bits of ``dir * u_F >= T``, packed, and each sample's count of ones.

    Parameters
    ----------
    z : int32 (B, M) ``w01 . x``, or (M, B) with ``neuron_major=True``.
    q : int (B,) ``1 . x``.
    th : :class:`FixedThreshold`.
    layout : ``"rows"`` -> uint64 (B, n_words(M)); ``"sliced"`` -> uint64 (M, n_words(B)).

    Returns ``(words, ones)``: the packed bits and int64 (B,) ones per sample.
    """
    z = np.asarray(z)
    zt = z if neuron_major else z.T
    M, B = zt.shape
    q = np.ascontiguousarray(q, dtype=np.int64)
    if resolve_backend(backend) == "numpy":
        bits = threshold_bits(zt.T, q, th)
        ones = bits.sum(axis=1).astype(np.int64)
        return (pack_last_axis(bits) if layout == "rows" else pack_last_axis(bits.T)), ones
    parallel = B * M >= _PAR_MIN if parallel is None else parallel
    t = np.empty(B, np.int64)
    args = (th.T, th.dir, th.F, th.XI, th.G)
    if layout == "rows":
        out, ones = np.empty((B, n_words(M)), np.uint64), np.empty(B, np.int64)
        _TWINS["rows_par" if parallel else "rows"](np.ascontiguousarray(zt.T), q, *args, out, ones, t)
        return out, ones
    out = np.empty((M, n_words(B)), np.uint64)
    _TWINS["sliced_par" if parallel else "sliced"](np.ascontiguousarray(zt), q, *args, out, t)
    return out, sliced_ones(out, B)


def sliced_ones(xs, B):
    """Ones per sample of batch-sliced bits ``xs`` (K, n_words(B)): int64 (B,)."""
    if xs.shape[0] == 0:
        return np.zeros(B, np.int64)
    bits = np.unpackbits(np.ascontiguousarray(xs).view(np.uint8), axis=1, bitorder="little")[:, :B]
    return bits.sum(axis=0, dtype=np.int64)


def rows_ones(a_bits):
    """Ones per row of row-packed bits: int64 (B,)."""
    return popcount_numpy(a_bits).sum(axis=-1)
