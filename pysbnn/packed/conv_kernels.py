"""Numba kernels of the bit-packed 3x3 convolutions (validated by
``conv_reference``; same conventions, documented there).

Kernel A, dense BNN conv (+-1 weights, +-1 inputs). Activations are packed
per pixel (``pack_pixels``: each pixel's C_in bits in uint64 words, zero words
on the padding ring). For every output position the nine tap words are XORed
against the weight words of all output channels, popcounted and summed:
``out = sum_t (C_in - 2 popcount(a_t ^ w_t))``. Padded taps are executed
against zero words and their share ``C_in - 2 popcount(w_t)`` is subtracted
again from a per-(border class, o) table, so the inner loop has no branches.

Kernel B, SBNN conv ({0,1} weights, +-1 inputs). Every output position is an
independent dot product, so activations are bit-sliced along positions
(``pack_planes``: one uint64 = 64 positions of one channel). For each used
(channel i, tap t) the kernel first builds the *tap plane*: plane i shifted by
the tap offset, wrapped columns masked, zeros on the padding. A one-weight
``w01[o, i, t] = 1`` is then one word-wide add of tap plane (i, t) into the
bit-sliced counters of output channel o. Fifteen planes at a time go through a
carry-save adder tree (11 full adders, two ``vpternlogq`` each) whose 4-bit
sum is added to the counter (a last group of at most 7 goes through a 7-input
tree); the low four counter levels stay in registers.
K0 kernels have no ones and cost nothing; a K1 kernel is a single
shifted-plane add. So the work scales with the number of ones, plus a fixed
cost per output value: the counters are expanded to integers
``z' = 2 * count - V`` (V[o, p]: ones of channel o whose tap is valid at p,
from a small per-geometry table), one masked byte add per level and 64
positions, then widened and stored as int32.

SIMD: the word-wide steps (tap-plane shifts, the 15-input carry-save add on 8
words, the counter expansion of 64 positions) are small helper functions
written in NumPy; their jitted twins are LLVM IR (``numba.extending.intrinsic``)
on <8 x i64> / <64 x i8> vectors, so that they compile to zmm code. Everything
else is plain Python that ``numba.njit`` compiles, or that runs as is with
``NUMBA_DISABLE_JIT=1`` (helpers included). Numba is imported on first use.

Outputs: Kernel A writes NHWC; Kernel B computes channel-major planes (its
natural layout, the one a following SBNN layer reads) and returns them as an
NHWC-shaped *view* ``(n, H_out, W_out, C_out)``. Elementwise NumPy ops keep
that memory layout and ``pack_planes`` / ``pack_pixels`` read it directly, so
a chain of layers never transposes; ``np.ascontiguousarray`` of the view is a
slow strided copy (about 100 us for 64 x 32 x 32 values), avoid it.

Modules: this one holds the weight plans, the packing and the public
functions; ``conv_bodies`` the kernel bodies and their serial / parallel
drivers (compiled lazily by ``conv_bodies._build``); ``conv_simd`` the word
helpers and their LLVM IR twins.
"""
import numpy as np

from . import bits
from .bits import popcount64, register_numba, resolve_backend  # noqa: F401 (re-exported)
from . import conv_reference as _ref
from .conv_reference import (_unpack_planes, binary_weights, bnn_conv3x3_reference,
                             conv3x3_ones, conv_out_size, plane_guard_words,
                             sbnn_conv3x3_reference, sbnn_conv_output)
from .conv_simd import GROUP
from .conv_bodies import _JIT, _build, _kernel  # noqa: F401 (_build re-exported)

__all__ = ["BnnConvPlan", "SbnnConvPlan", "prepare_bnn_conv3x3", "prepare_sbnn_conv3x3",
           "bnn_conv3x3", "bnn_conv3x3_packed", "sbnn_conv3x3", "sbnn_conv3x3_packed",
           "pack_pixels", "pack_planes", "conv3x3_ones", "sbnn_conv_output"]

MAX_C_IN_SBNN = 3640          # V (<= 9 * C_in valid ones) is stored as int16
_PAR_MIN_BATCH = 2            # threads pay off from two images on


def _backend(backend):
    """``bits.resolve_backend``, remembered (it imports numba to read the config)."""
    key = ("backend", backend)
    if key not in _JIT:
        _JIT[key] = resolve_backend(backend)
    return _JIT[key]


