"""NumPy references of the bit-packed 3x3 convolutions (the validators of
``conv_kernels``).

Conventions (shared with ``conv_kernels``)
-----------------------------------------
* Activations are NHWC, +-1 valued; the activation bit is ``b = (x >= 0)``.
* Conv weights are ``(C_out, C_in, 3, 3)``. A binary {0,1} weight is
  ``w01 = (w >= 0)`` for latent weights (bool arrays are taken as is).
* Taps are numbered row-major over the 3x3 window: ``t = 3*dy + dx``; the
  9-bit code of kernel ``(o, i)`` is ``sum_t w01[o, i, dy, dx] << t``.
* Output ``(y, x)`` reads input ``(s*y + dy - p, s*x + dx - p)``; taps that fall
  in the zero padding are *absent* (they contribute 0, not +-1), exactly as a
  float convolution of a zero-padded input.
* Outputs are int32 NHWC.

Binary-operation counts (paper Sec. 3.5, 4.2), per output position of one
image and per output channel ``o``:

* dense BNN conv (Kernel A): ``2 * 9 * C_in`` -- one XNOR and one popcount per
  weight bit, the paper's ``O_BNN = 2N``. Taps on the zero padding are counted
  too (the kernel executes them against zero bits and subtracts their share).
* SBNN conv (Kernel B): K0 kernels cost 0; a K1 kernel costs 1 (the add of one
  shifted input plane, no popcount); a kernel with Hamming weight ``h >= 2``
  costs ``h`` (popcount over its ones only, no XNOR). Border taps are counted
  as for the BNN. Summed over kernels this equals ``ones * positions``, i.e.
  ``analysis.bops_sparse``.
"""
import numpy as np

__all__ = ["binary_weights", "conv_out_size", "pack_pixels", "pack_planes",
           "bnn_conv3x3_reference", "sbnn_conv3x3_reference", "conv3x3_ones",
           "sbnn_conv_output", "conv3x3_float"]


# ---------------------------------------------------------------- helpers

def binary_weights(w, binary=None):
    """{0,1} weights ``w01 = (w >= 0)`` as bool; bool input (or ``binary=True``
    with {0,1} values) is taken as already binary."""
    w = np.asarray(w)
    if binary is None:
        binary = w.dtype == np.bool_
    return (w != 0) if binary else (w >= 0)


def conv_out_size(H, W, stride=1, padding=1):
    """Output height and width of a 3x3 conv: ``(H + 2p - 3)//s + 1``."""
    if stride not in (1, 2) or padding not in (0, 1):
        raise ValueError("stride must be 1 or 2 and padding 0 or 1")
    H_out, W_out = (H + 2 * padding - 3) // stride + 1, (W + 2 * padding - 3) // stride + 1
    if H_out < 1 or W_out < 1:
        raise ValueError(f"input {H}x{W} too small for a 3x3 conv with padding {padding}")
    return H_out, W_out


