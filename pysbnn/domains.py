r"""Binary domains: the rule that turns latent weights into binary weights
(Sec. 3.2-3.4, Table 1), each with its exact backward pass.

A binary layer keeps latent real weights ``w`` and uses ``wbar = sign(w)``
with ``w_q = tau wbar + phi`` (the forms and Eq. 15 are in
:mod:`pysbnn.levels`). Given a sign STE from :mod:`pysbnn.quantizers`::

    w_q, cache = domain_forward("learned", w, tau, phi, quantizer="ede")
    dw, dtau, dphi = domain_backward(dw_q, cache)

``sym`` ({-beta, +beta}, XNOR-Net), ``alpha_beta`` (Eq. 15 recomputed every
step), ``learned`` (tau, phi trained) and ``zero_one`` ({0, 1}, the 2021
paper). ``dtau``/``dphi`` are ``None`` unless the domain is ``trainable``.

The two *computed* domains (``sym``, ``alpha_beta``) take the levels from
``w`` itself, so their backward pass has a choice (``grad=``, saved with the
layer config): ``"exact"`` differentiates through the levels (beta, or
tau* and phi*), ``"ste"`` treats them as constants (stop-gradient). Both
keep the sign STE. Defaults: ``sym`` exact, ``alpha_beta`` ste::

    get_domain({"name": "alpha_beta", "grad": "exact"})
"""

import abc

import numpy as np

from .levels import optimal_tau_phi, tau_phi_to_xi_eta
from .quantizers import get_quantizer, sign

__all__ = [
    "GRADS",
    "Domain",
    "Sym",
    "AlphaBeta",
    "Learned",
    "ZeroOne",
    "DOMAINS",
    "get_domain",
    "domain_forward",
    "domain_backward",
]


# --------------------------------------------------------------------------
# Domains: latent weights -> binary weights, and the way back
# --------------------------------------------------------------------------

def _sum64(x):
    return float(np.sum(x, dtype=np.float64))


def _check_dw_q(dw_q, cache):
    dw_q = np.asarray(dw_q)
    if dw_q.shape != cache["w"].shape:
        raise ValueError(f"dw_q has shape {dw_q.shape}, expected the weight shape {cache['w'].shape}")
    return dw_q


#: Gradient treatments of the computed domains (``sym``, ``alpha_beta``).
GRADS = ("exact", "ste")


def _check_grad(grad):
    if grad not in GRADS:
        raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
    return grad


def _group_means(x, positive):
    r"""``x_i`` replaced by the mean of ``x`` over the sign group of ``i``.

    ``positive`` : bool array like ``x`` (``w >= 0``). Returns float64
    :math:`\frac1{|g(i)|}\sum_{j \in g(i)} x_j`, with ``g(i)`` the
    weights of ``i``'s sign (one group when all signs agree).
    """
    x = np.asarray(x, dtype=np.float64)
    n_pos = int(np.count_nonzero(positive))
    n_neg = x.size - n_pos
    s_pos = float(np.sum(x[positive]))
    mean_pos = s_pos / n_pos if n_pos else 0.0
    mean_neg = (float(np.sum(x)) - s_pos) / n_neg if n_neg else 0.0
    return np.where(positive, mean_pos, mean_neg)


class Domain(abc.ABC):
    """A rule ``w -> w_q`` with its backward pass. Subclasses set ``name``.

    ``trainable`` tells whether the layer owns ``tau`` and ``phi`` parameters
    (then pass them to ``forward`` and apply ``dtau``, ``dphi``).
    """

    name = None
    trainable = False

    @abc.abstractmethod
    def forward(self, w, quantizer="clipped", tau=None, phi=None):
        """Return ``(w_q, cache)``; ``w_q`` has the shape and dtype of ``w``."""

    @abc.abstractmethod
    def backward(self, dw_q, cache):
        """Return ``(dw, dtau, dphi)``; ``dw`` like ``w``; ``dtau, dphi`` None unless trainable."""

    @abc.abstractmethod
    def tau_phi(self, w, tau=None, phi=None):
        """Current ``(tau, phi)`` as Python floats, for latent weights ``w``."""

    def xi_eta(self, w, tau=None, phi=None):
        """Current ``(xi, eta)`` (Eq. 4), via ``tau_phi_to_xi_eta``."""
        return tau_phi_to_xi_eta(*self.tau_phi(w, tau, phi))

    def init_params(self, dtype=np.float32):
        """Initial trainable parameters: ``{}`` unless ``trainable``."""
        return {}

    def get_config(self):
        return {"name": self.name}

    def _no_params(self, tau, phi):
        if tau is not None or phi is not None:
            raise ValueError(
                f"domain {self.name!r} computes tau and phi from w; pass tau=None, phi=None"
            )

    def __repr__(self):
        return f"{type(self).__name__}()"


