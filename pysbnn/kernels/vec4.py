"""Four 64-bit lanes as one value, for kernels that keep counters in registers.

The carry-save XNOR kernel (:mod:`pysbnn.kernels.xnor`, ``kind="hs"``) holds
its bit-sliced counters as whole 256-bit vectors. Written as stack arrays,
LLVM kept them in memory (4 loads and 4 stores per vector step, measured), so
compiled code gets a numba type ``u64x4`` whose data model is LLVM
``<4 x i64>`` (one ymm register) and these helpers on it:

=================  ============================================================
``vload``          ``a2[i, j:j+4]`` of a C-contiguous uint64 2-D array
``vbcast``         ``a2[i, j]`` in all four lanes
``vzero``          four zero lanes
``^ & | +``        lane-wise, as on NumPy arrays
``vpopcnt8``       popcount of every byte, left in its byte (``llvm.ctpop.v32i8``)
``vaddb``          byte-wise add, mod 256
``vbytesum``       sum of the 8 bytes of every lane (``vpsadbw`` on AVX2)
``vshl``           lane-wise shift left by a constant
``vget``           lane ``i`` as an int
``vstore_z``       ``out[i, j:j+4] = K - 2 v`` as int32
=================  ============================================================

Each helper is written here in NumPy on arrays of 4 uint64, which is what
runs under ``NUMBA_DISABLE_JIT=1`` (the same kernel code, slowly and
exactly); :func:`register` overloads them with their LLVM IR twins, one small
factory each. Loads and stores use raw addresses (no bounds or negative-index
code: those cmov chains ate the whole gain when the kernel indexed arrays).

Numba caches the compiled kernel by ``xnor.py``'s source only: after editing
this module, clear the cache (``pysbnn/kernels/__pycache__/xnor*.nb*``).
"""

import numpy as np

from .jit import host_features

LANES = 4
_STATE = {}


# ----------------------------------------------------------------------------
# NumPy twins (the semantics)

def vload(a2, i, j):
    """``a2[i, j:j+4]`` as a vector."""
    return a2[i, j:j + LANES].copy()


def vbcast(a2, i, j):
    """``a2[i, j]`` in all four lanes."""
    return np.full(LANES, a2[i, j], np.uint64)


def vzero():
    return np.zeros(LANES, np.uint64)


def vpopcnt8(v):
    """Popcount of every byte, left in its byte."""
    return np.bitwise_count(v.view(np.uint8)).view(np.uint64)


def vaddb(x, y):
    """Byte-wise add (mod 256)."""
    return (x.view(np.uint8) + y.view(np.uint8)).view(np.uint64)


def vbytesum(v):
    """Sum of the 8 bytes of every lane."""
    return v.view(np.uint8).reshape(LANES, 8).sum(axis=1, dtype=np.uint64)


def vshl(v, s):
    """Every lane shifted left by the constant ``s``."""
    return v << np.uint64(s)


def vget(v, i):
    return int(v[i])


def vstore_z(out, i, j, v, K):
    """``out[i, j:j+4] = K - 2 v`` as int32."""
    out[i, j:j + LANES] = (np.int64(K) - 2 * v.astype(np.int64)).astype(np.int32)


# ----------------------------------------------------------------------------
# LLVM IR twins: the type, then one factory per intrinsic

def vector_type():
    """The numba type ``u64x4`` (an LLVM ``<4 x i64>``), made once."""
    if "type" not in _STATE:
        from llvmlite import ir
        from numba import types
        from numba.extending import models, register_model

        class U64x4(types.Type):
            def __init__(self):
                super().__init__(name="u64x4")

        @register_model(U64x4)
        class _Model(models.PrimitiveModel):
            def __init__(self, dmm, fe_type):
                super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(64), LANES))

        _STATE["type"] = U64x4()
    return _STATE["type"]


def _ir(width=64, n=LANES):
    from llvmlite import ir
    return ir.VectorType(ir.IntType(width), n)


def _const(value, width=64, n=LANES):
    from llvmlite import ir
    return ir.Constant(_ir(width, n), [value] * n)


