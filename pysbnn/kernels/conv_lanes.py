r"""Kernel B with the batch in the word, fused with the rest of an IR-Net unit.

One binarized ResNet unit (``pysbnn.resnet``),
``h' = HardTanh(A (z' + xi q) + C + shortcut(h))`` (Eq. 20 with the folded
BatchNorm, :mod:`pysbnn.packed.fold`), on the lane layouts of
:mod:`pysbnn.kernels.lanes` (64 images per word). Per lane group, in blocks
of ``BLOCK`` output words (positions ``k = y R + x`` of the output grid, R the
row stride of the source planes):

1. ``q`` of Eq. 20 for the block: the 3x3 window sums of the input's sign
   sums per position (zero on the ring: the padding adds nothing), times ``xi``;
2. per output channel o, Kernel B: each one-weight ``w01[o, i, t] = 1`` is
   one word-wide add of the source plane of channel i shifted by the tap's
   word offset into bit-sliced counters (``conv_sbnn_simd.csa15_add``: 15
   planes per carry-save step); K0 kernels cost nothing, a K1 kernel is one
   shifted-plane add. The counters become ``z' = 2 count - V``
   (``expand_store``; V: the ones of o whose tap is valid at k);
3. per output position, the 64 images' float32 ``A (z' + xi q) + C + sc``,
   clipped to [-1, 1] (HardTanh), stored into the next float stream; with
   ``emit`` also their sign bits into the next unit's planes. After the last
   block the sign sums of the next unit come from one carry-save pass over
   those planes (``lanes.plane_sums``): no pass re-reads the float stream.

The source planes are the ringed sign planes for stride 1 and their four
phases for stride 2 (``lanes.split_phases``): either way a tap is a shift by
whole words, with zeros (the ring) where it falls on the padding. Executed
operations are those of :func:`conv_sbnn.sbnn_conv3x3_reference`
(``analysis.sbnn_conv_ops``), counted per image of the batch.

Numba caches the compiled kernel by this file's source only: after editing
``lanes`` or ``conv_sbnn_simd`` (whose IR twins it inlines), clear
``__pycache__/conv_lanes*.nb*`` and ``lanes*.nb*``.
"""

from typing import NamedTuple

import numpy as np

from .. import analysis
from .conv_layout import conv_out_size
from .conv_sbnn import conv3x3_ones, sbnn_conv3x3_reference
from .conv_sbnn_simd import csa15_add, expand_store, register_simd
from .jit import Twins, resolve_backend
from .lanes import (BLOCK, LANES, pack_lanes_numpy, phase_len, plane_len,
                    plane_sums, register_lanes_simd, sign_word, split_phases, sums_geometry)

prange = range      # numba.prange in the parallel kernel (see jit.Twins)


class LanesGeometry(NamedTuple):
    """Tables of one (weights, input size, stride, padding) for the lanes kernel.

    ``nk`` output words (``H_out R`` rounded up to whole 8-word vectors);
    per word k: ``pos[k]`` its dense output index ``y W_out + x`` (-1 for the
    columns past W_out and the tail), ``dest[k]`` its word in the next ringed
    plane, ``vclass[k]`` its class of tap validity (``Vneg`` (C_out,
    classes 64) int16 = minus the valid ones, repeated over the 64 lanes),
    ``qbase[k]`` the ringed input position of its tap (0, 0) (``qoff``: the 9
    tap offsets). ``ones_off``: the word
    offsets of the ones (``SbnnConvPlan.ones_row``) into one group's source.
    """
    H: int
    W: int
    stride: int
    padding: int
    H_out: int
    W_out: int
    R: int
    nk: int
    ones_off: np.ndarray
    start: np.ndarray
    nlev: np.ndarray
    ones_kind: np.ndarray
    Vneg: np.ndarray
    vclass: np.ndarray
    pos: np.ndarray
    dest: np.ndarray
    qbase: np.ndarray
    qoff: np.ndarray


def lanes_geometry(plan, H, W, stride, padding):
    """The cached :class:`LanesGeometry` of an ``SbnnConvPlan`` and an input size."""
    key = ("lanes", H, W, stride, padding)
    if key not in plan._geometry:
        plan._geometry[key] = _make_geometry(plan, H, W, stride, padding)
    return plan._geometry[key]