class _Computed(Domain):
    """A domain whose tau and phi are functions of ``w``, with a gradient
    treatment ``grad`` (one of :data:`GRADS`): ``"exact"`` differentiates
    through them, ``"ste"`` treats them as constants."""

    def __init__(self, grad):
        self.grad = _check_grad(grad)

    def get_config(self):
        return {"name": self.name, "grad": self.grad}

    def __repr__(self):
        return f"{type(self).__name__}(grad={self.grad!r})"


class Sym(_Computed):
    r"""{-beta, +beta} with :math:`\beta = \|\tilde{\mathbf w}\|_1 / N` (XNOR-Net [30], Table 1).

    Forward (``tau = beta``, ``phi = 0``):

    .. math::
        w_{q,i} = \beta\,\mathrm{sign}(\tilde w_i), \qquad
        \beta = \frac1N \sum_j |\tilde w_j|

    Backward, ``grad="exact"`` (default): beta is a function of ``w`` and we
    differentiate through it exactly (product rule), with the STE only for
    ``sign``:

    .. math::
        \frac{\partial L}{\partial \tilde w_i} =
        \frac{\partial L}{\partial w_{q,i}}\,\beta\,\mathrm{ste}'(\tilde w_i)
        + \Bigl(\sum_j \frac{\partial L}{\partial w_{q,j}}\,\bar w_j\Bigr)
          \frac{\bar w_i}{N}

    (``d|w|/dw = sign(w)`` with ``sign(0) = +1`` as the subgradient.)
    XNOR-Net's paper approximates the second term by
    ``dL/dwq_i / N``; we keep it exact. ``grad="ste"`` drops it (beta a
    constant): :math:`\partial L/\partial \tilde w_i =
    \partial L/\partial w_{q,i}\,\beta\,\mathrm{ste}'(\tilde w_i)`.
    """

    name = "sym"

    def __init__(self, grad="exact"):
        super().__init__(grad)

    def forward(self, w, quantizer="clipped", tau=None, phi=None):
        self._no_params(tau, phi)
        w = np.asarray(w)
        wbar = sign(w)
        beta = float(np.mean(np.abs(w), dtype=np.float64))
        w_q = (beta * wbar).astype(w.dtype, copy=False)
        cache = {"domain": self, "w": w, "wbar": wbar, "beta": beta,
                 "quantizer": get_quantizer(quantizer)}
        return w_q, cache

    def backward(self, dw_q, cache):
        dw_q = _check_dw_q(dw_q, cache)
        w, wbar, beta = cache["w"], cache["wbar"], cache["beta"]
        dw = dw_q * beta * cache["quantizer"].grad(w)
        if self.grad == "exact":
            dw = dw + _sum64(dw_q * wbar) / w.size * wbar       # through beta
        return dw.astype(w.dtype, copy=False), None, None

    def tau_phi(self, w, tau=None, phi=None):
        self._no_params(tau, phi)
        return float(np.mean(np.abs(np.asarray(w)), dtype=np.float64)), 0.0