def _parallel(parallel, n_images):
    return n_images >= _PAR_MIN_BATCH if parallel is None else bool(parallel)


# ====================================================================== packing

def _channel_major(x):
    """True when the NHWC array x is a view of a channel-major (n, C, H, W)
    buffer, as Kernel B returns and elementwise NumPy ops preserve."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 3, 1, 2).flags.c_contiguous


def pack_pixels(x, padding=1, backend="auto"):
    """``conv_reference.pack_pixels`` (channel-packed words for Kernel A, zero
    padding ring) with the Numba packers of ``bits`` (``pack_signs`` on
    NHWC-contiguous input, ``pack_batch_sliced`` on channel-major input)."""
    x = np.asarray(x)
    if _backend(backend) == "numpy":
        return _ref.pack_pixels(x, padding)
    n, H, W, C = x.shape
    out = np.zeros((n, H + 2 * padding, W + 2 * padding, (C + 63) // 64), np.uint64)
    inner = out[:, padding:padding + H, padding:padding + W]
    if _channel_major(x):
        xt = x.transpose(0, 3, 1, 2)
        for i in range(n):
            inner[i] = bits.pack_batch_sliced(xt[i].reshape(C, H * W), backend).reshape(H, W, -1)
    else:
        inner[...] = bits.pack_signs(x.reshape(n * H * W, C), backend).reshape(n, H, W, -1)
    return out


def pack_planes(x, backend="auto"):
    """``conv_reference.pack_planes`` (bit-sliced planes for Kernel B, zero
    guard words) with the Numba packers of ``bits`` (``pack_batch_sliced``
    with the positions as the batch on NHWC-contiguous input, ``pack_signs``
    of each plane on channel-major input, e.g. Kernel B's own output)."""
    x = np.asarray(x)
    if _backend(backend) == "numpy":
        return _ref.pack_planes(x)
    n, H, W, C = x.shape
    g = plane_guard_words(W)
    nb = (H * W + 63) // 64
    out = np.zeros((n, C, 2 * g + nb + 8), np.uint64)
    if _channel_major(x):
        out[:, :, g:g + nb] = bits.pack_signs(
            x.transpose(0, 3, 1, 2).reshape(n * C, H * W), backend).reshape(n, C, nb)
    else:
        for i in range(n):
            out[i, :, g:g + nb] = bits.pack_batch_sliced(x[i].reshape(H * W, C), backend)
    return out


# ====================================================================== Kernel A API

class BnnConvPlan:
    """Packed +-1 weights of one 3x3 conv for Kernel A.

    Wt: uint64 (9, nw, C_out), bit ``i % 64`` of word ``i // 64`` is
    ``w[o, i, dy, dx] >= 0`` at t = 3*dy + dx; corr: int64 (64, C_out), for
    border class ``8*rowmask + colmask`` (3-bit masks of the valid dy / dx)
    the share ``sum_{invalid t} (C_in - 2 popcount(w_t))`` of padded taps.
    """

    def __init__(self, w):
        w = np.asarray(w)
        if w.ndim != 4 or w.shape[2:] != (3, 3):
            raise ValueError(f"conv weights must be (C_out, C_in, 3, 3), got {w.shape}")
        self.C_out, self.C_in = w.shape[:2]
        self.w = np.where(w >= 0, 1.0, -1.0)
        signs = w.reshape(self.C_out, self.C_in, 9).transpose(2, 0, 1) >= 0   # (9, C_out, C_in)
        nw = (self.C_in + 63) // 64
        padded = np.zeros((9, self.C_out, nw * 64), np.uint8)
        padded[:, :, :self.C_in] = signs
        words = np.packbits(padded, axis=-1, bitorder="little").view(np.uint64)  # (9, C_out, nw)
        self.Wt = np.ascontiguousarray(words.transpose(0, 2, 1))
        share = self.C_in - 2 * np.bitwise_count(words).sum(-1).astype(np.int64)  # (9, C_out)
        self.corr = np.zeros((64, self.C_out), np.int64)
        for cls in range(64):
            rm, cm = cls >> 3, cls & 7
            for t in range(9):
                if not ((rm >> (t // 3)) & 1 and (cm >> (t % 3)) & 1):
                    self.corr[cls] += share[t]
        self._geometry = {}

    def geometry(self, H, W, stride, padding):
        """Cached (row classes, column classes, C_in, stride, H_out, W_out)."""
        key = (H, W, stride, padding)
        if key not in self._geometry:
            H_out, W_out = conv_out_size(H, W, stride, padding)
            self._geometry[key] = (_border_classes(H_out, H, stride, padding),
                                   _border_classes(W_out, W, stride, padding),
                                   self.C_in, stride, H_out, W_out)
        return self._geometry[key]


def prepare_bnn_conv3x3(w):
    """Pack +-1 (or latent, sign ``w >= 0``) conv weights once for Kernel A."""
    return BnnConvPlan(w)


def _border_classes(n_out, n_in, stride, padding):
    """3-bit mask of the taps d in 0..2 with 0 <= s*y + d - p < n_in, per y."""
    y = np.arange(n_out)[:, None] * stride + np.arange(3)[None, :] - padding
    return (((y >= 0) & (y < n_in)) << np.arange(3)).sum(1).astype(np.int64)


def bnn_conv3x3_packed(xp, plan, H, W, stride=1, padding=1, parallel=None, backend="auto"):
    """Kernel A on packed activations ``xp = pack_pixels(x, padding)``.

    Returns (out int32 (n, H_out, W_out, C_out), ops) with ops as in
    ``conv_reference.bnn_conv3x3_reference``.
    """
    if xp.shape[1:3] != (H + 2 * padding, W + 2 * padding) or xp.shape[3] != plan.Wt.shape[1]:
        raise ValueError("packed input does not match H, W, padding or the weights' C_in")
    n = xp.shape[0]
    if _backend(backend) == "numpy":
        x = np.unpackbits(xp[:, padding:padding + H, padding:padding + W].view(np.uint8), axis=-1,
                          bitorder="little")[..., :plan.C_in]
        return bnn_conv3x3_reference(2.0 * x - 1.0, plan.w, stride, padding)
    run = _kernel("bnn_par" if _parallel(parallel, n) else "bnn")
    geometry = plan.geometry(H, W, stride, padding)
    out, total = run(np.ascontiguousarray(xp), plan.Wt, plan.corr, *geometry)
    return out, {"xnor": int(total) // 2, "popcount": int(total) // 2, "total": int(total)}


def bnn_conv3x3(x, w, stride=1, padding=1, parallel=None, backend="auto"):
    """Dense BNN 3x3 conv of +-1 NHWC ``x`` with +-1 weights ``w`` (or a
    ``BnnConvPlan``): packs, then runs Kernel A. Returns (out, ops)."""
    plan = w if isinstance(w, BnnConvPlan) else BnnConvPlan(w)
    x = np.asarray(x)
    if x.shape[3] != plan.C_in:
        raise ValueError(f"x has {x.shape[3]} channels, weights expect {plan.C_in}")
    return bnn_conv3x3_packed(pack_pixels(x, padding, backend), plan, x.shape[1], x.shape[2],
                              stride, padding, parallel, backend)


# ====================================================================== Kernel B API

class SbnnConvPlan:
    """{0,1} weights of one 3x3 conv prepared for Kernel B.

    codes: (C_out, C_in) 9-bit kernel codes (t = 3*dy + dx); for each output
    channel o the ones ``ones_row[start[o]:start[o+1]]`` (tap-plane row
    ``9*i + t``, padded with the zero row ``9*C_in`` to groups of 15 and
    at most one last group of 7) and
    ``ones_kind[o]`` = (ones in K1 kernels, ones in the other kernels);
    nlev[o] counter levels; per-geometry tables are cached in ``_geometry``.
    """

    def __init__(self, w, binary=None):
        w01 = binary_weights(w, binary)
        if w01.ndim != 4 or w01.shape[2:] != (3, 3):
            raise ValueError(f"conv weights must be (C_out, C_in, 3, 3), got {w01.shape}")
        self.C_out, self.C_in = w01.shape[:2]
        self.w01 = w01
        if self.C_in > MAX_C_IN_SBNN:
            raise ValueError(f"Kernel B supports C_in <= {MAX_C_IN_SBNN}")
        flat = w01.reshape(self.C_out, self.C_in * 9)
        self.codes = (flat.reshape(self.C_out, self.C_in, 9).astype(np.int64) << np.arange(9)).sum(-1)
        hw = np.bitwise_count(self.codes.astype(np.uint16))
        counts = flat.sum(1)
        rows, start = [], [0]
        for o in range(self.C_out):                    # ones of o, padded to whole groups
            r = np.flatnonzero(flat[o])
            rem = len(r) % GROUP                           # a tail of <= 7 gets a 7-group
            pad = 0 if rem == 0 else (7 - rem if rem <= 7 else GROUP - rem)
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
        """Cached per-shape tables and kernel arguments (a dict).

        The output grid has row stride R (R = W for stride 1, so a tap is a
        pure shift; R = W_out for stride 2); Pw words per plane, Pw8 rounded
        up to whole 8-word vectors; colmask (3*Pw8,) kills wrapped columns;
        Vneg (C_out, n_classes*64) int16 is minus the number of valid ones
        per position, one 64-row per class ``vclass[k]`` of plane words (words
        with equal tap-validity masks); ``ones_row * Pw8`` are the ones'
        offsets into the tap planes."""
        key = (H, W, stride, padding)
        if key not in self._geometry:
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
            Vneg = Vneg.astype(np.int16)
            vclass = vclass.ravel().astype(np.int64)
            g = plane_guard_words(W)
            self._geometry[key] = dict(
                H_out=H_out, W_out=W_out, R=R, Pw=Pw, Vneg=Vneg,
                planes_shape=(self.C_in, 2 * g + (H * W + 63) // 64 + 8),
                args=(g, H, W, stride, padding, H_out, R, Pw, Pw8, colmask, self.used,
                      self.ones_row * Pw8, self.ones_kind, self.start, self.nlev, Vneg,
                      vclass, H_out * W_out))
        return self._geometry[key]


def prepare_sbnn_conv3x3(w, binary=None):
    """Prepare {0,1} conv weights (latent: one where ``w >= 0``; or bool) for Kernel B."""
    return SbnnConvPlan(w, binary)


def sbnn_conv3x3_packed(planes, plan, H, W, stride=1, padding=1, parallel=None, backend="auto"):
    """Kernel B on bit-sliced activations ``planes = pack_planes(x)``.

    Returns (z', ops): z' int32 with shape (n, H_out, W_out, C_out), an NHWC
    view of a channel-major buffer; ops as in ``conv_reference.sbnn_ops``.
    """
    geo = plan.geometry(H, W, stride, padding)
    H_out, W_out, R, Pw = geo["H_out"], geo["W_out"], geo["R"], geo["Pw"]
    if planes.shape[1:] != geo["planes_shape"]:
        raise ValueError("planes do not match H, W or the weights' C_in (use pack_planes)")
    n = planes.shape[0]
    if _backend(backend) == "numpy":
        x = np.where(_unpack_planes(planes, H, W), 1.0, -1.0)
        return sbnn_conv3x3_reference(x, plan.w01, stride, padding)
    run = _kernel("sbnn_par" if _parallel(parallel, n) else "sbnn")
    buf, k1, multi = run(np.ascontiguousarray(planes), *geo["args"])
    k1, multi = int(k1), int(multi)
    if Pw * 64 == H_out * W_out:           # no padding columns or tail: reshape in place
        z = buf.reshape(n, plan.C_out, H_out, W_out)
    else:
        z = buf[:, :, :H_out * R].reshape(n, plan.C_out, H_out, R)[:, :, :, :W_out]
    return z.transpose(0, 2, 3, 1), {"k1_shift": k1, "popcount": multi, "total": k1 + multi}


def sbnn_conv3x3(x, w, stride=1, padding=1, binary=None, parallel=None, backend="auto"):
    """SBNN 3x3 conv of +-1 NHWC ``x`` with {0,1} weights ``w`` (latent, bool,
    or an ``SbnnConvPlan``): packs planes, then runs Kernel B. Returns (z', ops)."""
    plan = w if isinstance(w, SbnnConvPlan) else SbnnConvPlan(w, binary)
    x = np.asarray(x)
    if x.shape[3] != plan.C_in:
        raise ValueError(f"x has {x.shape[3]} channels, weights expect {plan.C_in}")
    return sbnn_conv3x3_packed(pack_planes(x, backend), plan, x.shape[1], x.shape[2], stride,
                               padding, parallel, backend)

