r"""Batch normalisation over the rows of ``(m, C)``: two passes forward, two backward.

BatchNorm over few channels (8-128 in the ResNets) is memory-bound: NumPy's
``mean(axis=0)`` and the temporaries of the textbook formulas read and
write the ``(n h w, C)`` array a dozen times. The kernels read it the
minimum number of times, with the per-channel sums in vector registers
(:mod:`~pysbnn.kernels.simd`; float64 totals from float blocks of rows):

* forward, training: a pass for the mean :math:`\mu_c`, one for
  :math:`\sum_r (x - \mu)^2` (two passes, as the reference: one pass of
  :math:`\sum x^2` cancels badly when :math:`|\mu| \gg \sigma`), then
  :math:`y = a_c x + b_c` with :math:`a_c = \gamma_c / \sqrt{\sigma_c^2 + \epsilon}`,
  :math:`b_c = \beta_c - \mu_c a_c`;
* backward: one pass for :math:`\sum_r d` and :math:`\sum_r d\,(x - \mu)`, from
  which :math:`\partial\gamma = \sum d (x - \mu) / \sigma` and
  :math:`\partial\beta = \sum d`; then the input gradient, affine in
  ``d`` and ``x`` per channel:
  :math:`\partial x = k_c d + l_c x + e_c` (:func:`backward_coefficients`).

The NumPy reference is :func:`pysbnn.functional.batchnorm_forward` /
``batchnorm_backward`` (the same formulas with ``xhat`` materialised).
"""

from typing import NamedTuple

import numpy as np

from .jit import Twins
from .simd import LANES, register, vadd, vfma, vload, vmul, vsplat, vstore, vzero

prange = range      # numba.prange in the parallel kernels (see jit.Twins)

ROWS = 256          # rows summed in the data's dtype before adding to the float64 totals


# ----------------------------------------------------------------------------
# Formulas shared by both backends

def backward_coefficients(s_d, s_dxc, mean, inv_std, gamma, m, training):
    """``(k, l, e, dgamma, dbeta)`` with ``dx = k d + l x + e`` per channel.

    ``s_d = sum_r d``, ``s_dxc = sum_r d (x - mean)`` (float64); batch
    statistics when ``training`` (``xhat = (x - mean) inv_std`` depends on
    x), else the running ones.
    """
    dbeta = s_d
    dgamma = s_dxc * inv_std
    k = gamma * inv_std
    if not training:
        return k, np.zeros_like(k), np.zeros_like(k), dgamma, dbeta
    l = -k * inv_std * dgamma / m
    e = -k * dbeta / m - l * mean
    return k, l, e, dgamma, dbeta


# ----------------------------------------------------------------------------
# Kernels

def _sums_rows(x, y, sx, sy, s1, s2, r0, r1):
    """Over rows r0..r1-1: s1[c] += sum_r (x[r, c] - sx[c]) and
    s2[c] += sum_r (x[r, c] - sx[c]) (y[r, c] - sy[c]) (x, y flat (m C); sx, sy
    in x's dtype; s1, s2 float64 (C,)); blocks of ROWS rows summed in x's dtype."""
    C = s1.shape[0]
    vec_end = C - C % LANES
    t = np.empty(2 * LANES, x.dtype)
    for b0 in range(r0, r1, ROWS):
        b1 = min(b0 + ROWS, r1)
        for cb in range(0, vec_end, LANES):
            a1, a2 = vzero(x), vzero(x)
            mx, my = vmul(vload(sx, cb), vsplat(-1, x)), vmul(vload(sy, cb), vsplat(-1, x))
            for r in range(b0, b1):
                v = vadd(vload(x, r * C + cb), mx)
                a1 = vadd(a1, v)
                a2 = vfma(v, vadd(vload(y, r * C + cb), my), a2)
            vstore(t, 0, a1)
            vstore(t, LANES, a2)
            for j in range(LANES):
                s1[cb + j] += t[j]
                s2[cb + j] += t[LANES + j]
        for c in range(vec_end, C):
            t1, t2 = x[0] * 0, x[0] * 0
            for r in range(b0, b1):
                v = x[r * C + c] - sx[c]
                t1 += v
                t2 += v * (y[r * C + c] - sy[c])
            s1[c] += t1
            s2[c] += t2


def _affine_rows(x, k, y, l, e, out, r0, r1):
    """out[r, c] = k[c] x[r, c] + l[c] y[r, c] + e[c] (flat arrays; k, l, e in x's dtype)."""
    C = k.shape[0]
    vec_end = C - C % LANES
    for r in range(r0, r1):
        for cb in range(0, vec_end, LANES):
            i = r * C + cb
            v = vfma(vload(k, cb), vload(x, i), vfma(vload(l, cb), vload(y, i), vload(e, cb)))
            vstore(out, i, v)
        for c in range(vec_end, C):
            i = r * C + c
            out[i] = k[c] * x[i] + (l[c] * y[i] + e[c])


