r"""The passes around Kernel B in an IR-Net residual unit, channel-major, in one go each.

A binarized ResNet unit (``pysbnn.resnet``) computes

    h' = HardTanh( BN( BinaryConv3x3( sign(h) ) ) + shortcut(h) )

Packed, the conv is Kernel B (``conv_sbnn``: ``z' = w01 . x``) and Eq. 20 with
the folded BatchNorm gives ``A_c (z' + xi q) + C_c`` (``pysbnn.packed.fold``),
where ``q`` is the 3x3 window sum of the signs over all input channels. The
residual stream ``h`` stays float32 in the channel-major layout Kernel B
works in, ``(n, C, H, W)``, so that no pass transposes:

* :func:`pack_planes_counting`: the sign bits of ``h`` into Kernel B's planes
  and, in the same pass, the number of ones at every position (``q`` needs
  the sums of the signs over the channels);
* :func:`window_sums`: ``q``, the 3x3 (strided, zero-padded) window sums of
  those sign sums -- one small (n, H, W) array, NumPy;
* :func:`unit_output`: Eq. 20 + BatchNorm + residual add + HardTanh, one pass
  from Kernel B's int32 buffer to the next ``h``.

Each has a NumPy reference (``backend="numpy"``) that the kernels equal:
bits and counts exactly, floats to the last bit (the same float32 operations
in the same order).
"""

import numpy as np

from .conv_layout import conv_out_size, plane_guard_words, windows
from .jit import Twins, resolve_backend
from .words import WORD_BITS, n_words, pack_last_axis

prange = range      # numba.prange in the parallel kernels (see jit.Twins)


# ----------------------------------------------------------------------------
# Sign bits and sign counts of the residual stream

def pack_planes_counting_numpy(h):
    """NumPy reference of :func:`pack_planes_counting`."""
    n, C, H, W = h.shape
    g = plane_guard_words(W)
    bits = h.reshape(n, C, H * W) >= 0
    planes = np.zeros((n, C, 2 * g + n_words(H * W) + 8), np.uint64)
    planes[:, :, g:g + n_words(H * W)] = pack_last_axis(bits)
    return planes, bits.sum(axis=1, dtype=np.int32)


