"""Numba kernels of the bit-packed 3x3 convolutions (validated by
``conv_reference``; same conventions, documented there).

Kernel A, dense BNN conv (+-1 weights, +-1 inputs). Activations are packed
per pixel (``pack_pixels``: each pixel's C_in bits in uint64 words, zero words
on the padding ring). For every output position the nine tap words are XORed
against the weight words of all output channels, popcounted and summed:
``out = sum_t (C_in - 2 popcount(a_t ^ w_t))``. Padded taps are executed
against zero words and their share ``C_in - 2 popcount(w_t)`` is subtracted
again from a per-(border class, o) table, so the inner loop has no branches.

Kernel B, SBNN conv ({0,1} weights, +-1 inputs). Every output position is an
independent dot product, so activations are bit-sliced along positions
(``pack_planes``: one uint64 = 64 positions of one channel). For each used
(channel i, tap t) the kernel first builds the *tap plane*: plane i shifted by
the tap offset, wrapped columns masked, zeros on the padding. A one-weight
``w01[o, i, t] = 1`` is then one word-wide add of tap plane (i, t) into the
bit-sliced counters of output channel o. Fifteen planes at a time go through a
carry-save adder tree (11 full adders, two ``vpternlogq`` each) whose 4-bit
sum is added to the counter (a last group of at most 7 goes through a 7-input
tree); the low four counter levels stay in registers.
K0 kernels have no ones and cost nothing; a K1 kernel is a single
shifted-plane add. So the work scales with the number of ones, plus a fixed
cost per output value: the counters are expanded to integers
``z' = 2 * count - V`` (V[o, p]: ones of channel o whose tap is valid at p,
from a small per-geometry table), one masked byte add per level and 64
positions, then widened and stored as int32.

SIMD: the word-wide steps (tap-plane shifts, the 15-input carry-save add on 8
words, the counter expansion of 64 positions) are small helper functions
written in NumPy; their jitted twins are LLVM IR (``numba.extending.intrinsic``)
on <8 x i64> / <64 x i8> vectors, so that they compile to zmm code. Everything
else is plain Python that ``numba.njit`` compiles, or that runs as is with
``NUMBA_DISABLE_JIT=1`` (helpers included). Numba is imported on first use.

Outputs: Kernel A writes NHWC; Kernel B computes channel-major planes (its
natural layout, the one a following SBNN layer reads) and returns them as an
NHWC-shaped *view* ``(n, H_out, W_out, C_out)``. Elementwise NumPy ops keep
that memory layout and ``pack_planes`` / ``pack_pixels`` read it directly, so
a chain of layers never transposes; ``np.ascontiguousarray`` of the view is a
slow strided copy (about 100 us for 64 x 32 x 32 values), avoid it.
"""
import numpy as np

from . import bits
from .bits import popcount64, register_numba, resolve_backend
from . import conv_reference as _ref
from .conv_reference import (_unpack_planes, binary_weights, bnn_conv3x3_reference,
                             conv3x3_ones, conv_out_size, plane_guard_words,
                             sbnn_conv3x3_reference, sbnn_conv_output)

__all__ = ["BnnConvPlan", "SbnnConvPlan", "prepare_bnn_conv3x3", "prepare_sbnn_conv3x3",
           "bnn_conv3x3", "bnn_conv3x3_packed", "sbnn_conv3x3", "sbnn_conv3x3_packed",
           "pack_pixels", "pack_planes", "conv3x3_ones", "sbnn_conv_output"]

MAX_C_IN_SBNN = 3640          # V (<= 9 * C_in valid ones) is stored as int16
_PAR_MIN_BATCH = 2            # threads pay off from two images on


# ====================================================================== word helpers
# NumPy versions (run with NUMBA_DISABLE_JIT=1); jitted twins in _build().

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


def _csa15_add(T, offs, m0, m1, n8, C, L):
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


def _shift_rows(T, t, src, so, sh, M, mo, used, n8):
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


def _expand_store(out, V, vclass, C, cs, L, nw):
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


# ====================================================================== Kernel A

