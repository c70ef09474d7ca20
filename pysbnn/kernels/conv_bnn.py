r"""Kernel A: dense BNN 3x3 convolution, +-1 weights and +-1 inputs.

Activations are packed per pixel (``conv_layout.pack_pixels``: each pixel's
C_in bits in uint64 words, zero words on the padding ring). For every output
position the nine tap words are XORed against the weight words of all output
channels, popcounted and summed::

    out[n, y, x, o] = sum_{valid t} (C_in - 2 popcount(a_t ^ w_{o,t}))

Padded taps are executed against zero words and their share
``C_in - 2 popcount(w_t)`` is subtracted again from a per-(border class, o)
table, so the inner loop has no branches. Executed operations: one XNOR and
one popcount per weight bit and position, padded taps included
(``analysis.bops_bnn``, the paper's O_BNN = 2N).
"""

from typing import NamedTuple

import numpy as np

from .. import analysis
from .conv_layout import conv_out_size, pack_pixels, windows
from .intrinsics import popcount64
from .jit import Twins, resolve_backend
from .words import pack_last_axis, unpack_bits

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


class BnnGeometry(NamedTuple):
    """Kernel A's per-shape arguments: 3-bit tap-validity classes of the output
    rows and columns, and the sizes."""
    rcls: np.ndarray
    ccls: np.ndarray
    C_in: int
    stride: int
    H_out: int
    W_out: int