def _pack_image(h, planes, ones, i, g):
    C, P = h.shape[1], h.shape[2]
    count = ones[i]
    for p in range(P):
        count[p] = 0
    for c in range(C):
        row = h[i, c]
        for p in range(P):                          # contiguous: vectorises
            count[p] += np.int32(row[p] >= 0)
        for w in range((P + WORD_BITS - 1) // WORD_BITS):
            word = np.uint64(0)
            for t in range(min(WORD_BITS, P - w * WORD_BITS)):
                if row[w * WORD_BITS + t] >= 0:
                    word |= np.uint64(1) << np.uint64(t)
            planes[i, c, g + w] = word


def _pack_serial(h, planes, ones, g):
    for i in range(h.shape[0]):
        _pack_image(h, planes, ones, i, g)


def _pack_parallel(h, planes, ones, g):
    for i in prange(h.shape[0]):
        _pack_image(h, planes, ones, i, g)


def pack_planes_counting(h, backend="auto", parallel=None):
    """Kernel B's input planes of ``sign(h)`` and the ones per position.

    h : float32 (n, C, H, W), channel-major. Returns ``(planes, ones)``:
    ``planes`` as ``conv_layout.pack_planes`` (uint64 (n, C, g + n_words(HW) + g + 8)),
    ``ones`` int32 (n, H W), the number of channels with ``h >= 0`` at each position.
    """
    if resolve_backend(backend) == "numpy":
        return pack_planes_counting_numpy(h)
    n, C, H, W = h.shape
    g = plane_guard_words(W)
    planes = np.zeros((n, C, 2 * g + n_words(H * W) + 8), np.uint64)
    ones = np.empty((n, H * W), np.int32)
    parallel = n >= 2 if parallel is None else parallel
    _TWINS["pack_par" if parallel else "pack"](np.ascontiguousarray(h).reshape(n, C, H * W),
                                               planes, ones, g)
    return planes, ones


def window_sums_numpy(s, stride, padding):
    """NumPy reference of :func:`window_sums`."""
    n, H, W = s.shape
    H_out, W_out = conv_out_size(H, W, stride, padding)
    views, _ = windows(np.asarray(s, np.int32), stride, padding, H_out, W_out)
    q = views[0].copy()
    for v in views[1:]:
        q += v
    return q


def _window_image(s, stride, padding, q, i):
    H, W = s.shape[1], s.shape[2]
    for y in range(q.shape[1]):
        for x in range(q.shape[2]):
            acc = 0
            for dy in range(3):
                sy = stride * y + dy - padding
                if 0 <= sy < H:
                    for dx in range(3):
                        sx = stride * x + dx - padding
                        if 0 <= sx < W:
                            acc += s[i, sy, sx]
            q[i, y, x] = acc


def _window_serial(s, stride, padding, q):
    for i in range(q.shape[0]):
        _window_image(s, stride, padding, q, i)


def _window_parallel(s, stride, padding, q):
    for i in prange(q.shape[0]):
        _window_image(s, stride, padding, q, i)


def window_sums(s, stride, padding, backend="auto", parallel=None):
    """``q[n, y, x] = sum_{valid taps} s[n, s y + dy - p, s x + dx - p]`` (3x3, zero padding).

    s : int (n, H, W) sign sums over the channels. Returns int32 (n, H_out, W_out).
    (The NumPy reference pads and adds nine views: ~50 us a call at batch 1.)
    """
    if resolve_backend(backend) == "numpy":
        return window_sums_numpy(s, stride, padding)
    n, H, W = s.shape
    q = np.empty((n,) + conv_out_size(H, W, stride, padding), np.int32)
    parallel = n >= 2 if parallel is None else parallel
    _TWINS["win_par" if parallel else "win"](np.ascontiguousarray(s, dtype=np.int32), int(stride),
                                             int(padding), q)
    return q


# ----------------------------------------------------------------------------
# Eq. 20 + BatchNorm + residual add + HardTanh

def unit_output_numpy(zbuf, R, q, A, xi, C, shortcut, clip):
    """NumPy reference of :func:`unit_output` (the same float32 operations)."""
    n, Cout, _ = zbuf.shape
    H_out, W_out = q.shape[1:]
    z = zbuf[:, :, :H_out * R].reshape(n, Cout, H_out, R)[:, :, :, :W_out].astype(np.float32)
    u = z + np.float32(xi) * q[:, None].astype(np.float32)
    out = A.astype(np.float32)[None, :, None, None] * u + C.astype(np.float32)[None, :, None, None]
    out = out + shortcut
    return np.clip(out, np.float32(-1), np.float32(1)) if clip else out


def _output_image(zbuf, R, q, A, xi, C, shortcut, clip, out, i):
    Cout, H_out, W_out = out.shape[1], out.shape[2], out.shape[3]
    lo, hi = np.float32(-1), np.float32(1)
    for c in range(Cout):
        a, b = A[c], C[c]
        for y in range(H_out):
            z, qq = zbuf[i, c, y * R:y * R + W_out], q[i, y]       # rows: unit strides
            sc, o = shortcut[i, c, y], out[i, c, y]
            for x in range(W_out):
                v = a * (np.float32(z[x]) + xi * np.float32(qq[x])) + b + sc[x]
                o[x] = min(max(v, lo), hi) if clip else v


def _output_serial(zbuf, R, q, A, xi, C, shortcut, clip, out):
    for i in range(out.shape[0]):
        _output_image(zbuf, R, q, A, xi, C, shortcut, clip, out, i)


def _output_parallel(zbuf, R, q, A, xi, C, shortcut, clip, out):
    for i in prange(out.shape[0]):
        _output_image(zbuf, R, q, A, xi, C, shortcut, clip, out, i)


_TWINS = Twins({"pack": _pack_serial, "pack_par": _pack_parallel,
                "win": _window_serial, "win_par": _window_parallel,
                "out": _output_serial, "out_par": _output_parallel},
               helpers=(_pack_image, _window_image, _output_image))


def unit_output(zbuf, R, q, A, xi, C, shortcut, clip=True, backend="auto", parallel=None):
    """``HardTanh(A_c (z' + xi q) + C_c + shortcut)`` of a whole unit, channel-major.

    Parameters
    ----------
    zbuf : int32 (n, C_out, Pw 64), Kernel B's buffer (position ``y R + x``).
    R : row stride of the buffer (W for stride 1, W_out for stride 2).
    q : int32 (n, H_out, W_out), :func:`window_sums`.
    A, C : float (C_out,) Eq. 20 with the folded BatchNorm; xi : the domain scalar.
    shortcut : float32 (n, C_out, H_out, W_out), channel-major.
    clip : apply HardTanh.

    Returns float32 (n, C_out, H_out, W_out).
    """
    A32, C32 = np.asarray(A, np.float32), np.asarray(C, np.float32)
    shortcut = np.ascontiguousarray(shortcut, dtype=np.float32)
    if resolve_backend(backend) == "numpy":
        return unit_output_numpy(zbuf, R, q, A32, xi, C32, shortcut, clip)
    out = np.empty(shortcut.shape, np.float32)
    parallel = out.shape[0] >= 2 if parallel is None else parallel
    _TWINS["out_par" if parallel else "out"](zbuf, R, np.ascontiguousarray(q, dtype=np.int32), A32,
                                             np.float32(xi), C32, shortcut, bool(clip), out)
    return out
