"""Word helpers of Kernel B (``conv_sbnn``) and their LLVM IR twins.

The word-wide steps of Kernel B: tap-plane shifts (:func:`shift_rows`), the
15-input carry-save add into bit-sliced counters (:func:`csa15_add`, built
from ``_fa`` / ``_tree15`` / ``_tree7`` / ``_add_counter``) and the expansion
of the counters to int32 (:func:`expand_store`). Each is written here in
NumPy, which is what runs with ``NUMBA_DISABLE_JIT=1``; :func:`register_simd`
overloads them with LLVM IR on <8 x i64> / <64 x i8> vectors (one small
factory per intrinsic: :func:`shift_rows_ir`, :func:`csa15_ir`,
:func:`expand_ir`), so that the compiled kernel gets whole-register code
(zmm on AVX-512, pairs of ymm on AVX2). The carry-save trees are shared: the
same ``_tree15`` builds the NumPy twin and the IR.

Numba caches the compiled Kernel B by ``conv_sbnn.py``'s source only: after
editing this module, clear the cache (``__pycache__/conv_sbnn*.nb*``).
"""
import numpy as np


GROUP = 15        # one-weights added per carry-save step (a 15 -> 4 adder tree)


def _fa(a, b, c, X, A, O):
    """Full adder on bit-slices with the given xor / and / or: (sum, carry).
    Each output is a function of (a, b, c) alone, which x86 compiles to one
    ``vpternlogq`` each."""
    return X(X(a, b), c), O(A(a, b), A(c, O(a, b)))


def _tree15(x, X, A, O):
    """Carry-save adder tree: 15 bit-slices -> the 4 bit-slices (b0..b3) of
    their sum, with 11 full adders. Shared by the NumPy twin and the LLVM IR."""
    s, c = zip(*(_fa(x[3 * k], x[3 * k + 1], x[3 * k + 2], X, A, O) for k in range(5)))
    t1, u1 = _fa(s[0], s[1], s[2], X, A, O)
    b0, u2 = _fa(s[3], s[4], t1, X, A, O)              # weight 1 done
    v1, y1 = _fa(c[0], c[1], c[2], X, A, O)
    v2, y2 = _fa(c[3], c[4], u1, X, A, O)
    b1, y3 = _fa(v1, v2, u2, X, A, O)                  # weight 2 done
    b2, b3 = _fa(y1, y2, y3, X, A, O)                  # weights 4 and 8
    return b0, b1, b2, b3


def _tree7(x, X, A, O):
    """7 bit-slices -> the 3 bit-slices of their sum, with 4 full adders."""
    s1, c1 = _fa(x[0], x[1], x[2], X, A, O)
    s2, c2 = _fa(x[3], x[4], x[5], X, A, O)
    b0, c3 = _fa(s1, s2, x[6], X, A, O)
    b1, b2 = _fa(c1, c2, c3, X, A, O)
    return b0, b1, b2


def _add_counter(digits, load, store, X, A, O):
    """Add the bit-sliced number ``digits`` (b0, b1, ...) into the low levels
    of a bit-sliced counter (``load(j)`` / ``store(j, v)`` access level j);
    returns the carry out of level len(digits) - 1."""
    v = load(0)
    store(0, X(v, digits[0]))
    cy = A(v, digits[0])
    for j in range(1, len(digits)):
        s, cy = _fa(load(j), digits[j], cy, X, A, O)
        store(j, s)
    return cy


def group_padding(count):
    """Zero planes to append to ``count`` planes so that :func:`csa15_add` takes them:
    whole groups of 15 and at most one last group of 7."""
    rem = count % GROUP
    return 0 if rem == 0 else (7 - rem if rem <= 7 else GROUP - rem)