class BnnConvPlan:
    """Packed +-1 weights of one 3x3 conv for Kernel A.

    Wt: uint64 (9, nw, C_out), bit ``i % 64`` of word ``i // 64`` is
    ``w[o, i, dy, dx] >= 0`` at t = 3 dy + dx; corr: int64 (64, C_out), for
    border class ``8 rowmask + colmask`` (3-bit masks of the valid dy / dx)
    the share ``sum_{invalid t} (C_in - 2 popcount(w_t))`` of padded taps.
    """

    def __init__(self, w):
        w = np.asarray(w)
        if w.ndim != 4 or w.shape[2:] != (3, 3):
            raise ValueError(f"conv weights must be (C_out, C_in, 3, 3), got {w.shape}")
        self.C_out, self.C_in = w.shape[:2]
        self.w = np.where(w >= 0, 1.0, -1.0)
        signs = w.reshape(self.C_out, self.C_in, 9).transpose(2, 0, 1) >= 0   # (9, C_out, C_in)
        words_ = pack_last_axis(signs)                                       # (9, C_out, nw)
        self.Wt = np.ascontiguousarray(words_.transpose(0, 2, 1))
        share = self.C_in - 2 * np.bitwise_count(words_).sum(-1).astype(np.int64)  # (9, C_out)
        self.corr = np.zeros((64, self.C_out), np.int64)
        for cls in range(64):
            rm, cm = cls >> 3, cls & 7
            for t in range(9):
                if not ((rm >> (t // 3)) & 1 and (cm >> (t % 3)) & 1):
                    self.corr[cls] += share[t]
        self._geometry = {}

    def geometry(self, H, W, stride, padding):
        """The cached :class:`BnnGeometry` of an input size."""
        key = (H, W, stride, padding)
        if key not in self._geometry:
            H_out, W_out = conv_out_size(H, W, stride, padding)
            self._geometry[key] = BnnGeometry(_border_classes(H_out, H, stride, padding),
                                              _border_classes(W_out, W, stride, padding),
                                              self.C_in, stride, H_out, W_out)
        return self._geometry[key]


def prepare_bnn_conv3x3(w):
    """Pack +-1 (or latent, sign ``w >= 0``) conv weights once for Kernel A."""
    return BnnConvPlan(w)


def _border_classes(n_out, n_in, stride, padding):
    """3-bit mask of the taps d in 0..2 with 0 <= s y + d - p < n_in, per y."""
    y = np.arange(n_out)[:, None] * stride + np.arange(3)[None, :] - padding
    return (((y >= 0) & (y < n_in)) << np.arange(3)).sum(1).astype(np.int64)


def _ops(total):
    return {"xnor": int(total) // 2, "popcount": int(total) // 2, "total": int(total)}


# ----------------------------------------------------------------------------
# NumPy reference

def bnn_conv3x3_reference(x, w, stride=1, padding=1):
    """Kernel A in NumPy: XNOR / popcount on channel-packed words.

    .. math:: out[n,y,x,o] = \\sum_{t\\ valid} (C_{in} - 2\\,\\mathrm{popcount}(a_t \\oplus w_{o,t}))

    x: (n, H, W, C_in) +-1; w: (C_out, C_in, 3, 3) latent or +-1 (sign bit
    ``w >= 0``). Returns (out int32 (n, H_out, W_out, C_out), ops dict with
    ``xnor``, ``popcount``, ``total`` = ``analysis.bops_bnn(C_out, C_in, 3, positions)``).
    """
    x = np.asarray(x)
    n, H, W, C_in = x.shape
    C_out = w.shape[0]
    H_out, W_out = conv_out_size(H, W, stride, padding)
    a = pack_last_axis(x >= 0)                                   # (n, H, W, nw)
    wb = pack_last_axis(np.asarray(w).transpose(0, 2, 3, 1) >= 0)  # (C_out, 3, 3, nw)
    views, masks = windows(a, stride, padding, H_out, W_out)
    out = np.zeros((n, H_out, W_out, C_out), np.int64)
    for t, (v, m) in enumerate(zip(views, masks)):
        pc = np.bitwise_count(v[:, :, :, None, :] ^ wb[None, None, None, :, t // 3, t % 3, :])
        out += m[None, :, :, None] * (C_in - 2 * pc.sum(-1, dtype=np.int64))
    return out.astype(np.int32), _ops(analysis.bops_bnn(C_out, C_in, 3, n * H_out * W_out))


# ----------------------------------------------------------------------------
# Kernel

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


def _bnn_serial(A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out, out, ops):
    for n in range(A.shape[0]):
        _bnn_image(n, A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out, out, ops)


def _bnn_parallel(A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out, out, ops):
    for n in prange(A.shape[0]):
        _bnn_image(n, A, Wt, corr, rcls, ccls, C_in, stride, H_out, W_out, out, ops)


_TWINS = Twins({"bnn": _bnn_serial, "bnn_par": _bnn_parallel}, helpers=(_bnn_image,))
_PAR_MIN_BATCH = 2            # threads pay off from two images on


def bnn_conv3x3_packed(xp, plan, H, W, stride=1, padding=1, parallel=None, backend="auto"):
    """Kernel A on packed activations ``xp = pack_pixels(x, padding)``.

    Returns (out int32 (n, H_out, W_out, C_out), ops) with ops as in
    :func:`bnn_conv3x3_reference`.
    """
    if xp.shape[1:3] != (H + 2 * padding, W + 2 * padding) or xp.shape[3] != plan.Wt.shape[1]:
        raise ValueError("packed input does not match H, W, padding or the weights' C_in")
    n = xp.shape[0]
    if resolve_backend(backend) == "numpy":
        x = unpack_bits(xp[:, padding:padding + H, padding:padding + W], plan.C_in)
        return bnn_conv3x3_reference(2.0 * x - 1.0, plan.w, stride, padding)
    parallel = n >= _PAR_MIN_BATCH if parallel is None else bool(parallel)
    geo = plan.geometry(H, W, stride, padding)
    out = np.empty((n, geo.H_out, geo.W_out, plan.C_out), np.int32)
    ops = np.zeros(n, np.int64)
    _TWINS["bnn_par" if parallel else "bnn"](np.ascontiguousarray(xp), plan.Wt, plan.corr, *geo, out, ops)
    return out, _ops(ops.sum())


def bnn_conv3x3(x, w, stride=1, padding=1, parallel=None, backend="auto"):
    """Dense BNN 3x3 conv of +-1 NHWC ``x`` with +-1 weights ``w`` (or a
    ``BnnConvPlan``): packs, then runs Kernel A. Returns (out, ops)."""
    plan = w if isinstance(w, BnnConvPlan) else BnnConvPlan(w)
    x = np.asarray(x)
    if x.shape[3] != plan.C_in:
        raise ValueError(f"x has {x.shape[3]} channels, weights expect {plan.C_in}")
    return bnn_conv3x3_packed(pack_pixels(x, padding, backend), plan, x.shape[1], x.shape[2],
                              stride, padding, parallel, backend)