class AlphaBeta(_Computed):
    r"""{alpha, beta} from Eq. 15, recomputed from the current ``w`` at every forward.

    .. math::
        w_{q,i} = \tau^*(\tilde{\mathbf w})\,\mathrm{sign}(\tilde w_i)
                 + \phi^*(\tilde{\mathbf w})

    with ``tau*, phi* = optimal_tau_phi(w)`` (including its degenerate rule).

    Backward, ``grad="ste"`` (default): tau* and phi* are treated as
    constants (stop-gradient); only the sign STE carries gradient:

    .. math::
        \frac{\partial L}{\partial \tilde w_i} =
        \frac{\partial L}{\partial w_{q,i}}\,\tau^*\,\mathrm{ste}'(\tilde w_i)

    ``grad="exact"`` adds the path through the levels. For a fixed sign
    pattern ``beta* = mean(w[w >= 0])`` and ``alpha* = mean(w[w < 0])``, so
    ``w_{q,j}`` depends on ``w_i`` by ``1/|g(i)|`` when ``j`` is in the sign
    group ``g(i)`` of ``i``, and not otherwise:

    .. math::
        \frac{\partial L}{\partial \tilde w_i} =
        \frac{\partial L}{\partial w_{q,i}}\,\tau^*\,\mathrm{ste}'(\tilde w_i)
        + \frac{1}{|g(i)|}\sum_{j \in g(i)} \frac{\partial L}{\partial w_{q,j}}

    The degenerate rule (``p in {0, 1}``) gives every weight the one level
    ``mean(w)``: one group of all N weights, and the same formula.
    """

    name = "alpha_beta"

    def __init__(self, grad="ste"):
        super().__init__(grad)

    def forward(self, w, quantizer="clipped", tau=None, phi=None):
        self._no_params(tau, phi)
        w = np.asarray(w)
        wbar = sign(w)
        res = optimal_tau_phi(w)
        w_q = (res.tau * wbar + res.phi).astype(w.dtype, copy=False)
        cache = {"domain": self, "w": w, "tau": res.tau, "quantizer": get_quantizer(quantizer)}
        return w_q, cache

    def backward(self, dw_q, cache):
        dw_q = _check_dw_q(dw_q, cache)
        w = cache["w"]
        dw = dw_q * cache["tau"] * cache["quantizer"].grad(w)
        if self.grad == "exact":
            dw = dw + _group_means(dw_q, w >= 0)                 # through alpha*, beta*
        return dw.astype(w.dtype, copy=False), None, None

    def tau_phi(self, w, tau=None, phi=None):
        self._no_params(tau, phi)
        res = optimal_tau_phi(w)
        return res.tau, res.phi


def _scalar(value, name):
    if value is None:
        raise ValueError(f"the 'learned' domain needs {name}; got {name}=None")
    if np.size(value) != 1:
        raise ValueError(f"{name} must hold one value, got shape {np.shape(value)}")
    value = float(np.asarray(value).reshape(()))
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {name}={value}")
    return value


def _grad_like(total, param, w):
    dtype = param.dtype if isinstance(param, (np.ndarray, np.generic)) else w.dtype
    return np.full(np.shape(param), total, dtype=dtype)


class Learned(Domain):
    r"""{alpha, beta} with trainable tau and phi (Table 1 "Learned"; the reference code).

    .. math::
        w_{q,i} = \tau\,\mathrm{sign}(\tilde w_i) + \phi

    Backward (exact in tau, phi; STE for sign):

    .. math::
        \frac{\partial L}{\partial \tau} = \sum_i \frac{\partial L}{\partial w_{q,i}}\bar w_i,
        \quad
        \frac{\partial L}{\partial \phi} = \sum_i \frac{\partial L}{\partial w_{q,i}},
        \quad
        \frac{\partial L}{\partial \tilde w_i} =
        \frac{\partial L}{\partial w_{q,i}}\,\tau\,\mathrm{ste}'(\tilde w_i)

    ``tau``/``phi`` may be Python floats or one-element arrays; ``dtau``/``dphi``
    come back with the same shape (and dtype, for arrays). Initial values are
    ``tau = 1, phi = 0`` (the standard {-1, +1} BNN), as in the reference code.
    """

    name = "learned"
    trainable = True

    def forward(self, w, quantizer="clipped", tau=None, phi=None):
        w = np.asarray(w)
        t, f = _scalar(tau, "tau"), _scalar(phi, "phi")
        wbar = sign(w)
        w_q = (t * wbar + f).astype(w.dtype, copy=False)
        cache = {"domain": self, "w": w, "wbar": wbar, "tau": tau, "phi": phi,
                 "quantizer": get_quantizer(quantizer)}
        return w_q, cache

    def backward(self, dw_q, cache):
        dw_q = _check_dw_q(dw_q, cache)
        w, wbar, tau, phi = cache["w"], cache["wbar"], cache["tau"], cache["phi"]
        dtau = _grad_like(_sum64(dw_q * wbar), tau, w)
        dphi = _grad_like(_sum64(dw_q), phi, w)
        dw = (dw_q * _scalar(tau, "tau") * cache["quantizer"].grad(w)).astype(w.dtype, copy=False)
        return dw, dtau, dphi

    def tau_phi(self, w, tau=None, phi=None):
        return _scalar(tau, "tau"), _scalar(phi, "phi")

    def init_params(self, dtype=np.float32):
        """``{"tau": [1.0], "phi": [0.0]}`` as shape-(1,) arrays of ``dtype``."""
        return {"tau": np.ones(1, dtype=dtype), "phi": np.zeros(1, dtype=dtype)}


