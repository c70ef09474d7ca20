"""Layer objects: they hold parameters, cache what backward needs and delegate
the math to :mod:`pysbnn.functional`.

Every layer has ``params`` and ``grads`` (dicts with the same keys), ``buffers``
(saved but not trained), ``forward(x, training=False)``, ``backward(dout)`` and
``get_config()`` (constructor arguments, so save/load can rebuild it).
"""

import numpy as np

from . import functional as F
from .kernels.jit import check_backend
from . import validation
from .params import as_generator, parameter_version, parameters_changed  # noqa: F401  (their home was here)
from .validation import ANY, InputSpec, check_positive_int, conv_geometry

LAYER_REGISTRY = {}

class Layer:
    """Base class. Subclasses define ``forward`` and ``backward``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        LAYER_REGISTRY[cls.__name__] = cls

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}

    # -- structure ---------------------------------------------------------
    def children(self):
        """Sub-layers (containers override)."""
        return []

    @classmethod
    def build(cls, config, children):
        """Rebuild a layer from ``get_config()`` and its rebuilt ``children()`` (load_model)."""
        return cls(*children, **config)

    def get_config(self):
        """JSON-serialisable constructor arguments."""
        return {}

    def named_layers(self, prefix=""):
        """Yield ``(name, layer)`` for this layer and every descendant."""
        yield prefix, self
        for i, child in enumerate(self.children()):
            yield from child.named_layers(f"{prefix}.{i}" if prefix else str(i))

    def named_parameters(self):
        """Yield ``(name, array)`` for every trainable array, e.g. ``"2.weight"``."""
        for lname, layer in self.named_layers():
            for key, value in layer.params.items():
                yield (f"{lname}.{key}" if lname else key), value

    def named_grads(self):
        """Yield ``(name, array)`` for every gradient, in ``named_parameters`` order."""
        for lname, layer in self.named_layers():
            for key in layer.params:
                yield (f"{lname}.{key}" if lname else key), layer.grads[key]

    def named_buffers(self):
        """Yield ``(name, array)`` for every saved, untrained array."""
        for lname, layer in self.named_layers():
            for key, value in layer.buffers.items():
                yield (f"{lname}.{key}" if lname else key), value

    def parameters_changed(self):
        """Drop caches derived from parameters after editing them in place (see
        :func:`parameters_changed`); returns self."""
        parameters_changed()
        return self

    def cached(self, name, make):
        """``make()``, computed once per parameter version and kept on the layer."""
        version = parameter_version()
        store = self.__dict__.setdefault("_cached", {})
        entry = store.get(name)
        if entry is None or entry[0] != version:
            entry = store[name] = (version, make())
        return entry[1]

    def astype(self, dtype):
        """Cast parameters, gradients and float buffers in place; returns self."""
        for _, layer in self.named_layers():
            for d in (layer.params, layer.grads, layer.buffers):
                for key, value in d.items():
                    if np.issubdtype(value.dtype, np.floating):
                        d[key] = value.astype(dtype)
        parameters_changed()
        return self

    def set_backend(self, backend):
        """Run the fast paths of this layer and its descendants on ``backend``.

        ``"auto"`` (the default of every layer), ``"numba"`` or ``"numpy"``
        (see :mod:`pysbnn.kernels.jit`); the results agree to float rounding.
        A run-time choice: it is not saved with the model. Returns self.
        """
        check_backend(backend)
        for _, layer in self.named_layers():
            if hasattr(layer, "backend"):
                layer.backend = backend
        return self

    def backward_params(self, dout):
        """Fill ``grads`` from ``dout`` without the input gradient (:func:`pysbnn.fit`: the
        images need none). Layers without parameters do nothing; returns None."""
        if self.params:
            self.backward(dout)

    def zero_grad(self):
        for _, layer in self.named_layers():
            for key, value in layer.params.items():
                layer.grads[key] = np.zeros_like(value)

    # -- the boundary: what the model takes, checked once per public call ----
    def input_spec(self, after=None):
        """The :class:`~pysbnn.validation.InputSpec` this layer takes, given the spec
        ``after`` of the layers behind it: ``in_features`` -> ``(n, in_features)``,
        ``in_channels`` -> NHWC images; other layers keep the shape (take ``after``)."""
        if hasattr(self, "in_features"):
            return InputSpec((2,), features=self.in_features)
        if hasattr(self, "in_channels"):
            k, pad = getattr(self, "kernel_size", 1), getattr(self, "padding", 0)
            return InputSpec((4,), channels=self.in_channels, min_side=max(1, k - 2 * pad))
        return after or ANY

    def output_features(self, features_in=None):
        """Size of the last axis of the output (a classifier's number of classes),
        given that of the input; None when the layer does not fix it."""
        for attr in ("out_features", "out_channels", "num_features"):
            if hasattr(self, attr):
                return getattr(self, attr)
        return features_in

    def check_input(self, x, name="x", min_samples=1):
        """``x`` as an ndarray, checked against :meth:`input_spec` (cached on first
        use); TypeError/ValueError naming ``name`` (:mod:`pysbnn.validation`)."""
        if "_input_spec" not in self.__dict__:
            self._input_spec = self.input_spec() or ANY
        return validation.check_input(name, x, self._input_spec, min_samples)

    def num_classes(self):
        """The size of the model's output (its classes), or None if the model does not fix it."""
        if "_num_classes" not in self.__dict__:
            self._num_classes = self.output_features()
        return self._num_classes

    def _forward(self, x, training=False):
        """``forward`` without the boundary check: what containers call on
        their children (leaves check nothing, so it is ``forward`` itself)."""
        return self.forward(x, training=training)

    def predict(self, x, batch_size=1024):
        """Class ids ``argmax(forward(x))`` in batches (inference mode); ``x`` checked once."""
        x = self.check_input(x, min_samples=0)
        batch_size = check_positive_int("batch_size", batch_size)
        out = [self._forward(x[i:i + batch_size], training=False).argmax(axis=-1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def _init_param(self, name, value):
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        parameters_changed()


class Dense(Layer):
    """Fully connected layer ``y = x W^T + b``; x (n, in_features) -> (n, out_features).

    Weights start uniform in ``+-1/sqrt(in_features)`` (PyTorch's default).
    """

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.bias = bool(bias)
        bound = 1.0 / np.sqrt(in_features)
        g = as_generator(rng)
        self._init_param("weight", g.uniform(-bound, bound, (out_features, in_features)).astype(np.float32))
        if bias:
            self._init_param("bias", g.uniform(-bound, bound, out_features).astype(np.float32))

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias)

    def forward(self, x, training=False):
        out, self._cache = F.dense_forward(x, self.params["weight"], self.params.get("bias"))
        return out

    def backward(self, dout, input_grad=True):
        dx, dw, db = F.dense_backward(dout, self._cache, input_grad)
        self.grads["weight"] = dw
        if self.bias:
            self.grads["bias"] = db
        return dx

    def backward_params(self, dout):
        self.backward(dout, input_grad=False)


class Conv2d(Layer):
    """2-D convolution on NHWC input; weight (out_channels, in_channels, k, k).

    x (n, h, w, in_channels) -> (n, ho, wo, out_channels) with
    ``ho = (h + 2 padding - k) // stride + 1``. ``backend`` chooses who copies
    the patches (see :func:`pysbnn.functional.conv2d_forward`).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=True, rng=None, backend="auto"):
        super().__init__()
        self.backend = check_backend(backend)
        (self.in_channels, self.out_channels, self.kernel_size, self.stride,
         self.padding) = conv_geometry(in_channels, out_channels, kernel_size, stride, padding)
        self.bias = bool(bias)
        fan_in = in_channels * kernel_size * kernel_size
        bound = 1.0 / np.sqrt(fan_in)
        g = as_generator(rng)
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self._init_param("weight", g.uniform(-bound, bound, shape).astype(np.float32))
        if bias:
            self._init_param("bias", g.uniform(-bound, bound, out_channels).astype(np.float32))

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, stride=self.stride,
                    padding=self.padding, bias=self.bias)

    def forward(self, x, training=False):
        out, self._cache = F.conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                            self.stride, self.padding, self.backend)
        return out

    def backward(self, dout, input_grad=True):
        dx, dw, db = F.conv2d_backward(dout, self._cache, input_grad)
        self.grads["weight"] = dw
        if self.bias:
            self.grads["bias"] = db
        return dx

    def backward_params(self, dout):
        self.backward(dout, input_grad=False)


class BatchNorm(Layer):
    """Batch normalisation over the last axis (features, or NHWC channels).

    Train mode normalises with batch statistics and updates the running ones
    (``momentum`` as in PyTorch); eval mode uses the running statistics.
    ``backend``: ``"auto" | "numba" | "numpy"``, the fused kernel passes or the
    NumPy formulas of :func:`pysbnn.functional.batchnorm_forward` (a run-time
    choice, not saved).
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, backend="auto"):
        super().__init__()
        self.backend = check_backend(backend)
        self.num_features = check_positive_int("num_features", num_features)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.momentum, self.eps = float(momentum), float(eps)
        self._init_param("gamma", np.ones(num_features, np.float32))
        self._init_param("beta", np.zeros(num_features, np.float32))
        self.buffers["running_mean"] = np.zeros(num_features, np.float32)
        self.buffers["running_var"] = np.ones(num_features, np.float32)

    def get_config(self):
        return dict(num_features=self.num_features, momentum=self.momentum, eps=self.eps)

    def input_spec(self, after=None):
        return after or InputSpec((2, 4), channels=self.num_features)

    def forward(self, x, training=False):
        out, self._cache = F.batchnorm_forward(
            x, self.params["gamma"], self.params["beta"], self.buffers["running_mean"],
            self.buffers["running_var"], training, self.momentum, self.eps, self.backend)
        return out

    def backward(self, dout):
        dx, self.grads["gamma"], self.grads["beta"] = F.batchnorm_backward(dout, self._cache)
        return dx


class BatchNorm1d(BatchNorm):
    """BatchNorm over (n, features)."""


class BatchNorm2d(BatchNorm):
    """BatchNorm over the channels of NHWC (n, h, w, channels)."""


class HardTanh(Layer):
    """``clip(x, -1, 1)``, the usual activation in front of a sign. ``backend``
    (run time, not saved): who computes the gradient mask."""

    def __init__(self, backend="auto"):
        super().__init__()
        self.backend = check_backend(backend)

    def forward(self, x, training=False):
        out, self._cache = F.hardtanh_forward(x)
        return out

    def backward(self, dout):
        return F.hardtanh_backward(dout, self._cache, self.backend)


class ReLU(Layer):
    """``max(x, 0)``."""

    def forward(self, x, training=False):
        out, self._cache = F.relu_forward(x)
        return out

    def backward(self, dout):
        return F.relu_backward(dout, self._cache)


class _Pool(Layer):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.stride = check_positive_int("stride", stride if stride is not None else kernel_size)

    def get_config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride)

    def input_spec(self, after=None):
        return InputSpec((4,), channels=after and after.channels, min_side=self.kernel_size)