def _as_bytes(builder, v):
    return builder.bitcast(v, _ir(8, 8 * LANES))


def _splat(builder, x):
    from llvmlite import ir
    one = builder.insert_element(ir.Constant(_ir(), ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(_ir(), ir.Undefined), _const(0, 32))


def _address(context, builder, sig, args, itemsize):
    """Integer address of ``a2[i, j]`` (``args = (a2, i, j, ...)``): row stride, no checks."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    i64 = ir.IntType(64)
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    stride = cgutils.unpack_tuple(builder, ary.strides, 2)[0]
    i, j = (context.cast(builder, args[k], sig.args[k], types.int64) for k in (1, 2))
    offset = builder.add(builder.mul(i, stride), builder.mul(j, ir.Constant(i64, itemsize)))
    return builder.add(builder.ptrtoint(ary.data, i64), offset)


def _is_c2d(a2, dtype):
    from numba import types
    return isinstance(a2, types.Array) and a2.ndim == 2 and a2.layout == "C" and a2.dtype == dtype


def load_intrinsic(broadcast):
    """``vbcast`` (``broadcast=True``: one word, splatted) or ``vload`` (4 words)."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic
    vec = vector_type()

    @intrinsic
    def _load(typingctx, a2, i, j):
        if not (_is_c2d(a2, types.uint64) and isinstance(i, types.Integer) and isinstance(j, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            at = _address(context, builder, sig, args, 8)
            if broadcast:
                return _splat(builder, builder.load(builder.inttoptr(at, ir.IntType(64).as_pointer())))
            return builder.load(builder.inttoptr(at, _ir().as_pointer()), align=8)
        return vec(a2, i, j), codegen
    return _load


def zero_intrinsic():
    from numba.extending import intrinsic
    vec = vector_type()

    @intrinsic
    def _zero(typingctx):
        return vec(), lambda context, builder, sig, args: _const(0)
    return _zero


def lanewise_intrinsic(emit):
    """A two-operand lane-wise op, ``emit(builder, x, y)`` (xor, and, or, add)."""
    from numba.extending import intrinsic
    vec = vector_type()

    @intrinsic
    def _op(typingctx, x, y):
        if x == vec and y == vec:
            return vec(x, y), lambda context, builder, sig, args: emit(builder, *args)
    return _op


def addb_intrinsic():
    def emit(builder, x, y):
        return builder.bitcast(builder.add(_as_bytes(builder, x), _as_bytes(builder, y)), _ir())
    return lanewise_intrinsic(emit)


def popcnt8_intrinsic():
    """``llvm.ctpop.v32i8``: on AVX2 a ``vpshufb`` nibble lookup, no horizontal add."""
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic
    vec = vector_type()

    def codegen(context, builder, sig, args):
        t = _ir(8, 8 * LANES)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t]), "llvm.ctpop.v32i8")
        return builder.bitcast(builder.call(fn, [_as_bytes(builder, args[0])]), _ir())

    @intrinsic
    def _popcnt8(typingctx, v):
        if v == vec:
            return vec(v), codegen
    return _popcnt8


def bytesum_intrinsic(psadbw):
    """Byte sums per lane: ``vpsadbw`` against zero (``psadbw=True``, AVX2
    only) or three shift/mask/add rounds of generic IR."""
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic
    vec = vector_type()

    def codegen(context, builder, sig, args):
        v, b = args[0], builder
        if psadbw:
            t = _ir(8, 8 * LANES)
            fn = cgutils.get_or_insert_function(b.module, ir.FunctionType(_ir(), [t, t]), "llvm.x86.avx2.psad.bw")
            return b.call(fn, [_as_bytes(b, v), ir.Constant(t, [0] * (8 * LANES))])
        for shift, mask in ((8, 0x00FF00FF00FF00FF), (16, 0x0000FFFF0000FFFF), (32, 0x00000000FFFFFFFF)):
            m = _const(mask)
            v = b.add(b.and_(v, m), b.and_(b.lshr(v, _const(shift)), m))
        return v

    @intrinsic
    def _bytesum(typingctx, v):
        if v == vec:
            return vec(v), codegen
    return _bytesum


