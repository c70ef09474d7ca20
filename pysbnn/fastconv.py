"""A faster NHWC convolution for training, with the signatures of
:func:`pysbnn.functional.conv2d_forward` / :func:`~pysbnn.functional.conv2d_backward`.

Same math as the reference (im2col and BLAS GEMMs), arranged to move less
memory; a training step of the binarized ResNet-18 runs 1.3-1.6x faster
(docs/benchmarks.md):

1. ``im2col`` writes the patch matrix in one Numba pass from the unpadded
   input (zeros for taps on the padding): no ``np.pad`` copy and no copy of a
   transposed sliding-window view. Measured as fast as copying the matrix.
2. The input gradient of a stride-1 convolution is itself a convolution: of
   ``dout`` with the kernel flipped in space and its channel axes swapped,
   padded by ``k - 1 - p``. One im2col + GEMM replaces the reference's
   ``(P, k k c_in)`` GEMM followed by a ``k * k``-pass col2im (the largest
   saving). Strided convolutions keep GEMM + col2im, the col2im as one Numba
   scatter-add pass into the unpadded ``dx``; 1x1 convolutions need neither.
3. The weight gradient is ``(cols^T dout)^T``, the GEMM orientation OpenBLAS
   runs fastest for a tall, narrow ``dout``.

The copy kernels are plain Python functions (``im2col_kernel``,
``col2im_kernel``) compiled with Numba when it is available; with
``NUMBA_DISABLE_JIT=1`` the very same code runs uncompiled, and without Numba
the NumPy versions of :mod:`pysbnn.functional` run. The copy kernels are exact;
the GEMM results agree with the reference to float32 rounding (they sum in a
different order). ``tests/test_resnet.py`` checks both.

:func:`enable` routes :class:`~pysbnn.layers.Conv2d` and
:class:`~pysbnn.binary.BinaryConv2d` through these functions.
"""

import os

import numpy as np

from . import functional as F
from .functional import conv_output_size

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward", "enable", "disable",
           "im2col_kernel", "col2im_kernel"]


# ------------------------------------------------------------- copy kernels
# Written over the 6-D patch array (n, ho, wo, kh, kw, c); the innermost loop
# runs over the channels, contiguous in both arrays. (Measured: as fast as a
# plain copy of the patch matrix; flat-index variants were 3x slower.)

def im2col_kernel(x, stride, padding, cols):
    """Fill ``cols[b, i, j, dy, dx, :] = x[b, s*i + dy - p, s*j + dx - p, :]`` (0 off the image).

    x : (n, h, w, c); cols : (n, ho, wo, kh, kw, c), overwritten entirely.
    """
    n, h, w, c = x.shape
    _, ho, wo, kh, kw, _ = cols.shape
    for b in range(n):
        for i in range(ho):
            for dy in range(kh):
                y = i * stride + dy - padding
                for j in range(wo):
                    for dx in range(kw):
                        xx = j * stride + dx - padding
                        if 0 <= y < h and 0 <= xx < w:
                            for ch in range(c):
                                cols[b, i, j, dy, dx, ch] = x[b, y, xx, ch]
                        else:
                            for ch in range(c):
                                cols[b, i, j, dy, dx, ch] = 0


def col2im_kernel(dcols, stride, padding, dx):
    """Scatter-add ``dcols[b, i, j, dy, dx_, :]`` into ``dx[b, s*i + dy - p, s*j + dx_ - p, :]``.

    dcols : (n, ho, wo, kh, kw, c); dx : (n, h, w, c), zero on entry.
    Taps falling on the padding are dropped (their input was the constant 0).
    """
    n, h, w, c = dx.shape
    _, ho, wo, kh, kw, _ = dcols.shape
    for b in range(n):
        for i in range(ho):
            for dy in range(kh):
                y = i * stride + dy - padding
                if y < 0 or y >= h:
                    continue
                for j in range(wo):
                    for dx_ in range(kw):
                        xx = j * stride + dx_ - padding
                        if 0 <= xx < w:
                            for ch in range(c):
                                dx[b, y, xx, ch] += dcols[b, i, j, dy, dx_, ch]


_JIT = {}


def _kernels():
    """``(im2col, col2im)`` compiled by Numba, or ``None`` without Numba.

    Numba is imported here, lazily, never at ``import pysbnn``. With
    ``NUMBA_DISABLE_JIT=1`` ``njit`` returns the Python functions themselves.
    """
    if "k" not in _JIT:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _JIT["k"] = None
        else:
            jit = numba.njit(cache=True, nogil=True)
            _JIT["k"] = (jit(im2col_kernel), jit(col2im_kernel))
    return _JIT["k"]