def csa15_add(T, offs, m0, m1, n8, C, L):
    """Add the tap planes starting at ``T[offs[m]]`` (m0 <= m < m1; n8 vectors
    of 8 words each) into the L-level bit-sliced counter whose level j is
    ``C[j*8*n8 : (j+1)*8*n8]`` (L >= 4, C zero on entry). The planes come in
    groups of 15 that go through the 15-input adder tree, possibly followed by
    one group of 7 (``m1 - m0 = 15 a + 7 b``, b in {0, 1}, i.e. b = 1 iff
    ``(m1 - m0) % 15 == 7``). The jitted twin keeps levels 0-3 in registers."""
    X, A, O = np.bitwise_xor, np.bitwise_and, np.bitwise_or
    cs = 8 * n8
    m = m0
    while m < m1:
        size = GROUP if m1 - m >= GROUP else 7
        for kk in range(0, cs, 8):
            x = [T[offs[m + u] + kk:offs[m + u] + kk + 8] for u in range(size)]

            def load(j):
                return C[kk + j * cs:kk + j * cs + 8].copy()

            def store(j, v):
                C[kk + j * cs:kk + j * cs + 8] = v
            digits = _tree15(x, X, A, O) if size == GROUP else _tree7(x, X, A, O)
            cy = _add_counter(digits, load, store, X, A, O)
            for j in range(len(digits), L):
                v = load(j)
                store(j, v ^ cy)
                cy = v & cy
        m += size


def shift_rows(T, t, src, so, sh, M, mo, used, n8):
    """Tap t of every used channel i: row ``r = 9*i + t`` of T (8*n8 words
    from ``T[r*8*n8]``) is ``src[i, so:]`` funnel-shifted right by sh bits
    (0 <= sh < 64) and masked by ``M[mo:mo+8*n8]``. ``(hi << 1) << (63 - sh)``
    avoids a shift by 64 when sh = 0."""
    sh, w = np.uint64(sh), 8 * n8
    for i in range(src.shape[0]):
        r = 9 * i + t
        if used[r]:
            lo, hi = src[i, so:so + w], src[i, so + 1:so + 1 + w]
            shifted = (lo >> sh) | ((hi << np.uint64(1)) << (np.uint64(63) - sh))
            T[r * w:(r + 1) * w] = shifted & M[mo:mo + w]


_BITS64 = np.arange(64, dtype=np.uint64)


def expand_store(out, V, vclass, C, cs, L, nw):
    """For the first nw words k of an L-level counter (level j of word k at
    ``C[k + j*cs]``): ``out[64k + b] = V[64*vclass[k] + b] + 2 * sum_j 2^j *
    bit b of C[k + j*cs]`` (V holds -V, one 64-row per class of words with
    the same tap validity). The jitted twin sums the low 8 levels in bytes
    (Horner: acc = 2*acc + bit, one masked add per 64 positions)."""
    for k in range(nw):
        cnt = np.zeros(64, np.int64)
        for j in range(L):
            cnt += ((np.uint64(C[k + j * cs]) >> _BITS64) & np.uint64(1)).astype(np.int64) << j
        out[64 * k:64 * k + 64] = V[64 * vclass[k]:64 * vclass[k] + 64] + 2 * cnt

# ====================================================================== LLVM IR twins
# Each twin is an IR body ``_*_body(f, b, args)`` (f: the IR vocabulary below,
# b: the llvmlite builder, args: the LLVM values of the arguments) wrapped by
# one small factory into a ``numba.extending.intrinsic`` returning void.

class IR:
    """Small IR vocabulary for one codegen call (array arguments are C-contiguous)."""

    def __init__(self, context, builder, sig, args):
        from llvmlite import ir
        from numba import types
        self.b, self.ctx = builder, context
        self.arrays = {k: context.make_array(t)(context, builder, a)
                       for k, (t, a) in enumerate(zip(sig.args, args))
                       if isinstance(t, types.Array)}
        self.i8, self.i16, self.i32, self.i64 = (ir.IntType(n) for n in (8, 16, 32, 64))
        self.v8 = ir.VectorType(self.i64, 8)         # one zmm: 8 words, 512 positions

    def c(self, v, ty=None):
        from llvmlite import ir
        return ir.Constant(ty or self.i64, v)

    def at(self, k, off, ty):                # pointer to ty at element off of array arg k
        return self.b.bitcast(self.b.gep(self.arrays[k].data, [off]), ty.as_pointer())

    def load(self, k, off, ty, align=8):
        return self.b.load(self.at(k, off, ty), align=align)

    def store(self, v, k, off, ty, align=8):
        self.b.store(v, self.at(k, off, ty), align=align)

    def scalar(self, k, off):
        return self.b.load(self.b.gep(self.arrays[k].data, [off]))

    def splat(self, v, vty):
        from llvmlite import ir
        b, n = self.b, vty.count
        one = b.insert_element(ir.Constant(vty, ir.Undefined), v, self.c(0, self.i32))
        return b.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                ir.Constant(ir.VectorType(self.i32, n), [0] * n))

    def var(self, v):                        # a mutable local (mem2reg makes it a register)
        from numba.core import cgutils
        return cgutils.alloca_once_value(self.b, v)


