"""Sign binarization and its straight-through estimators (Sec. 3.1).

The forward pass of every quantizer here is the same, ``sign(x)`` with
``sign(0) = +1``. What differs is the *surrogate* derivative used in the
backward pass, since the true derivative of ``sign`` is zero almost
everywhere. A quantizer is a small named object (in the style of larq):

- ``forward(x)`` returns ``sign(x)``;
- ``grad(x)`` returns the surrogate :math:`\\partial\\,\\mathrm{sign}(x)/\\partial x`
  elementwise (same shape and dtype as ``x``); the chain rule is then
  ``dx = dout * quantizer.grad(x)``;
- ``name`` and ``get_config()`` serialise it, and ``get_quantizer`` rebuilds it.

Available by name: ``"clipped"`` (alias ``"ste"``, ``"ste_sign"``),
``"identity"`` and ``"ede"``.
"""

import abc
import math

import numpy as np

__all__ = [
    "sign",
    "Quantizer",
    "ClippedIdentity",
    "Identity",
    "EDE",
    "QUANTIZERS",
    "get_quantizer",
]


def sign(x):
    r"""Binarize to {-1, +1}, with the convention ``sign(0) = +1`` (Sec. 3.1).

    .. math::
        \mathrm{sign}(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}

    ``-0.0`` also maps to +1 (it compares ``>= 0``). The same convention
    decides which latent weights are the *ones* of the {0, 1} domain
    (``w >= 0``), see docs/conventions.md.

    Parameters
    ----------
    x : array_like, any shape, signed or float dtype. Must not contain NaN.

    Returns
    -------
    ndarray, same shape and dtype as ``x``, values in {-1, +1}.
    """
    x = np.asarray(x)
    out = (x >= 0).astype(x.dtype)      # 10x faster than np.where(x >= 0, 1, -1)
    out *= 2
    out -= 1
    return out


class Quantizer(abc.ABC):
    """Base class: forward is ``sign``; subclasses define ``grad``."""

    name = None

    def forward(self, x):
        """Return ``sign(x)`` (same shape and dtype as ``x``)."""
        return sign(x)

    __call__ = forward

    @abc.abstractmethod
    def grad(self, x):
        """Surrogate derivative of ``sign`` at ``x``, elementwise."""

    def get_config(self):
        """JSON-serialisable dict; ``get_quantizer(q.get_config())`` rebuilds ``q``."""
        return {"name": self.name}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ClippedIdentity(Quantizer):
    r"""Straight-through estimator with clipping, a.k.a. ``ste_sign`` (Sec. 3.1).

    The gradient passes unchanged where the input lies in [-1, 1] (both edges
    included) and is cut elsewhere:

    .. math::
        \frac{\partial\,\mathrm{sign}(x)}{\partial x} \approx
        \mathbf{1}_{|x| \le 1}
    """

    name = "clipped"

    def grad(self, x):
        """``1`` where ``|x| <= 1`` else ``0``; same shape and dtype as ``x``."""
        x = np.asarray(x)
        return (np.abs(x) <= 1).astype(x.dtype)


class Identity(Quantizer):
    r"""Plain straight-through estimator: the gradient passes everywhere.

    .. math::
        \frac{\partial\,\mathrm{sign}(x)}{\partial x} \approx 1
    """

    name = "identity"

    def grad(self, x):
        """Array of ones, same shape and dtype as ``x``."""
        x = np.asarray(x)
        return np.ones_like(x)


class EDE(Quantizer):
    r"""IR-Net's Error Decay Estimator (Qin et al. 2020), used by the SBNN code.

    A ``tanh`` whose slope sharpens during training: early on it is close to
    the identity, at the end close to ``sign``.

    .. math::
        \frac{\partial\,\mathrm{sign}(x)}{\partial x} \approx
        k\,t\,\bigl(1 - \tanh^2(t x)\bigr), \qquad
        t = T_{\min}\,10^{\frac{e}{E}\log_{10}(T_{\max}/T_{\min})}, \qquad
        k = \max(1/t,\ 1)

    at epoch ``e`` of ``E``. With the defaults ``T_min = 0.1``, ``T_max = 10``
    this is ``t = 10^(-1 + 2e/E)``: ``t = 0.1, k = 10`` at ``e = 0`` and
    ``t = 10, k = 1`` at ``e = E``. Call ``set_epoch(e, E)`` once per epoch
    (``e`` may be fractional to update within an epoch).
    """

    name = "ede"

    def __init__(self, epoch=0, epochs=1, t_min=0.1, t_max=10.0):
        if not (0 < t_min <= t_max and math.isfinite(t_max)):
            raise ValueError(f"need 0 < t_min <= t_max < inf, got t_min={t_min}, t_max={t_max}")
        self.t_min = float(t_min)
        self.t_max = float(t_max)
        self.set_epoch(epoch, epochs)

    def set_epoch(self, epoch, epochs):
        """Set the schedule position: ``0 <= epoch <= epochs``, ``epochs >= 1``."""
        if not (math.isfinite(epochs) and epochs >= 1):
            raise ValueError(f"epochs must be >= 1, got epochs={epochs}")
        if not (math.isfinite(epoch) and 0 <= epoch <= epochs):
            raise ValueError(f"epoch must be in [0, epochs={epochs}], got epoch={epoch}")
        self.epoch = epoch
        self.epochs = epochs

    @property
    def t(self):
        """Slope ``t = T_min * 10**(e/E * log10(T_max/T_min))``."""
        return self.t_min * 10.0 ** (self.epoch / self.epochs * math.log10(self.t_max / self.t_min))

    @property
    def k(self):
        """Gain ``k = max(1/t, 1)``."""
        return max(1.0 / self.t, 1.0)

    def grad(self, x):
        """``k*t*(1 - tanh(t*x)**2)``; same shape and dtype as ``x``."""
        x = np.asarray(x)
        t = self.t
        return (self.k * t * (1.0 - np.tanh(t * x) ** 2)).astype(x.dtype, copy=False)

    def get_config(self):
        return {"name": self.name, "epoch": self.epoch, "epochs": self.epochs,
                "t_min": self.t_min, "t_max": self.t_max}


#: name -> class; ``"ste"`` and ``"ste_sign"`` are aliases of ``"clipped"``.
QUANTIZERS = {
    "clipped": ClippedIdentity,
    "ste": ClippedIdentity,
    "ste_sign": ClippedIdentity,
    "identity": Identity,
    "ede": EDE,
}


def get_quantizer(spec):
    """Return a quantizer from a name, a config dict or an instance.

    Parameters
    ----------
    spec : str | dict | Quantizer
        A name in ``QUANTIZERS`` (new instance with default arguments); a dict
        from ``get_config()`` (``{"name": ..., **constructor_kwargs}``); or a
        ``Quantizer``, returned unchanged.
    """
    if isinstance(spec, Quantizer):
        return spec
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
    else:
        name, kwargs = spec, {}
    if not isinstance(name, str) or name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; allowed names: {sorted(QUANTIZERS)}")
    return QUANTIZERS[name](**kwargs)
