"""The math of every op, once, as ``forward -> (out, cache)`` / ``backward`` pairs.

Layers in :mod:`pysbnn.layers` only hold parameters, cache and delegate here.
Images are NHWC, dense weights ``(out_features, in_features)`` and conv weights
``(out_channels, in_channels, kh, kw)`` (see ``docs/conventions.md``).
"""

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .kernels import batchnorm as kbn
from .kernels.conv_input_grad import conv3x3_input_grad, padded_channels, tap_weights
from .kernels.conv_sign_hist import HIST_MAX_BYTES, histogram_bytes, sign_hist_weight_grad, signs_of_packed
from .kernels.conv_sign_tables import sign_table_input_grad, sign_table_weight_grad
from .kernels.conv_xnor_train import pack_padded_signs, prepare_sign_weights, xnor_conv3x3_train
from .kernels.im2col import col2im, conv_output_size, im2col
from .kernels.jit import num_threads, resolve_backend
from .kernels.passthrough import clip_pass, ede_pass


# --------------------------------------------------------------------- dense
def dense_forward(x, w, b=None):
    """Affine map ``out = x w^T + b``.

    Parameters
    ----------
    x : (n, in_features) array
    w : (out_features, in_features) array
    b : (out_features,) array or None

    Returns
    -------
    out : (n, out_features) array
    cache : tuple for :func:`dense_backward`
    """
    out = x @ w.T
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def dense_backward(dout, cache, input_grad=True):
    """Gradients of :func:`dense_forward`: returns ``dx, dw, db`` (db None without bias;
    dx None when ``input_grad`` is False)."""
    x, w, has_bias = cache
    dx = dout @ w if input_grad else None
    dw = dout.T @ x
    db = dout.sum(axis=0) if has_bias else None
    return dx, dw, db


# ---------------------------------------------------------------------- conv
def conv2d_forward(x, w, b=None, stride=1, padding=0, backend="auto"):
    """2-D cross-correlation (what deep-learning libraries call convolution).

    One patch matrix and one GEMM: ``out = im2col(x) @ wmat^T`` (a 1x1
    convolution without padding needs no im2col, a strided view suffices).

    Parameters
    ----------
    x : (n, h, w, c_in) array
    w : (c_out, c_in, kh, kw) array
    b : (c_out,) array or None
    stride, padding : int
    backend : ``"auto" | "numba" | "numpy"``, who copies the patches
        (:mod:`pysbnn.kernels.im2col`; the results are identical)

    Returns
    -------
    out : (n, ho, wo, c_out) array with ``ho = (h + 2 padding - kh) // stride + 1``
    cache : tuple for :func:`conv2d_backward`
    """
    c_out, c_in, kh, kw = w.shape
    if x.shape[-1] != c_in:
        raise ValueError(f"conv2d: input has {x.shape[-1]} channels, weight expects {c_in}")
    n, h, wd, _ = x.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    if kh == kw == 1 and padding == 0:
        cols = np.ascontiguousarray(x[:, ::stride, ::stride]).reshape(n * ho * wo, c_in)
    else:
        cols = im2col(x, kh, kw, stride, padding, backend)
    wmat = w.transpose(0, 2, 3, 1).reshape(c_out, -1)      # columns (dy, dx, channel)
    out = cols @ wmat.T
    if b is not None:
        out += b
    cache = (x.shape, cols, wmat, w.shape, stride, padding, b is not None, backend)
    return out.reshape(n, ho, wo, c_out), cache


def conv2d_backward(dout, cache, input_grad=True):
    """Gradients ``dx, dw, db`` of :func:`conv2d_forward` (db None without bias,
    dx None when ``input_grad`` is False).

    ``dw = (cols^T dout)^T`` (the GEMM orientation OpenBLAS runs fastest for a
    tall, narrow ``dout``). The input gradient of a stride-1 convolution is
    itself a convolution: of ``dout`` with the kernel flipped in space and its
    channel axes swapped, padded by ``k - 1 - p``; one im2col + GEMM replaces
    a ``(P, k k c_in)`` GEMM followed by a ``k * k``-pass col2im (measured: the
    largest saving of a ResNet step). Strided convolutions use GEMM + col2im,
    1x1 convolutions neither.
    """
    x_shape, cols, wmat, w_shape, stride, padding, has_bias, backend = cache
    d2 = np.ascontiguousarray(dout).reshape(-1, w_shape[0])
    dw = _conv_weight_grad(cols, d2, w_shape)
    dx = _conv_input_grad(d2, wmat, x_shape, w_shape, stride, padding, backend) if input_grad else None
    db = d2.sum(axis=0) if has_bias else None
    return dx, dw, db


