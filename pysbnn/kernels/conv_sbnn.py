r"""Kernel B: SBNN 3x3 convolution, {0,1} weights and +-1 inputs (Sec. 3.5, Fig. 1).

Every output position is an independent dot product, so activations are
bit-sliced along positions (``conv_layout.pack_planes``: one uint64 = 64
positions of one channel). For each used (channel i, tap t) the kernel first
builds the *tap plane*: plane i shifted by the tap offset, wrapped columns
masked, zeros on the padding. A one-weight ``w01[o, i, t] = 1`` is then one
word-wide add of tap plane (i, t) into the bit-sliced counters of output
channel o. Fifteen planes at a time go through a carry-save adder tree whose
4-bit sum is added to the counter (``conv_sbnn_simd``). K0 kernels have no
ones and cost nothing; a K1 kernel is a single shifted-plane add. So the work
scales with the number of ones, plus a fixed cost per output value: the
counters are expanded to ``z' = 2 count - V`` (V[o, p]: ones of channel o
whose tap is valid at p, from a small per-geometry table)::

    z'[n, y, x, o] = sum_i sum_{t: w01[o, i, t] = 1, valid} x[n, s y + dy - p, s x + dx - p, i]

Executed operations (``analysis.sbnn_conv_ops``): a K1 kernel 1 shifted-plane
add per position, a kernel of Hamming weight h >= 2 h adds, K0 nothing.

Outputs: the kernel computes channel-major planes (its natural layout, the
one a following SBNN layer reads) and returns them as an NHWC-shaped *view*
``(n, H_out, W_out, C_out)``; elementwise NumPy ops keep that memory layout
and ``conv_layout.pack_planes`` / ``pack_pixels`` read it directly
(``np.ascontiguousarray`` of the view is a slow strided copy: avoid it).
"""

from typing import NamedTuple

import numpy as np

from .. import analysis
from ..entropy import ones_of
from .conv_layout import _unpack_planes, conv_out_size, pack_planes, plane_guard_words, windows
from .conv_sbnn_simd import csa15_add, expand_store, group_padding, register_simd, shift_rows
from .jit import Twins, resolve_backend

MAX_C_IN = 3640          # V (<= 9 C_in valid ones) is stored as int16

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


class SbnnGeometry(NamedTuple):
    """Everything Kernel B needs for one (weights, input size, stride, padding).

    The output grid has row stride R (R = W for stride 1, so a tap is a pure
    shift; R = W_out for stride 2); Pw words per plane, Pw8 rounded up to
    whole 8-word vectors; colmask (3 Pw8,) kills wrapped columns; Vneg
    (C_out, n_classes 64) int16 is minus the number of valid ones per
    position, one 64-row per class ``vclass[k]`` of plane words (words with
    equal tap-validity masks); ``ones_off = ones_row * Pw8`` are the ones'
    offsets into the tap planes; ``ones_kind[o]`` = (ones in K1 kernels,
    ones in the other kernels); ``nlev[o]`` counter levels.
    """
    g: int
    H: int
    W: int
    stride: int
    padding: int
    H_out: int
    W_out: int
    R: int
    Pw: int
    Pw8: int
    colmask: np.ndarray
    used: np.ndarray
    ones_off: np.ndarray
    ones_kind: np.ndarray
    start: np.ndarray
    nlev: np.ndarray
    Vneg: np.ndarray
    vclass: np.ndarray