def shl_intrinsic():
    from numba import types
    from numba.extending import intrinsic
    vec = vector_type()

    @intrinsic(prefer_literal=True)
    def _shl(typingctx, v, s):
        if v == vec and isinstance(s, types.IntegerLiteral):
            shift = s.literal_value
            return vec(v, s), lambda context, builder, sig, args: builder.shl(args[0], _const(shift))
    return _shl


def get_intrinsic():
    from numba import types
    from numba.extending import intrinsic
    vec = vector_type()

    @intrinsic
    def _get(typingctx, v, i):
        if v == vec and isinstance(i, types.Integer):
            return types.int64(v, i), lambda context, builder, sig, args: builder.extract_element(*args)
    return _get


def store_z_intrinsic():
    """``out[i, j:j+4] = K - 2 v``: one vector subtract, truncate, 16-byte store."""
    from numba import types
    from numba.extending import intrinsic
    vec = vector_type()

    def codegen(context, builder, sig, args):
        k = _splat(builder, context.cast(builder, args[4], sig.args[4], types.int64))
        z = builder.trunc(builder.sub(k, builder.shl(args[3], _const(1))), _ir(32))
        at = _address(context, builder, sig, args, 4)
        builder.store(z, builder.inttoptr(at, _ir(32).as_pointer()), align=4)
        return context.get_dummy_value()

    @intrinsic
    def _store_z(typingctx, out, i, j, v, K):
        if (_is_c2d(out, types.int32) and isinstance(i, types.Integer) and isinstance(j, types.Integer)
                and v == vec and isinstance(K, types.Integer)):
            return types.none(out, i, j, v, K), codegen
    return _store_z


def register():
    """Overload the helpers and ``^ & | +`` on ``u64x4`` with the IR twins (idempotent).

    ``vbytesum`` uses ``vpsadbw`` only where numba compiles for this host and
    the host has AVX2 (:func:`pysbnn.kernels.jit.host_features`)."""
    if _STATE.get("registered"):
        return
    import operator

    from numba.extending import overload
    for op, emit in ((operator.xor, lambda b, x, y: b.xor(x, y)), (operator.and_, lambda b, x, y: b.and_(x, y)),
                     (operator.or_, lambda b, x, y: b.or_(x, y)), (operator.add, lambda b, x, y: b.add(x, y))):
        overload(op)(_lanewise_overload(lanewise_intrinsic(emit)))
    load, bcast, zero, get = load_intrinsic(False), load_intrinsic(True), zero_intrinsic(), get_intrinsic()
    popcnt8, addb, shl, store_z = popcnt8_intrinsic(), addb_intrinsic(), shl_intrinsic(), store_z_intrinsic()
    bytesum = bytesum_intrinsic(host_features()["avx2"])
    always = dict(inline="always")
    overload(vload, **always)(lambda a2, i, j: lambda a2, i, j: load(a2, i, j))
    overload(vbcast, **always)(lambda a2, i, j: lambda a2, i, j: bcast(a2, i, j))
    overload(vzero, **always)(lambda: lambda: zero())
    overload(vpopcnt8, **always)(lambda v: lambda v: popcnt8(v))
    overload(vaddb, **always)(lambda x, y: lambda x, y: addb(x, y))
    overload(vbytesum, **always)(lambda v: lambda v: bytesum(v))
    overload(vshl, prefer_literal=True, **always)(lambda v, s: lambda v, s: shl(v, s))
    overload(vget, **always)(lambda v, i: lambda v, i: get(v, i))
    overload(vstore_z, **always)(lambda out, i, j, v, K: lambda out, i, j, v, K: store_z(out, i, j, v, K))
    _STATE["registered"] = True


def _lanewise_overload(ir_twin):
    """Typer of ``x op y`` for two ``u64x4`` (None for any other operands)."""
    vec = vector_type()

    def typer(x, y):
        if x == vec and y == vec:
            return lambda x, y: ir_twin(x, y)
    return typer
