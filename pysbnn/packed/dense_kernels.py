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

Modules: this one validates the arguments and dispatches; the weight layouts
(``prepare_*``, ``block_sliced``) are in ``dense_layouts`` and the kernel
bodies with their jitted twins in ``dense_bodies``; both are re-exported here.
"""

import numpy as np

from .bits import (jit_kernel, n_words, popcount64, popcount_numpy,  # noqa: F401 (re-exported)
                   resolve_backend, scratch, unpack_bits)
from .dense_bodies import GROUP, MB, NL_MAX, PANEL, W, _kernels  # noqa: F401
from .dense_layouts import (SlicedWeights, WordSkipWeights, XnorWeights, _as_words,  # noqa: F401
                            block_sliced, prepare_sliced, prepare_wordskip, prepare_xnor)
from .reference import sbnn_gemm_reference, sbnn_sliced_reference, xnor_gemm_reference

__all__ = ["XnorWeights", "WordSkipWeights", "SlicedWeights", "prepare_xnor",
           "prepare_wordskip", "prepare_sliced", "xnor_gemm", "sbnn_gemm",
           "sbnn_gemm_sliced", "block_sliced"]

# Below about 50 us of work two threads cost more than they save.
_PAR_MIN_XNOR_WORDS = 1 << 20       # B * M * Kw word-operations
_PAR_MIN_SKIP_WORDS = 1 << 19       # B * non-zero weight words
_PAR_MIN_SLICED = 1 << 16           # ones * ceil(B / 512) + B * M / 16
_SKIP_CHUNK_MIN_BATCH = 4           # from here 64 samples per step beat 1 by 1


def _activations(a_bits, K):
    return _as_words(a_bits, K, "packed activations (B, %d)")


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
