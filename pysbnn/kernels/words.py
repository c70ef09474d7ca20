"""64-bit words: the only home of bit packing (see the conventions in
:mod:`pysbnn.kernels`).

NumPy functions are the reference. :func:`pack_signs` and
:func:`pack_batch_sliced` also have kernels (plain Python, jitted on first
use) because ``np.packbits`` can cost more than a GEMM at batch 1; they agree
with the NumPy versions bit for bit.
"""

import numpy as np

from .jit import Twins, resolve_backend

WORD_BITS = 64

prange = range      # numba.prange in the parallel kernels (see jit.Twins)


# ----------------------------------------------------------------------------
# NumPy reference

def n_words(K):
    """Number of 64-bit words holding ``K`` bits: ``ceil(K / 64)``."""
    return (int(K) + WORD_BITS - 1) // WORD_BITS


def pack_last_axis(bits):
    """Pack the last axis of a boolean array: ``(..., K) -> uint64 (..., n_words(K))``.

    Element ``k`` becomes bit ``k % 64`` of word ``k // 64``; padding bits are zero.
    """
    bits = np.asarray(bits, dtype=bool)
    K = bits.shape[-1]
    padded = np.zeros(bits.shape[:-1] + (n_words(K) * WORD_BITS,), np.uint8)
    padded[..., :K] = bits
    return np.packbits(padded, axis=-1, bitorder="little").view("<u8").astype(np.uint64, copy=False)


def pack_bits(b):
    """Pack {0,1} (or bool) values, ``(rows, K) -> uint64 (rows, n_words(K))``.

    Used for {0,1} weights ``w01``. A 1-D input is treated as one row.
    """
    b = np.asarray(b)
    if b.ndim == 1:
        return pack_bits(b[None])[0]
    if b.dtype != np.bool_ and not np.isin(b, (0, 1)).all():
        raise ValueError("pack_bits expects values in {0, 1}")
    return pack_last_axis(b.astype(bool))


def pack_signs_numpy(x):
    """NumPy reference of :func:`pack_signs`: bit ``(x >= 0)`` along the last axis."""
    return pack_last_axis(np.asarray(x) >= 0)


def unpack_bits(words, K):
    """Inverse of :func:`pack_last_axis`: ``uint64 (..., n_words) -> uint8 (..., K)``."""
    words = np.ascontiguousarray(np.asarray(words, dtype=np.uint64).astype("<u8"))
    return np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :K]


def unpack_signs(words, K, dtype=np.float32):
    """Packed activation bits back to +-1 values of ``dtype``."""
    return (2 * unpack_bits(words, K).astype(np.int8) - 1).astype(dtype)


def pack_batch_sliced_numpy(x):
    """NumPy reference of :func:`pack_batch_sliced`.

    ``x`` float ``(B, K)`` -> uint64 ``(K, n_words(B))`` with bit ``i`` of
    ``xs[k, j]`` = ``x[64 j + i, k] >= 0``; bits of missing samples are 0.
    """
    return pack_last_axis((np.asarray(x) >= 0).T)


def unpack_batch_sliced(xs, B):
    """Inverse of :func:`pack_batch_sliced` for the bits: ``uint8 (B, K)``."""
    return unpack_bits(xs, B).T


def transpose_bits(words, K, backend="auto"):
    """Row-packed <-> batch-sliced bits: uint64 (R, n_words(K)) -> (K, n_words(R)).

    The transpose of the bit matrix: bit ``k`` of row ``r`` becomes bit ``r``
    of row ``k`` (rows -> sliced with R samples and K features, or back).
    """
    words = np.asarray(words, dtype=np.uint64)
    return pack_last_axis(unpack_bits(words, K).T.astype(bool))


def popcount_numpy(words):
    """Popcount of every word (``np.bitwise_count``), as int64."""
    return np.bitwise_count(np.asarray(words, dtype=np.uint64)).astype(np.int64)


def input_dot_ones(a_bits, K):
    r"""``q = 1 . x = 2 popcount(a) - K`` of packed +-1 rows (Sec. 3.5): int64 (B,).

    Computed once per input and shared by every output unit (Eq. 20).
    """
    return 2 * popcount_numpy(a_bits).sum(axis=-1) - int(K)


