r"""Weight gradient of a binary 3x3 convolution from histograms of input sign patterns.

The weight gradient of a binary conv multiplies a +-1 operand (the input
signs; 0 on the padding) by a float one (the output gradient ``d``):

.. math::
    \frac{\partial L}{\partial w_q}[o, c, t] = \sum_p x_b[p + t, c]\, d[p, o]

Split the C_in input channels into bytes of 8. For one position ``p`` and
tap ``t`` the 8 signs of a byte form a pattern ``k`` in 0..255, and the
position adds the same row ``d[p, :]`` to all 8 channels, each with its sign.
So sum the rows by pattern first (``"Four Russians"``),

.. math::
    H[t, g, k, :] = \sum_{p:\ \mathrm{byte}_g(x_b[p + t]) = k} d[p, :]

one vector add of ``d[p, :]`` per (position, tap, byte) instead of 8
multiply-adds, and expand once per step:
``dw[o, 8 g + j, t] = sum_k (2 bit_j(k) - 1) H[t, g, k, o]``. Taps on the padding (input 0) are skipped.

Input: the sign bits that the forward packed (``conv_xnor_train.pack_padded_signs``:
pixel words with a zero ring, read here as bytes). The work is
``9 * ceil(C_in / 8)`` vector adds of C_out floats per position plus
``8 * 256 * 9 * ceil(C_in / 8) * C_out`` adds for the expansion, so it pays when the
positions outnumber the patterns (large images, few channels); with many
channels and few positions the GEMM of the NumPy reference is cheaper
(:data:`HIST_MAX_BYTES`). Reference: im2col of the signs and one GEMM.
"""

import numpy as np

from .conv_xnor_train import valid_taps
from .im2col import im2col_numpy
from .jit import Twins
from .simd import LANES, register, vaddto, vload
from .words import unpack_bits

prange = range      # numba.prange in the parallel kernel (see jit.Twins)

#: histograms larger than this miss the caches on every add; callers use the GEMM then.
HIST_MAX_BYTES = 1 << 21

# ----------------------------------------------------------------------------
# NumPy reference

def signs_of_packed(A, C_in, dtype=np.float32):
    """+-1 input of packed pixel words with a zero ring: ``(n, H, W, C_in)``."""
    bits = unpack_bits(A[:, 1:-1, 1:-1], C_in)
    return (2.0 * bits - 1.0).astype(dtype)


def weight_grad_reference(A, C_in, d, stride):
    """``dw[o, c, dy, dx] = sum_p x_b[s p + t - 1, c] d[p, o]`` by im2col + GEMM."""
    n, Ho, Wo, C_out = d.shape
    cols = im2col_numpy(signs_of_packed(A, C_in, d.dtype), 3, 3, stride, 1)
    dw = (cols.T @ d.reshape(-1, C_out)).T                     # (C_out, (dy, dx, c))
    return dw.reshape(C_out, 3, 3, C_in).transpose(0, 3, 1, 2)


def expand_histograms(H, C_in):
    """``dw (C_out, C_in, 3, 3)`` from histograms ``H (9, G, 256, C_out)``."""
    nine, G, _, C_out = H.shape
    # sum_k (2 bit_j(k) - 1) H[k] = (sum of the rows with bit j set) - (the others),
    # top bit first, folding the two halves after each bit (no BLAS call: a tiny
    # GEMM on two OpenBLAS threads stalled for milliseconds on the busy machine)
    rows = np.ascontiguousarray(H.transpose(2, 0, 1, 3)).reshape(256, -1)
    bits = np.empty((8, rows.shape[1]), H.dtype)
    for j in range(7, -1, -1):
        top, bottom = rows[1 << j:], rows[:1 << j]
        bits[j] = top.sum(axis=0) - bottom.sum(axis=0)
        rows = top + bottom
    dw = bits.reshape(8, nine, G, C_out).transpose(3, 2, 0, 1).reshape(C_out, 8 * G, 9)[:, :C_in]
    return dw.reshape(C_out, C_in, 3, 3)


# ----------------------------------------------------------------------------
# Kernels

def _hist_images(A8, shape, G, d, stride, rmask, cmask, H, b0, b1):
    """Add images b0..b1-1 into H (flat (9, G, 256, C_out)). A8: the pixel words
    (n, Hp, Wp, nbytes / 8) as bytes, flat, ``shape = (Hp, Wp, nbytes)``;
    d: (n, Ho, Wo, C_out)."""
    n, Ho, Wo, C_out = d.shape
    Hp, Wp, nbytes = shape
    vec_end = C_out - C_out % LANES
    flat = d.reshape(-1)
    for b in range(b0, b1):
        for y in range(Ho):
            rm = rmask[y]
            for x in range(Wo):
                cm = cmask[x]
                di = ((b * Ho + y) * Wo + x) * C_out
                pix = (b * Hp + stride * y) * Wp + stride * x
                for t in range(9):
                    dy = t // 3
                    dx = t - 3 * dy
                    if (rm >> dy) & 1 and (cm >> dx) & 1:
                        k = (pix + dy * Wp + dx) * nbytes
                        for g in range(G):
                            hi = ((t * G + g) * 256 + np.int64(A8[k + g])) * C_out
                            for oc in range(0, vec_end, LANES):
                                vaddto(H, hi + oc, vload(flat, di + oc))
                            for o in range(vec_end, C_out):
                                H[hi + o] += flat[di + o]


def _hist_serial(A8, shape, G, d, stride, rmask, cmask, H):
    _hist_images(A8, shape, G, d, stride, rmask, cmask, H, 0, d.shape[0])


def _hist_parallel(A8, shape, G, d, stride, rmask, cmask, Hs):
    n, chunks = d.shape[0], Hs.shape[0]
    for c in prange(chunks):
        _hist_images(A8, shape, G, d, stride, rmask, cmask, Hs[c], c * n // chunks, (c + 1) * n // chunks)


_TWINS = Twins({"hist": _hist_serial, "hist_par": _hist_parallel}, helpers=(_hist_images,),
               setup=(register,))


def histogram_bytes(C_in, C_out, itemsize=4):
    """Size of the histograms of one layer."""
    return 9 * ((C_in + 7) // 8) * 256 * C_out * itemsize


def sign_hist_weight_grad(A, C_in, d, stride, threads=1):
    """``dL/dw_q (C_out, C_in, 3, 3)`` of a binary 3x3 conv (padding 1, stride 1 or 2).

    A: packed input signs ``(n, H + 2, W + 2, nw)`` (``pack_padded_signs``);
    d: output gradient ``(n, H_out, W_out, C_out)``; threads > 1 splits the
    images into that many histograms, summed at the end.
    """
    n, Hp, Wp, nw = A.shape
    d = np.ascontiguousarray(d)
    C_out = d.shape[3]
    G = (C_in + 7) // 8
    rmask, cmask = valid_taps(d.shape[1], Hp - 2, stride), valid_taps(d.shape[2], Wp - 2, stride)
    A8 = np.ascontiguousarray(A).reshape(-1).view(np.uint8)
    shape = (Hp, Wp, 8 * nw)
    chunks = max(1, min(int(threads), n))
    if chunks == 1:
        H = np.zeros(9 * G * 256 * C_out, d.dtype)
        _TWINS["hist"](A8, shape, G, d, stride, rmask, cmask, H)
    else:
        Hs = np.zeros((chunks, 9 * G * 256 * C_out), d.dtype)
        _TWINS["hist_par"](A8, shape, G, d, stride, rmask, cmask, Hs)
        H = Hs.sum(axis=0)
    return expand_histograms(H.reshape(9, G, 256, C_out), C_in)