def _codegen(body):
    """numba codegen running ``body(IR, builder, args)``; the intrinsic returns void."""
    def codegen(context, builder, sig, args):
        body(IR(context, builder, sig, args), builder, args)
        return context.get_dummy_value()
    return codegen


def _shift_rows_body(f, b, args):
    """IR of :func:`shift_rows`: funnel shifts of 8-word vectors, masked."""
    from llvmlite import ir
    from numba.core import cgutils
    _, t, _, so, sh, _, mo, _, n8 = args
    v8 = f.v8
    n_rows, row_len = cgutils.unpack_tuple(b, f.arrays[2].shape, 2)
    right, left = f.splat(sh, v8), f.splat(b.sub(f.c(63), sh), v8)
    one, w = ir.Constant(v8, [1] * 8), b.mul(n8, f.c(8))
    with cgutils.for_range(b, n_rows) as i:
        r = b.add(b.mul(i.index, f.c(9)), t)
        with b.if_then(b.icmp_unsigned("!=", f.scalar(7, r), f.c(0, f.i8))):     # used[r]
            s0 = b.add(b.mul(i.index, row_len), so)
            with cgutils.for_range(b, n8) as chunk:
                kk = b.mul(chunk.index, f.c(8))
                lo = f.load(2, b.add(s0, kk), v8)
                hi = f.load(2, b.add(b.add(s0, kk), f.c(1)), v8)
                res = b.or_(b.lshr(lo, right), b.shl(b.shl(hi, one), left))
                res = b.and_(res, f.load(5, b.add(mo, kk), v8))
                f.store(res, 0, b.add(b.mul(r, w), kk), v8)


def _csa15_body(f, b, args):
    """IR of :func:`csa15_add`: levels 0-3 of the counter stay in registers."""
    from llvmlite import ir
    from numba.core import cgutils
    _, _, m0, m1, n8, _, L = args
    v8, logic = f.v8, (b.xor, b.and_, b.or_)
    cs = b.mul(n8, f.c(8))
    n_groups = b.udiv(b.sub(m1, m0), f.c(GROUP))
    tail = b.icmp_unsigned("==", b.urem(b.sub(m1, m0), f.c(GROUP)), f.c(7))
    with cgutils.for_range(b, n8) as chunk:
        kk = b.mul(chunk.index, f.c(8))
        level = lambda j: b.add(kk, b.mul(j, cs))            # offset of level j in C
        regs = [f.var(ir.Constant(v8, None)) for _ in range(4)]

        def add_group(m, size, tree):
            x = [f.load(0, b.add(f.scalar(1, b.add(m, f.c(u))), kk), v8) for u in range(size)]
            digits = tree(x, *logic)
            cy = _add_counter(digits, lambda j: b.load(regs[j]),
                              lambda j, v: b.store(v, regs[j]), *logic)
            if len(digits) < 4:                              # carry into level 3
                v = b.load(regs[3])
                b.store(b.xor(v, cy), regs[3])
                cy = b.and_(v, cy)
            carry = f.var(cy)                                # ripple into levels 4..L-1
            with cgutils.for_range(b, b.sub(L, f.c(4))) as j:
                off = level(b.add(j.index, f.c(4)))
                v, cyv = f.load(5, off, v8), b.load(carry)
                f.store(b.xor(v, cyv), 5, off, v8)
                b.store(b.and_(v, cyv), carry)

        with cgutils.for_range(b, n_groups) as group:
            add_group(b.add(m0, b.mul(group.index, f.c(GROUP))), GROUP, _tree15)
        with b.if_then(tail):
            add_group(b.add(m0, b.mul(n_groups, f.c(GROUP))), 7, _tree7)
        for j in range(4):
            f.store(b.load(regs[j]), 5, level(f.c(j)), v8)


