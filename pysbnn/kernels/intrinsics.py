"""Word helpers for kernel code: plain Python here, LLVM intrinsics once compiled.

* :func:`popcount64` -- set bits of one 64-bit word: SWAR arithmetic in
  Python, ``llvm.ctpop.i64`` in compiled code (``popcnt``, and ``vpopcntq`` in
  vectorised loops on AVX-512; a ``vpshufb`` nibble lookup on AVX2);
* :func:`scratch` -- a small work buffer: a zeroed NumPy array in Python,
  uninitialised *stack* memory in compiled code;
* :func:`float32_from_bits` -- the float32 whose IEEE bits are the low 32
  bits of an integer: a NumPy view in Python, one LLVM ``bitcast`` (no
  instruction of its own) in compiled code;
* :func:`loop_ops` -- what a compiled inner loop is made of (a test reads
  the carry-save loop of the XNOR kernel with it).

Each LLVM intrinsic is one small factory (:func:`ctpop64_intrinsic`,
:func:`alloca_intrinsic`, :func:`bitcast_f32_intrinsic`); :func:`register`
overloads the helpers with them (called by :class:`pysbnn.kernels.jit.Twins` before compiling).
"""

import numpy as np

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_STATE = {}


def popcount64(x):
    """Number of set bits of a 64-bit word, as an int.

    The SWAR popcount below is pure arithmetic without overflow, so it is
    exact on Python ints and NumPy uint64 alike; compiled kernels get
    ``llvm.ctpop.i64`` instead (see :func:`register`).
    """
    x = np.uint64(x)
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    x = x + (x >> np.uint64(8))
    x = x + (x >> np.uint64(16))
    x = x + (x >> np.uint64(32))
    return int(x & np.uint64(0x7F))


def scratch(n, dtype):
    """A length-``n`` work buffer of ``dtype`` for kernel code (``n`` a constant).

    Compiled, it is uninitialised stack memory: a stack buffer cannot alias
    the kernel's input arrays, which lets LLVM keep its contents in vector
    registers (with a heap array it must assume every store may change the
    inputs; measured: the XNOR kernel ran 2x slower with a heap accumulator).
    """
    return np.zeros(n, dtype)


def float32_from_bits(i):
    """The float32 whose IEEE-754 bit pattern is ``i & 0xFFFFFFFF``
    (e.g. ``(n + 127) << 23`` is ``2.0 ** n`` for -126 <= n <= 127)."""
    return np.array(int(i) & 0xFFFFFFFF, np.uint32).view(np.float32)[()]


def ctpop64_intrinsic():
    """``numba.extending.intrinsic`` emitting ``llvm.ctpop.i64``; returns int64."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def ctpop64(typingctx, x):
        if not (isinstance(x, types.Integer) and x.bitwidth == 64):
            return None

        def codegen(context, builder, signature, args):
            fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
            return builder.call(fn, [args[0]])
        return types.int64(x), codegen

    return ctpop64


def alloca_intrinsic():
    """Intrinsic returning a pointer to ``n`` elements of stack (``n`` literal)."""
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def alloca(typingctx, n, dtype):
        if not isinstance(n, types.IntegerLiteral) or not isinstance(dtype, types.NumberClass):
            return None
        size, nbtype = n.literal_value, dtype.dtype

        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, context.get_data_type(nbtype), size=size)
        return types.CPointer(nbtype)(n, dtype), codegen

    return alloca


def bitcast_f32_intrinsic():
    """Intrinsic reading the low 32 bits of an integer as a float32."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def bitcast_f32(typingctx, i):
        if not isinstance(i, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            v = args[0]
            if i.bitwidth > 32:
                v = builder.trunc(v, ir.IntType(32))
            elif i.bitwidth < 32:
                v = builder.zext(v, ir.IntType(32))
            return builder.bitcast(v, ir.FloatType())
        return types.float32(i), codegen

    return bitcast_f32


def register():
    """Overload :func:`popcount64`, :func:`scratch` and :func:`float32_from_bits`
    for compiled code (idempotent).

    If the ctpop intrinsic cannot be built, compiled code keeps the SWAR
    arithmetic (which LLVM also recognises as a popcount).
    """
    if _STATE.get("registered"):
        return
    import numba
    from numba import types
    from numba.extending import overload

    try:
        ctpop64 = ctpop64_intrinsic()
        _STATE["popcount"] = "llvm.ctpop"
    except Exception:  # pragma: no cover - depends on the llvmlite build
        ctpop64 = numba.njit(popcount64)
        _STATE["popcount"] = "swar"
    alloca = alloca_intrinsic()
    bitcast_f32 = bitcast_f32_intrinsic()
    carray = numba.carray

    @overload(popcount64, inline="always")
    def _ol_popcount64(x):
        return lambda x: ctpop64(x)

    # inline="always" puts the alloca in the caller's frame, so the buffer
    # lives as long as the kernel that asked for it.
    @overload(scratch, inline="always", prefer_literal=True)
    def _ol_scratch(n, dtype):
        if isinstance(n, types.IntegerLiteral):
            return lambda n, dtype: carray(alloca(n, dtype), (n,))
        return lambda n, dtype: np.zeros(n, dtype)

    @overload(float32_from_bits, inline="always")
    def _ol_float32_from_bits(i):
        return lambda i: bitcast_f32(i)

    _STATE["registered"] = True


def popcount_backend():
    """What compiled code uses for popcount: ``"llvm.ctpop"`` or ``"swar"``."""
    register()
    return _STATE["popcount"]


def popcount_asm():
    """Assembly of a tiny jitted probe around :func:`popcount64` (uncached).

    ``python -m pysbnn.kernels.intrinsics`` prints its popcount lines;
    ``tests/test_packed_dense.py`` checks for ``popcnt``.
    """
    import numba
    register()

    def _probe(words):
        total = 0
        for i in range(words.shape[0]):
            total += popcount64(words[i])
        return total

    probe = numba.njit(cache=False)(_probe)
    probe(np.zeros(8, np.uint64))
    return probe.inspect_asm(probe.signatures[0])


def loop_ops(asm, key):
    """Opcode histogram of the shortest loop of ``asm`` (a backward branch to a
    label) that contains the opcode ``key``; ``{}`` if there is none."""
    import re
    lines = asm.splitlines()
    labels = {ln.rstrip(":"): i for i, ln in enumerate(lines) if re.match(r"^\.LBB\d+_\d+:", ln)}
    best = None
    for i, ln in enumerate(lines):
        jump = re.match(r"\s+j\w+\s+(\.LBB\d+_\d+)", ln)
        if jump and labels.get(jump.group(1), i) < i:
            body = [x.split()[0] for x in lines[labels[jump.group(1)]:i + 1] if re.match(r"\s+[a-z]", x)]
            if key in body and (best is None or len(body) < len(best)):
                best = body
    hist = {}
    for op in best or []:
        hist[op] = hist.get(op, 0) + 1
    return dict(sorted(hist.items(), key=lambda t: -t[1]))


if __name__ == "__main__":      # python -m pysbnn.kernels.intrinsics: check the popcount
    lines = [ln.strip() for ln in popcount_asm().splitlines() if "popcnt" in ln]
    print("compiled popcount64 uses %s; popcount instructions in the probe:" % popcount_backend())
    print("\n".join(sorted(set(lines))) or "none (no hardware popcount!)")
