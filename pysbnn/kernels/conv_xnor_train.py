r"""Training forward of a binary 3x3 convolution: an exact XNOR-popcount product.

A binary conv's forward multiplies ``sign(x)`` by ``w_q = tau sign(w) + phi``
(every domain has this form, Sec. 3.2). With ``S`` the integer product of
the signs and ``Q`` the sum of the input signs under each window,

.. math::
    out[n, y, x, o] = \tau\,S[n, y, x, o] + \phi\,Q[n, y, x], \qquad
    S = \sum_{t\ valid} \bigl(C_{in} - 2\,\mathrm{popcount}(a_t \oplus w_{o,t})\bigr), \quad
    Q = \sum_{t\ valid} \bigl(2\,\mathrm{popcount}(a_t) - C_{in}\bigr)

where ``a_t`` is the tap's input pixel, its C_in sign bits packed in words
(:func:`pack_padded_signs`, the layout of ``conv_layout.pack_pixels`` with a
one-pixel zero ring), and ``w_{o,t}`` the sign bits of ``w[o, :, dy, dx]``.
``S`` and ``Q`` are exact integers; the float work is one multiply-add per
output. Taps on the padding read zero words; their share
``C_in - 2 popcount(w_{o,t})`` is subtracted again (border positions only).
With at most 21 channels the three pixels of a kernel row fit one word
(``a_0 | a_1 << C | a_2 << 2C``): 3 popcounts per output instead of 9.

The packed input is kept: the weight gradient reads the same bits
(:mod:`~pysbnn.kernels.conv_sign_hist`). The NumPy reference is the float
product ``sign(x) * w_q`` by im2col and BLAS, what ``backend="numpy"``
training runs (:func:`pysbnn.functional.conv2d_forward`).
"""

import functools
from typing import NamedTuple

import numpy as np

from .conv_layout import conv_out_size, pack_pixels
from .intrinsics import popcount64
from .jit import Twins, resolve_backend
from .words import WORD_BITS, n_words, pack_last_axis

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


class SignWeights(NamedTuple):
    """Sign bits of 3x3 conv weights for the kernel.

    words: uint64 (9, nw, C_out), bit ``i % 64`` of word ``i // 64`` is
    ``w[o, i, dy, dx] >= 0`` at ``t = 3 dy + dx``; share: int64 (9, C_out),
    ``C_in - 2 popcount(w_{o,t})``, a padded tap's contribution to S.
    """
    words: np.ndarray
    share: np.ndarray
    C_in: int


def prepare_sign_weights(w):
    """:class:`SignWeights` of latent or +-1 weights ``(C_out, C_in, 3, 3)``."""
    C_out, C_in = w.shape[:2]
    signs = np.asarray(w).reshape(C_out, C_in, 9).transpose(2, 0, 1) >= 0     # (9, C_out, C_in)
    words = pack_last_axis(signs)                                            # (9, C_out, nw)
    share = C_in - 2 * np.bitwise_count(words).sum(-1, dtype=np.int64)
    return SignWeights(np.ascontiguousarray(words.transpose(0, 2, 1)), share, C_in)


@functools.lru_cache(maxsize=64)
def valid_taps(n_out, n_in, stride):
    """3-bit masks (bit d: tap offset d - 1 lands inside 0..n_in-1) per output index
    (read-only, cached: a training step asks for the same few 80 times)."""
    y = np.arange(n_out)[:, None] * stride + np.arange(3)[None, :] - 1
    taps = (((y >= 0) & (y < n_in)) << np.arange(3)).sum(1).astype(np.int64)
    taps.setflags(write=False)
    return taps


# ----------------------------------------------------------------------------
# Kernels

def _pack_padded(x, A):
    """A[b, y + 1, x + 1] = sign bits of x[b, y, x, :] (A zero on entry)."""
    n, H, W, C = x.shape
    for b in range(n):
        for y in range(H):
            for xx in range(W):
                for w in range(A.shape[3]):
                    word = np.uint64(0)
                    for t in range(min(WORD_BITS, C - WORD_BITS * w)):
                        if x[b, y, xx, WORD_BITS * w + t] >= 0:
                            word |= np.uint64(1) << np.uint64(t)
                    A[b, y + 1, xx + 1, w] = word


