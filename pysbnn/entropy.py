r"""Entropy, sparsity targets and the sparsity penalty (Eq. 6-8, 11, 16-19).

- ``binary_entropy`` / ``inverse_binary_entropy``: h and h^-1 (Eq. 6, 8);
- ``max_ones``: the budget M of ones for a target entropy (Eq. 8);
- three ways to state a target (EC, sparsity, bits/weight) and
  ``SparsityTarget`` that holds all three;
- ``sparsity_penalty``: j over all binary layers and its gradient (Eq. 16);
- ``gamma_lambda``: the adaptive lambda of Eq. 18;
- ``bop_ratio_bnn_over_sbnn``: Eq. 19 (corrected, see docs/errata.md).

The training recipe (gamma per target, the gamma rule's threshold) is in
:mod:`pysbnn.recipe`.

A weight is a *one* of the {0, 1} domain when ``sign(w) = +1``, i.e. ``w >= 0``.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import xlog1py, xlogy

__all__ = [
    "binary_entropy",
    "inverse_binary_entropy",
    "max_ones",
    "max_ones_int",
    "ec_from_sparsity",
    "sparsity_from_ec",
    "bits_from_ec",
    "ec_from_bits",
    "SparsityTarget",
    "ones_of",
    "fraction_of_ones",
    "fraction_of_ones_per_layer",
    "sparsity_penalty",
    "gamma_lambda",
    "bop_ratio_bnn_over_sbnn",
]

_LN2 = math.log(2.0)


def _in_range(x, name, lo, hi, lo_open=False, hi_open=False):
    """Return ``x`` as float64 array after checking ``lo <(=) x <(=) hi`` and not NaN."""
    x = np.asarray(x, dtype=np.float64)
    ok_lo = x > lo if lo_open else x >= lo
    ok_hi = x < hi if hi_open else x <= hi
    if not np.all(ok_lo & ok_hi):  # NaN fails both comparisons
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        bad = x[~(ok_lo & ok_hi)].ravel()[0]
        raise ValueError(f"{name} must be in {interval}, got {name}={bad}")
    return x


def _out(x):
    """0-d arrays back to Python floats; arrays unchanged."""
    return float(x) if np.ndim(x) == 0 else x


# --------------------------------------------------------------------------
# Eq. 6-8: entropy and the budget of ones
# --------------------------------------------------------------------------

def binary_entropy(p):
    r"""Binary entropy in bits/weight (Eq. 6), with :math:`h(0) = h(1) = 0`.

    .. math::
        h(p) = -p\log_2 p - (1 - p)\log_2(1 - p)

    Parameters
    ----------
    p : float or array_like in [0, 1] (any shape).

    Computed as ``-(xlogy(p, p) + xlog1py(1 - p, -p)) / ln 2``
    (:mod:`scipy.special`): ``x log y`` is 0 for ``x = 0``, and ``log1p``
    keeps ``log(1 - p)`` accurate for tiny ``p``.

    Returns
    -------
    float (scalar input) or float64 array of the shape of ``p``, in [0, 1].
    """
    p = _in_range(p, "p", 0.0, 1.0)
    h = -(xlogy(p, p) + xlog1py(1.0 - p, -p)) / _LN2
    return _out(np.clip(h, 0.0, 1.0) + 0.0)  # + 0.0 turns -0.0 into 0.0


def inverse_binary_entropy(h):
    r"""Inverse of the binary entropy on :math:`[0, 1/2]` (used by Eq. 8).

    Returns :math:`p = h^{-1}(y) \in [0, 1/2]` with :math:`h(p) = y`.

    Method (kept rather than a ``scipy.optimize`` root finder, which stops at
    a tolerance): bisection over the float64 *bit patterns* of [0, 1/2]. For
    non-negative floats the integer order of the bit patterns is the numeric
    order, so 64 halvings leave two adjacent floats; we return the upper one,
    the smallest float with ``h(p) >= y``. ``h(p)`` therefore matches ``y`` to
    a few ulps even for tiny ``y``; ``h^-1(0) = 0`` and ``h^-1(1) = 1/2``
    exactly. The result is monotone non-decreasing in ``y`` (two bisections
    only part ways at a midpoint that separates them).

    Parameters
    ----------
    h : float or array_like in [0, 1] (any shape).

    Returns
    -------
    float (scalar input) or float64 array of the shape of ``h``.
    """
    y = _in_range(h, "h", 0.0, 1.0)
    lo = np.zeros(y.shape, dtype=np.int64)  # bit pattern of 0.0
    hi = np.full(y.shape, np.float64(0.5).view(np.int64))  # bit pattern of 0.5
    for _ in range(64):
        mid = lo + (hi - lo) // 2
        below = np.asarray(binary_entropy(mid.view(np.float64))) < y
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    p = np.where(y >= 1.0, 0.5, np.where(y <= 0.0, 0.0, hi.view(np.float64)))
    return _out(p)


def _check_count(N):
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 0:
        raise ValueError(f"N must be a non-negative integer, got N={N!r}")
    return int(N)


def max_ones(N, h_star):
    r"""Maximum number of ones for an entropy target (Eq. 8), as a float.

    .. math::
        M = N \cdot h^{-1}(h^*), \qquad h^{-1}: [0, 1] \to [0, 1/2]

    so ``0 <= M <= N/2 <= N``. The constraint is ``U <= M`` (Eq. 7-8).

    Parameters
    ----------
    N : int >= 0, number of weights.  h_star : float in [0, 1], bits/weight.
    """
    N = _check_count(N)
    return _out(N * np.asarray(inverse_binary_entropy(_in_range(h_star, "h_star", 0.0, 1.0))))


def max_ones_int(N, h_star):
    r"""Largest integer count of ones allowed by Eq. 7: ``floor(M)`` computed exactly.

    Returns the largest integer :math:`U \le N/2` with :math:`h(U/N) \le h^*`
    (starting from ``floor(max_ones(N, h_star))`` and correcting the last unit,
    so that rounding in :math:`h^{-1}` cannot drop a count that exactly meets
    the target, e.g. ``h_star = h(3/N)`` gives 3).
    """
    N = _check_count(N)
    if N == 0:
        return 0
    u = int(math.floor(max_ones(N, h_star)))
    while u + 1 <= N // 2 and binary_entropy((u + 1) / N) <= h_star:
        u += 1
    while u > 0 and binary_entropy(u / N) > h_star:
        u -= 1
    return u


# --------------------------------------------------------------------------
# Three ways to state a target: EC, sparsity, bits/weight
# --------------------------------------------------------------------------

def ec_from_sparsity(sparsity):
    r"""Expected connections from sparsity: :math:`\mathrm{EC} = 1 - \text{sparsity}`, sparsity in [0, 1)."""
    return _out(1.0 - _in_range(sparsity, "sparsity", 0.0, 1.0, hi_open=True))


def sparsity_from_ec(ec):
    r"""Sparsity from expected connections: :math:`1 - \mathrm{EC}`, EC in (0, 1].

    (For EC below ~1.1e-16 the float result rounds to 1.0.)
    """
    return _out(1.0 - _in_range(ec, "ec", 0.0, 1.0, lo_open=True))


def bits_from_ec(ec):
    r"""Bits/weight of a target EC (Eq. 6-8): :math:`h(\mathrm{EC})` for EC <= 1/2, else 1.

    Eq. 8 inverts h on [0, 1/2] only, so an entropy target can only say "at
    most EC N ones" for EC <= 1/2. A target EC in (1/2, 1] constrains nothing
    beyond what a standard BNN already has (U ~ N/2 ones at 1 bit/weight), so
    its bits are 1.0.
    """
    ec = _in_range(ec, "ec", 0.0, 1.0, lo_open=True)
    return _out(np.where(ec <= 0.5, np.asarray(binary_entropy(np.minimum(ec, 0.5))), 1.0))


def ec_from_bits(bits):
    r"""Expected connections of an entropy target (Eq. 8): :math:`\mathrm{EC} = h^{-1}(h^*) \in (0, 1/2]`.

    ``bits`` must be in (0, 1]: ``bits = 0`` would mean EC = 0 (no connection
    left), which is not a valid target.
    """
    bits = _in_range(bits, "bits", 0.0, 1.0, lo_open=True)
    return _out(np.asarray(inverse_binary_entropy(bits)))


@dataclass(frozen=True)
class SparsityTarget:
    """One sparsity target stated three ways; build it with a ``from_*`` method.

    Attributes
    ----------
    ec : float in (0, 1], expected connections (fraction of ones allowed).
    sparsity : float in [0, 1), ``1 - ec``.
    bits : float in (0, 1], ``bits_from_ec(ec)`` (1.0 when ec > 1/2).

    The value the user gave is stored verbatim; the other two derive from it.
    """

    ec: float
    sparsity: float
    bits: float

    def __post_init__(self):
        _in_range(self.ec, "ec", 0.0, 1.0, lo_open=True)
        # [0, 1], not [0, 1): 1 - ec rounds to 1.0 for ec < 1.1e-16
        _in_range(self.sparsity, "sparsity", 0.0, 1.0)
        _in_range(self.bits, "bits", 0.0, 1.0, lo_open=True)
        if abs(self.ec + self.sparsity - 1.0) > 1e-12 or abs(bits_from_ec(self.ec) - self.bits) > 1e-9:
            raise ValueError(f"inconsistent target {self}; use SparsityTarget.from_ec/from_sparsity/from_bits")

    @classmethod
    def from_ec(cls, ec):
        """Target from expected connections EC in (0, 1]."""
        ec = float(_in_range(ec, "ec", 0.0, 1.0, lo_open=True))
        return cls(ec=ec, sparsity=sparsity_from_ec(ec), bits=bits_from_ec(ec))

    @classmethod
    def from_sparsity(cls, sparsity):
        """Target from sparsity in [0, 1), e.g. 0.95 for 95 % zeros."""
        sparsity = float(_in_range(sparsity, "sparsity", 0.0, 1.0, hi_open=True))
        ec = ec_from_sparsity(sparsity)
        return cls(ec=ec, sparsity=sparsity, bits=bits_from_ec(ec))

    @classmethod
    def from_bits(cls, bits):
        """Target from bits/weight h* in (0, 1] (EC = h^-1(h*) <= 1/2)."""
        bits = float(_in_range(bits, "bits", 0.0, 1.0, lo_open=True))
        ec = ec_from_bits(bits)
        return cls(ec=ec, sparsity=sparsity_from_ec(ec), bits=bits)


# --------------------------------------------------------------------------
# Eq. 11, 16: the sparsity penalty over all binary layers
# --------------------------------------------------------------------------

def _check_weights(weights):
    weights = [np.asarray(w) for w in weights]
    n = sum(w.size for w in weights)
    if n == 0:
        raise ValueError("weights must be a non-empty list of non-empty arrays")
    return weights, n


def ones_of(w, binary=None):
    """The ones of the {0, 1} domain as a bool array: ``w >= 0`` (``sign(w) = +1``).

    Bool arrays, or any array with ``binary=True``, are taken as already
    binary: their non-zeros are the ones.
    """
    w = np.asarray(w)
    if binary is None:
        binary = w.dtype == np.bool_
    return (w != 0) if binary else (w >= 0)


def fraction_of_ones(weights, binary=None):
    r"""Fraction of ones :math:`U/N` over all arrays together (Eq. 3, 11).

    A one is ``sign(w) = +1``, i.e. ``w >= 0`` (see :func:`ones_of`); N is the
    total size. ``weights``: list of arrays of any shapes.
    """
    weights, n = _check_weights(weights)
    return sum(int(np.count_nonzero(ones_of(w, binary))) for w in weights) / n


def fraction_of_ones_per_layer(weights, binary=None):
    """``[fraction_of_ones([w]) for w in weights]``: one float per array (0.0 if empty)."""
    return [int(np.count_nonzero(ones_of(w, binary))) / max(np.size(w), 1) for w in weights]


def sparsity_penalty(weights, ec):
    r"""Sparsity penalty j over all binary layers together, and its gradient (Eq. 16).

    .. math::
        j(\bar{\mathbf W}) = \mathrm{ReLU}\Bigl(\sum_i \frac{\bar w_i + 1}{2N}
                             - \mathrm{EC}\Bigr)

    over the concatenation of all latent weights (N in total), with
    :math:`\bar w = \mathrm{sign}(\tilde w)`. The gradient uses the identity
    straight-through estimator for sign (as the reference code does), and
    ReLU'(0) = 0:

    .. math::
        \frac{\partial j}{\partial \tilde w_i} =
        \begin{cases} 1/(2N) & j > 0 \\ 0 & \text{otherwise.} \end{cases}

    The training loss adds ``lam * j``, so its gradient is ``lam * grads``.

    Parameters
    ----------
    weights : list of arrays (any shapes), the latent weights of every binary layer.
    ec : float in (0, 1], expected connections.

    Returns
    -------
    j : float >= 0.
    ones_fraction : float, U/N.
    grads : list of arrays, same shapes and dtypes as ``weights``.
    """
    ec = float(_in_range(ec, "ec", 0.0, 1.0, lo_open=True))
    weights, n = _check_weights(weights)
    ones_fraction = fraction_of_ones(weights)
    j = max(ones_fraction - ec, 0.0)
    slope = 1.0 / (2 * n) if j > 0 else 0.0
    grads = [np.full(w.shape, slope, dtype=w.dtype) for w in weights]
    return j, ones_fraction, grads


# --------------------------------------------------------------------------
# Eq. 18: the adaptive lambda; Eq. 19: operation ratio
# --------------------------------------------------------------------------

def gamma_lambda(loss, j, gamma, threshold=1e-4):
    r"""The lambda that makes the penalty a fixed share gamma of the loss (Eq. 17-18).

    .. math::
        \gamma = \frac{\lambda j}{\mathcal L_{BNN} + \lambda j}
        \;\Longrightarrow\;
        \lambda = \frac{\gamma\,\mathcal L_{BNN}}{(1 - \gamma)\,j}
        \quad \text{if } j > \text{threshold, else } 0.

    lambda is a plain number: no gradient flows through it. The reference
    code uses ``threshold = 1e-4``.

    Parameters
    ----------
    loss : float >= 0, finite, the BNN loss L_BNN of this iteration.
    j : float >= 0, the penalty of Eq. 16.
    gamma : float in [0, 1).
    threshold : float >= 0.

    Returns
    -------
    lam : float >= 0.
    """
    gamma = float(_in_range(gamma, "gamma", 0.0, 1.0, hi_open=True))
    loss = float(_in_range(loss, "loss", 0.0, math.inf, hi_open=True))
    j = float(_in_range(j, "j", 0.0, math.inf, hi_open=True))
    threshold = float(_in_range(threshold, "threshold", 0.0, math.inf, hi_open=True))
    if j <= threshold:
        return 0.0
    return gamma * loss / ((1.0 - gamma) * j)


def bop_ratio_bnn_over_sbnn(ec):
    r"""Binary-operation gain of an SBNN layer over a BNN layer (Eq. 19, corrected).

    .. math::
        \frac{\mathcal O_{BNN}}{\mathcal O_{SBNN}} \approx
        \frac{2N}{\mathrm{EC}\cdot N} = \frac{2}{\mathrm{EC}}

    The paper prints the ratio upside down (O_SBNN / O_BNN); see docs/errata.md.
    EC in (0, 1].
    """
    ec = _in_range(ec, "ec", 0.0, 1.0, lo_open=True)
    with np.errstate(over="ignore"):  # inf for subnormal EC, honestly
        return _out(2.0 / ec)
