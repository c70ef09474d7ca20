r"""The batch in the word: activations of the packed conv stream, 64 images per word.

Kernel B of :mod:`conv_sbnn` puts the *positions* of one image in a word;
on the small planes of a ResNet's last stages (7x7, 4x4) most of each word
is then padding. Here the word holds one position of **64 images** (the
*lanes*: bit ``j`` of a word of lane group ``g`` is image ``64 g + j``),
whatever the plane size, and a tap of the 3x3 conv is a shift by whole
words. The layouts (``N`` = lanes, a multiple of 64; ``G = N / 64`` groups;
``Hp, Wp = H + 2, W + 2``, the plane with a one-position ring):

* the float stream ``h``: float32 ``(G, C, H W, 64)``, element
  ``[g, c, y W + x, j]`` of image ``64 g + j`` (each group's data contiguous:
  a thread works through one block of memory); :func:`to_lanes` and
  :func:`from_lanes` convert from and to NHWC;
* sign planes: uint64 ``(G, C + 1, plane_len(H, W))``, word ``(y + 1) Wp + x + 1``
  of plane ``c`` holds bit ``h >= 0`` of the 64 images of the group; the ring
  words (the zero padding) and plane ``C`` (all zero: the target of Kernel B's
  padding ones) are zero, and so are the guard words after each plane;
* sign sums per position: int32 ``(G, Hp Wp, 64)``, ``sum_c sign(h)`` (the
  ``q`` of Eq. 20 is their 3x3 window sum), at the same ring positions (zero
  on the ring);
* stride-2 phases (:func:`split_phases`): the padded plane split into its four
  (even/odd row) x (even/odd column) sub-planes, so that a stride-2 tap is
  again a shift by whole words.

Each function has a NumPy reference that the kernels equal bit for bit.
"""

import functools
from typing import NamedTuple

import numpy as np

from .conv_sbnn_simd import IR, csa15_add, expand_store, group_padding, register_simd
from .jit import Twins, resolve_backend

LANES = 64
BLOCK = 64          # words per block of the carry-save passes: their counters stay in L1
prange = range      # numba.prange in the parallel kernels (see jit.Twins)


