"""Binary layers: forward in each domain, gradients (finite differences where
they exist, the STE formula where they do not), initialisations, the penalty
inside fit (the gamma rule), save/load."""

import numpy as np
import pytest

import pysbnn
from pysbnn import functional as F
from pysbnn.quantizers import sign
from pysbnn.testing import check_layer_gradients

DOMAINS = ["sym", "alpha_beta", "learned", "zero_one"]


def dense(domain, binarize_input=True, **kw):
    layer = pysbnn.BinaryDense(6, 4, domain=domain, binarize_input=binarize_input, rng=0, **kw)
    if domain == "learned":                    # move away from the (1, 0) init
        layer.params["tau"][:] = 0.7
        layer.params["phi"][:] = -0.2
    return layer


@pytest.mark.parametrize("domain", DOMAINS)
def test_forward_uses_the_domain_weights(domain):
    layer = dense(domain).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((3, 6))
    w = layer.params["weight"]
    tau, phi = layer.tau_phi()
    w_q = tau * sign(w) + phi
    np.testing.assert_allclose(layer.forward(x), sign(x) @ w_q.T, rtol=1e-12, atol=1e-12)
    xi, eta = layer.xi_eta()
    np.testing.assert_allclose((layer.ones() + xi) * eta, w_q, rtol=1e-12)   # Eq. 4


def test_first_layer_keeps_real_input():
    layer = dense("learned", binarize_input=False).astype(np.float64)
    x = np.random.default_rng(2).standard_normal((3, 6))
    w_q = layer.params["tau"] * sign(layer.params["weight"]) + layer.params["phi"]
    np.testing.assert_allclose(layer.forward(x), x @ w_q.T, rtol=1e-12)


@pytest.mark.parametrize("conv", [False, True])
def test_learned_tau_phi_and_real_input_gradients_by_finite_differences(conv):
    if conv:
        layer = pysbnn.BinaryConv2d(3, 4, 3, stride=2, padding=1, binarize_input=False, rng=0)
        x = np.random.default_rng(3).standard_normal((2, 5, 5, 3))
    else:
        layer = dense("learned", binarize_input=False)
        x = np.random.default_rng(3).standard_normal((5, 6))
    layer.params["tau"][:] = 0.6
    layer.params["phi"][:] = 0.3
    names = [n for n, _ in layer.named_parameters() if n != "weight"]
    assert names == ["tau", "phi"]
    check_layer_gradients(layer, x, params=names, wrt_input=True, rng=4)


@pytest.mark.parametrize("conv", [False, True])
def test_ste_gradients_match_their_formula(conv):
    """Latent weights and binarized inputs go through sign: check the STE formula."""
    rng = np.random.default_rng(5)
    if conv:
        layer = pysbnn.BinaryConv2d(2, 3, 3, padding=1, domain="learned", rng=0).astype(np.float64)
        x = rng.standard_normal((2, 4, 4, 2))
        x[0, 0, 0, 0], x[0, 1, 1, 1], x[1, 2, 2, 0] = 1.0, -1.0, 0.0     # the clip edges and 0
    else:
        layer = dense("learned").astype(np.float64)
        x = rng.standard_normal((3, 6)) * 1.5
        x[0, :3] = [1.0, -1.0, 0.0]
    layer.params["tau"][:] = 0.8
    out = layer.forward(x, training=True)
    g = rng.standard_normal(out.shape)
    dx = layer.backward(g)
    w = layer.params["weight"]
    w_q = 0.8 * sign(w) + layer.params["phi"]
    if conv:
        _, cache = F.conv2d_forward(sign(x), w_q, None, 1, 1)
        dxb, dwq, _ = F.conv2d_backward(g, cache)
    else:
        dxb, dwq = g @ w_q, g.T @ sign(x)
    clip = lambda v: (np.abs(v) <= 1).astype(float)                   # noqa: E731
    np.testing.assert_allclose(dx, dxb * clip(x), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], dwq * 0.8 * clip(w), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["tau"], [(dwq * sign(w)).sum()], rtol=1e-12)
    assert dx.flat[0] != 0 or dxb.flat[0] == 0          # |x| = 1 exactly still passes gradient


def test_inits():
    rng = np.random.default_rng(0)
    usual = pysbnn.BinaryDense(300, 200, rng=rng)
    assert 0.45 < usual.ones().mean() < 0.55
    ones = pysbnn.BinaryDense(300, 200, init="all_ones", rng=rng)
    w = ones.params["weight"]
    assert ones.ones().all() and w.min() >= 0 and w.max() < 1e-3
    empty = pysbnn.BinaryDense(300, 200, init="nearly_empty", init_density=0.02, rng=rng)
    assert 0.015 < empty.ones().mean() < 0.025
    small = pysbnn.BinaryDense(300, 200, init_scale=1e-3, rng=rng)
    assert np.abs(small.params["weight"]).max() <= 1e-3
    with pytest.raises(ValueError, match="init must be one of"):
        pysbnn.BinaryDense(3, 2, init="zeros")
    with pytest.raises(ValueError, match="init_density"):
        pysbnn.BinaryDense(3, 2, init="nearly_empty", init_density=1.5)
    with pytest.raises(ValueError, match="unknown domain"):
        pysbnn.BinaryDense(3, 2, domain="ternary")