def _bnn_image(n, A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out, out, ops):
    """Dense BNN conv of image n. A: (N, Hp, Wp, nw) padded pixel words;
    Wt: (9, nw, C_out) weight words; corr: (64, C_out) padded-tap shares."""
    nw = A.shape[3]
    C_out = Wt.shape[2]
    acc = np.zeros(C_out, np.int64)
    base = 9 * C_in
    for y in range(H_out):
        iy = y * stride
        for x in range(W_out):
            ix = x * stride
            for o in range(C_out):
                acc[o] = 0
            for w in range(nw):
                a0 = A[n, iy, ix, w]
                a1 = A[n, iy, ix + 1, w]
                a2 = A[n, iy, ix + 2, w]
                a3 = A[n, iy + 1, ix, w]
                a4 = A[n, iy + 1, ix + 1, w]
                a5 = A[n, iy + 1, ix + 2, w]
                a6 = A[n, iy + 2, ix, w]
                a7 = A[n, iy + 2, ix + 1, w]
                a8 = A[n, iy + 2, ix + 2, w]
                for o in range(C_out):
                    acc[o] += (popcount64(a0 ^ Wt[0, w, o]) + popcount64(a1 ^ Wt[1, w, o])
                               + popcount64(a2 ^ Wt[2, w, o]) + popcount64(a3 ^ Wt[3, w, o])
                               + popcount64(a4 ^ Wt[4, w, o]) + popcount64(a5 ^ Wt[5, w, o])
                               + popcount64(a6 ^ Wt[6, w, o]) + popcount64(a7 ^ Wt[7, w, o])
                               + popcount64(a8 ^ Wt[8, w, o]))
            cls = rcls[y] * 8 + ccls[x]
            for o in range(C_out):
                out[n, y, x, o] = base - 2 * acc[o] - corr[cls, o]
            ops[n] += 2 * base * C_out          # XNOR + popcount per weight bit
    return 0


def _bnn_serial(A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out):
    out = np.empty((A.shape[0], H_out, W_out, Wt.shape[2]), np.int32)
    ops = np.zeros(A.shape[0], np.int64)
    for n in range(A.shape[0]):
        _bnn_image(n, A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out, out, ops)
    return out, ops.sum()


_prange = range   # numba.prange once jitted


def _bnn_parallel(A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out):
    out = np.empty((A.shape[0], H_out, W_out, Wt.shape[2]), np.int32)
    ops = np.zeros(A.shape[0], np.int64)
    for n in _prange(A.shape[0]):
        _bnn_image(n, A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out, out, ops)
    return out, ops.sum()


# ====================================================================== Kernel B

