r"""A ResNet's full-precision stem straight into the lane layout: 3x3 conv (padding 1) + bias.

.. math::
    h[g, c, y W + x, j] = b_c + \sum_{c', dy, dx} w[c, c', dy, dx]\; x_{64 g + j}[y + dy - 1, x + dx - 1, c']

for the (normalised) input images ``x`` (n, H, W, C_in), zero outside the
image, with the stem's BatchNorm folded into ``w`` and ``b``
(:func:`pysbnn.packed.fold.conv_bn`). The packed ResNet's units read their
input in the lane layout of :mod:`pysbnn.kernels.lanes` (64 images per
word); computing the stem there saves its im2col + GEMM, the BatchNorm pass
and the NHWC -> lanes transpose (measured: 58 + 57 us per image at batch 256,
width 16, on a 2-core Zen 3). With few input channels (1 for MNIST) the
sum is 9 ``C_in`` multiply-adds of 64-lane vectors per output, which the
compiler vectorises over the lanes.

The NumPy reference (:func:`stem_lanes_numpy`) is the float conv
(:func:`pysbnn.functional.conv2d_forward`: im2col and a GEMM) plus the bias,
converted with :func:`~pysbnn.kernels.lanes.to_lanes_numpy`; the kernel sums
in another order, so the two agree to float32 rounding. Lanes past ``n``
are zero, as :func:`~pysbnn.kernels.lanes.to_lanes` leaves them.
"""

import numpy as np

from .im2col import im2col_numpy
from .jit import Twins, num_threads, resolve_backend
from .lanes import LANES, n_lanes, to_lanes_numpy
from .simd import register, vadd, vbroadcast, vfma, vload, vstore, vzero

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


def stem_lanes_numpy(x, w, b):
    """Reference: ``x`` (n, H, W, C_in) float32, ``w`` (C_out, C_in, 3, 3), ``b`` (C_out,)
    -> float32 lanes ``(G, C_out, H W, 64)``."""
    n, H, W, C_in = x.shape
    cols = im2col_numpy(np.asarray(x, np.float32), 3, 3, 1, 1)
    out = cols @ w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1).T + b
    return to_lanes_numpy(out.reshape(n, H, W, -1).astype(np.float32))


def _taps(tile, w, q0, wi, C_in, plane, Wp, a0, a1, a2, a3, a4, a5, a6, a7):
    """The 9 C_in taps of one output added to its 8 lane vectors (tile and w flat)."""
    for c in range(C_in):
        for t in range(9):
            wv = vbroadcast(w, wi + c * 9 + t)
            q = (c * plane + q0 + (t // 3) * Wp + t % 3) * LANES
            a0 = vfma(wv, vload(tile, q), a0)
            a1 = vfma(wv, vload(tile, q + 8), a1)
            a2 = vfma(wv, vload(tile, q + 16), a2)
            a3 = vfma(wv, vload(tile, q + 24), a3)
            a4 = vfma(wv, vload(tile, q + 32), a4)
            a5 = vfma(wv, vload(tile, q + 40), a5)
            a6 = vfma(wv, vload(tile, q + 48), a6)
            a7 = vfma(wv, vload(tile, q + 56), a7)
    return a0, a1, a2, a3, a4, a5, a6, a7


def _group(x, w, b, h, g, H, W):
    """Lane group ``g``: its images padded into a flat (C_in, (H + 2)(W + 2), 64) tile,
    then, row by row (three tile rows stay in L1), every output channel and position
    as 8 vectors of 64 lanes. x (n, H, W, C_in); w flat (C_out, C_in, 9); h flat
    (G, C_out, H W, 64)."""
    n, C_in = x.shape[0], x.shape[3]
    C_out, Wp, plane = b.shape[0], W + 2, (H + 2) * (W + 2)
    m = max(0, min(LANES, n - LANES * g))
    tile = np.zeros(C_in * plane * LANES, np.float32)
    for j in range(m):
        for y in range(H):
            for xx in range(W):
                for c in range(C_in):
                    tile[(c * plane + (y + 1) * Wp + xx + 1) * LANES + j] = x[LANES * g + j, y, xx, c]
    for y in range(H):
        for o in range(C_out):
            bo = vbroadcast(b, o)
            for xx in range(W):
                z = vzero(tile)
                a0, a1, a2, a3, a4, a5, a6, a7 = _taps(tile, w, y * Wp + xx, o * C_in * 9, C_in, plane, Wp,
                                                       z, z, z, z, z, z, z, z)
                r = ((g * C_out + o) * H * W + y * W + xx) * LANES
                vstore(h, r, vadd(a0, bo))
                vstore(h, r + 8, vadd(a1, bo))
                vstore(h, r + 16, vadd(a2, bo))
                vstore(h, r + 24, vadd(a3, bo))
                vstore(h, r + 32, vadd(a4, bo))
                vstore(h, r + 40, vadd(a5, bo))
                vstore(h, r + 48, vadd(a6, bo))
                vstore(h, r + 56, vadd(a7, bo))
                for j in range(m, LANES):           # padding lanes: zero, as to_lanes leaves them
                    h[r + j] = 0


def _stem_serial(x, w, b, h, H, W):
    for g in range(h.shape[0] // (b.shape[0] * H * W * LANES)):
        _group(x, w, b, h, g, H, W)


def _stem_parallel(x, w, b, h, H, W):
    for g in prange(h.shape[0] // (b.shape[0] * H * W * LANES)):
        _group(x, w, b, h, g, H, W)


_TWINS = Twins({"stem": _stem_serial, "stem_par": _stem_parallel}, helpers=(_taps, _group),
               inline=(_taps,), setup=(register,))


def stem_lanes(x, w, b, backend="auto", parallel=None):
    """The stem conv of ``x`` (n, H, W, C_in) as float32 lanes ``(ceil(n / 64), C_out, H W, 64)``.

    ``w`` (C_out, C_in, 3, 3) and ``b`` (C_out,): the conv with its BatchNorm
    folded in; padding 1, stride 1. The parallel kernel splits the lane groups
    (default: with two groups or more and several numba threads).
    """
    w = np.asarray(w, np.float32)
    if w.ndim != 4 or w.shape[2:] != (3, 3) or np.shape(x)[-1] != w.shape[1] or np.ndim(x) != 4:
        raise ValueError(f"stem_lanes takes x (n, H, W, C_in) and w (C_out, C_in, 3, 3), "
                         f"got {np.shape(x)} and {w.shape}")
    b = np.asarray(b, np.float32)
    if resolve_backend(backend) == "numpy":
        return stem_lanes_numpy(x, w, b)
    n, H, W, _ = x.shape
    G = n_lanes(n) // LANES
    h = np.empty((G, w.shape[0], H * W, LANES), np.float32)
    if parallel is None:
        parallel = num_threads(backend, work=G, min_work=2) > 1
    _TWINS["stem_par" if parallel else "stem"](np.ascontiguousarray(x, np.float32), w.reshape(-1).copy(), b,
                                          h.reshape(-1), H, W)
    return h
