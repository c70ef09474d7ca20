r"""Input gradient of a binary 3x3 convolution from tables of signed sums.

The input gradient multiplies the output gradient ``d`` by binary weights
``w_q = tau sign(w) + phi`` (padding 1, stride 1 or 2):

.. math::
    \frac{\partial L}{\partial x_b}[s p + t - 1, c] \mathrel{+}=
    \sum_o d[p, o]\,(\tau\,\bar w[o, c, t] + \phi)

Take the output channels ``kb`` at a time (kb = 4 or 8). For one output
position and group, the sum over the group's channels depends on ``c`` and
``t`` only through the ``kb`` weight signs, a pattern ``k`` in
``0..2^kb - 1`` (:func:`weight_codes`). So build, once per position and
group, the table of all ``2^kb`` signed sums ("Four Russians")::

    T[k] = sum_j (tau (2 bit_j(k) - 1) + phi) d[p, kb g + j]
         = T[k without its lowest bit j] + 2 tau d[p, kb g + j]

(one vector add per entry) and every (tap, input channel) is one table
lookup added to the gradient, instead of ``kb`` multiply-adds. The vectors
run over 8 *images* at the same position, so the lookups of a group of 8
images are 8-lane vector adds (:mod:`~pysbnn.kernels.simd`): the output
gradient of an octet of images is first sliced, ``dT[p, o, j] = d[8 G + j, p, o]``,
and the result comes back from the same layout, optionally through the
clipped STE's mask.

Work per 8 images and position: ``(2^kb - 1) C_out / kb`` vector adds for
the tables and ``9 C_in C_out / kb`` for the lookups, against
``9 C_in C_out`` multiply-adds of a direct product (2.9x fewer at 16
channels, 6.5x at 128). Reference: ``conv_input_grad.input_grad_reference``
(GEMM and col2im).

The weight gradient ``dw_q[o, c, t] = sum_p x_b[s p + t - 1, c] d[p, o]``
has its +-1 operand on the other side, and the same trick applies with the
8 images in the pattern: ``k = `` the signs of input channel ``c`` at the
tap's pixel in the 8 images (:func:`image_sign_bytes`), the table holds the
256 signed sums of the 8 images' gradient rows ``d[8 G + j, p, :]``, and
each (tap, input channel) adds one table row to ``dw_q[:, c, t]``
(:func:`sign_table_weight_grad`). It suits many channels and few positions,
where ``conv_sign_hist``'s histograms outgrow the caches. Reference:
``conv_sign_hist.weight_grad_reference``.
"""

import numpy as np

from .conv_xnor_train import valid_taps
from .jit import Twins
from .simd import LANES, register, vadd, vaddto, vload, vmul, vsplat, vstore, vzero
from .words import unpack_bits

prange = range      # numba.prange in the parallel kernels (see jit.Twins)

_LOWEST = np.array([0] + [(k & -k).bit_length() - 1 for k in range(1, 256)], np.int64)


def pattern_bits(C_in):
    """Output channels per table: 4 below 24 input channels, else 8 (fewer lookups)."""
    return 4 if C_in <= 24 else 8