def _sums_serial(x, y, sx, sy, s1, s2):
    _sums_rows(x, y, sx, sy, s1[0], s2[0], 0, x.shape[0] // s1.shape[1])


def _sums_parallel(x, y, sx, sy, s1, s2):
    m, chunks = x.shape[0] // s1.shape[1], s1.shape[0]
    for c in prange(chunks):
        _sums_rows(x, y, sx, sy, s1[c], s2[c], c * m // chunks, (c + 1) * m // chunks)


def _affine_serial(x, k, y, l, e, out):
    _affine_rows(x, k, y, l, e, out, 0, x.shape[0] // k.shape[0])


def _affine_parallel(x, k, y, l, e, out):
    m, chunks = x.shape[0] // k.shape[0], 8
    for c in prange(chunks):
        _affine_rows(x, k, y, l, e, out, c * m // chunks, (c + 1) * m // chunks)


_TWINS = Twins({"sums": _sums_serial, "sums_par": _sums_parallel,
                "affine": _affine_serial, "affine_par": _affine_parallel},
               helpers=(_sums_rows, _affine_rows), setup=(register,))


def channel_sums(x2, y2, sx=0.0, sy=0.0, threads=1):
    """``(sum_r (x - sx), sum_r (x - sx)(y - sy))`` per column of ``(m, C)``
    arrays, float64; the shifts ``sx``, ``sy`` are scalars or (C,) arrays."""
    m, C = x2.shape
    dt = x2.dtype
    sx, sy = (np.full(C, v, dt) if np.ndim(v) == 0 else np.ascontiguousarray(v, dtype=dt) for v in (sx, sy))
    chunks = max(1, min(int(threads), m))
    s1, s2 = np.zeros((chunks, C)), np.zeros((chunks, C))
    _TWINS["sums_par" if chunks > 1 else "sums"](x2.reshape(-1), y2.reshape(-1), sx, sy, s1, s2)
    return s1.sum(axis=0), s2.sum(axis=0)


def channel_affine(x2, k, y2, l, e, threads=1):
    """``k x + l y + e`` per column of ``(m, C)`` arrays (k, l, e: (C,))."""
    dt = x2.dtype
    out = np.empty_like(x2)
    k, l, e = (np.ascontiguousarray(v, dtype=dt) for v in (k, l, e))
    _TWINS["affine_par" if threads > 1 else "affine"](x2.reshape(-1), k, y2.reshape(-1), l, e,
                                                       out.reshape(-1))
    return out


# ----------------------------------------------------------------------------
# The two directions on the kernels (pysbnn.functional.batchnorm_forward /
# batchnorm_backward call them with backend="numba")

class FusedCache(NamedTuple):
    """What :func:`fused_backward` needs: the input itself, not ``xhat``."""
    x2: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    training: bool
    shape: tuple
    threads: int


def update_running(running_mean, running_var, mean, var, m, momentum):
    """PyTorch's running statistics update, in place (unbiased variance)."""
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * (m / (m - 1))


def fused_forward(x, x2, gamma, beta, running_mean, running_var, training, momentum, eps, threads):
    """``(out, FusedCache)``: batch normalisation of ``x`` (viewed as ``x2 (m, C)``)
    in three passes (mean, centred sum of squares, affine) or one in eval mode."""
    x2 = np.ascontiguousarray(x2)
    m = x2.shape[0]
    if training:
        s1, _ = channel_sums(x2, x2, threads=threads)
        mean = s1 / m
        s1, s2 = channel_sums(x2, x2, mean, mean, threads=threads)
        mean, var = mean + s1 / m, s2 / m
        update_running(running_mean, running_var, mean.astype(running_mean.dtype),
                       var.astype(running_var.dtype), m, momentum)
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)
    a = gamma * inv_std
    out = channel_affine(x2, a, x2, np.zeros_like(a), beta - mean * a, threads)
    return out.reshape(x.shape), FusedCache(x2, mean, inv_std, gamma, training, x.shape, threads)


def fused_backward(dout, cache):
    """``(dx, dgamma, dbeta)`` of :func:`fused_forward` in two passes."""
    x2, mean, inv_std, gamma, training, shape, threads = cache
    d2 = np.ascontiguousarray(dout.reshape(x2.shape), dtype=x2.dtype)
    s_d, s_dxc = channel_sums(d2, x2, 0.0, mean, threads=threads)
    k, l, e, dgamma, dbeta = backward_coefficients(s_d, s_dxc, mean, inv_std, gamma, x2.shape[0], training)
    dx = channel_affine(d2, k, x2, l, e, threads)
    return dx.reshape(shape), dgamma.astype(gamma.dtype), dbeta.astype(gamma.dtype)
