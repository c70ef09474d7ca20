r"""The two levels {alpha, beta} of a general binary domain (Sec. 3.2-3.3, 3.5).

A binary layer keeps latent real weights ``w`` (N of them) and uses
``wbar = sign(w)`` in {-1, +1}. Its binary weights are

.. math::
    w_q = \tau\,\bar w + \phi = (w_{01} + \xi)\,\eta, \qquad
    w_{01} = (\bar w + 1)/2 \in \{0, 1\},

so the two levels are ``alpha = phi - tau`` and ``beta = phi + tau``. Here:

1. the closed-form least-squares levels (Eq. 12-15, :func:`optimal_tau_phi`)
   and the gradient of the quantization error they zero (Eq. 13,
   :func:`quantization_error_gradient`);
2. the maps between the (tau, phi), (alpha, beta) and (xi, eta) forms (Eq. 4-5);
3. the {0, 1} decomposition of a layer's output at inference (Eq. 20,
   corrected, :func:`sbnn_output`).

The rules that turn latent weights into ``w_q`` during training are in
:mod:`pysbnn.domains`.
"""

from typing import NamedTuple

import numpy as np

from .quantizers import sign

__all__ = [
    "QuantResult",
    "optimal_tau_phi",
    "quantization_error_gradient",
    "tau_phi_to_alpha_beta",
    "alpha_beta_to_tau_phi",
    "tau_phi_to_xi_eta",
    "xi_eta_to_tau_phi",
    "alpha_beta_to_xi_eta",
    "xi_eta_to_alpha_beta",
    "sbnn_output",
]


# --------------------------------------------------------------------------
# Eq. 12-15: the optimal domain for a fixed sign pattern
# --------------------------------------------------------------------------

class QuantResult(NamedTuple):
    """Result of ``optimal_tau_phi``; all fields are Python floats.

    ``tau, phi``: the domain (Eq. 15); ``alpha = phi - tau``, ``beta = phi + tau``;
    ``p``: fraction of ones (``w >= 0``); ``error``: mean squared quantization
    error ``||w - (tau*sign(w) + phi)||^2 / N``.
    """

    tau: float
    phi: float
    alpha: float
    beta: float
    p: float
    error: float


