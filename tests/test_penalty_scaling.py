"""The penalty's share between domains: ``fit(penalty_scaling=...)`` and the ``push`` diagnostic."""

import numpy as np
import pytest

import pysbnn
from pysbnn import BatchNorm2d, BinaryConv2d, Sequential
from pysbnn.train import PENALTY_SCALINGS, _apply_penalty, binary_layers, penalty_push, penalty_scale


def two_layer_net(domain):
    return Sequential([BinaryConv2d(1, 4, 3, padding=1, domain=domain, binarize_input=False, rng=0,
                                    init_scale=0.1),
                       BatchNorm2d(4),
                       BinaryConv2d(4, 4, 3, padding=1, domain=domain, rng=1, init_scale=0.1)])


@pytest.mark.parametrize("domain", ["sym", "alpha_beta", "learned", "zero_one"])
def test_scales_are_one_or_the_layers_tau(domain):
    model = two_layer_net(domain)
    for _, layer in binary_layers(model):
        assert penalty_scale(layer, "none") == 1.0
        assert penalty_scale(layer, "tau") == abs(layer.tau_phi()[0])
    with pytest.raises(ValueError, match="penalty_scaling"):
        penalty_scale(layer, "rms")
    assert PENALTY_SCALINGS == ("none", "tau")


@pytest.mark.parametrize("scaling", PENALTY_SCALINGS)
def test_apply_penalty_adds_lambda_times_scale_over_2n(scaling):
    model = two_layer_net("sym")
    layers = [l for _, l in binary_layers(model)]
    rng = np.random.default_rng(0)
    data = [rng.standard_normal(l.params["weight"].shape).astype(np.float32) for l in layers]
    for l, g in zip(layers, data):
        l.grads["weight"] = g.copy()
    n = sum(l.params["weight"].size for l in layers)
    lam, push = _apply_penalty(model, 1.0, 0.05, 0.5, 1e-4, scaling)
    ones = np.mean(np.concatenate([(l.params["weight"] >= 0).ravel() for l in layers]))
    assert lam == pytest.approx(0.5 * 1.0 / (0.5 * (ones - 0.05)))
    pushes = []
    for l, g in zip(layers, data):
        s = 1.0 if scaling == "none" else l.tau_phi()[0]
        np.testing.assert_allclose(l.grads["weight"] - g, lam * s / (2 * n), rtol=1e-3, atol=1e-6)
        pushes.append(lam * s / (2 * n) / np.sqrt(np.mean(g.astype(np.float64) ** 2)))
    assert push == pytest.approx(np.median(pushes), rel=1e-6)


def test_penalty_push_is_the_median_ratio_and_skips_empty_gradients():
    assert penalty_push([1.0, 2.0, 3.0], [np.full(4, 2.0), np.full(2, 1.0), np.zeros(3)]) == 1.25
    assert penalty_push([1.0], [np.zeros(3)]) == 0.0


def data_gradient(domain, tau=None, phi=None):
    """Latent-weight gradient of BinaryConv2d -> BatchNorm2d on fixed +-1 inputs, float64."""
    unit = Sequential([BinaryConv2d(3, 4, 3, padding=1, domain=domain, rng=0, init_scale=0.1,
                                    weight_quantizer="identity"), BatchNorm2d(4)]).astype(np.float64)
    conv = unit.layers[0]
    if tau is not None:
        conv.params["tau"][:], conv.params["phi"][:] = tau, phi
    rng = np.random.default_rng(1)
    x = np.sign(rng.standard_normal((8, 6, 6, 3)))
    out = unit.forward(x, training=True)
    unit.backward(np.cos(3 * out) * rng.standard_normal(out.shape))
    return conv.grads["weight"]


def close(a, b, tol=1e-3):
    return np.linalg.norm(a - b) <= tol * np.linalg.norm(b)


def test_batchnorm_makes_the_latent_data_gradient_independent_of_tau():
    """Why "tau" is not the default: with BN after the conv, dL/dw_q ~ 1/tau cancels the tau
    of the STE path, so sym (tau = mean|w| ~ 0.05) and learned (tau = 1) get the same data
    gradient for the same sign pattern (up to BN's eps, which matters once the output's
    variance nears it: tau < 0.01 here)."""
    ref = data_gradient("learned", 1.0, 0.0)
    assert close(data_gradient("learned", 0.1, 0.0), ref)
    assert close(data_gradient({"name": "sym", "grad": "ste"}), ref)
    # the offset phi/tau is what changes it: the same ratio gives the same gradient
    assert close(data_gradient("learned", 0.1, 0.05), data_gradient("learned", 1.0, 0.5))
    assert not close(data_gradient("learned", 1.0, 0.5), ref, tol=0.05)


def test_fit_records_push_and_checks_the_option():
    model = pysbnn.binary_mlp((16, 8, 3), domain="sym", seed=1, normalize=False)
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    y = np.arange(64) % 3
    hist = pysbnn.fit(model, x, y, epochs=1, batch_size=16, target_ec=0.05, gamma=0.5,
                      penalty_scaling="tau", verbose=False)
    assert hist[0]["push"] > 0
    with pytest.raises(ValueError, match="penalty_scaling"):
        pysbnn.fit(model, x, y, epochs=1, batch_size=16, penalty_scaling="yes", verbose=False)


def test_with_batchnorm_the_exact_sym_term_vanishes_and_alpha_betas_dominates():
    """BN makes the loss invariant to the scale beta, so sum_i w_q,i dL/dw_q,i = 0 (Euler) and
    sym's exact term (that sum over N beta) is 0: exact = ste. Eq. 15's alpha* alone is not
    a scale: its exact term (a group mean of dL/dw_q, ~ 1/tau, one value for a whole sign
    group) is as large as the STE term (~ tau) here, at tau ~ 0.05."""
    assert close(data_gradient({"name": "sym", "grad": "exact"}), data_gradient({"name": "sym", "grad": "ste"}))
    exact = data_gradient({"name": "alpha_beta", "grad": "exact"})
    ste = data_gradient({"name": "alpha_beta", "grad": "ste"})
    assert np.linalg.norm(exact - ste) > 0.5 * np.linalg.norm(ste)