def _pack_last_axis(bits):
    """Little-endian pack of the last axis of a bool array into uint64 words
    (element k -> bit k % 64 of word k // 64; padding bits zero)."""
    n = bits.shape[-1]
    nw = max(1, (n + 63) // 64)
    padded = np.zeros(bits.shape[:-1] + (nw * 64,), np.uint8)
    padded[..., :n] = bits
    return np.packbits(padded, axis=-1, bitorder="little").view(np.uint64)


def pack_pixels(x, padding=1):
    """Channel-packed activations for the dense BNN conv (Kernel A).

    ``x``: (n, H, W, C) +-1 -> uint64 (n, H + 2p, W + 2p, ceil(C/64)); bit
    ``c % 64`` of word ``c // 64`` at pixel ``(y + p, x + p)`` is ``x[n, y, x, c] >= 0``.
    Padding pixels are all-zero words (the kernel treats them as absent).
    """
    x = np.asarray(x)
    words = _pack_last_axis(x >= 0)
    p = padding
    return np.pad(words, ((0, 0), (p, p), (p, p), (0, 0)))


def plane_guard_words(W):
    """Zero words kept before and after each packed plane so that every
    shifted read of Kernel B stays inside the buffer."""
    return (2 * W + 2 + 63) // 64 + 1


def pack_planes(x):
    """Bit-sliced input planes for the SBNN conv (Kernel B).

    ``x``: (n, H, W, C) +-1 -> uint64 (n, C, g + ceil(H*W/64) + g + 8) where
    ``g = plane_guard_words(W)``: plane ``c`` holds bit ``y*W + x`` (position
    along the plane) at word ``g + (y*W + x) // 64``; guard words are zero.
    """
    x = np.asarray(x)
    n, H, W, C = x.shape
    g = plane_guard_words(W)
    words = _pack_last_axis((x >= 0).transpose(0, 3, 1, 2).reshape(n, C, H * W))
    out = np.zeros((n, C, 2 * g + words.shape[-1] + 8), np.uint64)
    out[:, :, g:g + words.shape[-1]] = words
    return out


def _unpack_planes(planes, H, W):
    """Inverse of ``pack_planes``: bool (n, H, W, C)."""
    n, C, _ = planes.shape
    g = plane_guard_words(W)
    nw = (H * W + 63) // 64
    bits = np.unpackbits(np.ascontiguousarray(planes[:, :, g:g + nw]).view(np.uint8),
                         axis=-1, bitorder="little")[..., :H * W]
    return bits.reshape(n, C, H, W).transpose(0, 2, 3, 1).astype(bool)


def _windows(a, stride, padding, H_out, W_out):
    """The 9 shifted views of a zero-padded NHWC array: list over t = 3*dy + dx
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


# ---------------------------------------------------------------- Kernel A

def bnn_conv3x3_reference(x, w, stride=1, padding=1):
    """Dense BNN 3x3 conv with +-1 weights and +-1 inputs, via XNOR/popcount
    on channel-packed words.

    .. math:: out[n,y,x,o] = \\sum_{t\\ valid} (C_{in} - 2\\,\\mathrm{popcount}(a_t \\oplus w_{o,t}))

    x: (n, H, W, C_in) +-1; w: (C_out, C_in, 3, 3) latent or +-1 (sign bit
    ``w >= 0``). Returns (out int32 (n, H_out, W_out, C_out), ops dict with
    ``xnor``, ``popcount``, ``total`` = ``2 * 9 * C_in * C_out * n * H_out * W_out``).
    """
    x = np.asarray(x)
    n, H, W, C_in = x.shape
    C_out = w.shape[0]
    H_out, W_out = conv_out_size(H, W, stride, padding)
    a = _pack_last_axis(x >= 0)                                  # (n, H, W, nw)
    wb = _pack_last_axis(np.asarray(w).transpose(0, 2, 3, 1) >= 0)  # (C_out, 3, 3, nw)
    views, masks = _windows(a, stride, padding, H_out, W_out)
    out = np.zeros((n, H_out, W_out, C_out), np.int64)
    for t, (v, m) in enumerate(zip(views, masks)):
        pc = np.bitwise_count(v[:, :, :, None, :] ^ wb[None, None, None, :, t // 3, t % 3, :])
        out += m[None, :, :, None] * (C_in - 2 * pc.sum(-1, dtype=np.int64))
    nops = 9 * C_in * C_out * n * H_out * W_out
    return out.astype(np.int32), {"xnor": nops, "popcount": nops, "total": 2 * nops}


# ---------------------------------------------------------------- Kernel B

def sbnn_ops(codes, positions):
    """Executed-operation convention of Kernel B for 9-bit ``codes``
    (C_out, C_in) over ``positions`` output positions (batch included):
    K0 -> 0, K1 -> 1 shifted-plane add, HW h >= 2 -> h popcount ops."""
    hw = np.bitwise_count(np.asarray(codes, np.uint16)).astype(np.int64)
    k1 = int((hw == 1).sum()) * positions
    multi = int(hw[hw >= 2].sum()) * positions
    return {"k1_shift": k1, "popcount": multi, "total": k1 + multi}


def sbnn_conv3x3_reference(x, w, stride=1, padding=1, binary=None):
    """SBNN 3x3 conv with {0,1} weights on +-1 inputs (paper Sec. 3.5, Fig. 1):

    .. math:: z'[n,y,x,o] = \\sum_i \\sum_{t:\\,w01[o,i,t]=1,\\ valid} x[n, sy+dy-p, sx+dx-p, i]

    K0 kernels are skipped, a K1 kernel adds one shifted input plane, the
    others add one shifted plane per one. x: (n, H, W, C_in) +-1; w: latent
    (one where ``w >= 0``) or bool (C_out, C_in, 3, 3).
    Returns (z' int32 (n, H_out, W_out, C_out), ops dict ``sbnn_ops``).
    """
    x = np.asarray(x)
    w01 = binary_weights(w, binary)
    n, H, W, C_in = x.shape
    H_out, W_out = conv_out_size(H, W, stride, padding)
    xs = np.where(x >= 0, 1, -1).astype(np.int64)
    views, _ = _windows(xs, stride, padding, H_out, W_out)
    z = np.zeros((n, H_out, W_out, w01.shape[0]), np.int64)
    for t, v in enumerate(views):          # a K0 kernel has no ones: it adds nothing
        z += v @ w01[:, :, t // 3, t % 3].T.astype(np.int64)
    codes = (w01.reshape(w01.shape[0], C_in, 9).astype(np.int64) << np.arange(9)).sum(-1)
    return z.astype(np.int32), sbnn_ops(codes, n * H_out * W_out)


def conv3x3_ones(x, stride=1, padding=1):
    """``q``: the 3x3 conv of ``x`` with an all-ones kernel over all channels
    (same for every output channel): ``q[n,y,x] = sum_{valid t, i} x``.
    Returns int32 (n, H_out, W_out, 1) so that it broadcasts against z'."""
    x = np.asarray(x)
    n, H, W, C = x.shape
    H_out, W_out = conv_out_size(H, W, stride, padding)
    s = np.where(x >= 0, 1, -1).sum(-1, dtype=np.int64)[..., None]
    views, _ = _windows(s, stride, padding, H_out, W_out)
    return np.sum(views, axis=0).astype(np.int32)


def sbnn_conv_output(zprime, q, xi, eta):
    """Eq. 20 (corrected, see docs/errata.md): with ``w = (w01 + xi) * eta``,

    .. math:: z = \\eta z' + \\xi \\eta q

    zprime: (n, H_out, W_out, C_out) from Kernel B; q: ``conv3x3_ones(x)``
    (broadcastable); xi, eta: scalars or per-output-channel (C_out,) arrays.
    """
    eta = np.asarray(eta, np.float64)
    return eta * np.asarray(zprime, np.float64) + np.asarray(xi, np.float64) * eta * q


def conv3x3_float(x, w, stride=1, padding=1):
    """Plain float 3x3 conv (NHWC input, (C_out, C_in, 3, 3) weights) of a
    zero-padded input; float64 result (n, H_out, W_out, C_out)."""
    x = np.asarray(x, np.float64)
    n, H, W, _ = x.shape
    H_out, W_out = conv_out_size(H, W, stride, padding)
    views, _ = _windows(x, stride, padding, H_out, W_out)
    w = np.asarray(w, np.float64)
    return sum(v @ w[:, :, t // 3, t % 3].T for t, v in enumerate(views))
