r"""A binary layer on integer inputs (raw uint8 pixels): ``z' = w01 . x`` exactly.

The first layer of an SBNN sees real inputs. With the input normalisation
folded into the next threshold (``pysbnn.packed.fold``) it takes the raw
pixels, so ``z'_bm = sum_{k: w01[m, k] = 1} x_bk`` is an exact integer and costs
one add per one-weight (work proportional to the ones, Sec. 3.5)::

    z'[b, m] = sum_{k in ones(m)} x[b, k],       Q[b] = sum_k x[b, k]

Layout (:func:`prepare_gather`): the column indices of the ones of each row.
The kernel transposes a block of ``SB`` samples into a (K, SB) scratch and
adds, for each output row, the scratch rows of its ones (:func:`add_rows`:
one vector load, widen and add per one-weight and block, vectorised over the
batch); it writes ``z'`` neuron-major, (M, B), the order in which
``threshold.pack_threshold`` emits batch-sliced bits. Executed operations: one
add per one-weight and sample (``analysis.bops_sparse``).

LLVM does not vectorise the add loop as written in Python (measured: scalar
code, 1-2 G adds/s on a Zen 3), so :func:`add_rows` and
:func:`add_scaled_rows` have LLVM IR twins (:func:`_rows_ir`): 256 rows at a
time into <32 x i16> (no overflow: 256 * 255 < 2^16), then widened into
<32 x i32>; 16 G adds/s and more.
"""

from typing import NamedTuple

import numpy as np

from .. import analysis
from .intrinsics import scratch
from .jit import Twins, resolve_backend
from .threshold import HELPERS, emit_rows, fires, sample_offset, threshold_bits
from .words import n_words, pack_last_axis

SB = 32             # samples per block: (K, 32) uint8 scratch, 25 KB for K = 784

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


class GatherWeights(NamedTuple):
    """{0,1} weights for :func:`gather_dense`: the columns of the ones of row
    ``m`` are ``indices[indptr[m]:indptr[m+1]]``; ``w01t`` is the (K, M) uint8
    matrix the column path of small batches reads."""
    indptr: np.ndarray      # int64 (M + 1,)
    indices: np.ndarray     # uint32 (ones,)
    w01t: np.ndarray        # uint8 (K, M padded to a multiple of SB), the columns
    K: int


