r"""Input gradient of a 3x3 convolution (padding 1, stride 1 or 2), register-blocked.

.. math::
    \frac{\partial L}{\partial x}[s p + t - 1, c] \mathrel{+}= \sum_o d[p, o]\, w[o, c, t]

for every output position ``p`` and tap ``t = (dy, dx)``: each output
position *scatters* ``d[p, :] W_t`` into the 9 input pixels it read. The
kernel computes that product for 4 positions and 16 (or 8) input channels at
once, 8 vector accumulators (:mod:`~pysbnn.kernels.simd`) that stay in
registers over the C_out multiply-adds, then adds them into the image's
zero-padded NHWC buffer (small enough for the caches), which is cropped
into the output, optionally through the clipped STE's mask. With few channels this
beats im2col + GEMM by a wide margin: the GEMM's narrow ``C_in`` side keeps
BLAS far from its peak, and no patch matrix is written.

Layouts: ``w9[t, o, c] = w[o, c, dy, dx]`` with the channels padded to a
multiple of 8 (zero weights), one padded image ``(H + 2, W + 2, Cp)``.
Images are independent, so the parallel kernel splits the batch. The NumPy reference is the transposed convolution by GEMM
and col2im (what ``pysbnn.functional.conv2d_backward`` computes).
"""

import numpy as np

from .im2col import col2im_numpy
from .jit import Twins
from .simd import LANES, register, vaddto, vbroadcast, vfma, vload, vzero

prange = range      # numba.prange in the parallel kernel (see jit.Twins)

TILE = 4            # output positions per register tile
BLOCK = 32          # positions sharing one pass over a tap's weights