class SbnnConvPlan:
    """{0,1} weights of one 3x3 conv prepared for Kernel B.

    For each output channel o the ones ``ones_row[start[o]:start[o+1]]``
    (tap-plane row ``9 i + t``, padded with the zero row ``9 C_in`` to groups
    of 15 and at most one last group of 7); per-geometry tables
    (:class:`SbnnGeometry`) are cached.
    """

    def __init__(self, w, binary=None):
        w01 = ones_of(w, binary)
        if w01.ndim != 4 or w01.shape[2:] != (3, 3):
            raise ValueError(f"conv weights must be (C_out, C_in, 3, 3), got {w01.shape}")
        self.C_out, self.C_in = w01.shape[:2]
        self.w01 = w01
        if self.C_in > MAX_C_IN:
            raise ValueError(f"Kernel B supports C_in <= {MAX_C_IN}")
        flat = w01.reshape(self.C_out, self.C_in * 9)
        hw = analysis.hamming_weights(analysis.kernel_codes(w01, binary=True))
        counts = flat.sum(1)
        rows, start = [], [0]
        for o in range(self.C_out):                    # ones of o, padded to whole groups
            r = np.flatnonzero(flat[o])
            pad = group_padding(len(r))                    # a tail of <= 7 gets a 7-group
            rows += [r, np.full(pad, 9 * self.C_in)]
            start.append(start[-1] + len(r) + pad)
        self.ones_row = np.concatenate(rows).astype(np.int64)
        self.start = np.array(start, np.int64)
        k1 = np.where(hw == 1, 1, 0).sum(1)
        self.ones_kind = np.stack([k1, counts - k1], axis=1).astype(np.int64)
        self.nlev = np.maximum(4, [int(c).bit_length() for c in counts]).astype(np.int64)
        self.used = flat.any(0)
        self.ones_t = w01.reshape(self.C_out, self.C_in, 9).sum(1).astype(np.int64)  # (C_out, 9)
        self._geometry = {}

    def geometry(self, H, W, stride, padding):
        """The cached :class:`SbnnGeometry` of an input size."""
        key = (H, W, stride, padding)
        if key not in self._geometry:
            self._geometry[key] = self._make_geometry(H, W, stride, padding)
        return self._geometry[key]

    def _make_geometry(self, H, W, stride, padding):
        H_out, W_out = conv_out_size(H, W, stride, padding)
        R = W if stride == 1 else W_out
        Pw = (H_out * R + 63) // 64
        Pw8 = (Pw + 7) // 8 * 8
        y = np.arange(H_out)[:, None]
        x = np.arange(R)[None, :]
        valid = np.zeros((9, Pw8 * 64), bool)
        for t in range(9):
            dy, dx = divmod(t, 3)
            sy, sx = stride * y + dy - padding, stride * x + dx - padding
            ok = (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W) & (x < W_out)
            valid[t, :H_out * R] = ok.ravel()
        colmask = np.zeros((3, Pw8 * 64), bool)
        for dx in range(3):
            sx = x + dx - padding
            colmask[dx, :H_out * R] = np.broadcast_to((sx >= 0) & (sx < W), (H_out, R)).ravel()
        colmask = np.packbits(colmask, axis=-1, bitorder="little").view(np.uint64).ravel()
        # words with the same 9 validity masks share their V row (few classes: the
        # top and bottom rows; a small table that stays in cache)
        masks = valid[:, :Pw * 64].reshape(9, Pw, 64).transpose(1, 0, 2).reshape(Pw, -1)
        patterns, vclass = np.unique(masks, axis=0, return_inverse=True)
        Vneg = -(self.ones_t @ patterns.reshape(-1, 9, 64).transpose(1, 0, 2).reshape(9, -1))
        return SbnnGeometry(plane_guard_words(W), H, W, stride, padding, H_out, W_out, R, Pw, Pw8,
                            colmask, self.used, self.ones_row * Pw8, self.ones_kind, self.start,
                            self.nlev, Vneg.astype(np.int16), vclass.ravel().astype(np.int64))


def prepare_sbnn_conv3x3(w, binary=None):
    """Prepare {0,1} conv weights (latent: one where ``w >= 0``; or bool) for Kernel B."""
    return SbnnConvPlan(w, binary)


# ----------------------------------------------------------------------------
# NumPy reference