# ----------------------------------------------------------- im2col/col2im
def im2col(x, kh, kw, stride, padding):
    """Patches of an NHWC batch as rows; same result as :func:`pysbnn.functional.im2col`.

    Returns cols (n * ho * wo, kh * kw * c), columns ordered (dy, dx, channel).
    """
    k = _kernels()
    if k is None:
        return F.im2col(x, kh, kw, stride, padding)
    n, h, w, c = x.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    k[0](np.ascontiguousarray(x), stride, padding, cols)
    return cols.reshape(n * ho * wo, kh * kw * c)


def col2im(dcols, x_shape, kh, kw, stride, padding):
    """Adjoint of :func:`im2col`; same result as :func:`pysbnn.functional.col2im`."""
    k = _kernels()
    if k is None:
        return F.col2im(dcols, x_shape, kh, kw, stride, padding)
    n, h, w, c = x_shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    dx = np.zeros(x_shape, dtype=dcols.dtype)
    k[1](np.ascontiguousarray(dcols).reshape(n, ho, wo, kh, kw, c), stride, padding, dx)
    return dx


# -------------------------------------------------------------- conv pair
def _same_size_conv(dout, w_flip, kh, kw, pad, x_shape):
    """Stride-1 ``dx``: ``dout`` (n, ho, wo, c_out) correlated with ``w_flip``
    (c_in, kh, kw, c_out) = the kernel flipped in space, channels swapped."""
    c_in = w_flip.shape[0]
    cols = im2col(dout, kh, kw, 1, pad)
    dx = cols @ w_flip.reshape(c_in, -1).T
    return dx.reshape(x_shape[:3] + (c_in,))


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """2-D cross-correlation, NHWC; drop-in for :func:`pysbnn.functional.conv2d_forward`.

    x (n, h, w, c_in), w (c_out, c_in, kh, kw), b (c_out,) or None ->
    out (n, ho, wo, c_out) and a cache for :func:`conv2d_backward`.
    A 1x1 convolution without padding skips im2col (a strided view suffices).
    """
    c_out, c_in, kh, kw = w.shape
    if x.shape[-1] != c_in:
        raise ValueError(f"conv2d: input has {x.shape[-1]} channels, weight expects {c_in}")
    n, h, wd, _ = x.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    if kh == kw == 1 and padding == 0:
        cols = np.ascontiguousarray(x[:, ::stride, ::stride]).reshape(n * ho * wo, c_in)
    else:
        cols = im2col(x, kh, kw, stride, padding)
    wmat = w.transpose(0, 2, 3, 1).reshape(c_out, -1)      # columns (dy, dx, channel)
    out = cols @ wmat.T
    if b is not None:
        out += b
    cache = (x.shape, cols, wmat, w.shape, stride, padding, b is not None)
    return out.reshape(n, ho, wo, c_out), cache


def conv2d_backward(dout, cache):
    """Gradients ``dx, dw, db`` of :func:`conv2d_forward` (db None without bias)."""
    x_shape, cols, wmat, w_shape, stride, padding, has_bias = cache
    c_out, c_in, kh, kw = w_shape
    d2 = np.ascontiguousarray(dout).reshape(-1, c_out)
    dw = (cols.T @ d2).T.reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2)
    if kh == kw == 1 and padding == 0:
        n, h, w, _ = x_shape
        dx = np.zeros(x_shape, dtype=d2.dtype)
        dx[:, ::stride, ::stride] = (d2 @ wmat).reshape(n, (h - 1) // stride + 1, (w - 1) // stride + 1, c_in)
    elif stride == 1 and kh == kw and padding < kh:
        # dx is the convolution of dout with the flipped, transposed kernel:
        # one im2col + GEMM, cheaper than the (P, kh kw c_in) GEMM + col2im.
        w_flip = wmat.reshape(c_out, kh, kw, c_in)[:, ::-1, ::-1].transpose(3, 1, 2, 0)
        dx = _same_size_conv(dout, w_flip, kh, kw, kh - 1 - padding, x_shape)
    else:
        dx = col2im(d2 @ wmat, x_shape, kh, kw, stride, padding)
    db = d2.sum(axis=0) if has_bias else None
    return dx, dw, db


# ---------------------------------------------------------------- routing
_SAVED = {}


def enable():
    """Route every pysbnn convolution (Conv2d, BinaryConv2d) through this module.

    Layers look ``pysbnn.functional.conv2d_forward`` up at call time, so this
    swaps the two functions there; :func:`disable` restores the reference.
    Returns True if the Numba kernels are in use.
    """
    if not _SAVED:
        _SAVED["f"], _SAVED["b"] = F.conv2d_forward, F.conv2d_backward
    F.conv2d_forward, F.conv2d_backward = conv2d_forward, conv2d_backward
    return _kernels() is not None and os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0")


def disable():
    """Undo :func:`enable`."""
    if _SAVED:
        F.conv2d_forward, F.conv2d_backward = _SAVED.pop("f"), _SAVED.pop("b")