def padded_channels(C):
    """``C`` rounded up to whole vectors."""
    return -(-C // LANES) * LANES


def tap_weights(w, Cp):
    """``w9 (9, C_out, Cp)``: ``w9[t, o, c] = w[o, c, dy, dx]``, zero for ``c >= C_in``."""
    C_out, C_in = w.shape[:2]
    w9 = np.zeros((9, C_out, Cp), w.dtype)
    w9[:, :, :C_in] = w.reshape(C_out, C_in, 9).transpose(2, 0, 1)
    return w9


def geometry(H, W, stride):
    """``(pix0, toff)``: padded-pixel index of tap (0, 0) per output position of an
    image, and the offset of each tap, in the ``(H + 2, W + 2)`` grid."""
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    Wp = W + 2
    pix0 = (stride * np.arange(Ho)[:, None] * Wp + stride * np.arange(Wo)[None, :]).reshape(-1)
    toff = np.array([dy * Wp + dx for dy in range(3) for dx in range(3)], np.int64)
    return pix0.astype(np.int64), toff


# ----------------------------------------------------------------------------
# NumPy reference

def input_grad_reference(d, w, x_shape, stride):
    """``dx (n, H, W, C_in)``: GEMM of ``d`` with the weight patches, then col2im."""
    C_out = w.shape[0]
    wmat = w.transpose(0, 2, 3, 1).reshape(C_out, -1)
    return col2im_numpy(d.reshape(-1, C_out) @ wmat, x_shape, 3, 3, stride, 1)


# ----------------------------------------------------------------------------
# Kernels

def _tile16(d, w9, dxp, di, C_out, Cp, wi, q0, q1, q2, q3):
    """4 positions (d rows from ``di``) x 16 channels of one tap, added at q0..q3."""
    a00, a01, a10, a11 = vzero(dxp), vzero(dxp), vzero(dxp), vzero(dxp)
    a20, a21, a30, a31 = vzero(dxp), vzero(dxp), vzero(dxp), vzero(dxp)
    for o in range(C_out):
        w0 = vload(w9, wi + o * Cp)
        w1 = vload(w9, wi + o * Cp + LANES)
        v = vbroadcast(d, di + o)
        a00, a01 = vfma(v, w0, a00), vfma(v, w1, a01)
        v = vbroadcast(d, di + C_out + o)
        a10, a11 = vfma(v, w0, a10), vfma(v, w1, a11)
        v = vbroadcast(d, di + 2 * C_out + o)
        a20, a21 = vfma(v, w0, a20), vfma(v, w1, a21)
        v = vbroadcast(d, di + 3 * C_out + o)
        a30, a31 = vfma(v, w0, a30), vfma(v, w1, a31)
    vaddto(dxp, q0, a00)
    vaddto(dxp, q0 + LANES, a01)
    vaddto(dxp, q1, a10)
    vaddto(dxp, q1 + LANES, a11)
    vaddto(dxp, q2, a20)
    vaddto(dxp, q2 + LANES, a21)
    vaddto(dxp, q3, a30)
    vaddto(dxp, q3 + LANES, a31)


def _tile8(d, w9, dxp, di, C_out, Cp, wi, q0, q1, q2, q3):
    """As :func:`_tile16` for 8 channels."""
    a0, a1, a2, a3 = vzero(dxp), vzero(dxp), vzero(dxp), vzero(dxp)
    for o in range(C_out):
        w0 = vload(w9, wi + o * Cp)
        a0 = vfma(vbroadcast(d, di + o), w0, a0)
        a1 = vfma(vbroadcast(d, di + C_out + o), w0, a1)
        a2 = vfma(vbroadcast(d, di + 2 * C_out + o), w0, a2)
        a3 = vfma(vbroadcast(d, di + 3 * C_out + o), w0, a3)
    vaddto(dxp, q0, a0)
    vaddto(dxp, q1, a1)
    vaddto(dxp, q2, a2)
    vaddto(dxp, q3, a3)


def _tile1(d, w9, dxp, di, C_out, Cp, wi, q):
    """One position x 8 channels (the positions left over by the 4-tiles)."""
    a = vzero(dxp)
    for o in range(C_out):
        a = vfma(vbroadcast(d, di + o), vload(w9, wi + o * Cp), a)
    vaddto(dxp, q, a)


def _image(b, d, w9, dxp, pix0, toff):
    """Scatter the gradient of image b into ``dxp`` (its padded image, flat,
    zero on entry). d flat (n P C_out); w9 (9, C_out, Cp)."""
    P, C_out = pix0.shape[0], w9.shape[1]
    Cp = w9.shape[2]
    w = w9.reshape(-1)
    P4 = P - P % TILE
    c16 = Cp - Cp % 16
    for p0 in range(0, P4, BLOCK):
        p1 = min(p0 + BLOCK, P4)
        for t in range(9):
            base = toff[t]
            cb = 0
            while cb < Cp:
                wi = t * C_out * Cp + cb
                for p in range(p0, p1, TILE):
                    q0, q1 = (base + pix0[p]) * Cp + cb, (base + pix0[p + 1]) * Cp + cb
                    q2, q3 = (base + pix0[p + 2]) * Cp + cb, (base + pix0[p + 3]) * Cp + cb
                    if cb < c16:
                        _tile16(d, w, dxp, (b * P + p) * C_out, C_out, Cp, wi, q0, q1, q2, q3)
                    else:
                        _tile8(d, w, dxp, (b * P + p) * C_out, C_out, Cp, wi, q0, q1, q2, q3)
                cb += 16 if cb < c16 else LANES
    for p in range(P4, P):
        for t in range(9):
            for cb in range(0, Cp, LANES):
                q = (pix0[p] + toff[t]) * Cp + cb
                _tile1(d, w, dxp, (b * P + p) * C_out, C_out, Cp, t * C_out * Cp + cb, q)


def _crop(b, dxp, x, bound, out):
    """out[b] = the inside of the padded image ``dxp``, where ``|x[b]| <= bound``
    (every element when ``bound < 0``)."""
    H, W, C = out.shape[1], out.shape[2], out.shape[3]
    Cp = dxp.shape[0] // ((H + 2) * (W + 2))
    for y in range(H):
        for xx in range(W):
            src = ((y + 1) * (W + 2) + xx + 1) * Cp
            for c in range(C):
                v = dxp[src + c]
                if bound >= 0:
                    u = x[b, y, xx, c]
                    v = v if -bound <= u <= bound else v * 0
                out[b, y, xx, c] = v


def _one(b, d, w9, pix0, toff, x, bound, out):
    dxp = np.zeros((out.shape[1] + 2) * (out.shape[2] + 2) * w9.shape[2], out.dtype)
    _image(b, d, w9, dxp, pix0, toff)
    _crop(b, dxp, x, bound, out)


def _input_grad_serial(d, w9, pix0, toff, x, bound, out):
    for b in range(out.shape[0]):
        _one(b, d, w9, pix0, toff, x, bound, out)


def _input_grad_parallel(d, w9, pix0, toff, x, bound, out):
    for b in prange(out.shape[0]):
        _one(b, d, w9, pix0, toff, x, bound, out)


_TWINS = Twins({"dx": _input_grad_serial, "dx_par": _input_grad_parallel},
               helpers=(_tile16, _tile8, _tile1, _image, _crop, _one), setup=(register,))


def conv3x3_input_grad(d, w9, H, W, stride, C_in, parallel=False, x=None, bound=None):
    """Input gradient ``(n, H, W, C_in)`` of a 3x3 conv with padding 1.

    d: output gradient ``(n, H_out, W_out, C_out)``; w9: :func:`tap_weights`
    of the (binarized) weights. Each image is scattered into a zeroed padded
    buffer, then cropped; with ``x`` (the input, ``(n, H, W, C_in)``) and
    ``bound``, only where ``|x| <= bound`` (the clipped STE of sign, fused).
    """
    n, C_out, Cp = d.shape[0], w9.shape[1], w9.shape[2]
    if d.shape[3] != C_out or w9.dtype != d.dtype:
        raise ValueError("d and w9 disagree in C_out or dtype")
    pix0, toff = geometry(H, W, stride)
    if d.shape[1] * d.shape[2] != pix0.shape[0]:
        raise ValueError(f"d has {d.shape[1:3]} positions, not those of a {H}x{W} input")
    out = np.empty((n, H, W, C_in), d.dtype)
    if bound is None:
        x, bound = out, -1.0
    else:
        x = np.ascontiguousarray(x, dtype=d.dtype)
    _TWINS["dx_par" if parallel else "dx"](np.ascontiguousarray(d).reshape(-1), np.ascontiguousarray(w9),
                                           pix0, toff, x, d.dtype.type(bound), out)
    return out
