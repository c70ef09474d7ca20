"""Kernel bodies and drivers of the packed 3x3 convolutions, compiled lazily.

Kernel A (``_bnn_image``, dense BNN: XOR + popcount of pixel words) and
Kernel B (``_sbnn_taps_shift`` / ``_sbnn_taps`` / ``_sbnn_image``, SBNN:
tap planes added into bit-sliced counters), each with a serial and a parallel
driver (one Python function per variant, as ``cache=True`` requires). The
algorithms are described in ``conv_kernels``, which prepares the weights and
geometry tables and calls the drivers through ``_kernel(name)``; the word
helpers and their SIMD twins are in ``conv_simd``. Everything here is plain
Python; ``_build()`` imports numba and compiles the drivers on first use (or
leaves them uncompiled under ``NUMBA_DISABLE_JIT=1``).
"""
import numpy as np

from .bits import popcount64, register_numba
from .conv_simd import _csa15_add, _expand_store, _register_simd, _shift_rows


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

_JIT = {}          # the compiled drivers (conv_kernels._backend memoises here too)


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