class MaxPool2d(_Pool):
    """Max pooling over k x k windows of NHWC input."""

    def forward(self, x, training=False):
        out, self._cache = F.maxpool_forward(x, self.kernel_size, self.stride)
        return out

    def backward(self, dout):
        return F.maxpool_backward(dout, self._cache)


class AvgPool2d(_Pool):
    """Average pooling over k x k windows of NHWC input."""

    def forward(self, x, training=False):
        out, self._cache = F.avgpool_forward(x, self.kernel_size, self.stride)
        return out

    def backward(self, dout):
        return F.avgpool_backward(dout, self._cache)


class GlobalAvgPool(Layer):
    """Mean over the spatial axes: (n, h, w, c) -> (n, c)."""

    def input_spec(self, after=None):
        return InputSpec((4,), channels=after and (after.features or after.channels))

    def forward(self, x, training=False):
        self._shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, dout):
        n, h, w, c = self._shape
        return np.broadcast_to(dout[:, None, None, :] / (h * w), self._shape).copy()


class Flatten(Layer):
    """(n, ...) -> (n, prod(...))."""

    def input_spec(self, after=None):
        return InputSpec(None, features=after and after.features)

    def output_features(self, features_in=None):
        return None                          # prod(...) depends on the input's shape

    def forward(self, x, training=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._shape)