def _expand_body(f, b, args):
    """IR of :func:`expand_store`: Horner sums of the counter bits in bytes."""
    from llvmlite import ir
    from numba.core import cgutils
    _, _, _, _, cs, L, nw = args
    v64i8, v64i16, v64i32 = (ir.VectorType(t, 64) for t in (f.i8, f.i16, f.i32))
    L_lo = b.select(b.icmp_signed("<", L, f.c(8)), L, f.c(8))
    L_hi = b.sub(L, L_lo)

    v8i8 = ir.VectorType(f.i8, 8)
    spread = ir.Constant(ir.VectorType(f.i32, 64), [j // 8 for j in range(64)])
    bit = ir.Constant(v64i8, [1 << (j % 8) for j in range(64)])

    def bits_of(word, vty):
        """Bit b of ``word`` as 0 / -1 in lane b: byte b // 8 spread to lane b, one
        compare per lane (``vpshufb`` / ``vpand`` / ``vpcmpeqb`` on AVX2; a
        ``bitcast`` to <64 x i1> was scalarised there, one shift per bit)."""
        w = b.shuffle_vector(b.bitcast(word, v8i8), ir.Constant(v8i8, ir.Undefined), spread)
        return b.sext(b.icmp_unsigned("==", b.and_(w, bit), bit), vty)

    def horner(vty, first, count, k):
        """sum_j 2^j (bit b of level first + j), j < count, for the 64 b."""
        acc = f.var(ir.Constant(vty, None))
        with cgutils.for_range(b, count) as i:           # top level first
            j = b.sub(b.add(first, b.sub(count, f.c(1))), i.index)
            t = b.load(acc)
            b.store(b.sub(b.add(t, t), bits_of(f.scalar(3, b.add(k, b.mul(j, cs))), vty)), acc)
        return b.load(acc)

    with cgutils.for_range(b, nw) as word:
        k = word.index
        cnt = b.zext(horner(v64i8, f.c(0), L_lo, k), v64i32)          # levels 0-7: bytes
        v = b.sext(f.load(1, b.mul(f.scalar(2, k), f.c(64)), v64i16, align=2), v64i32)
        res = f.var(b.add(v, b.add(cnt, cnt)))
        with b.if_then(b.icmp_signed(">", L_hi, f.c(0)), likely=False):  # counts >= 256
            hi = b.sext(horner(v64i16, f.c(8), L_hi, k), v64i32)
            b.store(b.add(b.load(res), b.shl(hi, ir.Constant(v64i32, [9] * 64))), res)
        f.store(b.load(res), 0, b.mul(k, f.c(64)), v64i32, align=4)


def shift_rows_ir():
    """The intrinsic twin of :func:`shift_rows`."""
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def _shift_rows_ir(typingctx, T, t, src, so, sh, M, mo, used, n8):
        return types.void(T, t, src, so, sh, M, mo, used, n8), _codegen(_shift_rows_body)
    return _shift_rows_ir


def csa15_ir():
    """The intrinsic twin of :func:`csa15_add`."""
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def _csa15_ir(typingctx, T, offs, m0, m1, n8, C, L):
        return types.void(T, offs, m0, m1, n8, C, L), _codegen(_csa15_body)
    return _csa15_ir


def expand_ir():
    """The intrinsic twin of :func:`expand_store`."""
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def _expand_ir(typingctx, out, V, vclass, C, cs, L, nw):
        return types.void(out, V, vclass, C, cs, L, nw), _codegen(_expand_body)
    return _expand_ir


def register_simd():
    """Overload the three word helpers with their IR twins (idempotent)."""
    if _REGISTERED:
        return
    from numba.extending import overload
    shift_ir, csa_ir, exp_ir = shift_rows_ir(), csa15_ir(), expand_ir()

    @overload(shift_rows)
    def _ol_shift_rows(T, t, src, so, sh, M, mo, used, n8):
        return lambda T, t, src, so, sh, M, mo, used, n8: shift_ir(T, t, src, so, sh, M, mo, used, n8)

    @overload(csa15_add)
    def _ol_csa15(T, offs, m0, m1, n8, C, L):
        return lambda T, offs, m0, m1, n8, C, L: csa_ir(T, offs, m0, m1, n8, C, L)

    @overload(expand_store)
    def _ol_expand(out, V, vclass, C, cs, L, nw):
        return lambda out, V, vclass, C, cs, L, nw: exp_ir(out, V, vclass, C, cs, L, nw)

    _REGISTERED.append(True)


_REGISTERED = []