def weight_codes(w, kb):
    """``codes[t, g, c] = sum_j (w[kb g + j, c, t] >= 0) << j`` (0 for missing channels), int64."""
    C_out, C_in = w.shape[:2]
    groups = -(-C_out // kb)
    signs = np.zeros((groups * kb, C_in, 9), bool)
    signs[:C_out] = np.asarray(w).reshape(C_out, C_in, 9) >= 0
    bits = signs.reshape(groups, kb, C_in, 9) << np.arange(kb)[None, :, None, None]
    return np.ascontiguousarray(bits.sum(axis=1).transpose(2, 0, 1)).astype(np.int64)


# ----------------------------------------------------------------------------
# Kernels

def _slice_images(d, dT, G):
    """dT[p, o, j] = d[8 G + j, p, o] (d: (n, P, C_out); dT, octet G's, zero on entry)."""
    n, P, C_out = d.shape
    for j in range(min(LANES, n - LANES * G)):
        for p in range(P):
            for o in range(C_out):
                dT[p, o, j] = d[LANES * G + j, p, o]


def _table(dT, p, o0, kb, two_tau, phi_tau, T, E):
    """T[k] (flat, 8 lanes per entry) for output channels o0..o0+kb-1 at position p."""
    base = (p * dT.shape[1] + o0) * LANES
    flat = dT.reshape(-1)
    total = vzero(T)
    for j in range(kb):
        v = vload(flat, base + j * LANES)
        total = vadd(total, v)
        vstore(E, j * LANES, vmul(v, two_tau))
    vstore(T, 0, vmul(total, phi_tau))
    for k in range(1, 1 << kb):
        vstore(T, k * LANES, vadd(vload(T, (k & (k - 1)) * LANES), vload(E, _LOWEST[k] * LANES)))


def _octet(dT, codes, kb, tau, phi, stride, rmask, cmask, acc, shape):
    """Scatter the lookups of one image octet into its acc (Hp, Wp, C_in, 8), flat."""
    Hp, Wp, C_in = shape
    P = dT.shape[0]
    Wo = cmask.shape[0]
    groups = codes.shape[1]
    T = np.empty((1 << kb) * LANES, dT.dtype)
    E = np.empty(kb * LANES, dT.dtype)
    two_tau, phi_tau = vsplat(2 * tau, T), vsplat(phi - tau, T)
    for p in range(P):
        y, x = p // Wo, p % Wo
        rm, cm = rmask[y], cmask[x]
        pix = stride * y * Wp + stride * x
        for g in range(groups):
            _table(dT, p, g * kb, kb, two_tau, phi_tau, T, E)
            for t in range(9):
                dy = t // 3
                dx = t - 3 * dy
                if (rm >> dy) & 1 and (cm >> dx) & 1:
                    a = (pix + dy * Wp + dx) * C_in * LANES
                    for c in range(C_in):
                        vaddto(acc, a + c * LANES, vload(T, codes[t, g, c] * LANES))


def _unslice_octet(acc, G, x, bound, out):
    """out[8 G + j, y, xx, c] = acc[y + 1, xx + 1, c, j] (acc: the octet's (Hp, Wp, C_in, 8)),
    where ``|x| <= bound`` (everywhere when ``bound < 0``)."""
    n, H, W, C_in = out.shape
    for j in range(min(LANES, n - LANES * G)):
        for y in range(H):
            for xx in range(W):
                for c in range(C_in):
                    v = acc[y + 1, xx + 1, c, j]
                    if bound >= 0:
                        u = x[LANES * G + j, y, xx, c]
                        v = v if -bound <= u <= bound else v * 0
                    out[LANES * G + j, y, xx, c] = v


def _one_octet(G, d, codes, kb, tau, phi, stride, rmask, cmask, x, bound, out):
    n, H, W, C_in = out.shape
    dT = np.zeros((d.shape[1], codes.shape[1] * kb, LANES), d.dtype)
    acc = np.zeros((H + 2, W + 2, C_in, LANES), d.dtype)
    _slice_images(d, dT, G)
    _octet(dT, codes, kb, tau, phi, stride, rmask, cmask, acc.reshape(-1), (H + 2, W + 2, C_in))
    _unslice_octet(acc, G, x, bound, out)


def _input_grad_serial(d, codes, kb, tau, phi, stride, rmask, cmask, x, bound, out):
    for G in range(-(-out.shape[0] // LANES)):
        _one_octet(G, d, codes, kb, tau, phi, stride, rmask, cmask, x, bound, out)


def _input_grad_parallel(d, codes, kb, tau, phi, stride, rmask, cmask, x, bound, out):
    for G in prange(-(-out.shape[0] // LANES)):
        _one_octet(G, d, codes, kb, tau, phi, stride, rmask, cmask, x, bound, out)


def sign_table_input_grad(d, w, tau, phi, H, W, stride, parallel=False, x=None, bound=None):
    """``dL/dx_b (n, H, W, C_in)`` of a binary 3x3 conv (padding 1) whose weights
    are ``tau sign(w) + phi``; d: output gradient ``(n, H_out, W_out, C_out)``.
    With the input ``x`` and ``bound``, only where ``|x| <= bound`` (the clipped
    STE of sign, fused)."""
    n, Ho, Wo, C_out = d.shape
    C_in = w.shape[1]
    if (Ho, Wo) != ((H - 1) // stride + 1, (W - 1) // stride + 1) or w.shape[0] != C_out:
        raise ValueError("d does not match the weights or the input size")
    kb = pattern_bits(C_in)
    codes = weight_codes(w, kb)
    out = np.empty((n, H, W, C_in), d.dtype)
    if bound is None:
        x, bound = out, -1.0
    else:
        x = np.ascontiguousarray(x, dtype=d.dtype)
    _TWINS["dx_par" if parallel else "dx"](np.ascontiguousarray(d).reshape(n, Ho * Wo, C_out), codes, kb,
                                           float(tau), float(phi), stride, valid_taps(Ho, H, stride),
                                           valid_taps(Wo, W, stride), x, d.dtype.type(bound), out)
    return out


# ----------------------------------------------------------------------------
# Weight gradient

def _octet_bytes(A, K, G):
    """K[G, q, c] = sum_j bit c of A[8 G + j, q] << j (A: (n, Hp, Wp, nw) words)."""
    n, Hp, Wp, nw = A.shape
    C_in = K.shape[3]
    for j in range(min(LANES, n - LANES * G)):
        for y in range(Hp):
            for x in range(Wp):
                for c in range(C_in):
                    bit = (A[LANES * G + j, y, x, c // 64] >> np.uint64(c % 64)) & np.uint64(1)
                    K[G, y, x, c] |= np.uint8(bit << np.uint64(j))


def _weight_table(d, G, p, o0, width, T, E):
    """T[k, :] = sum_j (2 bit_j(k) - 1) d[8 G + j, p, o0:o0 + width] (flat, ``width`` per entry)."""
    n = d.shape[0]
    flat = d.reshape(-1)
    row = d.shape[1] * d.shape[2]
    for v in range(0, width, LANES):
        total = vzero(T)
        for j in range(LANES):
            if LANES * G + j < n:
                x = vload(flat, (LANES * G + j) * row + p * d.shape[2] + o0 + v)
            else:
                x = vzero(T)
            total = vadd(total, x)
            vstore(E, j * width + v, vadd(x, x))
        vstore(T, v, vmul(total, vsplat(-1, T)))
    for k in range(1, 256):
        prev, low = (k & (k - 1)) * width, _LOWEST[k] * width
        for v in range(0, width, LANES):
            vstore(T, k * width + v, vadd(vload(T, prev + v), vload(E, low + v)))


def _weight_octets(K, d, stride, rmask, cmask, dw, G0, G1, T, E):
    """dw (9, C_in, C_out) flat += the lookups of octets G0..G1-1."""
    n, P, C_out = d.shape
    Hp, Wp, C_in = K.shape[1], K.shape[2], K.shape[3]
    keys = K.reshape(-1)
    Wo = cmask.shape[0]
    chunk = T.shape[0] // 256
    for G in range(G0, G1):
        for p in range(P):
            y, x = p // Wo, p % Wo
            rm, cm = rmask[y], cmask[x]
            pix = G * Hp * Wp + stride * y * Wp + stride * x
            for o0 in range(0, C_out, chunk):
                width = min(chunk, C_out - o0)
                _weight_table(d, G, p, o0, width, T, E)
                for t in range(9):
                    dy = t // 3
                    dx = t - 3 * dy
                    if (rm >> dy) & 1 and (cm >> dx) & 1:
                        kb = (pix + dy * Wp + dx) * C_in
                        for c in range(C_in):
                            src, dst = np.int64(keys[kb + c]) * width, (t * C_in + c) * C_out + o0
                            for v in range(0, width, LANES):
                                vaddto(dw, dst + v, vload(T, src + v))


def _weight_serial(A, K, d, stride, rmask, cmask, dws, chunk):
    for G in range(K.shape[0]):
        _octet_bytes(A, K, G)
    T, E = np.empty(256 * chunk, d.dtype), np.empty(LANES * chunk, d.dtype)
    _weight_octets(K, d, stride, rmask, cmask, dws[0], 0, K.shape[0], T, E)


def _weight_parallel(A, K, d, stride, rmask, cmask, dws, chunk):
    for G in prange(K.shape[0]):
        _octet_bytes(A, K, G)
    parts, nG = dws.shape[0], K.shape[0]
    for i in prange(parts):
        T, E = np.empty(256 * chunk, d.dtype), np.empty(LANES * chunk, d.dtype)
        _weight_octets(K, d, stride, rmask, cmask, dws[i], i * nG // parts, (i + 1) * nG // parts, T, E)


def image_sign_bytes(A, C_in):
    """NumPy version of the keys: ``K[G, q, c] = sum_j sign bit of x[8 G + j, q, c] << j``, uint8."""
    n = A.shape[0]
    bits = np.zeros((-(-n // LANES) * LANES,) + A.shape[1:3] + (C_in,), np.uint8)
    bits[:n] = unpack_bits(A, C_in)
    bits = bits.reshape((-1, LANES) + bits.shape[1:]) << np.arange(LANES, dtype=np.uint8)[:, None, None, None]
    return bits.sum(axis=1, dtype=np.uint8)


def sign_table_weight_grad(A, C_in, d, stride, threads=1):
    """``dL/dw_q (C_out, C_in, 3, 3)`` of a binary 3x3 conv (padding 1) from the packed
    input signs ``A`` (``conv_xnor_train.pack_padded_signs``) and the output gradient
    ``d (n, H_out, W_out, C_out)``; C_out a multiple of 8."""
    n, Hp, Wp, _ = A.shape
    n_, Ho, Wo, C_out = d.shape
    if C_out % LANES or n_ != n:
        raise ValueError("d must have the input's batch and a multiple of 8 channels")
    nG = -(-n // LANES)
    parts = max(1, min(int(threads), nG))
    chunk = min(C_out, 64)
    K = np.zeros((nG, Hp, Wp, C_in), np.uint8)
    dws = np.zeros((parts, 9 * C_in * C_out), d.dtype)
    _TWINS["dw_par" if parts > 1 else "dw"](A, K, np.ascontiguousarray(d).reshape(n, Ho * Wo, C_out), stride,
                                            valid_taps(Ho, Hp - 2, stride), valid_taps(Wo, Wp - 2, stride),
                                            dws, chunk)
    return dws.sum(axis=0).reshape(9, C_in, C_out).transpose(2, 1, 0).reshape(C_out, C_in, 3, 3)


_TWINS = Twins({"dx": _input_grad_serial, "dx_par": _input_grad_parallel,
                "dw": _weight_serial, "dw_par": _weight_parallel},
               helpers=(_slice_images, _table, _octet, _unslice_octet, _one_octet, _octet_bytes, _weight_table,
                        _weight_octets), setup=(register,))
