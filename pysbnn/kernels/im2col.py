"""Patch copies of the training convolutions: ``im2col`` and its adjoint ``col2im``.

``x`` is NHWC; a patch row holds the ``kh x kw`` window of every channel,
columns ordered ``(dy, dx, channel)``; taps on the zero padding read 0.

* ``backend="numpy"``: a strided view (``sliding_window_view``) of the padded
  input copied into the patch matrix, and ``col2im`` as ``kh * kw``
  slice-adds (the reference);
* ``backend="numba"``: one pass over the patch array (n, ho, wo, kh, kw, c)
  from the unpadded input, innermost loop over the contiguous channels
  (measured as fast as copying the matrix; flat-index variants were 3x
  slower), and a one-pass scatter-add for ``col2im``.

The copies are exact, so ``im2col`` is identical in both backends; the two
``col2im`` add an element's contributions in different orders (equal to
float rounding).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .jit import Twins, resolve_backend


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis: ``(size + 2p - k) // s + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


# ----------------------------------------------------------------------------
# NumPy reference

def im2col_numpy(x, kh, kw, stride, padding):
    """Patches of an NHWC batch as rows: (n, h, w, c) -> (n ho wo, kh kw c)."""
    n, h, w, c = x.shape
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    # windows: (n, ho', wo', c, kh, kw) -> keep every stride-th window.
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride][:, :ho, :wo]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)


def col2im_numpy(dcols, x_shape, kh, kw, stride, padding):
    """Adjoint of :func:`im2col_numpy`: scatter-add patch gradients to an NHWC array.

    Loops over the ``kh * kw`` kernel taps only (9 for a 3x3 kernel), never over pixels.
    """
    n, h, w, c = x_shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    d = dcols.reshape(n, ho, wo, kh, kw, c)
    dxp = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=dcols.dtype)
    for dy in range(kh):
        for dx in range(kw):
            dxp[:, dy:dy + stride * ho:stride, dx:dx + stride * wo:stride] += d[:, :, :, dy, dx]
    if padding:
        return dxp[:, padding:-padding, padding:-padding]
    return dxp


# ----------------------------------------------------------------------------
# Kernels

def _patches(x, cols, stride, padding, scatter):
    """The index map of the patches, once: ``cols[b, i, j, dy, dx, :]`` is
    ``x[b, s i + dy - p, s j + dx - p, :]``.

    ``scatter=False`` copies ``x`` into ``cols`` (0 for taps off the image);
    ``scatter=True`` adds ``cols`` into ``x`` (taps off the image dropped:
    their input was the constant 0). x : (n, h, w, c); cols : (n, ho, wo, kh, kw, c).
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
                        inside = 0 <= y < h and 0 <= xx < w
                        if scatter:
                            if inside:
                                for ch in range(c):
                                    x[b, y, xx, ch] += cols[b, i, j, dy, dx, ch]
                        elif inside:
                            for ch in range(c):
                                cols[b, i, j, dy, dx, ch] = x[b, y, xx, ch]
                        else:
                            for ch in range(c):
                                cols[b, i, j, dy, dx, ch] = 0


def im2col_kernel(x, stride, padding, cols):
    """Fill ``cols`` (n, ho, wo, kh, kw, c) with the patches of ``x`` (n, h, w, c)."""
    _patches(x, cols, stride, padding, False)


def col2im_kernel(dcols, stride, padding, dx):
    """Scatter-add ``dcols`` (n, ho, wo, kh, kw, c) into ``dx`` (n, h, w, c), zero on entry."""
    _patches(dx, dcols, stride, padding, True)


_TWINS = Twins({"im2col": im2col_kernel, "col2im": col2im_kernel}, helpers=(_patches,), inline=(_patches,))


def im2col(x, kh, kw, stride, padding, backend="auto"):
    """Patches of an NHWC batch ``(n, h, w, c)`` as rows ``(n ho wo, kh kw c)``."""
    if resolve_backend(backend) == "numpy":
        return im2col_numpy(x, kh, kw, stride, padding)
    n, h, w, c = x.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    _TWINS["im2col"](np.ascontiguousarray(x), stride, padding, cols)
    return cols.reshape(n * ho * wo, kh * kw * c)


def col2im(dcols, x_shape, kh, kw, stride, padding, backend="auto"):
    """Adjoint of :func:`im2col`: ``(n ho wo, kh kw c)`` -> NHWC ``x_shape``."""
    if resolve_backend(backend) == "numpy":
        return col2im_numpy(dcols, x_shape, kh, kw, stride, padding)
    n, h, w, c = x_shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    dx = np.zeros(x_shape, dtype=dcols.dtype)
    _TWINS["col2im"](np.ascontiguousarray(dcols).reshape(n, ho, wo, kh, kw, c), stride, padding, dx)
    return dx
