"""Binary layers: latent real weights, binarized into a domain {alpha, beta} in
the forward pass (Sec. 3.2-3.4).

``BinaryDense`` and ``BinaryConv2d`` keep latent weights ``w~`` (the ones the
optimiser updates and clips to [-1.5, 1.5]), map them with a *domain*
(:mod:`pysbnn.domains`: ``sym``, ``alpha_beta`` (Eq. 15), ``learned``,
``zero_one``) to ``w_q = tau sign(w~) + phi``, and, unless the layer is a
network's first, binarize their input with ``sign``. Gradients flow through
``sign`` by a straight-through estimator (:mod:`pysbnn.quantizers`).
"""

import numpy as np

from . import functional as F
from .domains import get_domain
from .kernels.jit import check_backend, resolve_backend
from .kernels.words import pack_signs
from .kernels.xnor import prepare_xnor, xnor_gemm
from .layers import Layer, as_generator, check_positive_int, conv_geometry
from .quantizers import get_quantizer, sign

INITS = ("uniform", "all_ones", "nearly_empty")


def init_latent(shape, fan_in, init, density, rng, scale=None):
    """Initial latent weights.

    ``uniform``: U(-s, s) with ``s = scale`` or 1/sqrt(fan_in) by default,
    about half ones (the usual). A small ``scale`` (e.g. 1e-3) lets the
    sparsity penalty flip weights within a short training run.
    ``all_ones``: U[0, 0.001), every weight a one; the penalty prunes from there
    (the reference CIFAR-100 recipe).
    ``nearly_empty``: a random ``density`` fraction of ones (U[0, 0.001)), the
    rest U(-0.001, 0); training adds connections (the 2021 paper's start).
    """
    g = as_generator(rng)
    if init == "uniform":
        bound = 1.0 / np.sqrt(fan_in) if scale is None else float(scale)
        if not bound > 0:
            raise ValueError(f"init_scale must be > 0, got {scale!r}")
        w = g.uniform(-bound, bound, shape)
    elif init == "all_ones":
        w = g.uniform(0.0, 1e-3, shape)
    elif init == "nearly_empty":
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"init_density must lie in [0, 1], got {density!r}")
        mag = g.uniform(1e-6, 1e-3, shape)
        w = np.where(g.random(shape) < density, mag, -mag)
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return w.astype(np.float32)


#: below this many multiply-adds the XNOR kernel's packing costs more than BLAS.
XNOR_MIN_MACS = 1 << 22


def binary_product(x_pm1, w_latent, backend="auto", prepared=None):
    """``sign(x) . sign(w)^T`` as exact integers in the dtype of ``x_pm1``.

    x_pm1 : (n, K) array of +-1 values; w_latent : (M, K) latent weights.
    Uses the bit-packed XNOR-popcount kernel when the backend is numba and
    the product is large, float BLAS on +-1 values otherwise; both are exact.
    ``prepared(kind, make)`` may return a cached ``make()`` (the weights'
    layout for the kernel, ``kind="xnor"``, or their signs, ``kind="signs"``).
    """
    n, K = x_pm1.shape
    M = w_latent.shape[0]
    prepared = prepared or (lambda kind, make: make())
    if n * K * M >= XNOR_MIN_MACS and K < (1 << 24) and resolve_backend(backend) == "numba":
        w = prepared("xnor", lambda: prepare_xnor(pack_signs(w_latent, backend), K))
        return xnor_gemm(pack_signs(x_pm1, backend), w, backend=backend).astype(x_pm1.dtype)
    return x_pm1 @ prepared("signs", lambda: sign(w_latent).T)