def sbnn_conv3x3_reference(x, w, stride=1, padding=1, binary=None):
    """Kernel B in NumPy: the shifted views of the input times the {0,1} taps.

    x: (n, H, W, C_in) +-1; w: latent (one where ``w >= 0``) or bool
    (C_out, C_in, 3, 3). Returns (z' int32 (n, H_out, W_out, C_out), ops dict
    ``analysis.sbnn_conv_ops``).
    """
    x = np.asarray(x)
    w01 = ones_of(w, binary)
    n, H, W, C_in = x.shape
    H_out, W_out = conv_out_size(H, W, stride, padding)
    xs = np.where(x >= 0, 1, -1).astype(np.int64)
    views, _ = windows(xs, stride, padding, H_out, W_out)
    z = np.zeros((n, H_out, W_out, w01.shape[0]), np.int64)
    for t, v in enumerate(views):          # a K0 kernel has no ones: it adds nothing
        z += v @ w01[:, :, t // 3, t % 3].T.astype(np.int64)
    return z.astype(np.int32), analysis.sbnn_conv_ops(w01, n * H_out * W_out, binary=True)


def conv3x3_ones(x, stride=1, padding=1):
    """``q`` of Eq. 20: the 3x3 conv of ``x`` with an all-ones kernel over all
    channels (the same for every output channel), ``q[n,y,x] = sum_{valid t, i} x``.
    Returns int32 (n, H_out, W_out, 1) so that it broadcasts against z'."""
    x = np.asarray(x)
    n, H, W, C = x.shape
    H_out, W_out = conv_out_size(H, W, stride, padding)
    s = np.where(x >= 0, 1, -1).sum(-1, dtype=np.int64)[..., None]
    views, _ = windows(s, stride, padding, H_out, W_out)
    return np.sum(views, axis=0).astype(np.int32)


# ----------------------------------------------------------------------------
# Kernel

def _sbnn_taps_shift(n, planes, g, W, padding, Pw8, colmask, used, T):
    """Stride 1: every used tap plane of image n. Row ``r = 9*i + t`` of T
    (``T[r*Pw8:]``), bit p = y*W + x of the output grid, holds input bit
    (y + dy - p, x + dx - p): the plane shifted by (dy - p) rows and (dx - p)
    columns, wrapped columns masked, 0 on the padding."""
    for t in range(9):
        dy = t // 3
        dx = t - 3 * dy
        off = 64 * g + (dy - padding) * W + (dx - padding)
        shift_rows(T, t, planes[n], off >> 6, off & 63, colmask, dx * Pw8, used, Pw8 // 8)
    return 0


def _sbnn_taps(n, planes, g, H, W, stride, padding, H_out, R, Pw8, colmask, used, T):
    """Any stride, bit by bit: all tap planes of image n, T[(9*i + t)*Pw8 + k],
    bit p = y*R + x of the output grid holds the input bit at
    (s*y + dy - p, s*x + dx - p), 0 if that falls on the padding."""
    C_in = planes.shape[1]
    for i in range(C_in):
        src = planes[n, i]
        for t in range(9):
            r = 9 * i + t
            if not used[r]:
                continue
            dy = t // 3
            dx = t - 3 * dy
            row = T[r * Pw8:(r + 1) * Pw8]
            for k in range(Pw8):
                row[k] = 0
            for y in range(H_out):
                sy = stride * y + dy - padding
                if sy < 0 or sy >= H:
                    continue
                for x in range(R):
                    sx = stride * x + dx - padding
                    if sx < 0 or sx >= W:
                        continue
                    b = sy * W + sx
                    bit = (src[g + (b >> 6)] >> np.uint64(b & 63)) & np.uint64(1)
                    p = y * R + x
                    row[p >> 6] |= bit << np.uint64(p & 63)
    return 0


def _sbnn_image(n, planes, geo, out, ops):
    """SBNN conv of image n into out[n] (C_out, Pw 64) int32 channel-major.

    The ones of output channel o are given as word offsets
    ``geo.ones_off[start[o]:start[o+1]]`` into the tap planes T; groups of 15
    (and at most one last group of 7) go through ``csa15_add``.
    """
    C_in = planes.shape[1]
    Pw8 = geo.Pw8
    zero_row = 9 * C_in
    T = np.empty((9 * C_in + 1) * Pw8, np.uint64)   # rows of unused taps are never read
    for k in range(Pw8):
        T[zero_row * Pw8 + k] = 0
    if geo.stride == 1:
        _sbnn_taps_shift(n, planes, geo.g, geo.W, geo.padding, Pw8, geo.colmask, geo.used, T)
    else:
        _sbnn_taps(n, planes, geo.g, geo.H, geo.W, geo.stride, geo.padding, geo.H_out, geo.R,
                   Pw8, geo.colmask, geo.used, T)
    C = np.zeros(geo.nlev.max() * Pw8, np.uint64)
    positions = geo.H_out * geo.W_out
    for o in range(geo.start.shape[0] - 1):
        L = geo.nlev[o]
        for k in range(L * Pw8):
            C[k] = 0
        csa15_add(T, geo.ones_off, geo.start[o], geo.start[o + 1], Pw8 // 8, C, L)
        ops[n, 0] += geo.ones_kind[o, 0] * positions     # record the adds just executed:
        ops[n, 1] += geo.ones_kind[o, 1] * positions     # K1 shifted copies, other ones
        n_ones = geo.ones_kind[o, 0] + geo.ones_kind[o, 1]
        L_used = 0                               # counter levels that can be non-zero
        while n_ones >> L_used:
            L_used += 1
        expand_store(out[n, o], geo.Vneg[o], geo.vclass, C, Pw8, L_used, geo.Pw)
    return 0


def _sbnn_serial(planes, geo, out, ops):
    for n in range(planes.shape[0]):
        _sbnn_image(n, planes, geo, out, ops)


def _sbnn_parallel(planes, geo, out, ops):
    for n in prange(planes.shape[0]):
        _sbnn_image(n, planes, geo, out, ops)


_TWINS = Twins({"sbnn": _sbnn_serial, "sbnn_par": _sbnn_parallel},
               helpers=(_sbnn_taps_shift, _sbnn_taps, _sbnn_image), setup=(register_simd,))
_PAR_MIN_BATCH = 2            # threads pay off from two images on


def _checked_geometry(planes, plan, H, W, stride, padding):
    geo = plan.geometry(H, W, stride, padding)
    if planes.shape[1:] != (plan.C_in, 2 * geo.g + (H * W + 63) // 64 + 8):
        raise ValueError("planes do not match H, W or the weights' C_in (use pack_planes)")
    return geo


def sbnn_conv3x3_buffer(planes, plan, H, W, stride=1, padding=1, parallel=None, backend="auto"):
    """Kernel B's own output: ``z'`` channel-major, position ``y R + x`` of each plane.

    Returns ``(buf, R, ops)``: int32 (n, C_out, Pw 64) (entries past the
    H_out x W_out grid are unspecified), the row stride R (W for stride 1,
    W_out for stride 2) and the ops dict of :func:`sbnn_conv3x3_reference`.
    """
    geo = _checked_geometry(planes, plan, H, W, stride, padding)
    n = planes.shape[0]
    buf = np.empty((n, plan.C_out, geo.Pw * 64), np.int32)
    if resolve_backend(backend) == "numpy":
        x = np.where(_unpack_planes(planes, H, W), 1.0, -1.0)
        z, ops = sbnn_conv3x3_reference(x, plan.w01, stride, padding)
        grid = buf[:, :, :geo.H_out * geo.R].reshape(n, plan.C_out, geo.H_out, geo.R)
        grid[:, :, :, :geo.W_out] = z.transpose(0, 3, 1, 2)
        return buf, geo.R, ops
    parallel = n >= _PAR_MIN_BATCH if parallel is None else bool(parallel)
    counts = np.zeros((n, 2), np.int64)          # per image: K1 shifted copies, other ones
    _TWINS["sbnn_par" if parallel else "sbnn"](np.ascontiguousarray(planes), geo, buf, counts)
    k1, multi = (int(c) for c in counts.sum(axis=0))
    return buf, geo.R, {"k1_shift": k1, "popcount": multi, "total": k1 + multi}


def sbnn_conv3x3_packed(planes, plan, H, W, stride=1, padding=1, parallel=None, backend="auto"):
    """Kernel B on bit-sliced activations ``planes = pack_planes(x)``.

    Returns (z', ops): z' int32 (n, H_out, W_out, C_out), an NHWC view of the
    channel-major buffer (:func:`sbnn_conv3x3_buffer`) with the numba backend;
    ops as in :func:`sbnn_conv3x3_reference`.
    """
    geo = _checked_geometry(planes, plan, H, W, stride, padding)
    if resolve_backend(backend) == "numpy":
        x = np.where(_unpack_planes(planes, H, W), 1.0, -1.0)
        return sbnn_conv3x3_reference(x, plan.w01, stride, padding)
    buf, R, ops = sbnn_conv3x3_buffer(planes, plan, H, W, stride, padding, parallel, backend)
    n, H_out, W_out = buf.shape[0], geo.H_out, geo.W_out
    if geo.Pw * 64 == H_out * W_out:           # no padding columns or tail: reshape in place
        z = buf.reshape(n, plan.C_out, H_out, W_out)
    else:
        z = buf[:, :, :H_out * R].reshape(n, plan.C_out, H_out, R)[:, :, :, :W_out]
    return z.transpose(0, 2, 3, 1), ops


def sbnn_conv3x3(x, w, stride=1, padding=1, binary=None, parallel=None, backend="auto"):
    """SBNN 3x3 conv of +-1 NHWC ``x`` with {0,1} weights ``w`` (latent, bool,
    or an ``SbnnConvPlan``): packs planes, then runs Kernel B. Returns (z', ops)."""
    plan = w if isinstance(w, SbnnConvPlan) else SbnnConvPlan(w, binary)
    x = np.asarray(x)
    if x.shape[3] != plan.C_in:
        raise ValueError(f"x has {x.shape[3]} channels, weights expect {plan.C_in}")
    return sbnn_conv3x3_packed(pack_planes(x, backend), plan, x.shape[1], x.shape[2], stride,
                               padding, parallel, backend)
