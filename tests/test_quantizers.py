"""sign and its straight-through estimators (Sec. 3.1, IR-Net EDE).

STEs cannot be finite-differenced: their surrogate gradients are checked
against their formulas, at x = 0 and exactly at the clip edges.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given

from pysbnn.quantizers import (
    EDE,
    QUANTIZERS,
    ClippedIdentity,
    Identity,
    Quantizer,
    get_quantizer,
    sign,
)
from strategies import weight_arrays


# ---------------------------------------------------------------- sign

def test_sign_zero_is_plus_one_and_minus_zero_too():
    x = np.array([-2.0, -1e-300, -0.0, 0.0, 1e-300, 3.0])
    np.testing.assert_array_equal(sign(x), [-1, -1, 1, 1, 1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_sign_keeps_dtype_and_shape(dtype):
    x = np.arange(-6, 6).reshape(3, 4).astype(dtype)
    out = sign(x)
    assert out.dtype == dtype and out.shape == (3, 4)
    np.testing.assert_array_equal(out, np.where(x >= 0, 1, -1))


@given(weight_arrays())
def test_sign_values_match_definition(w):
    out = sign(w)
    assert set(np.unique(out)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(out == 1, w >= 0)


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_every_quantizer_forward_is_sign(name):
    x = np.array([-1.5, -0.0, 0.0, 0.25])
    q = get_quantizer(name)
    np.testing.assert_array_equal(q.forward(x), sign(x))
    np.testing.assert_array_equal(q(x), sign(x))


# ---------------------------------------------------------------- clipped identity

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipped_identity_gradient_includes_both_edges(dtype):
    one_up = np.nextafter(dtype(1), dtype(2))
    x = np.array([-2, -one_up, -1, -0.5, 0, 0.5, 1, one_up, 2], dtype=dtype)
    g = ClippedIdentity().grad(x)
    assert g.dtype == dtype
    np.testing.assert_array_equal(g, [0, 0, 1, 1, 1, 1, 1, 0, 0])


@given(weight_arrays(max_abs=3.0))
def test_clipped_identity_gradient_formula(x):
    g = ClippedIdentity().grad(x)
    assert g.shape == x.shape
    np.testing.assert_array_equal(g, (np.abs(x) <= 1).astype(x.dtype))


def test_identity_gradient_is_one_everywhere():
    x = np.array([[-1e6, -1.0, 0.0], [1.0, 2.0, 1e6]], dtype=np.float32)
    g = Identity().grad(x)
    assert g.dtype == np.float32 and g.shape == x.shape
    np.testing.assert_array_equal(g, 1.0)


# ---------------------------------------------------------------- EDE

def test_ede_schedule_endpoints_and_middle():
    q = EDE()
    q.set_epoch(0, 10)
    assert q.t == pytest.approx(0.1, rel=1e-15) and q.k == pytest.approx(10.0, rel=1e-15)
    q.set_epoch(5, 10)
    assert q.t == pytest.approx(1.0, rel=1e-15) and q.k == pytest.approx(1.0, rel=1e-15)
    q.set_epoch(10, 10)
    assert q.t == pytest.approx(10.0, rel=1e-15) and q.k == 1.0


@pytest.mark.parametrize("epoch", [0, 1, 3, 7, 10])
def test_ede_gradient_formula(epoch):
    q = EDE(epoch=epoch, epochs=10)
    t = 10.0 ** (-1 + 2 * epoch / 10)
    k = max(1 / t, 1.0)
    x = np.array([-3.0, -1.0, -0.1, 0.0, 0.1, 1.0, 3.0])
    np.testing.assert_allclose(q.grad(x), k * t * (1 - np.tanh(t * x) ** 2), rtol=1e-13)
    # at x = 0 the surrogate is k*t: 1 at the start, t at the end
    assert q.grad(np.array([0.0]))[0] == pytest.approx(k * t, rel=1e-14)


def test_ede_gradient_at_zero_is_one_at_start_and_ten_at_end():
    assert EDE(0, 10).grad(np.zeros(1))[0] == pytest.approx(1.0, rel=1e-14)
    assert EDE(10, 10).grad(np.zeros(1))[0] == pytest.approx(10.0, rel=1e-14)


def test_ede_keeps_float32():
    g = EDE(2, 5).grad(np.linspace(-2, 2, 7, dtype=np.float32))
    assert g.dtype == np.float32


@pytest.mark.parametrize("epoch, epochs, arg", [(-1, 10, "epoch"), (11, 10, "epoch"),
                                                (0, 0, "epochs"), (math.nan, 10, "epoch")])
def test_ede_rejects_bad_schedule(epoch, epochs, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        EDE().set_epoch(epoch, epochs)


# ---------------------------------------------------------------- registry, config

@pytest.mark.parametrize("name, cls", [("clipped", ClippedIdentity), ("ste", ClippedIdentity),
                                       ("ste_sign", ClippedIdentity), ("identity", Identity),
                                       ("ede", EDE)])
def test_get_quantizer_by_name(name, cls):
    q = get_quantizer(name)
    assert type(q) is cls and isinstance(q, Quantizer)


def test_get_quantizer_returns_instances_unchanged():
    q = EDE(3, 9)
    assert get_quantizer(q) is q


@pytest.mark.parametrize("q", [ClippedIdentity(), Identity(), EDE(4, 12)])
def test_config_round_trips_through_json(q):
    config = json.loads(json.dumps(q.get_config()))
    assert config["name"] == q.name
    q2 = get_quantizer(config)
    assert type(q2) is type(q) and q2.get_config() == q.get_config()
    x = np.linspace(-2, 2, 9)
    np.testing.assert_array_equal(q2.grad(x), q.grad(x))


def test_unknown_quantizer_lists_allowed_names():
    with pytest.raises(ValueError, match="allowed names.*clipped.*ede.*identity"):
        get_quantizer("tanh")