def test_clipping_touches_latent_weights_only():
    model = pysbnn.Sequential([dense("learned")])
    layer = model.layers[0]
    layer.params["weight"][:] = 3.0
    layer.params["tau"][:] = 5.0
    pysbnn.clip_latent_weights(model, 1.5)
    assert layer.params["weight"].max() == 1.5 and layer.params["tau"][0] == 5.0


def test_gamma_rule_holds_at_every_step(monkeypatch):
    """Inside fit, lambda * j / (L + lambda * j) equals gamma whenever j > 1e-4."""
    from pysbnn import train
    seen = []
    real = train.entropy.gamma_lambda

    def spy(loss, j, gamma, threshold=1e-4):
        lam = real(loss, j, gamma, threshold)
        seen.append((loss, j, lam))
        return lam

    monkeypatch.setattr(train.entropy, "gamma_lambda", spy)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 4, 4)).astype(np.uint8)
    y = rng.integers(0, 3, 64)
    model = pysbnn.binary_mlp((16, 8, 3), seed=0)
    pysbnn.fit(model, x, y, epochs=2, batch_size=16, target_ec=0.1, gamma=0.3, verbose=False)
    assert len(seen) == 8
    for loss, j, lam in seen:
        assert j > 1e-4
        assert lam * j / (loss + lam * j) == pytest.approx(0.3, abs=1e-9)


def test_binary_model_round_trip(tmp_path):
    model = pysbnn.binary_mlp((16, 8, 3), domain="learned", seed=1)
    x = np.random.default_rng(0).integers(0, 255, (10, 4, 4)).astype(np.uint8)
    model.forward(x, training=True)
    model.layers[1].params["tau"][:] = 0.5
    pysbnn.save_model(model, tmp_path / "b.npz")
    loaded = pysbnn.load_model(tmp_path / "b.npz")
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    assert loaded.layers[1].domain.name == "learned"


def test_xnor_fast_path_equals_blas_bit_for_bit(monkeypatch):
    """The training forward's XNOR-popcount path gives exactly the BLAS result."""
    from pysbnn import binary
    rng = np.random.default_rng(9)
    layer = pysbnn.BinaryDense(200, 96, domain="learned", rng=1)
    layer.params["tau"][:] = 0.37
    layer.params["phi"][:] = -0.11
    x = rng.standard_normal((80, 200)).astype(np.float32)
    monkeypatch.setattr(binary, "XNOR_MIN_MACS", 1)            # force the kernel
    fast = layer.forward(x, training=True)
    monkeypatch.setattr(binary, "XNOR_MIN_MACS", 1 << 62)      # force BLAS
    slow = layer.forward(x, training=True)
    np.testing.assert_array_equal(fast, slow)
    S = binary.binary_product(sign(x), layer.params["weight"])
    np.testing.assert_array_equal(S, sign(x) @ sign(layer.params["weight"]).T)


@pytest.mark.parametrize("domain", DOMAINS)
def test_inference_caches_binarized_weights_until_parameters_change(domain, monkeypatch):
    """The float simulation binarizes once per parameter version: a training
    step, loading, or parameters_changed() after a manual edit refreshes it."""
    model = pysbnn.binary_mlp((16, 70, 65, 3), domain=domain, seed=2)
    x = np.random.default_rng(0).integers(0, 256, (8, 4, 4)).astype(np.uint8)
    first = model.forward(x, training=False)
    calls = []
    original = model.layers[3].domain.forward
    monkeypatch.setattr(model.layers[3].domain, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    np.testing.assert_array_equal(model.forward(x, training=False), first)
    assert calls == []                                   # served from the cache
    opt = pysbnn.Adam(model, lr=0.05)
    model.forward(x, training=True)
    model.backward(np.ones((8, 3), np.float32))
    opt.step()
    stepped = model.forward(x, training=False)
    assert len(calls) == 2                               # training forward + refreshed cache
    fresh = pysbnn.binary_mlp((16, 70, 65, 3), domain=domain, seed=2)
    for (_, a), (_, b) in zip(fresh.named_parameters(), model.named_parameters()):
        a[...] = b
    for (_, a), (_, b) in zip(fresh.named_buffers(), model.named_buffers()):
        a[...] = b
    fresh.parameters_changed()
    np.testing.assert_allclose(stepped, fresh.forward(x, training=False), rtol=1e-6, atol=1e-6)
    hidden = model.layers[3]
    h = np.where(np.random.default_rng(1).random((8, 70)) < 0.5, -1.0, 1.0).astype(np.float32)
    before = hidden.forward(h, training=False)
    hidden.params["weight"][...] *= -1                   # a manual edit ...
    hidden.parameters_changed()                          # ... announced
    assert not np.allclose(hidden.forward(h, training=False), before)