class ZeroOne(Domain):
    r"""{0, 1} weights of the 2021 SBNN paper.

    .. math::
        w_{q,i} = \frac{\mathrm{sign}(\tilde w_i) + 1}{2} \in \{0, 1\}
        \qquad (\tau = \phi = 1/2;\ \xi = 0,\ \eta = 1)

    The scale is fixed to 1: in the 2021 paper a BatchNorm follows every
    binary layer and absorbs any scale, so a learned beta would be redundant.

    Backward: :math:`\partial L/\partial \tilde w_i =
    \tfrac12\,\partial L/\partial w_{q,i}\;\mathrm{ste}'(\tilde w_i)`.
    """

    name = "zero_one"

    def forward(self, w, quantizer="clipped", tau=None, phi=None):
        self._no_params(tau, phi)
        w = np.asarray(w)
        w_q = (w >= 0).astype(w.dtype)
        return w_q, {"domain": self, "w": w, "quantizer": get_quantizer(quantizer)}

    def backward(self, dw_q, cache):
        dw_q = _check_dw_q(dw_q, cache)
        w = cache["w"]
        dw = dw_q * 0.5 * cache["quantizer"].grad(w)
        return dw.astype(w.dtype, copy=False), None, None

    def tau_phi(self, w, tau=None, phi=None):
        self._no_params(tau, phi)
        return 0.5, 0.5


#: name -> Domain class.
DOMAINS = {"sym": Sym, "alpha_beta": AlphaBeta, "learned": Learned, "zero_one": ZeroOne}


def get_domain(spec):
    """Return a Domain from a name in ``DOMAINS``, a ``get_config()`` dict, or an instance.

    A dict may carry the domain's options besides ``name``, e.g.
    ``{"name": "sym", "grad": "ste"}``; a bare name takes the defaults.
    """
    if isinstance(spec, Domain):
        return spec
    name = spec.get("name") if isinstance(spec, dict) else spec
    if not isinstance(name, str) or name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; allowed names: {sorted(DOMAINS)}")
    options = {k: v for k, v in spec.items() if k != "name"} if isinstance(spec, dict) else {}
    try:
        return DOMAINS[name](**options)
    except TypeError:
        raise ValueError(f"domain {name!r} takes no options {sorted(options)}") from None


def domain_forward(domain, w, tau=None, phi=None, quantizer="clipped"):
    """``get_domain(domain).forward(w, quantizer, tau, phi)`` -> ``(w_q, cache)``.

    ``w``: latent weights, any shape. ``tau``, ``phi``: only for ``learned``.
    ``quantizer``: the sign STE (name, config dict or Quantizer).
    """
    return get_domain(domain).forward(w, quantizer=quantizer, tau=tau, phi=phi)


def domain_backward(dw_q, cache):
    """Backward of ``domain_forward`` -> ``(dw, dtau, dphi)`` (dtau, dphi None unless learned)."""
    return cache["domain"].backward(dw_q, cache)