def _sbnn_taps_shift(n, planes, g, W, padding, Pw8, colmask, used, T):
    """Stride 1: every used tap plane of image n. Row ``r = 9*i + t`` of T
    (``T[r*Pw8:]``), bit p = y*W + x of the output grid, holds input bit
    (y + dy - p, x + dx - p): the plane shifted by (dy - p) rows and (dx - p)
    columns, wrapped columns masked, 0 on the padding."""
    for t in range(9):
        dy = t // 3
        dx = t - 3 * dy
        off = 64 * g + (dy - padding) * W + (dx - padding)
        _shift_rows(T, t, planes[n], off >> 6, off & 63, colmask, dx * Pw8, used, Pw8 // 8)
    return 0


def _sbnn_taps(n, planes, g, H, W, stride, padding, H_out, R, Pw8, colmask, used, T):
    """Any stride, bit by bit: all tap planes of image n, T[(9*i + t)*Pw8 + k],
    bit p = y*R + x of the output grid holds the input bit at
    (s*y + dy - p, s*x + dx - p), 0 if that falls on the padding."""
    C_in = planes.shape[1]
    for i in range(C_in):
        src = planes[n, i]
        for t in range(9):
            r = 9 * i + t
            if not used[r]:
                continue
            dy = t // 3
            dx = t - 3 * dy
            row = T[r * Pw8:(r + 1) * Pw8]
            for k in range(Pw8):
                row[k] = 0
            for y in range(H_out):
                sy = stride * y + dy - padding
                if sy < 0 or sy >= H:
                    continue
                for x in range(R):
                    sx = stride * x + dx - padding
                    if sx < 0 or sx >= W:
                        continue
                    b = sy * W + sx
                    bit = (src[g + (b >> 6)] >> np.uint64(b & 63)) & np.uint64(1)
                    p = y * R + x
                    row[p >> 6] |= bit << np.uint64(p & 63)
    return 0


def _sbnn_image(n, planes, g, H, W, stride, padding, H_out, R, Pw, Pw8, colmask, used,
                ones_off, ones_kind, start, nlev, Vneg, vclass, out, positions, ops):
    """SBNN conv of image n into out[n] (C_out, Pw*64) int32 channel-major.
    The ones of output channel o are ``ones_row[start[o]:start[o+1]]`` (tap
    plane rows), padded with the all-zero row 9*C_in to groups of 15 (and at
    most one last group of 7),
    given as word offsets ``ones_off = row * Pw8`` into T; ``ones_kind[o]``
    counts them: (ones of K1 kernels, ones of the other kernels)."""
    C_in = planes.shape[1]
    zero_row = 9 * C_in
    T = np.empty((9 * C_in + 1) * Pw8, np.uint64)   # rows of unused taps are never read
    for k in range(Pw8):
        T[zero_row * Pw8 + k] = 0
    if stride == 1:
        _sbnn_taps_shift(n, planes, g, W, padding, Pw8, colmask, used, T)
    else:
        _sbnn_taps(n, planes, g, H, W, stride, padding, H_out, R, Pw8, colmask, used, T)
    C = np.zeros(nlev.max() * Pw8, np.uint64)
    for o in range(start.shape[0] - 1):
        L = nlev[o]
        for k in range(L * Pw8):
            C[k] = 0
        _csa15_add(T, ones_off, start[o], start[o + 1], Pw8 // 8, C, L)
        ops[n, 0] += ones_kind[o, 0] * positions     # record the adds just executed:
        ops[n, 1] += ones_kind[o, 1] * positions     # K1 shifted copies, other ones
        n_ones = ones_kind[o, 0] + ones_kind[o, 1]
        L_used = 0                               # counter levels that can be non-zero
        while n_ones >> L_used:
            L_used += 1
        _expand_store(out[n, o], Vneg[o], vclass, C, Pw8, L_used, Pw)
    return 0


def _sbnn_serial(planes, g, H, W, stride, padding, H_out, R, Pw, Pw8, colmask, used,
                 ones_off, ones_kind, start, nlev, Vneg, vclass, positions):
    out = np.empty((planes.shape[0], start.shape[0] - 1, Pw * 64), np.int32)
    ops = np.zeros((planes.shape[0], 2), np.int64)
    for n in range(planes.shape[0]):
        _sbnn_image(n, planes, g, H, W, stride, padding, H_out, R, Pw, Pw8, colmask, used,
                    ones_off, ones_kind, start, nlev, Vneg, vclass, out, positions, ops)
    return out, ops[:, 0].sum(), ops[:, 1].sum()


def _sbnn_parallel(planes, g, H, W, stride, padding, H_out, R, Pw, Pw8, colmask, used,
                   ones_off, ones_kind, start, nlev, Vneg, vclass, positions):
    out = np.empty((planes.shape[0], start.shape[0] - 1, Pw * 64), np.int32)
    ops = np.zeros((planes.shape[0], 2), np.int64)
    for n in _prange(planes.shape[0]):
        _sbnn_image(n, planes, g, H, W, stride, padding, H_out, R, Pw, Pw8, colmask, used,
                    ones_off, ones_kind, start, nlev, Vneg, vclass, out, positions, ops)
    return out, ops[:, 0].sum(), ops[:, 1].sum()


# ====================================================================== jitted twins

_JIT = {}


def _register_simd():
    """Give the word helpers jitted twins: ``_shift_rows`` / ``_csa15_add`` /
    ``_expand_store`` -> LLVM IR on <8 x i64> / <64 x i8> vectors
    (``bits.register_numba`` does the same for ``popcount64``)."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic, overload

    i8, i16, i32, i64 = (ir.IntType(b) for b in (8, 16, 32, 64))
    v8 = ir.VectorType(i64, 8)                   # one zmm: 8 words, 512 positions

    class IR:
        """Small IR vocabulary for one codegen call (arrays are C-contiguous)."""

        def __init__(self, context, builder, sig, args):
            self.b, self.ctx = builder, context
            self.arrays = {k: context.make_array(t)(context, builder, a)
                           for k, (t, a) in enumerate(zip(sig.args, args))
                           if isinstance(t, types.Array)}

        def c(self, v, ty=i64):
            return ir.Constant(ty, v)

        def at(self, k, off, ty):                # pointer to ty at element off of array arg k
            return self.b.bitcast(self.b.gep(self.arrays[k].data, [off]), ty.as_pointer())

        def load(self, k, off, ty, align=8):
            return self.b.load(self.at(k, off, ty), align=align)

        def store(self, v, k, off, ty, align=8):
            self.b.store(v, self.at(k, off, ty), align=align)

        def scalar(self, k, off):
            return self.b.load(self.b.gep(self.arrays[k].data, [off]))

        def splat(self, v, vty):
            b, n = self.b, vty.count
            one = b.insert_element(ir.Constant(vty, ir.Undefined), v, self.c(0, i32))
            return b.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                    ir.Constant(ir.VectorType(i32, n), [0] * n))

        def var(self, v):                        # a mutable local (mem2reg makes it a register)
            return cgutils.alloca_once_value(self.b, v)

    @intrinsic
    def _shift_rows_ir(typingctx, T, t, src, so, sh, M, mo, used, n8):
        sig = types.void(T, t, src, so, sh, M, mo, used, n8)

        def codegen(context, builder, sig, args):
            f, b = IR(context, builder, sig, args), builder
            _, t, _, so, sh, _, mo, _, n8 = args
            n_rows, row_len = cgutils.unpack_tuple(b, f.arrays[2].shape, 2)
            right, left = f.splat(sh, v8), f.splat(b.sub(f.c(63), sh), v8)
            one, w = ir.Constant(v8, [1] * 8), b.mul(n8, f.c(8))
            with cgutils.for_range(b, n_rows) as i:
                r = b.add(b.mul(i.index, f.c(9)), t)
                with b.if_then(b.icmp_unsigned("!=", f.scalar(7, r), f.c(0, i8))):     # used[r]
                    s0 = b.add(b.mul(i.index, row_len), so)
                    with cgutils.for_range(b, n8) as chunk:
                        kk = b.mul(chunk.index, f.c(8))
                        lo = f.load(2, b.add(s0, kk), v8)
                        hi = f.load(2, b.add(b.add(s0, kk), f.c(1)), v8)
                        res = b.or_(b.lshr(lo, right), b.shl(b.shl(hi, one), left))
                        res = b.and_(res, f.load(5, b.add(mo, kk), v8))
                        f.store(res, 0, b.add(b.mul(r, w), kk), v8)
            return context.get_dummy_value()
        return sig, codegen

    @intrinsic
    def _csa15_ir(typingctx, T, offs, m0, m1, n8, C, L):
        sig = types.void(T, offs, m0, m1, n8, C, L)

        def codegen(context, builder, sig, args):
            f, b = IR(context, builder, sig, args), builder
            _, _, m0, m1, n8, _, L = args
            logic = (b.xor, b.and_, b.or_)
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
            return context.get_dummy_value()
        return sig, codegen

    @intrinsic
    def _expand_ir(typingctx, out, V, vclass, C, cs, L, nw):
        sig = types.void(out, V, vclass, C, cs, L, nw)

        def codegen(context, builder, sig, args):
            f, b = IR(context, builder, sig, args), builder
            _, _, _, _, cs, L, nw = args
            v64i8, v64i16, v64i32 = (ir.VectorType(t, 64) for t in (i8, i16, i32))
            L_lo = b.select(b.icmp_signed("<", L, f.c(8)), L, f.c(8))
            L_hi = b.sub(L, L_lo)

            def horner(vty, first, count, k):
                """sum_j 2^j (bit b of level first + j), j < count, for the 64 b."""
                acc = f.var(ir.Constant(vty, None))
                ones = ir.Constant(vty, [1] * 64)
                with cgutils.for_range(b, count) as i:           # top level first
                    j = b.sub(b.add(first, b.sub(count, f.c(1))), i.index)
                    mask = b.bitcast(f.scalar(3, b.add(k, b.mul(j, cs))), ir.VectorType(ir.IntType(1), 64))
                    t = b.load(acc)
                    b.store(b.add(b.add(t, t), b.select(mask, ones, ir.Constant(vty, None))), acc)
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
            return context.get_dummy_value()
        return sig, codegen

    @overload(_shift_rows)
    def _ol_shift_rows(T, t, src, so, sh, M, mo, used, n8):
        return lambda T, t, src, so, sh, M, mo, used, n8: _shift_rows_ir(
            T, t, src, so, sh, M, mo, used, n8)

    @overload(_csa15_add)
    def _ol_csa15(T, offs, m0, m1, n8, C, L):
        return lambda T, offs, m0, m1, n8, C, L: _csa15_ir(T, offs, m0, m1, n8, C, L)

    @overload(_expand_store)
    def _ol_expand(out, V, vclass, C, cs, L, nw):
        return lambda out, V, vclass, C, cs, L, nw: _expand_ir(out, V, vclass, C, cs, L, nw)


def _build():
    """Import numba, register the jitted twins of the helpers and compile the
    drivers (once). Under NUMBA_DISABLE_JIT the drivers stay plain Python."""
    if "sbnn" in _JIT:
        return _JIT
    import numba
    from numba.extending import register_jitable

    register_numba()
    if not numba.config.DISABLE_JIT:
        _register_simd()
        for fn in (_bnn_image, _sbnn_taps_shift, _sbnn_taps, _sbnn_image):
            register_jitable(fn)
    globals()["_prange"] = numba.prange
    # cache=True: each serial / parallel variant is its own Python function
    # (see PERF.md: variants of one function can share a cache entry)
    opts = dict(cache=True, nogil=True)
    _JIT["bnn"] = numba.njit(**opts)(_bnn_serial)
    _JIT["bnn_par"] = numba.njit(parallel=True, **opts)(_bnn_parallel)
    _JIT["sbnn"] = numba.njit(**opts)(_sbnn_serial)
    _JIT["sbnn_par"] = numba.njit(parallel=True, **opts)(_sbnn_parallel)
    return _JIT


def _kernel(name):
    """A jitted driver by name (compiling on first use)."""
    return _JIT[name] if name in _JIT else _build()[name]


def _backend(backend):
    """``bits.resolve_backend``, remembered (it imports numba to read the config)."""
    key = ("backend", backend)
    if key not in _JIT:
        _JIT[key] = resolve_backend(backend)
    return _JIT[key]


def _parallel(parallel, n_images):
    return n_images >= _PAR_MIN_BATCH if parallel is None else bool(parallel)


# ====================================================================== packing

def _channel_major(x):
    """True when the NHWC array x is a view of a channel-major (n, C, H, W)
    buffer, as Kernel B returns and elementwise NumPy ops preserve."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 3, 1, 2).flags.c_contiguous


def pack_pixels(x, padding=1, backend="auto"):
    """``conv_reference.pack_pixels`` (channel-packed words for Kernel A, zero
    padding ring) with the Numba packers of ``bits`` (``pack_signs`` on
    NHWC-contiguous input, ``pack_batch_sliced`` on channel-major input)."""
    x = np.asarray(x)
    if _backend(backend) == "numpy":
        return _ref.pack_pixels(x, padding)
    n, H, W, C = x.shape
    out = np.zeros((n, H + 2 * padding, W + 2 * padding, (C + 63) // 64), np.uint64)
    inner = out[:, padding:padding + H, padding:padding + W]
    if _channel_major(x):
        xt = x.transpose(0, 3, 1, 2)
        for i in range(n):
            inner[i] = bits.pack_batch_sliced(xt[i].reshape(C, H * W), backend).reshape(H, W, -1)
    else:
        inner[...] = bits.pack_signs(x.reshape(n * H * W, C), backend).reshape(n, H, W, -1)
    return out


def pack_planes(x, backend="auto"):
    """``conv_reference.pack_planes`` (bit-sliced planes for Kernel B, zero
    guard words) with the Numba packers of ``bits`` (``pack_batch_sliced``
    with the positions as the batch on NHWC-contiguous input, ``pack_signs``
    of each plane on channel-major input, e.g. Kernel B's own output)."""
    x = np.asarray(x)
    if _backend(backend) == "numpy":
        return _ref.pack_planes(x)
    n, H, W, C = x.shape
    g = plane_guard_words(W)
    nb = (H * W + 63) // 64
    out = np.zeros((n, C, 2 * g + nb + 8), np.uint64)
    if _channel_major(x):
        out[:, :, g:g + nb] = bits.pack_signs(
            x.transpose(0, 3, 1, 2).reshape(n * C, H * W), backend).reshape(n, C, nb)
    else:
        for i in range(n):
            out[i, :, g:g + nb] = bits.pack_batch_sliced(x[i].reshape(H * W, C), backend)
    return out


# ====================================================================== Kernel A API

class BnnConvPlan:
    """Packed +-1 weights of one 3x3 conv for Kernel A.

    Wt: uint64 (9, nw, C_out), bit ``i % 64`` of word ``i // 64`` is
    ``w[o, i, dy, dx] >= 0`` at t = 3*dy + dx; corr: int64 (64, C_out), for
    border class ``8*rowmask + colmask`` (3-bit masks of the valid dy / dx)
    the share ``sum_{invalid t} (C_in - 2 popcount(w_t))`` of padded taps.
    """

    def __init__(self, w):
        w = np.asarray(w)
        if w.ndim != 4 or w.shape[2:] != (3, 3):
            raise ValueError(f"conv weights must be (C_out, C_in, 3, 3), got {w.shape}")
        self.C_out, self.C_in = w.shape[:2]
        self.w = np.where(w >= 0, 1.0, -1.0)
        signs = w.reshape(self.C_out, self.C_in, 9).transpose(2, 0, 1) >= 0   # (9, C_out, C_in)
        nw = (self.C_in + 63) // 64
        padded = np.zeros((9, self.C_out, nw * 64), np.uint8)
        padded[:, :, :self.C_in] = signs
        words = np.packbits(padded, axis=-1, bitorder="little").view(np.uint64)  # (9, C_out, nw)
        self.Wt = np.ascontiguousarray(words.transpose(0, 2, 1))
        share = self.C_in - 2 * np.bitwise_count(words).sum(-1).astype(np.int64)  # (9, C_out)
        self.corr = np.zeros((64, self.C_out), np.int64)
        for cls in range(64):
            rm, cm = cls >> 3, cls & 7
            for t in range(9):
                if not ((rm >> (t // 3)) & 1 and (cm >> (t % 3)) & 1):
                    self.corr[cls] += share[t]
        self._geometry = {}

    def geometry(self, H, W, stride, padding):
        """Cached (row classes, column classes, C_in, stride, H_out, W_out)."""
        key = (H, W, stride, padding)
        if key not in self._geometry:
            H_out, W_out = conv_out_size(H, W, stride, padding)
            self._geometry[key] = (_border_classes(H_out, H, stride, padding),
                                   _border_classes(W_out, W, stride, padding),
                                   self.C_in, stride, H_out, W_out)
        return self._geometry[key]


def prepare_bnn_conv3x3(w):
    """Pack +-1 (or latent, sign ``w >= 0``) conv weights once for Kernel A."""
    return BnnConvPlan(w)


def _border_classes(n_out, n_in, stride, padding):
    """3-bit mask of the taps d in 0..2 with 0 <= s*y + d - p < n_in, per y."""
    y = np.arange(n_out)[:, None] * stride + np.arange(3)[None, :] - padding
    return (((y >= 0) & (y < n_in)) << np.arange(3)).sum(1).astype(np.int64)


def bnn_conv3x3_packed(xp, plan, H, W, stride=1, padding=1, parallel=None, backend="auto"):
    """Kernel A on packed activations ``xp = pack_pixels(x, padding)``.

    Returns (out int32 (n, H_out, W_out, C_out), ops) with ops as in
    ``conv_reference.bnn_conv3x3_reference``.
    """
    if xp.shape[1:3] != (H + 2 * padding, W + 2 * padding) or xp.shape[3] != plan.Wt.shape[1]:
        raise ValueError("packed input does not match H, W, padding or the weights' C_in")
    n = xp.shape[0]
    if _backend(backend) == "numpy":
        x = np.unpackbits(xp[:, padding:padding + H, padding:padding + W].view(np.uint8), axis=-1,
                          bitorder="little")[..., :plan.C_in]
        return bnn_conv3x3_reference(2.0 * x - 1.0, plan.w, stride, padding)
    run = _kernel("bnn_par" if _parallel(parallel, n) else "bnn")
    geometry = plan.geometry(H, W, stride, padding)
    out, total = run(np.ascontiguousarray(xp), plan.Wt, plan.corr, *geometry)
    return out, {"xnor": int(total) // 2, "popcount": int(total) // 2, "total": int(total)}


def bnn_conv3x3(x, w, stride=1, padding=1, parallel=None, backend="auto"):
    """Dense BNN 3x3 conv of +-1 NHWC ``x`` with +-1 weights ``w`` (or a
    ``BnnConvPlan``): packs, then runs Kernel A. Returns (out, ops)."""
    plan = w if isinstance(w, BnnConvPlan) else BnnConvPlan(w)
    x = np.asarray(x)
    if x.shape[3] != plan.C_in:
        raise ValueError(f"x has {x.shape[3]} channels, weights expect {plan.C_in}")
    return bnn_conv3x3_packed(pack_pixels(x, padding, backend), plan, x.shape[1], x.shape[2],
                              stride, padding, parallel, backend)


# ====================================================================== Kernel B API

class SbnnConvPlan:
    """{0,1} weights of one 3x3 conv prepared for Kernel B.

    codes: (C_out, C_in) 9-bit kernel codes (t = 3*dy + dx); for each output
    channel o the ones ``ones_row[start[o]:start[o+1]]`` (tap-plane row
    ``9*i + t``, padded with the zero row ``9*C_in`` to groups of 15 and
    at most one last group of 7) and
    ``ones_kind[o]`` = (ones in K1 kernels, ones in the other kernels);
    nlev[o] counter levels; per-geometry tables are cached in ``_geometry``.
    """

    def __init__(self, w, binary=None):
        w01 = binary_weights(w, binary)
        if w01.ndim != 4 or w01.shape[2:] != (3, 3):
            raise ValueError(f"conv weights must be (C_out, C_in, 3, 3), got {w01.shape}")
        self.C_out, self.C_in = w01.shape[:2]
        self.w01 = w01
        if self.C_in > MAX_C_IN_SBNN:
            raise ValueError(f"Kernel B supports C_in <= {MAX_C_IN_SBNN}")
        flat = w01.reshape(self.C_out, self.C_in * 9)
        self.codes = (flat.reshape(self.C_out, self.C_in, 9).astype(np.int64) << np.arange(9)).sum(-1)
        hw = np.bitwise_count(self.codes.astype(np.uint16))
        counts = flat.sum(1)
        rows, start = [], [0]
        for o in range(self.C_out):                    # ones of o, padded to whole groups
            r = np.flatnonzero(flat[o])
            rem = len(r) % GROUP                           # a tail of <= 7 gets a 7-group
            pad = 0 if rem == 0 else (7 - rem if rem <= 7 else GROUP - rem)
            rows += [r, np.full(pad, 9 * self.C_in)]
            start.append(start[-1] + len(r) + pad)
        self.ones_row = np.concatenate(rows).astype(np.int64)
        self.start = np.array(start, np.int64)
        k1 = np.where(hw == 1, 1, 0).sum(1)
        self.ones_kind = np.stack([k1, counts - k1], axis=1).astype(np.int64)
        self.nlev = np.maximum(4, [int(c).bit_length() for c in counts]).astype(np.int64)
        self.used = flat.any(0)
        self.ones_t = w01.reshape(self.C_out, self.C_in, 9).sum(1).astype(np.int64)  # (C_out, 9)
        self._geometry = {}

    def geometry(self, H, W, stride, padding):
        """Cached per-shape tables and kernel arguments (a dict).

        The output grid has row stride R (R = W for stride 1, so a tap is a
        pure shift; R = W_out for stride 2); Pw words per plane, Pw8 rounded
        up to whole 8-word vectors; colmask (3*Pw8,) kills wrapped columns;
        Vneg (C_out, n_classes*64) int16 is minus the number of valid ones
        per position, one 64-row per class ``vclass[k]`` of plane words (words
        with equal tap-validity masks); ``ones_row * Pw8`` are the ones'
        offsets into the tap planes."""
        key = (H, W, stride, padding)
        if key not in self._geometry:
            H_out, W_out = conv_out_size(H, W, stride, padding)
            R = W if stride == 1 else W_out
            Pw = (H_out * R + 63) // 64
            Pw8 = (Pw + 7) // 8 * 8
            y = np.arange(H_out)[:, None]
            x = np.arange(R)[None, :]
            valid = np.zeros((9, Pw8 * 64), bool)
            for t in range(9):
                dy, dx = divmod(t, 3)
                sy, sx = stride * y + dy - padding, stride * x + dx - padding
                ok = (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W) & (x < W_out)
                valid[t, :H_out * R] = ok.ravel()
            colmask = np.zeros((3, Pw8 * 64), bool)
            for dx in range(3):
                sx = x + dx - padding
                colmask[dx, :H_out * R] = np.broadcast_to((sx >= 0) & (sx < W), (H_out, R)).ravel()
            colmask = np.packbits(colmask, axis=-1, bitorder="little").view(np.uint64).ravel()
            # words with the same 9 validity masks share their V row (few classes: the
            # top and bottom rows; a small table that stays in cache)
            masks = valid[:, :Pw * 64].reshape(9, Pw, 64).transpose(1, 0, 2).reshape(Pw, -1)
            patterns, vclass = np.unique(masks, axis=0, return_inverse=True)
            Vneg = -(self.ones_t @ patterns.reshape(-1, 9, 64).transpose(1, 0, 2).reshape(9, -1))
            Vneg = Vneg.astype(np.int16)
            vclass = vclass.ravel().astype(np.int64)
            g = plane_guard_words(W)
            self._geometry[key] = dict(
                H_out=H_out, W_out=W_out, R=R, Pw=Pw, Vneg=Vneg,
                planes_shape=(self.C_in, 2 * g + (H * W + 63) // 64 + 8),
                args=(g, H, W, stride, padding, H_out, R, Pw, Pw8, colmask, self.used,
                      self.ones_row * Pw8, self.ones_kind, self.start, self.nlev, Vneg,
                      vclass, H_out * W_out))
        return self._geometry[key]


def prepare_sbnn_conv3x3(w, binary=None):
    """Prepare {0,1} conv weights (latent: one where ``w >= 0``; or bool) for Kernel B."""
    return SbnnConvPlan(w, binary)


def sbnn_conv3x3_packed(planes, plan, H, W, stride=1, padding=1, parallel=None, backend="auto"):
    """Kernel B on bit-sliced activations ``planes = pack_planes(x)``.

    Returns (z', ops): z' int32 with shape (n, H_out, W_out, C_out), an NHWC
    view of a channel-major buffer; ops as in ``conv_reference.sbnn_ops``.
    """
    geo = plan.geometry(H, W, stride, padding)
    H_out, W_out, R, Pw = geo["H_out"], geo["W_out"], geo["R"], geo["Pw"]
    if planes.shape[1:] != geo["planes_shape"]:
        raise ValueError("planes do not match H, W or the weights' C_in (use pack_planes)")
    n = planes.shape[0]
    if _backend(backend) == "numpy":
        x = np.where(_unpack_planes(planes, H, W), 1.0, -1.0)
        return sbnn_conv3x3_reference(x, plan.w01, stride, padding)
    run = _kernel("sbnn_par" if _parallel(parallel, n) else "sbnn")
    buf, k1, multi = run(np.ascontiguousarray(planes), *geo["args"])
    k1, multi = int(k1), int(multi)
    if Pw * 64 == H_out * W_out:           # no padding columns or tail: reshape in place
        z = buf.reshape(n, plan.C_out, H_out, W_out)
    else:
        z = buf[:, :, :H_out * R].reshape(n, plan.C_out, H_out, R)[:, :, :, :W_out]
    return z.transpose(0, 2, 3, 1), {"k1_shift": k1, "popcount": multi, "total": k1 + multi}


def sbnn_conv3x3(x, w, stride=1, padding=1, binary=None, parallel=None, backend="auto"):
    """SBNN 3x3 conv of +-1 NHWC ``x`` with {0,1} weights ``w`` (latent, bool,
    or an ``SbnnConvPlan``): packs planes, then runs Kernel B. Returns (z', ops)."""
    plan = w if isinstance(w, SbnnConvPlan) else SbnnConvPlan(w, binary)
    x = np.asarray(x)
    if x.shape[3] != plan.C_in:
        raise ValueError(f"x has {x.shape[3]} channels, weights expect {plan.C_in}")
    return sbnn_conv3x3_packed(pack_planes(x, backend), plan, x.shape[1], x.shape[2], stride,
                               padding, parallel, backend)