class _BinaryLayer(Layer):
    """Shared machinery: domain, quantizers, latent weight, tau/phi parameters."""

    latent_params = ("weight",)

    def _setup(self, shape, fan_in, domain, binarize_input, weight_quantizer, input_quantizer,
               init, init_density, init_scale, rng, backend):
        self.backend = check_backend(backend)
        self.domain = get_domain(domain)
        self.binarize_input = bool(binarize_input)
        self.weight_quantizer = get_quantizer(weight_quantizer)
        self.input_quantizer = get_quantizer(input_quantizer)
        self.init, self.init_density = init, float(init_density)
        self.init_scale = None if init_scale is None else float(init_scale)
        self._init_param("weight", init_latent(shape, fan_in, init, init_density, rng, init_scale))
        for key, value in self.domain.init_params(np.float32).items():
            self._init_param(key, value)

    def _binary_config(self):
        return dict(domain=self.domain.get_config(), binarize_input=self.binarize_input,
                    weight_quantizer=self.weight_quantizer.get_config(),
                    input_quantizer=self.input_quantizer.get_config(),
                    init=self.init, init_density=self.init_density, init_scale=self.init_scale)

    def set_epoch(self, epoch, epochs):
        """Advance epoch-dependent quantizers (IR-Net's EDE)."""
        for q in (self.weight_quantizer, self.input_quantizer):
            if hasattr(q, "set_epoch"):
                q.set_epoch(epoch, epochs)

    def quantized_weight(self):
        """``w_q = tau sign(w~) + phi`` in the layer's domain, and the domain cache."""
        return self.domain.forward(self.params["weight"], quantizer=self.weight_quantizer,
                                   tau=self.params.get("tau"), phi=self.params.get("phi"))

    def _weights(self, training):
        """``(w_q, domain cache)``: recomputed in training, cached for inference
        (the float simulation binarizes once per parameter version)."""
        return self.quantized_weight() if training else self.cached("w_q", self.quantized_weight)

    def tau_phi(self):
        """The layer's current (tau, phi)."""
        return self.domain.tau_phi(self.params["weight"], self.params.get("tau"), self.params.get("phi"))

    def xi_eta(self):
        """The layer's current (xi, eta) of Eq. 4: ``w = (w01 + xi) eta``."""
        return self.domain.xi_eta(self.params["weight"], self.params.get("tau"), self.params.get("phi"))

    def ones(self):
        """The {0,1} weights ``w01 = (w~ >= 0)`` as a bool array shaped like the weight."""
        return self.params["weight"] >= 0

    def _input(self, x):
        self._x = x
        return self.input_quantizer.forward(x) if self.binarize_input else x

    def _finish_backward(self, dxb, dwq, through_ste=True):
        """Weight, tau, phi gradients from ``dwq``; the input gradient from ``dxb``
        (w.r.t. the binarized input: through the STE unless ``through_ste`` is False)."""
        dw, dtau, dphi = self.domain.backward(dwq, self._wcache)
        self.grads["weight"] = dw
        if dtau is not None:
            self.grads["tau"], self.grads["phi"] = dtau, dphi
        if dxb is None:                     # backward_params: no input gradient
            return None
        if self.binarize_input and through_ste:
            return F.sign_ste_backward(dxb, self._x, self.input_quantizer, self.backend)
        return dxb

    def backward_params(self, dout):
        self.backward(dout, input_grad=False)