class Normalize(Layer):
    """Input preprocessing carried by the model: raw images -> standardised floats.

    ``out = (x / scale - mean) / std`` per channel, in float32 (float64 inputs
    stay float64). Grey images
    (n, h, w) gain a channel axis, so a saved model takes images exactly as the
    loaders return them (uint8). With ``flatten=True`` the output is (n, h*w*c).
    """

    def __init__(self, mean=(0.0,), std=(1.0,), scale=255.0, flatten=False):
        super().__init__()
        self.mean = [float(m) for m in np.atleast_1d(mean)]
        self.std = [float(s) for s in np.atleast_1d(std)]
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")
        if min(self.std) <= 0 or scale <= 0:
            raise ValueError("std and scale must be > 0")
        self.scale = float(scale)
        self.flatten = bool(flatten)

    def get_config(self):
        return dict(mean=self.mean, std=self.std, scale=self.scale, flatten=self.flatten)

    def input_spec(self, after=None):
        """Images (n, h, w) or (n, h, w, c); the channels and, with ``flatten``,
        the values per image are those the next layer takes."""
        after = after or ANY
        channels = after.channels or (len(self.mean) if len(self.mean) > 1 else None)
        return InputSpec((3, 4) if channels in (None, 1) else (4,), channels=channels,
                         features=after.features if self.flatten else None, min_side=after.min_side)

    def output_features(self, features_in=None):
        return None if self.flatten else features_in

    def forward(self, x, training=False):
        x = np.asarray(x)
        self._in_shape = x.shape
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"Normalize expects images (n, h, w) or (n, h, w, c), got shape {x.shape}")
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        mean = np.asarray(self.mean, dtype)
        inv = np.asarray(1.0 / np.asarray(self.std), dtype)
        out = (x.astype(dtype) * dtype.type(1.0 / self.scale) - mean) * inv
        return out.reshape(len(out), -1) if self.flatten else out

    def backward(self, dout):
        inv = np.asarray(1.0 / np.asarray(self.std), dout.dtype)
        dx = dout.reshape(self._in_shape + (1,) * (len(self._in_shape) == 3)) * inv / self.scale
        return dx.reshape(self._in_shape)
