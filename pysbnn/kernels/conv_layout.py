"""Geometry of the packed 3x3 convolutions and their two activation layouts.

Conventions (shared by ``conv_bnn`` and ``conv_sbnn``):

* activations are NHWC, +-1 valued; the activation bit is ``b = (x >= 0)``;
* conv weights are ``(C_out, C_in, 3, 3)``; taps are numbered row-major,
  ``t = 3 dy + dx``; the 9-bit code of kernel ``(o, i)`` is
  ``analysis.kernel_codes``;
* output ``(y, x)`` reads input ``(s y + dy - p, s x + dx - p)``; taps that
  fall in the zero padding are *absent* (they contribute 0, not +-1), exactly
  as a float convolution of a zero-padded input;
* outputs are int32.

Layouts: :func:`pack_pixels` (each pixel's channels in words, a zero ring for
the padding; Kernel A) and :func:`pack_planes` (each channel's positions in
words, bit-sliced, with zero guard words; Kernel B). Both have a NumPy
version (the reference) and one built from the packing kernels of
:mod:`pysbnn.kernels.words`, chosen by ``backend``.
"""

import numpy as np

from . import words
from .jit import resolve_backend


def conv_out_size(H, W, stride=1, padding=1):
    """Output height and width of a 3x3 conv: ``(H + 2p - 3)//s + 1``."""
    if stride not in (1, 2) or padding not in (0, 1):
        raise ValueError("stride must be 1 or 2 and padding 0 or 1")
    H_out, W_out = (H + 2 * padding - 3) // stride + 1, (W + 2 * padding - 3) // stride + 1
    if H_out < 1 or W_out < 1:
        raise ValueError(f"input {H}x{W} too small for a 3x3 conv with padding {padding}")
    return H_out, W_out


def plane_guard_words(W):
    """Zero words kept before and after each packed plane so that every
    shifted read of Kernel B stays inside the buffer."""
    return (2 * W + 2 + 63) // 64 + 1


def _channel_major(x):
    """True when the NHWC array x is a view of a channel-major (n, C, H, W)
    buffer, as Kernel B returns and elementwise NumPy ops preserve."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 3, 1, 2).flags.c_contiguous


def pack_pixels(x, padding=1, backend="auto"):
    """Channel-packed activations for Kernel A.

    ``x``: (n, H, W, C) +-1 -> uint64 (n, H + 2p, W + 2p, n_words(C)); bit
    ``c % 64`` of word ``c // 64`` at pixel ``(y + p, x + p)`` is
    ``x[n, y, x, c] >= 0``. Padding pixels are all-zero words (the kernel
    treats them as absent). The kernels read channel-major input directly.
    """
    x = np.asarray(x)
    p = padding
    if resolve_backend(backend) == "numpy":
        return np.pad(words.pack_signs_numpy(x), ((0, 0), (p, p), (p, p), (0, 0)))
    n, H, W, C = x.shape
    out = np.zeros((n, H + 2 * p, W + 2 * p, words.n_words(C)), np.uint64)
    inner = out[:, p:p + H, p:p + W]
    if _channel_major(x):
        xt = x.transpose(0, 3, 1, 2)
        for i in range(n):
            inner[i] = words.pack_batch_sliced(xt[i].reshape(C, H * W), backend).reshape(H, W, -1)
    else:
        inner[...] = words.pack_signs(x.reshape(n * H * W, C), backend).reshape(n, H, W, -1)
    return out


def pack_planes(x, backend="auto"):
    """Bit-sliced input planes for Kernel B.

    ``x``: (n, H, W, C) +-1 -> uint64 (n, C, g + n_words(H W) + g + 8) where
    ``g = plane_guard_words(W)``: plane ``c`` holds bit ``y W + x`` (position
    along the plane) at word ``g + (y W + x) // 64``; guard words are zero.
    """
    x = np.asarray(x)
    n, H, W, C = x.shape
    g = plane_guard_words(W)
    nb = words.n_words(H * W)
    out = np.zeros((n, C, 2 * g + nb + 8), np.uint64)
    if resolve_backend(backend) == "numpy":
        out[:, :, g:g + nb] = words.pack_signs_numpy(x.transpose(0, 3, 1, 2).reshape(n, C, H * W))
    elif _channel_major(x):
        out[:, :, g:g + nb] = words.pack_signs(
            x.transpose(0, 3, 1, 2).reshape(n * C, H * W), backend).reshape(n, C, nb)
    else:
        for i in range(n):
            out[i, :, g:g + nb] = words.pack_batch_sliced(x[i].reshape(H * W, C), backend)
    return out


def _unpack_planes(planes, H, W):
    """Inverse of :func:`pack_planes`: bool (n, H, W, C)."""
    n, C, _ = planes.shape
    g = plane_guard_words(W)
    bits = words.unpack_bits(planes[:, :, g:g + words.n_words(H * W)], H * W)
    return bits.reshape(n, C, H, W).transpose(0, 2, 3, 1).astype(bool)


def windows(a, stride, padding, H_out, W_out):
    """The 9 shifted views of a zero-padded NHWC array: list over t = 3 dy + dx
    of (n, H_out, W_out, ...) arrays, plus the matching validity masks."""
    p, s = padding, stride
    n, H, W = a.shape[:3]
    ap = np.pad(a, ((0, 0), (p, p), (p, p)) + ((0, 0),) * (a.ndim - 3))
    valid = np.pad(np.ones((H, W), bool), p)
    views, masks = [], []
    for dy in range(3):
        for dx in range(3):
            sl = (slice(dy, dy + s * (H_out - 1) + 1, s), slice(dx, dx + s * (W_out - 1) + 1, s))
            views.append(ap[(slice(None),) + sl])
            masks.append(valid[sl])
    return views, masks
