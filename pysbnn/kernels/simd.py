"""Eight-lane float vectors for kernel code: NumPy here, LLVM vectors once compiled.

Numba's loop vectorizer does not vectorise the short, register-blocked loops
of a small convolution (its SLP vectorizer is off by default), so the float
kernels of training spell their vectors out. A *vector* is 8 consecutive
elements of a float array (float32 or float64)::

    acc = vzero(w)                          # 8 zeros of w's dtype
    acc = vfma(vbroadcast(d, i), vload(w, j), acc)    # acc + d[i] * w[j:j+8]
    vaddto(out, k, acc)                     # out[k:k+8] += acc

In plain Python (``NUMBA_DISABLE_JIT=1``) a vector is an 8-element NumPy
array and each helper is the one-line NumPy expression in its body. Compiled,
:func:`register` overloads every helper with an intrinsic on an LLVM
``<8 x float>`` (``<8 x double>``) value that lives in registers (one ymm,
two for float64), so a tile of accumulators is a handful of named locals.
``vfma`` is a multiply followed by an add (no fused rounding), the same
operations as the NumPy twin, so both give the same bits.

Every index is an element index; a vector access must lie inside the array
(compiled code does not check). Kernels built on these helpers:
:mod:`~pysbnn.kernels.conv_input_grad`, :mod:`~pysbnn.kernels.conv_sign_hist`,
:mod:`~pysbnn.kernels.batchnorm`.
"""

import numpy as np

LANES = 8


def vzero(like):
    """Eight zeros of the dtype of array ``like``."""
    return np.zeros(LANES, like.dtype)


def vload(a, i):
    """``a[i:i+8]`` (a copy)."""
    return a[i:i + LANES].copy()


def vstore(a, i, v):
    """``a[i:i+8] = v``."""
    a[i:i + LANES] = v


def vaddto(a, i, v):
    """``a[i:i+8] += v``."""
    a[i:i + LANES] += v


def vbroadcast(a, i):
    """Eight copies of ``a[i]``."""
    return np.full(LANES, a[i], a.dtype)


def vsplat(x, like):
    """Eight copies of the scalar ``x`` in the dtype of array ``like``."""
    return np.full(LANES, x, like.dtype)


def vfma(a, b, c):
    """``a * b + c`` (rounded after the product and after the sum)."""
    return a * b + c


def vadd(a, b):
    """``a + b``."""
    return a + b


def vmul(a, b):
    """``a * b``."""
    return a * b


_STATE = {}


def _vector_type():
    """The numba type of a vector (one class, parametrised by dtype)."""
    if "Vec8" in _STATE:
        return _STATE["Vec8"]
    from llvmlite import ir
    from numba import types
    from numba.extending import models, register_model

    class Vec8(types.Type):
        def __init__(self, dtype):
            self.dtype = dtype
            super().__init__(name=f"Vec8({dtype})")

    @register_model(Vec8)
    class Vec8Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            lane = dmm.lookup(fe_type.dtype).get_value_type()
            super().__init__(dmm, fe_type, ir.VectorType(lane, LANES))

    _STATE["Vec8"] = Vec8
    return Vec8


def _pointer(context, builder, aty, a, i):
    """``&a[i]`` as a pointer to a vector."""
    from llvmlite import ir
    arr = context.make_array(aty)(context, builder, a)
    vty = ir.VectorType(context.get_value_type(aty.dtype), LANES)
    return builder.bitcast(builder.gep(arr.data, [i]), vty.as_pointer())


def _splat(builder, vty, value):
    from llvmlite import ir
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))


def _intrinsics():
    """Intrinsic twins of the helpers, by name."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic
    Vec8 = _vector_type()
    align = 4               # element alignment only: vectors start anywhere

    @intrinsic
    def _vzero(typingctx, like):
        def cg(context, builder, sig, args):
            return ir.Constant(context.get_value_type(sig.return_type), None)
        return Vec8(like.dtype)(like), cg

    @intrinsic
    def _vload(typingctx, a, i):
        def cg(context, builder, sig, args):
            return builder.load(_pointer(context, builder, sig.args[0], *args), align=align)
        return Vec8(a.dtype)(a, i), cg

    @intrinsic
    def _vstore(typingctx, a, i, v):
        def cg(context, builder, sig, args):
            builder.store(args[2], _pointer(context, builder, sig.args[0], args[0], args[1]), align=align)
            return context.get_dummy_value()
        return types.void(a, i, v), cg

    @intrinsic
    def _vaddto(typingctx, a, i, v):
        def cg(context, builder, sig, args):
            p = _pointer(context, builder, sig.args[0], args[0], args[1])
            builder.store(builder.fadd(builder.load(p, align=align), args[2]), p, align=align)
            return context.get_dummy_value()
        return types.void(a, i, v), cg

    @intrinsic
    def _vbroadcast(typingctx, a, i):
        def cg(context, builder, sig, args):
            arr = context.make_array(sig.args[0])(context, builder, args[0])
            value = builder.load(builder.gep(arr.data, [args[1]]))
            return _splat(builder, context.get_value_type(sig.return_type), value)
        return Vec8(a.dtype)(a, i), cg

    @intrinsic
    def _vsplat(typingctx, x, like):
        def cg(context, builder, sig, args):
            value = context.cast(builder, args[0], sig.args[0], sig.args[1].dtype)
            return _splat(builder, context.get_value_type(sig.return_type), value)
        return Vec8(like.dtype)(x, like), cg

    def binary(op):
        @intrinsic
        def _op(typingctx, a, b):
            def cg(context, builder, sig, args):
                return getattr(builder, op)(*args)
            return a(a, b), cg
        return _op

    @intrinsic
    def _vfma(typingctx, a, b, c):
        def cg(context, builder, sig, args):
            return builder.fadd(builder.fmul(args[0], args[1]), args[2])
        return a(a, b, c), cg

    return {"vzero": _vzero, "vload": _vload, "vstore": _vstore, "vaddto": _vaddto,
            "vbroadcast": _vbroadcast, "vsplat": _vsplat, "vfma": _vfma,
            "vadd": binary("fadd"), "vmul": binary("fmul")}


def register():
    """Overload the helpers with their intrinsics for compiled code (idempotent).

    Called by :class:`pysbnn.kernels.jit.Twins` before it compiles a kernel
    module that lists it in ``setup``.
    """
    if _STATE.get("registered"):
        return
    from numba.extending import overload
    impl = _intrinsics()
    helpers = {"vzero": vzero, "vload": vload, "vstore": vstore, "vaddto": vaddto,
               "vbroadcast": vbroadcast, "vsplat": vsplat, "vfma": vfma, "vadd": vadd, "vmul": vmul}
    for name, fn in helpers.items():
        _overload_with(overload, fn, impl[name])
    _STATE["registered"] = True


def _overload_with(overload, fn, intr):
    """``overload(fn)`` by a function calling the intrinsic ``intr`` with the same arguments."""
    n = fn.__code__.co_argcount
    if n == 1:
        overload(fn, inline="always")(lambda a: lambda a: intr(a))
    elif n == 2:
        overload(fn, inline="always")(lambda a, b: lambda a, b: intr(a, b))
    else:
        overload(fn, inline="always")(lambda a, b, c: lambda a, b, c: intr(a, b, c))