def n_lanes(n):
    """Lanes holding ``n`` images: ``n`` rounded up to a multiple of 64."""
    return -(-int(n) // LANES) * LANES


def plane_len(H, W):
    """Words per sign plane: the (H + 2) x (W + 2) ringed plane and 16 zero guard words."""
    return (H + 2) * (W + 2) + 16


def phase_len(H, W):
    """Words per stride-2 phase plane: ceil((H + 2) / 2) x ceil((W + 2) / 2) + 16."""
    return -(-(H + 2) // 2) * -(-(W + 2) // 2) + 16


def to_lanes_numpy(x):
    """NumPy reference of :func:`to_lanes`."""
    n, H, W, C = x.shape
    N = n_lanes(n)
    h = np.zeros((N, H * W, C), np.float32)
    h[:n] = x.reshape(n, H * W, C)
    return np.ascontiguousarray(h.reshape(N // LANES, LANES, H * W, C).transpose(0, 3, 2, 1))


def from_lanes_numpy(h, n, H, W):
    """NumPy reference of :func:`from_lanes`."""
    G, C = h.shape[:2]
    return np.ascontiguousarray(h.transpose(0, 3, 2, 1).reshape(G * LANES, H, W, C)[:n])


def _to_group(x, out, g):
    n, P, C = x.shape
    m = max(0, min(LANES, n - LANES * g))
    tile = np.zeros((LANES, C), np.float32)          # one position: (64 images, C) -> (C, 64)
    for p in range(P):
        for j in range(m):
            for c in range(C):
                tile[j, c] = x[LANES * g + j, p, c]
        for c in range(C):
            for j in range(LANES):
                out[g, c, p, j] = tile[j, c]


def _from_group(h, out, g):
    n, P, C = out.shape
    m = max(0, min(LANES, n - LANES * g))
    tile = np.empty((LANES, C), np.float32)
    for p in range(P):
        for c in range(C):
            for j in range(m):
                tile[j, c] = h[g, c, p, j]
        for j in range(m):
            for c in range(C):
                out[LANES * g + j, p, c] = tile[j, c]


def _to_serial(x, out):
    for g in range(out.shape[0]):
        _to_group(x, out, g)


def _to_parallel(x, out):
    for g in prange(out.shape[0]):
        _to_group(x, out, g)


def _from_serial(h, out):
    for g in range(h.shape[0]):
        _from_group(h, out, g)


def _from_parallel(h, out):
    for g in prange(h.shape[0]):
        _from_group(h, out, g)


def to_lanes(x, backend="auto", parallel=None):
    """NHWC ``x`` (n, H, W, C) -> the float stream float32 (G, C, H W, 64); lanes past n are zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if resolve_backend(backend) == "numpy":
        return to_lanes_numpy(x)
    n, H, W, C = x.shape
    out = np.empty((n_lanes(n) // LANES, C, H * W, LANES), np.float32)
    parallel = out.shape[0] >= 2 if parallel is None else parallel
    _TWINS["to_par" if parallel else "to"](x.reshape(n, H * W, C), out)
    return out


def from_lanes(h, n, H, W, backend="auto", parallel=None):
    """The float stream (G, C, H W, 64) as a new NHWC array (n, H, W, C) of its first n images."""
    if resolve_backend(backend) == "numpy":
        return from_lanes_numpy(h, n, H, W)
    out = np.empty((n, H * W, h.shape[1]), np.float32)
    parallel = h.shape[0] >= 2 if parallel is None else parallel
    _TWINS["from_par" if parallel else "from"](np.ascontiguousarray(h, dtype=np.float32), out)
    return out.reshape(n, H, W, h.shape[1])


# ----------------------------------------------------------------------------
# Sign planes and sign sums per position

def sign_word(row, off):
    """Bit ``j`` = ``row[off + j] >= 0`` for j < 64 (float32 row), as a uint64.
    The compiled twin is one vector compare and a mask move (NaN gives 0)."""
    bits = (np.asarray(row[off:off + LANES]) >= 0).astype(np.uint64)
    return np.uint64(np.bitwise_or.reduce(bits << np.arange(LANES, dtype=np.uint64)))


class SumsGeometry(NamedTuple):
    """The carry-save pass summing the C sign planes of a group (:func:`plane_sums`).

    ``offs``: plane offsets ``c plane_len`` padded with the zero plane C to
    groups of 15 (and one of 7); ``L`` counter levels (>= 4) of which
    ``L_used`` can be non-zero; ``nk`` words summed (``nw`` = (H + 2)(W + 2)
    rounded up to 8); ``Vneg`` int16 (2 x 64): class 0 the ring (0), class 1
    the plane (-C); ``vclass`` (nk,) the class of every word.
    """
    offs: np.ndarray
    L: int
    L_used: int
    nk: int
    nw: int
    Vneg: np.ndarray
    vclass: np.ndarray


@functools.lru_cache(maxsize=64)
def sums_geometry(C, H, W):
    """The cached :class:`SumsGeometry` of C planes of H x W."""
    Lp, nw = plane_len(H, W), (H + 2) * (W + 2)
    offs = np.arange(C + group_padding(C), dtype=np.int64) * Lp
    inside = np.zeros((H + 2, W + 2), bool)
    inside[1:H + 1, 1:W + 1] = True
    nk = -(-nw // 8) * 8
    vclass = np.zeros(nk, np.int64)
    vclass[:nw] = inside.ravel()
    Vneg = np.repeat(np.array([0, -C], np.int16), LANES)
    return SumsGeometry(np.minimum(offs, C * Lp), max(4, C.bit_length()), C.bit_length(), nk, nw,
                        Vneg, vclass)


def plane_sums(T, sg, sums, cnt):
    """``sums[64 k + j] = sum_c (2 bit_j(plane c, word k) - 1)`` on the plane, 0 on the ring.

    T: one group's planes, flat (the C + 1 planes of ``plane_len`` words);
    sums: int32 flat (nw 64,); cnt: uint64 scratch of ``sg.L * BLOCK`` words.
    Bit-sliced counters over the C planes (``csa15_add``), expanded once per
    word (``expand_store``): cheaper than adding each channel's 64 signs.
    """
    for k0 in range(0, sg.nk, BLOCK):
        nb = min(BLOCK, sg.nk - k0)
        for i in range(sg.L * nb):
            cnt[i] = 0
        csa15_add(T[k0:], sg.offs, 0, sg.offs.shape[0], nb // 8, cnt, sg.L)
        expand_store(sums[LANES * k0:], sg.Vneg, sg.vclass[k0:], cnt, nb, sg.L_used,
                     min(nb, sg.nw - k0))


def pack_lanes_numpy(h, H, W):
    """NumPy reference of :func:`pack_lanes`."""
    G, C = h.shape[:2]
    Wp = W + 2
    bits = (h >= 0).reshape(G, C, H, W, LANES)
    words = np.packbits(bits, axis=-1, bitorder="little").view("<u8")[..., 0].astype(np.uint64)
    planes = np.zeros((G, C + 1, plane_len(H, W)), np.uint64)
    planes[:, :C, :(H + 2) * Wp].reshape(G, C, H + 2, Wp)[:, :, 1:H + 1, 1:W + 1] = words
    sums = np.zeros((G, H + 2, Wp, LANES), np.int32)
    sums[:, 1:H + 1, 1:W + 1] = 2 * bits.sum(axis=1, dtype=np.int32) - C
    return planes, sums.reshape(G, (H + 2) * Wp, LANES)


def _pack_group(h, H, W, planes, sums, sg, g):
    C, Wp = h.shape[1], W + 2
    flat = h.reshape(h.size)                  # no row slices: see conv_lanes
    for c in range(C):
        for y in range(H):
            for x in range(W):
                at = ((g * C + c) * H * W + y * W + x) * LANES
                planes[g, c, (y + 1) * Wp + x + 1] = sign_word(flat, at)
    cnt = np.empty(sg.L * BLOCK, np.uint64)
    plane_sums(planes[g].reshape(planes.shape[1] * planes.shape[2]), sg,
               sums[g].reshape(sums.shape[1] * LANES), cnt)


def _pack_serial(h, H, W, planes, sums, sg):
    for g in range(planes.shape[0]):
        _pack_group(h, H, W, planes, sums, sg, g)


def _pack_parallel(h, H, W, planes, sums, sg):
    for g in prange(planes.shape[0]):
        _pack_group(h, H, W, planes, sums, sg, g)


def pack_lanes(h, H, W, backend="auto", parallel=None):
    """Sign planes and sign sums per position of the float stream ``h`` (G, C, H W, 64).

    Returns ``(planes, sums)``: uint64 (G, C + 1, plane_len(H, W)) and int32
    (G, (H + 2)(W + 2), 64), laid out as in the module docstring.
    """
    h = np.ascontiguousarray(h, dtype=np.float32)
    if resolve_backend(backend) == "numpy":
        return pack_lanes_numpy(h, H, W)
    G, C = h.shape[:2]
    planes = np.zeros((G, C + 1, plane_len(H, W)), np.uint64)
    sums = np.zeros((G, (H + 2) * (W + 2), LANES), np.int32)
    parallel = G >= 2 if parallel is None else parallel
    _TWINS["pack_par" if parallel else "pack"](h, H, W, planes, sums, sums_geometry(C, H, W))
    return planes, sums


# ----------------------------------------------------------------------------
# Stride 2: the four phases of a ringed plane

def split_phases_numpy(planes, H, W):
    """NumPy reference of :func:`split_phases`."""
    G, C1, _ = planes.shape
    Hp, Wp = H + 2, W + 2
    Hq, Wq = -(-Hp // 2), -(-Wp // 2)
    ring = planes[:, :C1 - 1, :Hp * Wp].reshape(G, C1 - 1, Hp, Wp)
    out = np.zeros((G, 4 * (C1 - 1) + 1, phase_len(H, W)), np.uint64)
    grid = out[:, :4 * (C1 - 1), :Hq * Wq].reshape(G, C1 - 1, 2, 2, Hq, Wq)
    for a in range(2):
        for b in range(2):
            sub = ring[:, :, a::2, b::2]
            grid[:, :, a, b, :sub.shape[2], :sub.shape[3]] = sub
    return out


def _phase_group(planes, H, W, out, g):
    C = planes.shape[1] - 1
    Wp = W + 2
    Wq = (Wp + 1) // 2
    for c in range(C):
        for y in range(H + 2):
            for x in range(Wp):
                out[g, 4 * c + 2 * (y % 2) + x % 2, (y // 2) * Wq + x // 2] = planes[g, c, y * Wp + x]


def _phase_serial(planes, H, W, out):
    for g in range(planes.shape[0]):
        _phase_group(planes, H, W, out, g)


def _phase_parallel(planes, H, W, out):
    for g in prange(planes.shape[0]):
        _phase_group(planes, H, W, out, g)


def split_phases(planes, H, W, backend="auto", parallel=None):
    """The stride-2 phases of sign planes (G, C + 1, plane_len(H, W)).

    Returns uint64 (G, 4 C + 1, phase_len(H, W)): plane ``4 c + 2 a + b`` holds
    word ``(2 i + a) Wp + 2 j + b`` of ringed plane c at word ``i Wq + j``
    (``Wq = ceil(Wp / 2)``); plane ``4 C`` and everything outside is zero.
    """
    if resolve_backend(backend) == "numpy":
        return split_phases_numpy(planes, H, W)
    G, C1, _ = planes.shape
    out = np.zeros((G, 4 * (C1 - 1) + 1, phase_len(H, W)), np.uint64)
    parallel = G >= 2 if parallel is None else parallel
    _TWINS["phase_par" if parallel else "phase"](planes, H, W, out)
    return out


# ----------------------------------------------------------------------------
# LLVM IR twin of sign_word

def _sign_word_ir():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def _sign_word(typingctx, row, off):
        def codegen(context, builder, sig, args):
            f = IR(context, builder, sig, args)
            vty = ir.VectorType(ir.FloatType(), LANES)
            v = f.load(0, args[1], vty, align=4)
            mask = builder.fcmp_ordered(">=", v, ir.Constant(vty, [0.0] * LANES))
            return builder.bitcast(mask, f.i64)
        return types.uint64(row, off), codegen
    return _sign_word


def register_lanes_simd():
    """Overload :func:`sign_word` with its IR twin (idempotent)."""
    if _REGISTERED:
        return
    from numba.extending import overload
    ir_twin = _sign_word_ir()

    @overload(sign_word)
    def _ol_sign_word(row, off):
        return lambda row, off: ir_twin(row, off)

    _REGISTERED.append(True)


_REGISTERED = []
_TWINS = Twins({"pack": _pack_serial, "pack_par": _pack_parallel,
                "phase": _phase_serial, "phase_par": _phase_parallel,
                "to": _to_serial, "to_par": _to_parallel, "from": _from_serial, "from_par": _from_parallel},
               helpers=(plane_sums, _pack_group, _phase_group, _to_group, _from_group), setup=(register_simd, register_lanes_simd))