def _source_offsets(plan, H, W, stride, padding):
    """Word offsets of tap-plane rows ``9 i + t`` (and the zero row) into one group's source."""
    r = plan.ones_row
    i, t = r // 9, r % 9
    dy, dx = t // 3 + 1 - padding, t % 3 + 1 - padding
    Wp = W + 2
    if stride == 1:
        off = i * plane_len(H, W) + dy * Wp + dx
        zero = plan.C_in * plane_len(H, W)
    else:
        Wq, Lq = -(-Wp // 2), phase_len(H, W)
        off = (4 * i + 2 * (dy % 2) + dx % 2) * Lq + (dy // 2) * Wq + dx // 2
        zero = 4 * plan.C_in * Lq
    return np.where(i < plan.C_in, off, zero).astype(np.int64)


def _make_geometry(plan, H, W, stride, padding):
    H_out, W_out = conv_out_size(H, W, stride, padding)
    R = W + 2 if stride == 1 else -(-(W + 2) // 2)
    nk = -(-H_out * R // 8) * 8
    k = np.arange(nk)
    y, x = k // R, k % R
    real = (x < W_out) & (y < H_out)
    valid = np.zeros((9, nk), bool)
    for t in range(9):
        sy, sx = stride * y + t // 3 - padding, stride * x + t % 3 - padding
        valid[t] = real & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
    patterns, vclass = np.unique(valid.T, axis=0, return_inverse=True)
    Vneg = -(plan.ones_t @ patterns.T.astype(np.int64))              # (C_out, classes)
    Wp = W + 2
    qbase = (stride * y - padding + 1) * Wp + stride * x - padding + 1
    qoff = np.array([(t // 3) * Wp + t % 3 for t in range(9)], np.int64)
    return LanesGeometry(
        H, W, stride, padding, H_out, W_out, R, nk, _source_offsets(plan, H, W, stride, padding),
        plan.start, plan.nlev, plan.ones_kind, np.repeat(Vneg, LANES, axis=1).astype(np.int16),
        vclass.ravel().astype(np.int64), np.where(real, y * W_out + x, -1).astype(np.int64),
        np.where(real, (y + 1) * (W_out + 2) + x + 1, 0).astype(np.int64),
        np.where(real, qbase, 0).astype(np.int64), qoff)


# ----------------------------------------------------------------------------
# NumPy reference

def _unpack_lanes(planes, H, W):
    """+-1 NHWC (N, H, W, C) from sign planes (G, C + 1, plane_len(H, W))."""
    G, C1, _ = planes.shape
    Wp = W + 2
    ring = planes[:, :C1 - 1, :(H + 2) * Wp].reshape(G, C1 - 1, H + 2, Wp)[:, :, 1:H + 1, 1:W + 1]
    bits = np.unpackbits(np.ascontiguousarray(ring).astype("<u8").view(np.uint8), axis=-1,
                         bitorder="little").reshape(G, C1 - 1, H, W, LANES)
    return np.where(bits, 1, -1).transpose(0, 4, 2, 3, 1).reshape(G * LANES, H, W, C1 - 1)


def unit_lanes_numpy(planes, plan, H, W, stride, padding, A, xi, C, sc, clip, emit):
    """NumPy reference of :func:`unit_lanes` (the same float32 operations in the same order)."""
    x = _unpack_lanes(planes, H, W)
    N = x.shape[0]
    z, _ = sbnn_conv3x3_reference(x, plan.w01, stride, padding)
    q = conv3x3_ones(x, stride, padding)
    H_out, W_out = z.shape[1:3]
    G = N // LANES
    zf = z.reshape(G, LANES, H_out * W_out, -1).transpose(0, 3, 2, 1).astype(np.float32)
    xq = np.float32(xi) * q.reshape(G, LANES, H_out * W_out, 1).transpose(0, 3, 2, 1).astype(np.float32)
    out = A[:, None, None] * (zf + xq) + C[:, None, None]
    out = out + sc
    if clip:
        out = np.clip(out, np.float32(-1), np.float32(1))
    nxt = pack_lanes_numpy(out, H_out, W_out) if emit else (None, None)
    return (out,) + nxt


# ----------------------------------------------------------------------------
# Kernel

# The loops below index whole arrays instead of slicing rows: a slice made in
# a hot loop costs two atomic reference-count updates in compiled code.

def _block_q(sums, g, geo, k0, nb, xi, xq, acc):
    """``xq[kk] = xi q`` (64 lanes) for the output words k0 <= k < k0 + nb of group g."""
    for kk in range(nb):
        k = k0 + kk
        if geo.pos[k] < 0:
            continue
        for j in range(LANES):
            acc[j] = 0
        for t in range(9):
            r = geo.qbase[k] + geo.qoff[t]
            for j in range(LANES):
                acc[j] += sums[g, r, j]
        for j in range(LANES):
            xq[kk, j] = xi * np.float32(acc[j])


def _block_out(g, o, k0, nb, z, xq, geo, a, c, sc, clip, out, flat, emit, planes_next):
    """Eq. 20 + BatchNorm + shortcut + HardTanh of output channel o, words k0.. k0 + nb,
    and (``emit``) the sign bits of the result for the next unit (``flat``: ``out`` flat)."""
    lo, hi = np.float32(-1), np.float32(1)
    for kk in range(nb):
        p = geo.pos[k0 + kk]
        if p < 0:
            continue
        if clip:
            for j in range(LANES):
                v = a * (np.float32(z[kk, j]) + xq[kk, j]) + c + sc[g, o, p, j]
                out[g, o, p, j] = min(max(v, lo), hi)
        else:
            for j in range(LANES):
                out[g, o, p, j] = a * (np.float32(z[kk, j]) + xq[kk, j]) + c + sc[g, o, p, j]
        if emit:
            at = ((g * out.shape[1] + o) * out.shape[2] + p) * LANES
            planes_next[g, o, geo.dest[k0 + kk]] = sign_word(flat, at)


def _unit_group(g, src, sums, geo, sg, A, xi, C, sc, clip, out, emit, planes_next, sums_next, ops, n):
    """One lane group g: q, Kernel B, the unit output (and the next planes) block by block."""
    T = src[g].reshape(src.shape[1] * src.shape[2])
    C_out = geo.start.shape[0] - 1
    lanes = max(0, min(LANES, n - LANES * g))
    positions = geo.H_out * geo.W_out
    cnt = np.empty(max(geo.nlev.max(), sg.L) * BLOCK, np.uint64)
    z = np.empty(BLOCK * LANES, np.int32)
    z2 = z.reshape((BLOCK, LANES))
    flat = out.reshape(out.size)
    xq = np.empty((BLOCK, LANES), np.float32)
    acc = np.empty(LANES, np.int32)
    for o in range(C_out):                       # record the adds executed below, per image
        ops[g, 0] += geo.ones_kind[o, 0] * positions * lanes
        ops[g, 1] += geo.ones_kind[o, 1] * positions * lanes
    for k0 in range(0, geo.nk, BLOCK):
        nb = min(BLOCK, geo.nk - k0)
        _block_q(sums, g, geo, k0, nb, xi, xq, acc)
        for o in range(C_out):
            L = geo.nlev[o]
            for i in range(L * nb):
                cnt[i] = 0
            csa15_add(T[k0:], geo.ones_off, geo.start[o], geo.start[o + 1], nb // 8, cnt, L)
            n_ones = geo.ones_kind[o, 0] + geo.ones_kind[o, 1]
            L_used = 0                                   # counter levels that can be non-zero
            while n_ones >> L_used:
                L_used += 1
            expand_store(z, geo.Vneg[o], geo.vclass[k0:], cnt, nb, L_used, nb)
            _block_out(g, o, k0, nb, z2, xq, geo, A[o], C[o], sc, clip, out, flat, emit, planes_next)
    if emit:
        plane_sums(planes_next[g].reshape(planes_next.shape[1] * planes_next.shape[2]), sg,
                   sums_next[g].reshape(sums_next.shape[1] * LANES), cnt)
    return 0


def _unit_serial(src, sums, geo, sg, A, xi, C, sc, clip, out, emit, planes_next, sums_next, ops, n):
    for g in range(src.shape[0]):
        _unit_group(g, src, sums, geo, sg, A, xi, C, sc, clip, out, emit, planes_next, sums_next, ops, n)


def _unit_parallel(src, sums, geo, sg, A, xi, C, sc, clip, out, emit, planes_next, sums_next, ops, n):
    for g in prange(src.shape[0]):
        _unit_group(g, src, sums, geo, sg, A, xi, C, sc, clip, out, emit, planes_next, sums_next, ops, n)


_TWINS = Twins({"unit": _unit_serial, "unit_par": _unit_parallel},
               helpers=(plane_sums, _block_q, _block_out, _unit_group),
               setup=(register_simd, register_lanes_simd))


def unit_lanes(planes, sums, plan, H, W, stride, padding, A, xi, C, sc, clip=True, emit=True,
               n=None, backend="auto", parallel=None):
    """A whole IR-Net unit on 64-image lanes: ``HardTanh(A (z' + xi q) + C + sc)``.

    Parameters
    ----------
    planes, sums : the input's sign planes (G, C_in + 1, plane_len(H, W)) and
        sign sums per position (G, (H + 2)(W + 2), 64) (:func:`lanes.pack_lanes`).
    plan : ``conv_sbnn.SbnnConvPlan`` of the {0,1} 3x3 weights.
    A, C : float (C_out,), Eq. 20 with the folded BatchNorm; xi : the domain scalar.
    sc : float32 (G, C_out, H_out W_out, 64), the shortcut in the float-stream layout.
    clip : apply HardTanh; emit : also return the next unit's planes and sums.
    n : images in the batch (the lanes past n are padding; default all N).

    Returns ``(out, planes_next, sums_next, ops)``: the float stream float32
    (G, C_out, H_out W_out, 64), the next planes and sums (None unless ``emit``)
    and the ops dict of ``conv_sbnn.sbnn_conv3x3_reference`` for n images.
    """
    G, N = planes.shape[0], planes.shape[0] * LANES
    n = N if n is None else int(n)
    if planes.shape[1:] != (plan.C_in + 1, plane_len(H, W)) or sums.shape != (G, (H + 2) * (W + 2), LANES):
        raise ValueError("planes / sums do not match H, W or the weights' C_in (use lanes.pack_lanes)")
    geo = lanes_geometry(plan, H, W, stride, padding)
    A32, C32 = np.asarray(A, np.float32), np.asarray(C, np.float32)
    sc = np.ascontiguousarray(sc, dtype=np.float32)
    if sc.shape != (G, plan.C_out, geo.H_out * geo.W_out, LANES):
        raise ValueError(f"shortcut must be {(G, plan.C_out, geo.H_out * geo.W_out, LANES)}, "
                         f"got {sc.shape}")
    if resolve_backend(backend) == "numpy":
        res = unit_lanes_numpy(planes, plan, H, W, stride, padding, A32, xi, C32, sc, clip, emit)
        return res + (analysis.sbnn_conv_ops(plan.w01, n * geo.H_out * geo.W_out, binary=True),)
    parallel = G >= 2 if parallel is None else bool(parallel)
    src = planes if stride == 1 else split_phases(planes, H, W, backend, parallel)
    out = np.empty(sc.shape, np.float32)
    shape_next = (G, plan.C_out + 1, plane_len(geo.H_out, geo.W_out)) if emit else (0, 0, 0)
    planes_next = np.zeros(shape_next, np.uint64)
    sums_next = np.zeros((G, (geo.H_out + 2) * (geo.W_out + 2), LANES) if emit else (0, 0, 0), np.int32)
    counts = np.zeros((G, 2), np.int64)
    sg = sums_geometry(plan.C_out, geo.H_out, geo.W_out)
    _TWINS["unit_par" if parallel else "unit"](np.ascontiguousarray(src), sums, geo, sg, A32,
                                               np.float32(xi), C32, sc, bool(clip), out, bool(emit), planes_next,
                                               sums_next, counts, n)
    k1, multi = (int(c) for c in counts.sum(axis=0))
    return out, planes_next if emit else None, sums_next if emit else None, {
        "k1_shift": k1, "popcount": multi, "total": k1 + multi}