# ----------------------------------------------------------------------------
# Kernels

def _pack_signs_row(x, out, r, K):
    full = K // WORD_BITS
    for w in range(full):
        word = np.uint64(0)
        for t in range(WORD_BITS):
            if x[r, w * WORD_BITS + t] >= 0:
                word |= np.uint64(1) << np.uint64(t)
        out[r, w] = word
    if full < out.shape[1]:
        word = np.uint64(0)
        for t in range(K - full * WORD_BITS):
            if x[r, full * WORD_BITS + t] >= 0:
                word |= np.uint64(1) << np.uint64(t)
        out[r, full] = word


def _pack_signs_serial(x, out):
    """Sign-and-pack rows: ``out[r, w]`` bit ``t`` = ``x[r, 64 w + t] >= 0``."""
    for r in range(x.shape[0]):
        _pack_signs_row(x, out, r, x.shape[1])


def _pack_signs_parallel(x, out):
    for r in prange(x.shape[0]):
        _pack_signs_row(x, out, r, x.shape[1])


def _pack_batch_word(x, out, buf, j):
    B, K = x.shape
    for k in range(K):
        buf[k] = 0
    for i in range(min(WORD_BITS, B - j * WORD_BITS)):
        bit = np.uint64(1) << np.uint64(i)
        b = j * WORD_BITS + i
        for k in range(K):                      # contiguous: vectorises
            if x[b, k] >= 0:
                buf[k] |= bit
    for k in range(K):
        out[k, j] = buf[k]


def _pack_batch_sliced_serial(x, out, buf):
    """``out[k, j]`` bit ``i`` = ``x[64 j + i, k] >= 0``; ``buf`` is (K,) uint64."""
    for j in range(out.shape[1]):
        _pack_batch_word(x, out, buf, j)


def _pack_batch_sliced_parallel(x, out, bufs):
    for j in prange(out.shape[1]):
        _pack_batch_word(x, out, bufs[j], j)


_TWINS = Twins({"signs": _pack_signs_serial, "signs_par": _pack_signs_parallel,
                "sliced": _pack_batch_sliced_serial, "sliced_par": _pack_batch_sliced_parallel},
               helpers=(_pack_signs_row, _pack_batch_word))

_PAR_MIN_ELEMENTS = 1 << 21      # serial packs ~20 elements/ns: threads pay off above ~100 us


def _as_float_rows(x):
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def pack_signs(x, backend="auto", parallel=None):
    """Sign-and-pack activations: float ``(rows, K)`` -> uint64 ``(rows, n_words(K))``.

    Bit ``k % 64`` of word ``k // 64`` is ``x[:, k] >= 0`` (sign(0) = +1);
    padding bits are 0. Equals :func:`pack_signs_numpy`. A 1-D input is one row.
    """
    x = _as_float_rows(x)
    if x.ndim == 1:
        return pack_signs(x[None], backend, parallel)[0]
    if resolve_backend(backend) == "numpy":
        return pack_signs_numpy(x)
    out = np.zeros((x.shape[0], n_words(x.shape[1])), np.uint64)
    if parallel is None:
        parallel = x.size >= _PAR_MIN_ELEMENTS and x.shape[0] > 1
    _TWINS["signs_par" if parallel else "signs"](x, out)
    return out


def pack_batch_sliced(x, backend="auto", parallel=None):
    """Batch-in-the-word packing: float ``(B, K)`` -> uint64 ``(K, n_words(B))``.

    Bit ``i`` of ``xs[k, j]`` is ``x[64 j + i, k] >= 0``, so one word holds
    feature ``k`` of 64 samples; missing samples give 0 bits.
    """
    x = _as_float_rows(x)
    if resolve_backend(backend) == "numpy":
        return pack_batch_sliced_numpy(x)
    B, K = x.shape
    out = np.zeros((K, n_words(B)), np.uint64)
    if parallel is None:
        parallel = x.size >= _PAR_MIN_ELEMENTS and out.shape[1] > 1
    if parallel:
        _TWINS["sliced_par"](x, out, np.zeros((out.shape[1], K), np.uint64))
    else:
        _TWINS["sliced"](x, out, np.zeros(K, np.uint64))
    return out
