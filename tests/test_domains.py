"""Binary domains: Eq. 15 optimality, Eq. 4-5 maps, and the four domains' gradients."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysbnn.domains import DOMAINS, AlphaBeta, Learned, Sym, ZeroOne, domain_backward, domain_forward, get_domain
from pysbnn.levels import (
    QuantResult,
    alpha_beta_to_tau_phi,
    alpha_beta_to_xi_eta,
    optimal_tau_phi,
    quantization_error_gradient,
    tau_phi_to_alpha_beta,
    tau_phi_to_xi_eta,
    xi_eta_to_alpha_beta,
    xi_eta_to_tau_phi,
)
from pysbnn.quantizers import EDE, get_quantizer, sign
from strategies import finite_floats, mixed_sign_weights, one_sided_weights, weight_arrays


def quant_error(w, tau, phi):
    return np.mean((w - (tau * sign(w) + phi)) ** 2)


# ---------------------------------------------------------------- Eq. 12-15

@given(mixed_sign_weights())
def test_eq15_equals_least_squares(w):
    res = optimal_tau_phi(w)
    scale = np.max(np.abs(w))
    A = np.stack([sign(w), np.ones_like(w)], axis=1)
    (tau_ls, phi_ls), *_ = np.linalg.lstsq(A, w, rcond=None)
    assert res.tau == pytest.approx(tau_ls, abs=1e-9 * scale)
    assert res.phi == pytest.approx(phi_ls, abs=1e-9 * scale)
    # the same solution in closed form: each level is the mean of its group
    assert res.beta == pytest.approx(w[w >= 0].mean(), abs=1e-12 * scale)
    assert res.alpha == pytest.approx(w[w < 0].mean(), abs=1e-12 * scale)
    assert res.tau > 0 and res.alpha < res.beta
    assert res.p == np.mean(w >= 0)
    assert res.error == pytest.approx(quant_error(w, res.tau, res.phi), rel=1e-9, abs=1e-24 * scale**2)


@given(mixed_sign_weights(), st.lists(st.tuples(finite_floats(-1, 1), finite_floats(-1, 1)),
                                      min_size=1, max_size=10))
def test_eq15_no_perturbation_does_better(w, deltas):
    res = optimal_tau_phi(w)
    scale = np.max(np.abs(w))
    for d_tau, d_phi in deltas:
        for size in (1e-6, 1e-2, 1.0):
            other = quant_error(w, res.tau + size * scale * d_tau, res.phi + size * scale * d_phi)
            assert other >= res.error - 1e-12 * scale**2


@settings(max_examples=50, deadline=None)
@given(weight_arrays(), finite_floats(-3, 3), finite_floats(-3, 3))
def test_eq13_gradient_by_finite_differences(w, tau, phi):
    """Eq. 13 is the gradient of L_B = ||w - (tau wbar + phi)||^2 in (tau, phi)."""
    w = w / max(1.0, float(np.max(np.abs(w))))          # keep L_B of order N
    loss = lambda t, f: float(np.sum((w - (t * sign(w) + f)) ** 2))
    d_tau, d_phi = quantization_error_gradient(w, tau, phi)
    h = 1e-6
    # L_B is a quadratic in (tau, phi): central differences are exact up to rounding
    assert d_tau == pytest.approx((loss(tau + h, phi) - loss(tau - h, phi)) / (2 * h), rel=1e-5, abs=1e-4)
    assert d_phi == pytest.approx((loss(tau, phi + h) - loss(tau, phi - h)) / (2 * h), rel=1e-5, abs=1e-4)


@given(mixed_sign_weights())
def test_eq13_gradient_vanishes_at_eq15(w):
    res = optimal_tau_phi(w)
    scale = float(np.max(np.abs(w)))
    d_tau, d_phi = quantization_error_gradient(w / scale, res.tau / scale, res.phi / scale)
    assert abs(d_tau) <= 1e-9 * w.size and abs(d_phi) <= 1e-9 * w.size


@given(st.integers(1, 30), st.data())
def test_p_half_gives_xnor_values(half, data):
    pos = data.draw(st.lists(finite_floats(0, 100), min_size=half, max_size=half))
    neg = data.draw(st.lists(finite_floats(-100, -1e-3), min_size=half, max_size=half))
    w = np.array(pos + neg)
    res = optimal_tau_phi(w)
    assert res.p == 0.5
    assert res.tau == pytest.approx(np.mean(np.abs(w)), rel=1e-12, abs=1e-12)
    assert res.phi == pytest.approx(np.mean(w), abs=1e-12 * np.max(np.abs(w)))


@given(one_sided_weights())
def test_degenerate_p_is_finite_and_optimal(w):
    res = optimal_tau_phi(w)
    assert all(np.isfinite(v) for v in res)
    assert res.p in (0.0, 1.0)
    c = 2 * res.p - 1
    scale = np.max(np.abs(w))
    # the one level used is mean(w), so the error is the minimum, var(w)
    assert res.phi + c * res.tau == pytest.approx(np.mean(w), abs=1e-12 * scale)
    assert res.error == pytest.approx(np.var(w), rel=1e-9, abs=1e-24 * scale**2)
    # the documented spread rule
    assert res.tau == pytest.approx(np.mean(np.abs(w - np.mean(w))), rel=1e-9, abs=1e-300)
    assert res.tau >= 0


def test_degenerate_all_zero_and_constant():
    assert optimal_tau_phi(np.zeros(5)) == QuantResult(0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    res = optimal_tau_phi(np.full(4, -2.5))
    assert (res.tau, res.phi, res.p, res.error) == (0.0, -2.5, 0.0, 0.0)


def test_ones_are_counted_as_w_greater_or_equal_zero():
    # with p counted as w > 0 the zero would be a "minus one" and beta would be 2
    res = optimal_tau_phi(np.array([0.0, 2.0, -1.0, -3.0]))
    assert res.p == 0.5
    assert (res.alpha, res.beta) == (-2.0, 1.0)


def test_extreme_magnitudes_do_not_overflow():
    w = np.array([1e300, -1e300, 3e299, -2e-300])
    res = optimal_tau_phi(w)
    assert np.isfinite(res.tau) and np.isfinite(res.phi)
    assert res.beta == pytest.approx(w[w >= 0].mean(), rel=1e-12)
    assert res.alpha == pytest.approx(w[w < 0].mean(), rel=1e-12)


@given(weight_arrays())
def test_any_shape_is_flattened(w):
    assert optimal_tau_phi(w) == optimal_tau_phi(w.ravel())


@pytest.mark.parametrize("w", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf, 1.0])])
def test_optimal_tau_phi_rejects_bad_input(w):
    with pytest.raises(ValueError, match=r"\bw\b"):
        optimal_tau_phi(w)


# ---------------------------------------------------------------- Eq. 4-5 maps

def test_standard_bnn_in_all_three_forms():
    assert tau_phi_to_alpha_beta(1.0, 0.0) == (-1.0, 1.0)
    assert tau_phi_to_xi_eta(1.0, 0.0) == (-0.5, 2.0)
    assert xi_eta_to_alpha_beta(-0.5, 2.0) == (-1.0, 1.0)
    assert alpha_beta_to_xi_eta(-1.0, 1.0) == (-0.5, 2.0)
    assert xi_eta_to_tau_phi(-0.5, 2.0) == (1.0, 0.0)
    assert alpha_beta_to_tau_phi(-1.0, 1.0) == (1.0, 0.0)


nonzero = finite_floats(-1e3, 1e3).filter(lambda x: abs(x) > 1e-3)


@given(nonzero, finite_floats(-1e3, 1e3))
def test_maps_round_trip(tau, phi):
    alpha, beta = tau_phi_to_alpha_beta(tau, phi)
    xi, eta = tau_phi_to_xi_eta(tau, phi)
    # alpha, beta -> xi loses |phi/tau| * eps to cancellation (up to 1e6 * eps here)
    tol = dict(rel=1e-9, abs=1e-9)
    assert alpha_beta_to_tau_phi(alpha, beta) == pytest.approx((tau, phi), **tol)
    assert xi_eta_to_tau_phi(xi, eta) == pytest.approx((tau, phi), **tol)
    assert xi_eta_to_alpha_beta(xi, eta) == pytest.approx((alpha, beta), **tol)
    assert alpha_beta_to_xi_eta(alpha, beta) == pytest.approx((xi, eta), **tol)
    # Eq. 4: (w01 + xi) * eta is tau*wbar + phi for w01 = (wbar + 1)/2
    for wbar in (-1, 1):
        assert ((wbar + 1) / 2 + xi) * eta == pytest.approx(tau * wbar + phi, **tol)


def test_maps_work_on_arrays():
    tau, phi = np.array([1.0, 0.5]), np.array([0.0, 0.5])
    xi, eta = tau_phi_to_xi_eta(tau, phi)
    np.testing.assert_array_equal(xi, [-0.5, 0.0])
    np.testing.assert_array_equal(eta, [2.0, 1.0])


def test_maps_reject_collapsed_domain():
    with pytest.raises(ValueError, match="tau"):
        tau_phi_to_xi_eta(0.0, 1.0)
    with pytest.raises(ValueError, match="alpha and beta"):
        alpha_beta_to_xi_eta(2.0, 2.0)


# ---------------------------------------------------------------- the four domains

QUANTIZER_SPECS = ["clipped", "identity", {"name": "ede", "epoch": 3, "epochs": 10}]


def nonlinear_loss(w_q, G):
    """A scalar loss with a non-constant upstream gradient dL/dw_q = G*cos(w_q)."""
    return np.sum(G * np.sin(w_q))


def away_from_zero(rng, shape, low=0.05, high=1.5):
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


@pytest.mark.parametrize("quantizer", QUANTIZER_SPECS)
@pytest.mark.parametrize("seed", range(3))
def test_learned_tau_phi_gradients_by_finite_differences(quantizer, seed):
    rng = np.random.default_rng(seed)
    w = away_from_zero(rng, (4, 3, 3, 3))
    G = rng.standard_normal(w.shape)
    tau, phi = np.array([rng.uniform(0.3, 2.0)]), np.array([rng.uniform(-1, 1)])
    w_q, cache = domain_forward("learned", w, tau, phi, quantizer=quantizer)
    dw, dtau, dphi = domain_backward(G * np.cos(w_q), cache)

    def loss(t, f):
        return nonlinear_loss(domain_forward("learned", w, t, f, quantizer=quantizer)[0], G)

    eps = 1e-6
    num_dtau = (loss(tau + eps, phi) - loss(tau - eps, phi)) / (2 * eps)
    num_dphi = (loss(tau, phi + eps) - loss(tau, phi - eps)) / (2 * eps)
    np.testing.assert_allclose(dtau, num_dtau, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dphi, num_dphi, rtol=1e-7, atol=1e-9)
    assert dtau.shape == tau.shape and dphi.shape == phi.shape
    # w: STE for sign, scaled by tau
    ste = get_quantizer(quantizer).grad(w)
    np.testing.assert_allclose(dw, G * np.cos(w_q) * tau[0] * ste, rtol=1e-14)


@given(weight_arrays(max_abs=3.0), finite_floats(-3, 3), finite_floats(-3, 3))
def test_learned_forward_values(w, tau, phi):
    w_q, _ = domain_forward("learned", w, tau, phi)
    np.testing.assert_array_equal(w_q, np.where(w >= 0, phi + tau, phi - tau))


def test_learned_grads_keep_param_shape_and_dtype():
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    params = Learned().init_params(np.float32)
    assert params["tau"].shape == (1,) and params["tau"][0] == 1 and params["phi"][0] == 0
    w_q, cache = domain_forward("learned", w, params["tau"], params["phi"])
    assert w_q.dtype == np.float32
    np.testing.assert_array_equal(w_q, sign(w))  # init = standard BNN
    dw, dtau, dphi = domain_backward(np.ones_like(w), cache)
    assert dw.dtype == dtau.dtype == dphi.dtype == np.float32
    assert dtau.shape == dphi.shape == (1,)
    assert dphi[0] == 12 and dtau[0] == np.sum(sign(w))
    _, cache = domain_forward("learned", w, 1.0, 0.0)
    _, dtau, dphi = domain_backward(np.ones_like(w), cache)
    assert dtau.shape == () and dphi.shape == ()


@pytest.mark.parametrize("quantizer", QUANTIZER_SPECS)
@pytest.mark.parametrize("seed", range(3))
def test_sym_forward_and_exact_gradient_through_beta(quantizer, seed):
    rng = np.random.default_rng(seed)
    w = away_from_zero(rng, (5, 7))
    G = rng.standard_normal(w.shape)
    w_q, cache = domain_forward("sym", w, quantizer=quantizer)
    beta = np.mean(np.abs(w))
    np.testing.assert_allclose(w_q, beta * sign(w), rtol=1e-15)
    dw_q = G * np.cos(w_q)
    dw, dtau, dphi = domain_backward(dw_q, cache)
    assert dtau is None and dphi is None
    # the term through beta = mean|w| is exact: finite-difference it with sign frozen
    wbar = sign(w)

    def loss_through_beta(v):
        return nonlinear_loss(np.mean(np.abs(v)) * wbar, G)

    num = np.zeros_like(w)
    eps = 1e-6
    for i in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[i] = eps
        num[i] = (loss_through_beta(w + e) - loss_through_beta(w - e)) / (2 * eps)
    ste = get_quantizer(quantizer).grad(w)
    np.testing.assert_allclose(dw, dw_q * beta * ste + num, rtol=1e-6, atol=1e-9)
    # and the documented closed form of that term
    closed = np.sum(dw_q * wbar) * wbar / w.size
    np.testing.assert_allclose(dw, dw_q * beta * ste + closed, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("quantizer", QUANTIZER_SPECS)
def test_alpha_beta_forward_is_eq15_and_gradient_stops_at_tau_phi(quantizer):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 5)) + 0.3
    w_q, cache = domain_forward("alpha_beta", w, quantizer=quantizer)
    res = optimal_tau_phi(w)
    np.testing.assert_allclose(w_q, np.where(w >= 0, res.beta, res.alpha), rtol=1e-15)
    # the two levels are the group means
    np.testing.assert_allclose(np.unique(w_q), [w[w < 0].mean(), w[w >= 0].mean()], rtol=1e-12)
    G = rng.standard_normal(w.shape)
    dw, dtau, dphi = domain_backward(G, cache)
    assert dtau is None and dphi is None
    np.testing.assert_allclose(dw, G * res.tau * get_quantizer(quantizer).grad(w), rtol=1e-15)


@pytest.mark.parametrize("quantizer", QUANTIZER_SPECS)
def test_zero_one_forward_and_gradient(quantizer):
    rng = np.random.default_rng(3)
    w = rng.uniform(-2, 2, (3, 2, 3, 3)).astype(np.float32)
    w[0, 0, 0, 0] = 0.0
    w_q, cache = domain_forward("zero_one", w, quantizer=quantizer)
    assert w_q.dtype == np.float32
    np.testing.assert_array_equal(w_q, (w >= 0).astype(np.float32))
    assert w_q[0, 0, 0, 0] == 1.0
    G = rng.standard_normal(w.shape).astype(np.float32)
    dw, _, _ = domain_backward(G, cache)
    assert dw.dtype == np.float32
    np.testing.assert_allclose(dw, 0.5 * G * get_quantizer(quantizer).grad(w), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_forward_equals_reported_tau_phi(name):
    rng = np.random.default_rng(11)
    w = rng.standard_normal((8, 4))
    params = {"tau": 0.7, "phi": -0.2} if get_domain(name).trainable else {}
    domain = get_domain(name)
    w_q, _ = domain_forward(name, w, **params)
    tau, phi = domain.tau_phi(w, **params)
    np.testing.assert_allclose(w_q, tau * sign(w) + phi, rtol=1e-14)
    xi, eta = domain.xi_eta(w, **params)
    np.testing.assert_allclose(w_q, ((sign(w) + 1) / 2 + xi) * eta, rtol=1e-12, atol=1e-15)


def test_domain_xi_eta_of_known_domains():
    w = np.array([0.5, -0.5, 1.0, -1.0])
    assert Learned().xi_eta(w, 1.0, 0.0) == (-0.5, 2.0)
    assert ZeroOne().xi_eta(w) == (0.0, 1.0)
    assert Sym().xi_eta(w) == (-0.5, 1.5)  # beta = 0.75


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_forward_accepts_quantizer_object_and_ede_state_is_used(name):
    w = np.array([-1.0, -0.2, 0.0, 0.3, 2.0])
    params = {"tau": 1.0, "phi": 0.0} if get_domain(name).trainable else {}
    grads = []
    for epoch in (0, 10):
        _, cache = domain_forward(name, w, quantizer=EDE(epoch, 10), **params)
        grads.append(domain_backward(np.ones_like(w), cache)[0])
    assert not np.allclose(grads[0], grads[1])


def test_get_domain():
    assert isinstance(get_domain("sym"), Sym)
    assert isinstance(get_domain({"name": "alpha_beta"}), AlphaBeta)
    d = ZeroOne()
    assert get_domain(d) is d
    assert get_domain(d.get_config()).name == "zero_one"
    with pytest.raises(ValueError, match="allowed names.*alpha_beta.*learned.*sym.*zero_one"):
        get_domain("ternary")


def test_domain_input_errors():
    w = np.ones((2, 2))
    with pytest.raises(ValueError, match="tau"):
        domain_forward("learned", w, phi=0.0)
    with pytest.raises(ValueError, match="phi"):
        domain_forward("learned", w, tau=1.0)
    with pytest.raises(ValueError, match="tau"):
        domain_forward("learned", w, tau=np.ones(2), phi=0.0)
    with pytest.raises(ValueError, match="tau"):
        domain_forward("learned", w, tau=np.nan, phi=0.0)
    with pytest.raises(ValueError, match="tau"):
        domain_forward("sym", w, tau=1.0)
    _, cache = domain_forward("sym", w)
    with pytest.raises(ValueError, match="dw_q"):
        domain_backward(np.ones(4), cache)


@settings(max_examples=50)
@given(weight_arrays(dtype=np.float32, max_abs=4.0))
def test_all_domains_keep_shape_and_dtype(w):
    for name, cls in DOMAINS.items():
        params = {"tau": np.float32(1.0), "phi": np.float32(0.0)} if cls.trainable else {}
        w_q, cache = domain_forward(name, w, **params)
        dw = domain_backward(np.ones_like(w), cache)[0]
        assert w_q.shape == dw.shape == w.shape
        assert w_q.dtype == dw.dtype == np.float32
        assert np.all(np.isfinite(w_q)) and np.all(np.isfinite(dw))