def _conv_weight_grad(cols, d2, w_shape):
    """``dw (c_out, c_in, kh, kw)`` from the patches and ``dout`` as ``(P, c_out)``."""
    c_out, c_in, kh, kw = w_shape
    return (cols.T @ d2).T.reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2)


def _conv_input_grad(d2, wmat, x_shape, w_shape, stride, padding, backend):
    """``dx`` (NHWC ``x_shape``) from ``dout`` as ``(P, c_out)`` and the weight patches."""
    c_out, c_in, kh, kw = w_shape
    n, h, w, _ = x_shape
    if kh == kw == 1 and padding == 0:
        dx = np.zeros(x_shape, dtype=d2.dtype)
        dx[:, ::stride, ::stride] = (d2 @ wmat).reshape(n, (h - 1) // stride + 1, (w - 1) // stride + 1, c_in)
        return dx
    if stride == 1 and kh == kw and padding < kh:
        w_flip = wmat.reshape(c_out, kh, kw, c_in)[:, ::-1, ::-1].transpose(3, 1, 2, 0)  # (c_in, kh, kw, c_out)
        dcols = im2col(d2.reshape(n, h + 2 * padding - kh + 1, w + 2 * padding - kw + 1, c_out),
                       kh, kw, 1, kh - 1 - padding, backend)
        return (dcols @ w_flip.reshape(c_in, -1).T).reshape(n, h, w, c_in)
    return col2im(d2 @ wmat, x_shape, kh, kw, stride, padding, backend)


# ------------------------------------------------------------- binary 3x3 conv
class BinaryConvCache(NamedTuple):
    """What :func:`binary_conv3x3_backward` needs: the input's packed sign bits,
    the binary weights ``w_q = tau sign(w_signs) + phi``."""
    bits: np.ndarray
    x_shape: tuple
    w_q: np.ndarray
    stride: int
    backend: str
    w_signs: np.ndarray
    tau_phi: tuple


#: kernels smaller than this (multiply-adds of the float product) run on one thread.
#: Measured (docs/benchmarks.md, "Threads for small steps"): with 2**26 every conv of
#: a width-8, batch-32 ResNet step ran serially; with 2**20 the step was 1.14-1.30x faster
PARALLEL_MIN_MACS = 1 << 20
#: BatchNorm passes over fewer elements run on one thread
PARALLEL_MIN_ELEMENTS = 1 << 20


def _weight_grad_method(c_in, c_out, itemsize):
    """Which kernel computes dL/dw_q of a binary conv (chosen by timing the kernels
    on the ResNet-18's layer shapes on a 2-core Zen 3 while they were written;
    that per-shape table is not recorded): histograms over channel bytes for
    few input channels, tables over image octets for more, a GEMM when neither
    applies."""
    if c_in <= 16 and histogram_bytes(c_in, c_out, itemsize) <= HIST_MAX_BYTES:
        return "histograms"
    if c_out % 8 == 0:
        return "tables"
    return "histograms" if histogram_bytes(c_in, c_out, itemsize) <= HIST_MAX_BYTES else "gemm"


def _input_grad_method(c_in):
    """dL/dx_b: the register-blocked scatter for 16-32 input channels (whole
    16-lane tiles, few output channels), tables of signed sums otherwise."""
    return "scatter" if 16 <= c_in <= 32 else "tables"


def binary_conv3x3_forward(x, w, w_q, tau, phi, stride=1, backend="auto"):
    r"""``conv2d(sign(x), w_q)`` of a binary 3x3 convolution with padding 1, stride 1 or 2.

    ``w_q = tau sign(w) + phi`` (``w``: latent weights), so the product is
    :math:`\tau S + \phi Q` with ``S`` the integer product of the signs and
    ``Q`` the sum of the input signs under each window
    (:mod:`pysbnn.kernels.conv_xnor_train`: XNOR-popcount on packed bits);
    ``backend="numpy"`` runs :func:`conv2d_forward` on ``sign(x)`` (the same to
    float rounding). x: (n, h, w, c_in) float; returns ``(out, cache)``.
    """
    if resolve_backend(backend) == "numpy":
        xb = (x >= 0).astype(x.dtype) * 2 - 1
        return conv2d_forward(xb, w_q, None, stride, 1, backend)
    n, h, wd, c_in = x.shape
    threads = num_threads(backend, x.size * w.shape[0] * 9 // stride ** 2, PARALLEL_MIN_MACS)
    bits = pack_padded_signs(x, backend, parallel=threads > 1)
    out = xnor_conv3x3_train(bits, prepare_sign_weights(w), h, wd, stride, tau, phi, x.dtype,
                             parallel=threads > 1 and n > 1)
    return out, BinaryConvCache(bits, x.shape, w_q, stride, backend, w, (tau, phi))


def binary_conv3x3_backward(dout, cache, input_grad=True, quantizer=None, x=None):
    """Gradients ``(dxb, dw_q)`` of :func:`binary_conv3x3_forward`, w.r.t. ``sign(x)`` and ``w_q``
    (``dxb`` None when ``input_grad`` is False). Given the sign's ``quantizer``
    and the input ``x``, the first gradient is w.r.t. ``x``, through the STE
    (:func:`sign_ste_backward`, applied while cropping the padded result).

    Both products have a +-1 operand: ``dw_q`` sums output-gradient rows by
    the input's sign patterns (:mod:`pysbnn.kernels.conv_sign_hist`, or
    :mod:`pysbnn.kernels.conv_sign_tables` over 8 images for many channels),
    ``dxb`` looks the weights' sign patterns up in tables of signed sums
    (``conv_sign_tables``) or, for 16-32 channels, runs the register-blocked
    scatter of :mod:`pysbnn.kernels.conv_input_grad` (choices in
    :func:`_weight_grad_method`, :func:`_input_grad_method`).
    """
    if not isinstance(cache, BinaryConvCache):
        dx, dw, _ = conv2d_backward(dout, cache, input_grad)
        if quantizer is not None and dx is not None:
            dx = sign_ste_backward(dx, x, quantizer, cache[-1])
        return dx, dw
    bits, x_shape, w_q, stride, backend = cache[:5]
    n, h, w, c_in = x_shape
    c_out = w_q.shape[0]
    d = np.ascontiguousarray(dout, dtype=w_q.dtype)
    threads = num_threads(backend, d.size * c_in * 9, PARALLEL_MIN_MACS)
    method = _weight_grad_method(c_in, c_out, d.itemsize)
    if method == "histograms":
        dw = sign_hist_weight_grad(bits, c_in, d, stride, threads)
    elif method == "tables":
        dw = sign_table_weight_grad(bits, c_in, d, stride, threads)
    else:
        cols = im2col(signs_of_packed(bits, c_in, d.dtype), 3, 3, stride, 1, backend)
        dw = _conv_weight_grad(cols, d.reshape(-1, c_out), w_q.shape)
    if not input_grad:
        return None, dw
    parallel = threads > 1 and n > 1
    fused = quantizer is not None and quantizer.name == "clipped"       # the STE applied while cropping
    mask_x, bound = (x, 1.0) if fused else (None, None)
    if _input_grad_method(c_in) == "scatter":
        w9 = tap_weights(w_q, padded_channels(c_in))
        dxb = conv3x3_input_grad(d, w9, h, w, stride, c_in, parallel, mask_x, bound)
    else:
        tau, phi = cache.tau_phi
        dxb = sign_table_input_grad(d, cache.w_signs, tau, phi, h, w, stride, parallel, mask_x, bound)
    if quantizer is None or fused:
        return dxb, dw
    return sign_ste_backward(dxb, x, quantizer, backend), dw


# ----------------------------------------------------------------- batchnorm
def batchnorm_forward(x, gamma, beta, running_mean, running_var, training,
                      momentum=0.1, eps=1e-5, backend="numpy"):
    """Batch normalisation over every axis but the last (features / channels).

    In training mode uses the batch statistics and updates ``running_mean`` and
    ``running_var`` in place (unbiased variance, PyTorch's convention); in eval
    mode uses the running statistics. ``backend="numba"`` (or ``"auto"`` with
    numba) runs the fused passes of :mod:`pysbnn.kernels.batchnorm` (equal to
    float rounding); ``"numpy"`` the formulas below.

    Parameters
    ----------
    x : (..., c) array
    gamma, beta, running_mean, running_var : (c,) arrays
    """
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    m = x2.shape[0]
    if training and m < 2:
        raise ValueError("batchnorm: training needs more than one value per channel")
    if resolve_backend(backend) == "numba":
        return kbn.fused_forward(x, x2, gamma, beta, running_mean, running_var, training,
                                 momentum, eps, num_threads(backend, x2.size, PARALLEL_MIN_ELEMENTS))
    if training:
        mean = x2.mean(axis=0)
        xc = x2 - mean
        var = (xc * xc).mean(axis=0)
        kbn.update_running(running_mean, running_var, mean, var, m, momentum)
    else:
        xc = x2 - running_mean
        var = running_var
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = xc * inv_std
    out = xhat * gamma + beta
    return out.reshape(x.shape), (xhat, inv_std, gamma, training, x.shape)


def batchnorm_backward(dout, cache):
    """Gradients of :func:`batchnorm_forward`: returns ``dx, dgamma, dbeta``."""
    if isinstance(cache, kbn.FusedCache):
        return kbn.fused_backward(dout, cache)
    xhat, inv_std, gamma, training, shape = cache
    d2 = dout.reshape(xhat.shape)
    dgamma = (d2 * xhat).sum(axis=0)
    dbeta = d2.sum(axis=0)
    dxhat = d2 * gamma
    if training:
        dx = inv_std * (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0))
    else:
        dx = dxhat * inv_std
    return dx.reshape(shape), dgamma, dbeta


# --------------------------------------------------------------- activations
def hardtanh_forward(x):
    """``clip(x, -1, 1)``; its gradient is 1 on ``|x| <= 1`` and 0 outside."""
    return np.clip(x, -1.0, 1.0), x


def hardtanh_backward(dout, x, backend="numpy"):
    """Gradient of :func:`hardtanh_forward` (``backend``: the one-pass kernel of
    :mod:`pysbnn.kernels.passthrough`, or NumPy)."""
    if resolve_backend(backend) == "numba":
        return clip_pass(dout, x, 1.0, backend)
    return dout * (np.abs(x) <= 1.0)


def sign_ste_backward(dout, x, quantizer, backend="numpy"):
    """The chain rule through a sign STE: ``dout * quantizer.grad(x)``. The clipped
    identity's (``|x| <= 1``) and EDE's run as one kernel pass with ``backend="numba"``
    (:mod:`pysbnn.kernels.passthrough`)."""
    if resolve_backend(backend) == "numba":
        if quantizer.name == "clipped":
            return clip_pass(dout, x, 1.0, backend)
        if (quantizer.name == "ede" and dout.flags.c_contiguous and dout.shape == np.shape(x)
                and dout.dtype == np.asarray(x).dtype):
            return ede_pass(dout, x, quantizer.t, quantizer.k)
    return dout * quantizer.grad(x)


def relu_forward(x):
    """``max(x, 0)``."""
    return np.maximum(x, 0), x


def relu_backward(dout, x):
    """Gradient of :func:`relu_forward` (0 at ``x = 0``)."""
    return dout * (x > 0)


# ------------------------------------------------------------------- pooling
def _pool_windows(x, k, stride):
    """Strided view of pooling windows: (n, ho, wo, c, k, k) over an NHWC array."""
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]


