"""Gradient treatments of the computed domains (``grad="exact"`` / ``"ste"``).

The exact treatments are finite-difference checked in float64; the
straight-through ones cannot be (they drop a real term on purpose) and are
tested against their formulas, including ``w = 0`` and the clip edges.
"""

import numpy as np
import pytest

from pysbnn import BinaryConv2d, Sequential, load_model, save_model
from pysbnn.domains import GRADS, AlphaBeta, Sym, domain_backward, domain_forward, get_domain
from pysbnn.levels import optimal_tau_phi
from pysbnn.quantizers import get_quantizer, sign
from pysbnn.testing import check_layer_gradients, directional_check

COMPUTED = ("sym", "alpha_beta")
QUANTIZERS = ["clipped", "identity", {"name": "ede", "epoch": 3, "epochs": 10}]


def loss_of(w_q, G):
    """A scalar loss with a non-constant upstream gradient ``G * cos(w_q)``."""
    return float(np.sum(G * np.sin(w_q)))


def beyond_clip(rng, shape, signs=(-1.0, 1.0)):
    """Weights with 1 < |w| < 1.5: the clipped STE is 0 there and sign is locally constant,
    so an exact backward must equal the true derivative of the forward."""
    return rng.uniform(1.05, 1.45, shape) * rng.choice(signs, shape)


def numeric_grad(f, w, eps=1e-6):
    out = np.zeros_like(w)
    for i in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[i] = eps
        out[i] = (f(w + e) - f(w - e)) / (2 * eps)
    return out


def test_defaults_are_todays_behaviour():
    assert Sym().grad == "exact" and AlphaBeta().grad == "ste"
    assert get_domain("sym").get_config() == {"name": "sym", "grad": "exact"}
    assert get_domain("alpha_beta").get_config() == {"name": "alpha_beta", "grad": "ste"}
    for name in COMPUTED:
        for grad in GRADS:
            d = get_domain({"name": name, "grad": grad})
            assert get_domain(d.get_config()).get_config() == d.get_config() == {"name": name, "grad": grad}


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="grad must be one of"):
        get_domain({"name": "sym", "grad": "approx"})
    with pytest.raises(ValueError, match="takes no options"):
        get_domain({"name": "learned", "grad": "exact"})


@pytest.mark.parametrize("signs", [(-1.0, 1.0), (1.0,), (-1.0,)], ids=["mixed", "all_ones", "all_zeros"])
@pytest.mark.parametrize("name", COMPUTED)
@pytest.mark.parametrize("seed", range(3))
def test_exact_equals_the_true_derivative_where_the_ste_is_zero(name, seed, signs):
    """|w| > 1 and the clipped STE: the whole exact gradient is a finite difference.
    ``all_ones``/``all_zeros`` are the degenerate p in {1, 0} of Eq. 15."""
    rng = np.random.default_rng(seed)
    w = beyond_clip(rng, (4, 3, 3, 3), signs)
    G = rng.standard_normal(w.shape)
    domain = {"name": name, "grad": "exact"}
    w_q, cache = domain_forward(domain, w, quantizer="clipped")
    dw, _, _ = domain_backward(G * np.cos(w_q), cache)
    num = numeric_grad(lambda v: loss_of(domain_forward(domain, v, quantizer="clipped")[0], G), w)
    np.testing.assert_allclose(dw, num, rtol=1e-6, atol=1e-8)
    # the straight-through treatment has no gradient at all here
    _, cache = domain_forward({"name": name, "grad": "ste"}, w, quantizer="clipped")
    assert not np.any(domain_backward(G * np.cos(w_q), cache)[0])


@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("name", COMPUTED)
def test_exact_level_term_by_directional_finite_differences(name, quantizer):
    """Any STE: exact - STE term = the derivative through the levels with sign frozen."""
    rng = np.random.default_rng(5)
    w = rng.uniform(0.05, 1.4, (6, 5)) * rng.choice([-1.0, 1.0], (6, 5))
    G = rng.standard_normal(w.shape)
    domain = get_domain({"name": name, "grad": "exact"})
    w_q, cache = domain.forward(w, quantizer=quantizer)
    dw_q = G * np.cos(w_q)
    dw, _, _ = domain.backward(dw_q, cache)
    tau = domain.tau_phi(w)[0]
    ste_term = dw_q * tau * get_quantizer(quantizer).grad(w)
    wbar = sign(w)

    def frozen(args):
        tau_v, phi_v = domain.tau_phi(args[0])
        return loss_of(tau_v * wbar + phi_v, G)

    for seed in range(4):
        analytic, numeric = directional_check(frozen, [w.copy()], [dw - ste_term], rng=seed)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_alpha_beta_exact_term_is_the_group_mean():
    w = np.array([0.0, 0.4, -0.2, -0.6, 1.2, -0.1])
    g = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 5.0])
    _, cache = domain_forward({"name": "alpha_beta", "grad": "exact"}, w, quantizer="identity")
    dw, _, _ = domain_backward(g, cache)
    tau = optimal_tau_phi(w).tau
    pos = w >= 0                                        # w = 0 is a one (sign(0) = +1)
    group = np.where(pos, g[pos].mean(), g[~pos].mean())
    np.testing.assert_allclose(dw, g * tau + group, rtol=1e-14)