def _border(acc, share, rm, cm):
    """Add the padded taps' shares (rows not in ``rm``, columns not in ``cm``) to acc."""
    for t in range(9):
        if not ((rm >> (t // 3)) & 1 and (cm >> (t % 3)) & 1):
            for o in range(acc.shape[0]):
                acc[o] += share[t, o]


def _emit(out, b, y, x, acc, share, rm, cm, ones, C_in, tau, phi):
    """``out[b, y, x] = tau S + phi Q`` of one output position from its popcount
    sums ``acc`` (2 x mismatches over all 9 taps, padded ones included), the
    ones of its input window and the tap-validity masks ``rm``, ``cm``."""
    n_valid = 9
    if rm != 7 or cm != 7:
        _border(acc, share, rm, cm)
        n_valid = ((rm & 1) + (rm >> 1 & 1) + (rm >> 2)) * ((cm & 1) + (cm >> 1 & 1) + (cm >> 2))
    q = phi * (2 * ones - C_in * n_valid)
    for o in range(acc.shape[0]):
        out[b, y, x, o] = tau * (9 * C_in - acc[o]) + q


def _forward_image(b, A, Wt, share, C_in, stride, rmask, cmask, tau, phi, out):
    """out[b] = tau S + phi Q (see the module docstring) for image b."""
    nw, C_out = Wt.shape[1], Wt.shape[2]
    Ho, Wo = out.shape[1], out.shape[2]
    acc = np.zeros(C_out, np.int64)
    for y in range(Ho):
        iy = stride * y
        for x in range(Wo):
            ix = stride * x
            for o in range(C_out):
                acc[o] = 0
            ones = 0
            for w in range(nw):
                a0, a1, a2 = A[b, iy, ix, w], A[b, iy, ix + 1, w], A[b, iy, ix + 2, w]
                a3, a4, a5 = A[b, iy + 1, ix, w], A[b, iy + 1, ix + 1, w], A[b, iy + 1, ix + 2, w]
                a6, a7, a8 = A[b, iy + 2, ix, w], A[b, iy + 2, ix + 1, w], A[b, iy + 2, ix + 2, w]
                ones += (popcount64(a0) + popcount64(a1) + popcount64(a2) + popcount64(a3)
                         + popcount64(a4) + popcount64(a5) + popcount64(a6) + popcount64(a7)
                         + popcount64(a8))
                for o in range(C_out):
                    acc[o] += 2 * (popcount64(a0 ^ Wt[0, w, o]) + popcount64(a1 ^ Wt[1, w, o])
                                   + popcount64(a2 ^ Wt[2, w, o]) + popcount64(a3 ^ Wt[3, w, o])
                                   + popcount64(a4 ^ Wt[4, w, o]) + popcount64(a5 ^ Wt[5, w, o])
                                   + popcount64(a6 ^ Wt[6, w, o]) + popcount64(a7 ^ Wt[7, w, o])
                                   + popcount64(a8 ^ Wt[8, w, o]))
            _emit(out, b, y, x, acc, share, rmask[y], cmask[x], ones, C_in, tau, phi)


def _forward_image_rows(b, A, Wt, share, C_in, stride, rmask, cmask, tau, phi, out):
    """As :func:`_forward_image` for ``3 C_in <= 64``: the three pixels of a
    kernel row share one word (``R = a_0 | a_1 << C | a_2 << 2C``), so an
    output costs 3 popcounts instead of 9."""
    C_out = Wt.shape[2]
    Hp, Wp = A.shape[1], A.shape[2]
    Ho, Wo = out.shape[1], out.shape[2]
    c1, c2 = np.uint64(C_in), np.uint64(2 * C_in)
    R = np.empty((Hp, Wp - 2), np.uint64)
    for yp in range(Hp):
        for x in range(Wp - 2):
            R[yp, x] = A[b, yp, x, 0] | (A[b, yp, x + 1, 0] << c1) | (A[b, yp, x + 2, 0] << c2)
    Wr = np.empty((3, C_out), np.uint64)
    for dy in range(3):
        for o in range(C_out):
            Wr[dy, o] = Wt[3 * dy, 0, o] | (Wt[3 * dy + 1, 0, o] << c1) | (Wt[3 * dy + 2, 0, o] << c2)
    acc = np.zeros(C_out, np.int64)
    for y in range(Ho):
        iy = stride * y
        for x in range(Wo):
            ix = stride * x
            r0, r1, r2 = R[iy, ix], R[iy + 1, ix], R[iy + 2, ix]
            ones = popcount64(r0) + popcount64(r1) + popcount64(r2)
            for o in range(C_out):
                acc[o] = 2 * (popcount64(r0 ^ Wr[0, o]) + popcount64(r1 ^ Wr[1, o]) + popcount64(r2 ^ Wr[2, o]))
            _emit(out, b, y, x, acc, share, rmask[y], cmask[x], ones, C_in, tau, phi)


def _forward_serial(A, Wt, share, C_in, stride, rmask, cmask, tau, phi, out):
    for b in range(A.shape[0]):
        if 3 * C_in <= WORD_BITS:
            _forward_image_rows(b, A, Wt, share, C_in, stride, rmask, cmask, tau, phi, out)
        else:
            _forward_image(b, A, Wt, share, C_in, stride, rmask, cmask, tau, phi, out)


def _forward_parallel(A, Wt, share, C_in, stride, rmask, cmask, tau, phi, out):
    for b in prange(A.shape[0]):
        if 3 * C_in <= WORD_BITS:
            _forward_image_rows(b, A, Wt, share, C_in, stride, rmask, cmask, tau, phi, out)
        else:
            _forward_image(b, A, Wt, share, C_in, stride, rmask, cmask, tau, phi, out)


def _pack_serial(x, A):
    _pack_padded(x, A)


def _pack_parallel(x, A):
    for b in prange(x.shape[0]):
        _pack_padded(x[b:b + 1], A[b:b + 1])


_TWINS = Twins({"fwd": _forward_serial, "fwd_par": _forward_parallel,
                "pack": _pack_serial, "pack_par": _pack_parallel},
               helpers=(_pack_padded, _border, _emit, _forward_image, _forward_image_rows))


def pack_padded_signs(x, backend="auto", parallel=False):
    """Sign bits of NHWC ``x`` per pixel with a one-pixel zero ring:
    uint64 ``(n, H + 2, W + 2, n_words(C))``; equals ``conv_layout.pack_pixels(x, 1)``."""
    if resolve_backend(backend) == "numpy":
        return pack_pixels(x, 1, "numpy")
    x = np.ascontiguousarray(x)
    n, H, W, C = x.shape
    A = np.zeros((n, H + 2, W + 2, n_words(C)), np.uint64)
    _TWINS["pack_par" if parallel else "pack"](x, A)
    return A


def xnor_conv3x3_train(A, weights, H, W, stride, tau, phi, dtype, parallel=False):
    """``tau S + phi Q`` (module docstring) of packed input ``A`` (:func:`pack_padded_signs`
    of an ``(n, H, W, C_in)`` batch) and :class:`SignWeights`; padding 1, stride 1 or 2.

    Returns ``(n, H_out, W_out, C_out)`` of ``dtype``.
    """
    if A.shape[1:3] != (H + 2, W + 2) or A.shape[3] != weights.words.shape[1]:
        raise ValueError("packed input does not match H, W or the weights' C_in")
    H_out, W_out = conv_out_size(H, W, stride, 1)
    out = np.empty((A.shape[0], H_out, W_out, weights.words.shape[2]), dtype)
    _TWINS["fwd_par" if parallel else "fwd"](A, weights.words, weights.share, weights.C_in, stride,
                                             valid_taps(H_out, H, stride), valid_taps(W_out, W, stride),
                                             float(tau), float(phi), out)
    return out