def maxpool_forward(x, k, stride):
    """Max pooling over ``k x k`` windows of an NHWC array (no padding).

    Returns ``out`` of shape (n, ho, wo, c) with ``ho = (h - k) // stride + 1``.
    """
    win = _pool_windows(x, k, stride)
    n, ho, wo, c = win.shape[:4]
    flat = win.reshape(n, ho, wo, c, k * k)
    arg = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return out, (x.shape, arg, k, stride)


def maxpool_backward(dout, cache):
    """Gradient of :func:`maxpool_forward`: routed to the (first) arg-max of each window."""
    x_shape, arg, k, stride = cache
    n, ho, wo, c = dout.shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for dy in range(k):
        for dx_ in range(k):
            hit = arg == dy * k + dx_
            dx[:, dy:dy + stride * ho:stride, dx_:dx_ + stride * wo:stride] += dout * hit
    return dx


def avgpool_forward(x, k, stride):
    """Average pooling over ``k x k`` windows of an NHWC array (no padding)."""
    out = _pool_windows(x, k, stride).mean(axis=(-2, -1))
    return out, (x.shape, k, stride)


def avgpool_backward(dout, cache):
    """Gradient of :func:`avgpool_forward`."""
    x_shape, k, stride = cache
    n, ho, wo, c = dout.shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    share = dout / (k * k)
    for dy in range(k):
        for dx_ in range(k):
            dx[:, dy:dy + stride * ho:stride, dx_:dx_ + stride * wo:stride] += share
    return dx


# ---------------------------------------------------------------------- loss
def one_hot(y, num_classes, dtype=np.float32):
    """Integer labels (n,) -> one-hot targets (n, num_classes)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"one_hot: labels must be 1-D, got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"one_hot: labels must lie in [0, {num_classes - 1}]")
    t = np.zeros((y.shape[0], num_classes), dtype=dtype)
    t[np.arange(y.shape[0]), y] = 1
    return t


def log_softmax(z):
    """Numerically stable ``log softmax`` along the last axis."""
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy of softmax(logits) against labels or soft targets.

    Parameters
    ----------
    logits : (n, k) array
    targets : (n,) integer labels, or (n, k) probabilities (mixup targets)

    Returns
    -------
    loss : float
    dlogits : (n, k) array, the gradient of ``loss`` w.r.t. ``logits``
    """
    n, k = logits.shape
    if targets.ndim == 1:
        targets = one_hot(targets, k, dtype=logits.dtype)
    logp = log_softmax(logits)
    loss = float(-(targets * logp).sum() / n)
    dlogits = (np.exp(logp) - targets) / n
    return loss, dlogits.astype(logits.dtype, copy=False)