def prepare_gather(w01):
    """Row lists of the ones of a {0,1} (or bool) weight matrix (M, K)."""
    w01 = np.asarray(w01) != 0
    rows, cols = np.nonzero(w01)
    indptr = np.zeros(w01.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w01.shape[0]), out=indptr[1:])
    M, K = w01.shape
    w01t = np.zeros((K, -(-M // SB) * SB), np.uint8)
    w01t[:, :M] = w01.T
    return GatherWeights(indptr, cols.astype(np.uint32), w01t, int(K))


def gather_dense_reference(x, w01):
    """NumPy reference: ``(z' int64 (B, M), Q int64 (B,), ops)`` for integer ``x`` (B, K)."""
    x = np.asarray(x).astype(np.int64)
    w01 = np.asarray(w01) != 0
    return x @ w01.T.astype(np.int64), x.sum(axis=1), analysis.bops_sparse(w01, len(x), binary=True)


# ----------------------------------------------------------------------------
# Kernels

CHUNK = 256         # ones summed in 16 bits before widening (256 * 255 < 2^16)


def add_rows(acc, xt, idx, t0, t1):
    """``acc[:SB] += sum_{t0 <= t < t1} xt[idx[t], :SB]``: int32 += uint8 rows."""
    for t in range(t0, t1):
        acc[:SB] += xt[idx[t], :SB].astype(np.int32)


def add_scaled_rows(acc, rows, idx, scale, col0):
    """``acc[:SB] += sum_t scale[t] rows[idx[t], col0:col0 + SB]`` (uint8 rows, scale <= 255)."""
    for t in range(idx.shape[0]):
        acc[:SB] += np.int32(scale[t]) * rows[idx[t], col0:col0 + SB].astype(np.int32)


def _rows_ir(scaled):
    """The LLVM IR twin of :func:`add_rows` (``scaled=False``) or of
    :func:`add_scaled_rows`: 256 rows at a time in <SB x i16>, then widened."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    def codegen(context, b, sig, args):
        A, X, Idx = (context.make_array(t)(context, b, a) for t, a in zip(sig.args[:3], args[:3]))
        i16, i64 = ir.IntType(16), ir.IntType(64)
        v8, v16, v32 = (ir.VectorType(t, SB) for t in (ir.IntType(8), i16, ir.IntType(32)))
        acc_ptr = b.bitcast(A.data, v32.as_pointer())
        total = cgutils.alloca_once_value(b, b.load(acc_ptr, align=4))
        part = cgutils.alloca_once_value(b, ir.Constant(v16, None))
        row_stride = cgutils.unpack_tuple(b, X.strides, 2)[0]
        if scaled:
            S = context.make_array(sig.args[3])(context, b, args[3])
            t0, n, col0 = ir.Constant(i64, 0), cgutils.unpack_tuple(b, Idx.shape, 1)[0], args[4]
        else:
            t0, n, col0 = args[3], b.sub(args[4], args[3]), ir.Constant(i64, 0)
        with cgutils.for_range(b, n) as loop:
            t = b.add(t0, loop.index)
            k = b.zext(b.load(b.gep(Idx.data, [t])), i64)
            at = b.add(b.mul(k, row_stride), col0)
            row = b.zext(b.load(b.bitcast(b.gep(X.data, [at]), v8.as_pointer()), align=1), v16)
            if scaled:
                v = b.trunc(b.load(b.gep(S.data, [t])), i16)
                splat = b.shuffle_vector(b.insert_element(ir.Constant(v16, ir.Undefined), v, ir.Constant(ir.IntType(32), 0)),
                                         ir.Constant(v16, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), SB), [0] * SB))
                row = b.mul(row, splat)
            b.store(b.add(b.load(part), row), part)
            last = b.icmp_unsigned("==", b.urem(loop.index, ir.Constant(i64, CHUNK)), ir.Constant(i64, CHUNK - 1))
            with b.if_then(last):                      # flush the 16-bit sums
                b.store(b.add(b.load(total), b.zext(b.load(part), v32)), total)
                b.store(ir.Constant(v16, None), part)
        b.store(b.add(b.load(total), b.zext(b.load(part), v32)), total)
        b.store(b.load(total), acc_ptr, align=4)
        return context.get_dummy_value()

    if scaled:
        @intrinsic
        def _scaled_ir(typingctx, acc, rows, idx, scale, col0):
            return types.void(acc, rows, idx, scale, col0), codegen
        return _scaled_ir

    @intrinsic
    def _rows_ir_(typingctx, acc, xt, idx, t0, t1):
        return types.void(acc, xt, idx, t0, t1), codegen
    return _rows_ir_


def register_add_rows():
    """Overload :func:`add_rows` and :func:`add_scaled_rows` with their IR twins (idempotent)."""
    if _REGISTERED:
        return
    from numba.extending import overload
    rows_twin, scaled_twin = _rows_ir(False), _rows_ir(True)

    @overload(add_rows)
    def _ol_add_rows(acc, xt, idx, t0, t1):
        return lambda acc, xt, idx, t0, t1: rows_twin(acc, xt, idx, t0, t1)

    @overload(add_scaled_rows)
    def _ol_add_scaled(acc, rows, idx, scale, col0):
        return lambda acc, rows, idx, scale, col0: scaled_twin(acc, rows, idx, scale, col0)

    _REGISTERED.append(True)


_REGISTERED = []


def _load_block(x, b0, n, xt, Q):
    """Samples ``b0 .. b0 + n - 1`` of ``x`` (B, K) transposed into ``xt`` (K, SB); their sums into ``Q``."""
    for i in range(n):
        total = 0
        for k in range(x.shape[1]):
            xt[k, i] = x[b0 + i, k]
            total += x[b0 + i, k]
        Q[b0 + i] = total


def _block(x, indptr, idx, zt, Q, c):
    """Samples ``SB c ..`` of every output row into ``zt`` (M, B); their sums into ``Q``."""
    b0 = SB * c
    n = min(SB, x.shape[0] - b0)
    xt = np.zeros((x.shape[1], SB), np.uint8)
    _load_block(x, b0, n, xt, Q)
    acc = scratch(SB, np.int32)
    for m in range(indptr.shape[0] - 1):
        for i in range(SB):
            acc[i] = 0
        add_rows(acc, xt, idx, indptr[m], indptr[m + 1])
        out = zt[m, b0:b0 + n]
        for i in range(n):
            out[i] = acc[i]


def _bits_word(x, indptr, idx, T, d, fix, bits, Q, ones, j):
    """Samples ``64 j .. 64 j + 63`` (two blocks of SB): the threshold bits
    (``threshold.fires``) of every output into word ``j`` of ``bits`` (M, n_words(B)),
    each sample's count of ones into ``ones`` and its sum into ``Q``."""
    F, XI, G = fix[0], fix[1], fix[2]
    xt = np.zeros((x.shape[1], SB), np.uint8)
    acc = scratch(SB, np.int32)
    t, count = scratch(SB, np.int64), scratch(SB, np.int64)
    for h in range(64 // SB):
        b0 = 64 * j + SB * h
        n = min(SB, x.shape[0] - b0)
        if n <= 0:
            break
        _load_block(x, b0, n, xt, Q)
        for i in range(n):
            t[i], count[i] = sample_offset(Q[b0 + i], XI, G, F), 0
        for m in range(indptr.shape[0] - 1):
            for i in range(SB):
                acc[i] = 0
            add_rows(acc, xt, idx, indptr[m], indptr[m + 1])
            word = np.uint64(0)
            for i in range(n):
                bit = fires(acc[i], t[i], T[m], d[m], F)
                word |= np.uint64(bit) << np.uint64(SB * h + i)
                count[i] += bit
            bits[m, j] = word if h == 0 else bits[m, j] | word
        for i in range(n):
            ones[b0 + i] = count[i]


def _gather_serial(x, indptr, idx, zt, Q):
    for c in range((x.shape[0] + SB - 1) // SB):
        _block(x, indptr, idx, zt, Q, c)


def _gather_parallel(x, indptr, idx, zt, Q):
    for c in prange((x.shape[0] + SB - 1) // SB):
        _block(x, indptr, idx, zt, Q, c)


def _bits_serial(x, indptr, idx, T, d, fix, bits, Q, ones):
    for j in range(bits.shape[1]):
        _bits_word(x, indptr, idx, T, d, fix, bits, Q, ones, j)


def _bits_parallel(x, indptr, idx, T, d, fix, bits, Q, ones):
    for j in prange(bits.shape[1]):
        _bits_word(x, indptr, idx, T, d, fix, bits, Q, ones, j)


def columns(x, w01t, z, ks, vs):
    """One sample by the weight columns of its non-zero inputs: ``z[m] = sum_k x_k
    w01t[k, m]``, vectorised over 32 outputs at a time (:func:`add_scaled_rows`);
    ``ks``, ``vs``: scratch of K entries. Returns ``Q = sum_k x_k``."""
    n, Q = 0, 0
    for k in range(x.shape[0]):
        v = x[k]
        if v != 0:
            ks[n], vs[n] = k, v
            n += 1
            Q += np.int64(v)
    acc = scratch(SB, np.int32)
    for c in range(w01t.shape[1] // SB):
        for i in range(SB):
            acc[i] = 0
        add_scaled_rows(acc, w01t, ks[:n], vs[:n], SB * c)
        out = z[SB * c:min(SB * c + SB, z.shape[0])]
        for i in range(out.shape[0]):
            out[i] = acc[i]
    return Q


def _columns(x, w01t, z, Q):
    """Mostly-zero inputs: for every non-zero input ``k`` of a sample, add
    ``x[b, k]`` to the outputs whose weight column has a one (work ~ non-zero
    inputs x outputs / 32 vector adds, whatever the density); z is (B, M)."""
    ks = np.empty(x.shape[1], np.uint32)
    vs = np.empty(x.shape[1], np.int32)
    for b in range(x.shape[0]):
        Q[b] = columns(x[b], w01t, z[b], ks, vs)


def _columns_parallel(x, w01t, z, Q):
    for b in prange(x.shape[0]):
        ks = np.empty(x.shape[1], np.uint32)
        vs = np.empty(x.shape[1], np.int32)
        Q[b] = columns(x[b], w01t, z[b], ks, vs)


def _columns_bits(x, w01t, T, d, fix, bits, Q, ones):
    """:func:`_columns` with the threshold fused: each sample's bits (``threshold.emit_rows``)
    into its row of ``bits`` (B, n_words(M)), its ones into ``ones``, its sum into ``Q``."""
    ks, vs = np.empty(x.shape[1], np.uint32), np.empty(x.shape[1], np.int32)
    z = np.empty(T.shape[0], np.int32)
    for b in range(x.shape[0]):
        Q[b] = columns(x[b], w01t, z, ks, vs)
        ones[b] = emit_rows(z, sample_offset(Q[b], fix[1], fix[2], fix[0]), T, d, fix[0], bits[b])


def _columns_bits_parallel(x, w01t, T, d, fix, bits, Q, ones):
    for c in prange((x.shape[0] + SB - 1) // SB):
        b0, b1 = SB * c, min(SB * c + SB, x.shape[0])
        _columns_bits(x[b0:b1], w01t, T, d, fix, bits[b0:b1], Q[b0:b1], ones[b0:b1])


def _gather_samples(x, indptr, idx, z, Q):
    """Small batches: sample by sample, one scalar add per one-weight; z is (B, M)."""
    for b in range(x.shape[0]):
        total = 0
        for k in range(x.shape[1]):
            total += x[b, k]
        Q[b] = total
        for m in range(indptr.shape[0] - 1):
            acc = np.int32(0)
            for t in range(indptr[m], indptr[m + 1]):
                acc += np.int32(x[b, idx[t]])
            z[b, m] = acc


_TWINS = Twins({"blocks": _gather_serial, "blocks_par": _gather_parallel, "samples": _gather_samples,
                "columns": _columns, "columns_par": _columns_parallel,
                "bits": _bits_serial, "bits_par": _bits_parallel,
                "columns_bits": _columns_bits, "columns_bits_par": _columns_bits_parallel},
               helpers=HELPERS + (_load_block, _block, _bits_word, columns, _columns_bits), inline=(fires,),
               setup=(register_add_rows,))

#: a vector add of 32 outputs (the column path) costs about as much as this many
#: scalar gathered adds (batches below BLOCK_MIN_BATCH) -- and as one vector add
#: of 32 samples (the block path) from BLOCK_MIN_BATCH on (measured with
#: benchmarks/bench_dispatch.py: 2.7-3.1 on a 2-core AMD EPYC Zen 3, AVX2, 2026-12-01)
COLUMN_ADDS = 3


def strategy(x, w):
    """``(path, adds)``: the kernel path for uint8 inputs ``x`` (B, K) and the adds it
    executes -- "columns" (non-zero inputs x outputs) when cheaper, else
    "samples" (batches below BLOCK_MIN_BATCH) or "blocks" (ones x samples)."""
    B, M = x.shape[0], w.indptr.shape[0] - 1
    gathered, column_adds = int(w.indices.shape[0]) * B, int(np.count_nonzero(x)) * M
    per_add = COLUMN_ADDS if B < BLOCK_MIN_BATCH else 1
    if column_adds < per_add * gathered:
        return "columns", column_adds
    return ("samples" if B < BLOCK_MIN_BATCH else "blocks"), gathered

BLOCK_MIN_BATCH = 8         # below this, sample by sample (no transposed scratch)
_PAR_MIN_WORK = 1 << 20     # ones * B from which two threads pay


def gather_dense(x, w, *, backend="auto", parallel=None):
    """``z' = w01 . x`` and ``Q = 1 . x`` of uint8 inputs, exactly.

    Parameters
    ----------
    x : uint8 (B, K) raw inputs (pixels).
    w : :class:`GatherWeights` (``prepare_gather``).
    backend : ``"auto" | "numba" | "numpy"``.

    Returns
    -------
    zt : int32 (M, B), ``z'`` neuron-major (``zt.T`` is (B, M)).
    Q : int64 (B,).
    ops : the adds executed (:func:`strategy`): ones * B, or, on the column
        path that mostly-zero inputs take when it costs less, non-zeros * M.
    """
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.ndim != 2 or x.shape[1] != w.K:
        raise ValueError(f"expected uint8 inputs (B, {w.K}), got {x.shape}")
    B, M = x.shape[0], w.indptr.shape[0] - 1
    path, ops = strategy(x, w)
    if resolve_backend(backend) == "numpy":
        w01 = np.zeros((M, w.K), bool)
        w01[np.repeat(np.arange(M), np.diff(w.indptr)), w.indices] = True
        z, Q, _ = gather_dense_reference(x, w01)
        return np.ascontiguousarray(z.T.astype(np.int32)), Q, ops
    Q = np.empty(B, np.int64)
    parallel = ops >= _PAR_MIN_WORK and B > SB if parallel is None else parallel
    if path == "blocks":
        zt = np.empty((M, B), np.int32)
        _TWINS["blocks_par" if parallel else "blocks"](x, w.indptr, w.indices, zt, Q)
        return zt, Q, ops
    z = np.empty((B, M), np.int32)
    if path == "columns":
        _TWINS["columns_par" if parallel else "columns"](x, w.w01t, z, Q)
    else:
        _TWINS["samples"](x, w.indptr, w.indices, z, Q)
    return np.ascontiguousarray(z.T), Q, ops


#: the paths that emit a layout straight from the kernel: (strategy path, layout)
FUSED = {("blocks", "sliced"): "bits", ("columns", "rows"): "columns_bits"}


def gather_bits(x, w, th, layout, *, backend="auto", parallel=None):
    """The first layer with its BatchNorm + sign folded in: the bits of uint8 inputs.

    The bits of ``dir * u_F >= T`` (:mod:`pysbnn.kernels.threshold`) for
    ``z' = w01 . x`` and ``q = Q = 1 . x`` (:func:`gather_dense`), tested as the
    sums are made (no integer matrix is stored), in ``layout``: ``"sliced"``
    from the block path, ``"rows"`` from the column path (``FUSED``; the path
    is :func:`strategy`'s, callers check ``(path, layout) in FUSED``).

    Returns ``(bits, ones, ops)``: uint64 (M, n_words(B)) batch-sliced or
    (B, n_words(M)) row bits, int64 (B,) ones per sample, the adds executed.
    """
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.ndim != 2 or x.shape[1] != w.K:
        raise ValueError(f"expected uint8 inputs (B, {w.K}), got {x.shape}")
    B, M = x.shape[0], w.indptr.shape[0] - 1
    path, ops = strategy(x, w)
    if (path, layout) not in FUSED:
        raise ValueError(f"no fused {layout!r} kernel on the {path!r} path (FUSED: {sorted(FUSED)})")
    if resolve_backend(backend) == "numpy":
        zt, Q, _ = gather_dense(x, w, backend="numpy")
        fired = threshold_bits(zt.T, Q, th)
        return pack_last_axis(fired.T if layout == "sliced" else fired), fired.sum(axis=1).astype(np.int64), ops
    shape = (M, n_words(B)) if layout == "sliced" else (B, n_words(M))
    bits, Q, ones = np.empty(shape, np.uint64), np.empty(B, np.int64), np.empty(B, np.int64)
    parallel = ops >= _PAR_MIN_WORK and B > 64 if parallel is None else parallel
    fix = np.array([th.F, th.XI, th.G], np.int64)
    kernel = FUSED[path, layout] + ("_par" if parallel else "")
    table = w.indptr, w.indices
    args = (x,) + (table if path == "blocks" else (w.w01t,)) + (th.T, th.dir, fix, bits, Q, ones)
    _TWINS[kernel](*args)
    return bits, ones, ops