@pytest.mark.parametrize("quantizer", ["clipped", "identity", {"name": "ede", "epoch": 0, "epochs": 4}])
def test_ste_treatments_follow_their_formulas(quantizer):
    """``dw = dL/dw_q * level * ste'(w)``, at w = 0 and at the clip edges +-1 too."""
    w = np.array([[0.0, -0.0, 1.0, -1.0, 1.0 + 1e-9, -1.0 - 1e-9, 0.3, -0.7]])
    g = np.linspace(-1, 2, w.size).reshape(w.shape)
    ste = get_quantizer(quantizer).grad(w)
    if quantizer == "clipped":
        np.testing.assert_array_equal(ste, [[1, 1, 1, 1, 0, 0, 1, 1]])
    for name, level in (("sym", np.mean(np.abs(w))), ("alpha_beta", optimal_tau_phi(w).tau)):
        _, cache = domain_forward({"name": name, "grad": "ste"}, w, quantizer=quantizer)
        dw, dtau, dphi = domain_backward(g, cache)
        assert dtau is None and dphi is None
        np.testing.assert_allclose(dw, g * level * ste, rtol=1e-14, atol=0)


def test_sym_exact_adds_the_beta_term():
    w = np.array([0.0, 0.5, -1.5, 2.0])
    g = np.array([1.0, -2.0, 0.5, 3.0])
    _, exact = domain_forward("sym", w, quantizer="identity")
    _, ste = domain_forward({"name": "sym", "grad": "ste"}, w, quantizer="identity")
    diff = domain_backward(g, exact)[0] - domain_backward(g, ste)[0]
    np.testing.assert_allclose(diff, np.sum(g * sign(w)) * sign(w) / w.size, rtol=1e-14)


@pytest.mark.parametrize("name", COMPUTED)
def test_layer_gradient_check_with_the_exact_treatment(name):
    """A whole BinaryConv2d (input and weights) passes the float64 check when the STE is 0."""
    layer = BinaryConv2d(2, 3, 3, padding=1, domain={"name": name, "grad": "exact"},
                         binarize_input=False, weight_quantizer="clipped", rng=0).astype(np.float64)
    layer.params["weight"][...] = beyond_clip(np.random.default_rng(1), layer.params["weight"].shape)
    x = np.random.default_rng(2).standard_normal((2, 5, 5, 2))
    for seed in range(3):
        check_layer_gradients(layer, x, rng=seed, rtol=1e-6, atol=1e-9)
    ste_layer = BinaryConv2d(2, 3, 3, padding=1, domain={"name": name, "grad": "ste"},
                             binarize_input=False, weight_quantizer="clipped", rng=0).astype(np.float64)
    ste_layer.params["weight"][...] = layer.params["weight"]
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_layer_gradients(ste_layer, x, rng=0, wrt_input=False)


@pytest.mark.parametrize("spec", [{"name": "sym", "grad": "ste"}, {"name": "alpha_beta", "grad": "exact"},
                                  "sym", "alpha_beta"])
def test_the_treatment_travels_with_the_saved_layer(tmp_path, spec):
    model = Sequential([BinaryConv2d(1, 2, 3, padding=1, domain=spec, binarize_input=False, rng=0)])
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    want = get_domain(spec).get_config()
    assert loaded.layers[0].domain.get_config() == want
    assert loaded.layers[0].get_config()["domain"] == want
    assert repr(loaded) == repr(model)


def test_a_layer_config_with_a_bare_domain_name_still_loads():
    """Models saved before the option existed stored ``domain="alpha_beta"``."""
    layer = BinaryConv2d(**dict(BinaryConv2d(1, 2, 3, rng=0).get_config(), domain="alpha_beta"))
    assert layer.domain.grad == "ste"