def optimal_tau_phi(w):
    r"""Least-squares domain for the sign pattern of ``w`` (Eq. 12-15).

    .. math::
        \tau^*, \phi^* = \arg\min_{\tau,\phi}
            \|\tilde{\mathbf w} - (\tau\bar{\mathbf w} + \phi\mathbf 1)\|_2
        \qquad (12)

    With :math:`p` the fraction of :math:`\bar w_i = +1` (i.e. ``w >= 0``),
    :math:`c = 2p - 1`, :math:`a = \|\tilde{\mathbf w}\|_1/N` and
    :math:`s = \mathrm{sum}(\tilde{\mathbf w})/N`:

    .. math::
        \tau^* = \frac{a - c\,s}{1 - c^2}, \qquad
        \phi^* = \frac{s - c\,a}{1 - c^2}. \qquad (15)

    Equivalently ``beta* = mean(w[w >= 0])`` and ``alpha* = mean(w[w < 0])``
    (each level is the mean of the weights it replaces), so ``tau* > 0`` and
    ``alpha* < beta*`` whenever both signs occur. ``p = 1/2`` gives
    XNOR-Net's ``tau* = mean|w|`` with ``phi* = mean(w)``.

    **Degenerate case** ``p in {0, 1}`` (all weights on one side): then
    ``1 - c^2 = 0`` and every (tau, phi) with the single used level
    ``phi + c*tau = mean(w)`` is optimal. We return the spread
    ``tau = mean|w - mean(w)|`` (so ``alpha < beta`` still means something,
    and ``tau = 0`` only for a constant ``w``) and ``phi = mean(w) - c*tau``.
    *Proof of optimality:* every weight gets the same level
    ``m = phi + c*tau``, and ``mean((w - m)^2) = var(w) + (mean(w) - m)^2``,
    which is minimal, equal to ``var(w)``, exactly when ``m = mean(w)``.

    Computed in float64 after dividing ``w`` by a power of two near
    ``max|w|`` (exact for all but negligibly small entries), so huge weights
    do not overflow; the result is never NaN. (``error`` may overflow to ``inf`` for weights near 1e154.)

    Parameters
    ----------
    w : array_like, any shape (flattened), N >= 1 finite entries.

    Returns
    -------
    QuantResult(tau, phi, alpha, beta, p, error) of Python floats.
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.size == 0:
        raise ValueError("w must be a non-empty array")
    if not np.all(np.isfinite(w)):
        raise ValueError("w must contain only finite values")
    max_abs = float(np.max(np.abs(w)))
    scale = float(np.ldexp(1.0, np.frexp(max_abs)[1])) if max_abs > 0 else 1.0
    v = w / scale  # exact unless it underflows; signs are taken from w itself
    wbar = sign(w)
    p = np.count_nonzero(w >= 0) / w.size
    c = 2.0 * p - 1.0
    a = float(np.mean(np.abs(v)))
    s = float(np.mean(v))
    if p in (0.0, 1.0):
        tau = float(np.mean(np.abs(v - s)))
        phi = s - c * tau
    else:
        tau = (a - c * s) / (1.0 - c * c)
        phi = (s - c * a) / (1.0 - c * c)
    error = float(np.mean((v - (tau * wbar + phi)) ** 2))
    tau, phi = tau * scale, phi * scale
    with np.errstate(over="ignore"):
        error = float(np.float64(error) * np.float64(scale) ** 2)
    return QuantResult(tau, phi, phi - tau, phi + tau, p, error)


# --------------------------------------------------------------------------
# Eq. 4-5 and Sec. 3.3: three ways to write the same two levels
# --------------------------------------------------------------------------

def tau_phi_to_alpha_beta(tau, phi):
    r"""Levels from the tau/phi form (Sec. 3.3): :math:`\alpha = \phi - \tau,\ \beta = \phi + \tau`.

    Scalars or broadcastable arrays; returns ``(alpha, beta)``.
    """
    return phi - tau, phi + tau


def alpha_beta_to_tau_phi(alpha, beta):
    r"""Inverse of ``tau_phi_to_alpha_beta``: :math:`\tau = (\beta - \alpha)/2,\ \phi = (\alpha + \beta)/2`.

    Scalars or broadcastable arrays; returns ``(tau, phi)``.
    """
    return (beta - alpha) / 2, (alpha + beta) / 2


def tau_phi_to_xi_eta(tau, phi):
    r"""The xi/eta form of Eq. 4 from tau/phi.

    From :math:`\tau\bar w + \phi = (w_{01} + \xi)\eta` with
    :math:`\bar w = 2w_{01} - 1`:

    .. math::
        \eta = 2\tau, \qquad \xi = \frac{\phi - \tau}{2\tau}.

    The standard BNN ``tau = 1, phi = 0`` gives ``xi = -1/2, eta = 2``.
    ``tau`` must be nonzero (``tau = 0`` collapses both levels into one).
    Scalars or broadcastable arrays; returns ``(xi, eta)``.
    """
    if np.any(np.asarray(tau) == 0):
        raise ValueError("tau must be nonzero to map to (xi, eta); got tau = 0")
    return (phi - tau) / (2 * tau), 2 * tau


def xi_eta_to_tau_phi(xi, eta):
    r"""Inverse of ``tau_phi_to_xi_eta``: :math:`\tau = \eta/2,\ \phi = \eta(\xi + 1/2)`.

    Scalars or broadcastable arrays; returns ``(tau, phi)``.
    """
    return eta / 2, eta * (xi + 0.5)


def alpha_beta_to_xi_eta(alpha, beta):
    r"""Invert Eq. 5: :math:`\eta = \beta - \alpha,\ \xi = \alpha / (\beta - \alpha)`.

    Needs ``alpha != beta``. Scalars or broadcastable arrays; returns ``(xi, eta)``.
    """
    eta = beta - alpha
    if np.any(np.asarray(eta) == 0):
        raise ValueError("alpha and beta must differ to map to (xi, eta); got alpha == beta")
    return alpha / eta, eta


def xi_eta_to_alpha_beta(xi, eta):
    r"""Eq. 5: :math:`\alpha = \xi\eta,\ \beta = (1 + \xi)\eta`.

    Scalars or broadcastable arrays; returns ``(alpha, beta)``.
    """
    return xi * eta, (1 + xi) * eta


def quantization_error_gradient(w, tau, phi):
    r"""Gradient of the quantization loss of Eq. 12 with respect to (tau, phi) (Eq. 13).

    With :math:`\mathcal L_B = \|\tilde{\mathbf w} - (\tau\bar{\mathbf w} + \phi\mathbf 1)\|_2^2`,
    :math:`p` the fraction of :math:`\bar w_i = +1` and :math:`c = 2p - 1`:

    .. math::
        \nabla\mathcal L_B = 2 \begin{pmatrix}
            -\|\tilde{\mathbf w}\|_1 + N(\tau + c\,\phi) \\
            -\mathrm{sum}(\tilde{\mathbf w}) + N(\phi + c\,\tau) \end{pmatrix} \qquad (13)

    Setting it to zero gives Eq. 14, whose solution is Eq. 15
    (:func:`optimal_tau_phi`). (The paper writes the squared norm without the
    square; the minimiser is the same.)

    Parameters
    ----------
    w : array_like, any shape (flattened), the latent weights.
    tau, phi : floats.

    Returns
    -------
    (d_tau, d_phi) : Python floats.
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    n = w.size
    c = 2.0 * np.count_nonzero(w >= 0) / n - 1.0
    d_tau = 2.0 * (-float(np.abs(w).sum()) + n * (tau + c * phi))
    d_phi = 2.0 * (-float(w.sum()) + n * (phi + c * tau))
    return d_tau, d_phi


# --------------------------------------------------------------------------
# Eq. 20: a layer's output from its {0, 1} weights
# --------------------------------------------------------------------------

def sbnn_output(z_prime, q, xi, eta):
    r"""A binary layer's output from its {0, 1} weights: Eq. 20, corrected.

    .. math:: \mathbf z = \eta\,\mathbf z' + \xi\,\eta\,\mathbf q, \qquad
              \mathbf z' = \mathbf w_{01} \cdot \mathbf x, \quad
              \mathbf q = \mathbf 1 \cdot \mathbf x

    The paper prints :math:`\xi z'` for the first term; with
    ``w = (w01 + xi) eta`` (Eq. 4), ``w . x = eta (w01 . x) + xi eta (1 . x)``
    (see docs/errata.md). ``z'`` needs popcounts over the ones only and ``q``
    is computed once per input, shared by every output unit (Sec. 3.5).

    Parameters
    ----------
    z_prime : int array (..., M), ``w01 . x`` from the packed kernels.
    q : int array broadcasting against ``z_prime`` (e.g. (B, 1) for a dense
        layer, (n, h, w, 1) for a conv), ``1 . x``.
    xi, eta : the layer's domain scalars (or arrays broadcasting to (M,)).

    Returns
    -------
    float64 array of the broadcast shape.
    """
    z_prime = np.asarray(z_prime, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    return eta * z_prime + np.asarray(xi, dtype=np.float64) * eta * q