class BinaryDense(_BinaryLayer):
    """Dense layer with binary weights; x (n, in_features) -> (n, out_features).

    Parameters
    ----------
    in_features, out_features : int
    domain : ``"learned"`` (default, as the reference code), ``"alpha_beta"``,
        ``"sym"`` or ``"zero_one"``, or a config dict with options such as
        ``{"name": "sym", "grad": "ste"}`` (see :func:`pysbnn.domains.get_domain`);
        saved with the layer
    binarize_input : apply ``sign`` to the input (False for a network's first layer)
    weight_quantizer, input_quantizer : STE names: ``"clipped"``, ``"identity"``, ``"ede"``
    init : ``"uniform"``, ``"all_ones"`` or ``"nearly_empty"`` (see :func:`init_latent`)
    init_density : fraction of ones for ``"nearly_empty"``
    init_scale : half-width of the ``"uniform"`` init (default 1/sqrt(fan_in))
    rng : seed or Generator
    backend : ``"auto" | "numba" | "numpy"``, who computes the exact +-1 product
        of the hidden layers (a run-time choice, not saved)
    """

    def __init__(self, in_features, out_features, domain="learned", binarize_input=True,
                 weight_quantizer="clipped", input_quantizer="clipped", init="uniform",
                 init_density=0.05, init_scale=None, rng=None, backend="auto"):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self._setup((out_features, in_features), in_features, domain, binarize_input,
                    weight_quantizer, input_quantizer, init, init_density, init_scale, rng, backend)

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    **self._binary_config())

    def forward(self, x, training=False):
        xb = self._input(x)
        w_q, self._wcache = self._weights(training)
        self._cache = (xb, w_q, False)
        if not self.binarize_input:
            return xb @ w_q.T
        # +-1 inputs and weights: sign(x) . sign(w) is an exact integer S, so
        # x_b w_q^T = tau S + phi q with q = sum of the +-1 inputs. Both paths
        # compute S exactly (BLAS on +-1 values is exact below 2^24; the XNOR
        # kernel counts bits), so the fast path never changes a result.
        tau_phi = self.tau_phi() if training else self.cached("tau_phi", self.tau_phi)
        tau, phi = (xb.dtype.type(v) for v in tau_phi)
        prepared = None if training else lambda kind, make: self.cached(kind, make)
        S = binary_product(xb, self.params["weight"], self.backend, prepared)
        q = xb.sum(axis=1, keepdims=True)
        return tau * S + phi * q

    def backward(self, dout, input_grad=True):
        dxb, dwq, _ = F.dense_backward(dout, self._cache, input_grad)
        return self._finish_backward(dxb, dwq)


class BinaryConv2d(_BinaryLayer):
    """Convolution with binary weights on NHWC input (PyTorch-like argument order).

    x (n, h, w, in_channels) -> (n, ho, wo, out_channels); weight
    (out_channels, in_channels, k, k). Zero padding pads the (binarized)
    input with 0, i.e. padded taps contribute nothing. Other arguments as
    :class:`BinaryDense`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 domain="learned", binarize_input=True, weight_quantizer="clipped",
                 input_quantizer="clipped", init="uniform", init_density=0.05, init_scale=None,
                 rng=None, backend="auto"):
        super().__init__()
        (self.in_channels, self.out_channels, self.kernel_size, self.stride,
         self.padding) = conv_geometry(in_channels, out_channels, kernel_size, stride, padding)
        k = self.kernel_size
        self._setup((out_channels, in_channels, k, k), in_channels * k * k, domain, binarize_input,
                    weight_quantizer, input_quantizer, init, init_density, init_scale, rng, backend)

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    **self._binary_config())

    def forward(self, x, training=False):
        w_q, self._wcache = self._weights(training)
        if self._on_packed_bits(x):
            # sign(x) * w_q = tau S + phi Q with S, Q exact integers from the
            # packed sign bits (XNOR-popcount); the same to float rounding
            self._x = x
            tau, phi = self.tau_phi() if training else self.cached("tau_phi", self.tau_phi)
            out, self._cache = F.binary_conv3x3_forward(x, self.params["weight"], w_q, tau, phi,
                                                        self.stride, self.backend)
            return out
        xb = self._input(x)
        out, self._cache = F.conv2d_forward(xb, w_q, None, self.stride, self.padding, self.backend)
        return out

    def _on_packed_bits(self, x):
        """The bit-packed path: a 3x3 conv on binarized input, padding 1, stride 1 or 2."""
        return (self.binarize_input and self.kernel_size == 3 and self.padding == 1
                and self.stride in (1, 2) and np.asarray(x).dtype.kind == "f"
                and resolve_backend(self.backend) == "numba")

    def backward(self, dout, input_grad=True):
        # with a binarized input, the STE is applied while the kernel's padded result is cropped
        quantizer = self.input_quantizer if self.binarize_input else None
        dx, dwq = F.binary_conv3x3_backward(dout, self._cache, input_grad, quantizer, self._x)
        return self._finish_backward(dx, dwq, through_ste=False)
