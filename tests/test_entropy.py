"""Entropy (Eq. 6-8), sparsity targets, penalty j (Eq. 16), lambda rule (Eq. 18), Eq. 19."""

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pysbnn.entropy import (
    SparsityTarget,
    binary_entropy,
    bits_from_ec,
    bop_ratio_bnn_over_sbnn,
    ec_from_bits,
    ec_from_sparsity,
    fraction_of_ones,
    fraction_of_ones_per_layer,
    gamma_lambda,
    inverse_binary_entropy,
    max_ones,
    max_ones_int,
    sparsity_from_ec,
    sparsity_penalty,
)
from pysbnn.recipe import REFERENCE_EC_GAMMA, default_gamma
from strategies import entropies, expected_connections, gammas, losses, probabilities


def h_direct(p):
    """Eq. 6 written out with the math module, for scalars in (0, 1)."""
    return -p * math.log2(p) - (1 - p) * math.log1p(-p) / math.log(2)


# ---------------------------------------------------------------- h and h^-1

def test_binary_entropy_known_values():
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0
    assert binary_entropy(0.5) == 1.0
    assert binary_entropy(0.25) == pytest.approx(0.8112781244591328, rel=1e-15)
    assert binary_entropy(0.11) == pytest.approx(0.4999159580, rel=1e-9)
    out = binary_entropy(np.array([[0.0, 0.5], [0.25, 1.0]]))
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0, 1], [0.8112781244591328, 0]], rtol=1e-15)


@given(st.floats(1e-300, 1 - 1e-16))
def test_binary_entropy_matches_eq6(p):
    assert binary_entropy(p) == pytest.approx(h_direct(p), rel=1e-12, abs=1e-300)


@given(probabilities())
def test_binary_entropy_is_symmetric_and_bounded(p):
    h = binary_entropy(p)
    assert 0.0 <= h <= 1.0 and not math.isnan(h)
    assert binary_entropy(1 - p) == pytest.approx(h, abs=1e-12)


@given(entropies())
def test_h_of_inverse_is_identity(y):
    p = inverse_binary_entropy(y)
    assert 0.0 <= p <= 0.5
    assert binary_entropy(p) == pytest.approx(y, abs=1e-12)


@given(st.floats(0.0, 0.45))
def test_inverse_of_h_on_the_lower_half(p):
    assert inverse_binary_entropy(binary_entropy(p)) == pytest.approx(p, rel=1e-12, abs=1e-300)


@given(st.lists(entropies(), min_size=2, max_size=50))
def test_inverse_is_monotone(ys):
    ys = np.sort(np.array(ys))
    ps = inverse_binary_entropy(ys)
    assert ps.shape == ys.shape
    assert np.all(np.diff(ps) >= 0)


def test_inverse_endpoints_and_tiny_values():
    assert inverse_binary_entropy(0.0) == 0.0
    assert inverse_binary_entropy(1.0) == 0.5
    assert inverse_binary_entropy(binary_entropy(0.05)) == pytest.approx(0.05, rel=1e-14)
    p = inverse_binary_entropy(1e-200)
    assert binary_entropy(p) == pytest.approx(1e-200, rel=1e-12)


@pytest.mark.parametrize("bad", [-0.1, 1.1, math.nan, [0.5, 2.0]])
def test_entropy_functions_reject_out_of_range(bad):
    with pytest.raises(ValueError, match=r"\bp must be in \[0.0, 1.0\]"):
        binary_entropy(bad)
    with pytest.raises(ValueError, match=r"\bh must be in \[0.0, 1.0\]"):
        inverse_binary_entropy(bad)


# ---------------------------------------------------------------- Eq. 8: M

@given(st.integers(0, 10**7), entropies())
def test_max_ones_never_exceeds_n(N, h_star):
    M = max_ones(N, h_star)
    assert 0 <= M <= N / 2 <= N
    assert M == pytest.approx(N * inverse_binary_entropy(h_star), rel=1e-15)
    U = max_ones_int(N, h_star)
    assert isinstance(U, int) and 0 <= U <= M + 1e-6
    if N:
        assert binary_entropy(U / N) <= h_star  # Eq. 7 holds at U ...
        if U + 1 <= N // 2:
            assert binary_entropy((U + 1) / N) > h_star  # ... and not one more


@given(st.integers(2, 10**6), st.data())
def test_max_ones_int_recovers_an_exact_count(N, data):
    U = data.draw(st.integers(0, N // 2))
    assert max_ones_int(N, binary_entropy(U / N)) == U


def test_max_ones_errors():
    with pytest.raises(ValueError, match="N must be"):
        max_ones(-1, 0.5)
    with pytest.raises(ValueError, match="N must be"):
        max_ones(2.5, 0.5)
    with pytest.raises(ValueError, match="h_star"):
        max_ones(10, 1.5)


# ---------------------------------------------------------------- EC, sparsity, bits

@given(expected_connections())
def test_target_from_ec_round_trips(ec):
    t = SparsityTarget.from_ec(ec)
    assert t.ec == ec
    assert t.sparsity == pytest.approx(1 - ec, abs=1e-15)
    if t.sparsity < 1:  # 1 - ec rounds to 1.0 for ec < 1.1e-16
        assert SparsityTarget.from_sparsity(t.sparsity).ec == pytest.approx(ec, abs=1e-15)
    if ec <= 0.5:
        assert t.bits == pytest.approx(h_direct(ec) if 0 < ec < 1 else 0.0, rel=1e-12)
        assume(t.bits > 0)  # ec tiny enough for bits to underflow to 0 has no bits form
        assert SparsityTarget.from_bits(t.bits).ec == pytest.approx(ec, rel=1e-9, abs=1e-300)
    else:
        assert t.bits == 1.0


@given(st.floats(0.0, 1.0, exclude_max=True))
def test_target_from_sparsity(s):
    t = SparsityTarget.from_sparsity(s)
    assert t.sparsity == s and t.ec == pytest.approx(1 - s, abs=1e-15)
    assert t.bits == bits_from_ec(t.ec)


@given(st.floats(0.0, 1.0, exclude_min=True))
def test_target_from_bits(bits):
    t = SparsityTarget.from_bits(bits)
    assert t.bits == bits and 0 < t.ec <= 0.5
    assert binary_entropy(t.ec) == pytest.approx(bits, abs=1e-12)
    assert t.sparsity == pytest.approx(1 - t.ec, abs=1e-15)


def test_targets_of_the_paper():
    t = SparsityTarget.from_sparsity(0.95)
    assert t.ec == pytest.approx(0.05, abs=1e-15)
    assert t.bits == pytest.approx(0.2863969571159562, rel=1e-12)
    assert SparsityTarget.from_ec(0.5).bits == 1.0
    assert SparsityTarget.from_ec(0.75).bits == 1.0  # no constraint beyond 1 bit
    assert SparsityTarget.from_bits(1.0).ec == 0.5
    assert ec_from_sparsity(0.99) == pytest.approx(0.01, abs=1e-15)
    assert sparsity_from_ec(0.25) == 0.75
    assert ec_from_bits(bits_from_ec(0.1)) == pytest.approx(0.1, rel=1e-13)


@pytest.mark.parametrize("make, bad, arg", [
    (SparsityTarget.from_ec, 0.0, "ec"), (SparsityTarget.from_ec, 1.5, "ec"),
    (SparsityTarget.from_sparsity, 1.0, "sparsity"), (SparsityTarget.from_sparsity, -0.1, "sparsity"),
    (SparsityTarget.from_bits, 0.0, "bits"), (SparsityTarget.from_bits, 1.01, "bits"),
    (ec_from_sparsity, 1.0, "sparsity"), (sparsity_from_ec, 0.0, "ec"),
    (bits_from_ec, -0.5, "ec"), (ec_from_bits, 2.0, "bits"), (bop_ratio_bnn_over_sbnn, 0.0, "ec"),
    (default_gamma, 1.2, "ec"), (SparsityTarget.from_ec, math.nan, "ec"),
])
def test_target_errors_name_the_argument(make, bad, arg):
    with pytest.raises(ValueError, match=rf"\b{arg} must be in"):
        make(bad)


def test_inconsistent_target_is_rejected():
    with pytest.raises(ValueError, match="inconsistent"):
        SparsityTarget(ec=0.1, sparsity=0.5, bits=0.5)


# ---------------------------------------------------------------- Eq. 16: penalty

def layers(seed, dtypes=(np.float32, np.float64, np.float32)):
    rng = np.random.default_rng(seed)
    shapes_ = [(8, 3, 3, 3), (10, 72), (5,)]
    return [rng.uniform(-1, 1, s).astype(d) for s, d in zip(shapes_, dtypes)]


@given(st.integers(0, 10**6), expected_connections())
def test_penalty_against_direct_computation(seed, ec):
    ws = layers(seed)
    j, ones, grads = sparsity_penalty(ws, ec)
    flat = np.concatenate([w.ravel().astype(np.float64) for w in ws])
    N = flat.size
    wbar = np.where(flat >= 0, 1.0, -1.0)
    direct = max(np.sum((wbar + 1) / (2 * N)) - ec, 0.0)
    assert j == pytest.approx(direct, abs=1e-12)
    assert ones == np.mean(flat >= 0)
    for w, g in zip(ws, grads):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, np.float64(1 / (2 * N) if j > 0 else 0.0).astype(w.dtype))


def test_penalty_is_zero_below_ec_and_global_over_layers():
    dense = -np.ones((4, 4))  # no ones
    full = np.ones(16)  # all ones
    j, ones, grads = sparsity_penalty([dense, full], ec=0.5)
    assert ones == 0.5 and j == 0.0  # at EC exactly: ReLU'(0) = 0
    assert all(np.all(g == 0) for g in grads)
    j, ones, grads = sparsity_penalty([dense, full], ec=0.25)
    assert j == 0.25  # the global fraction, not per layer
    assert all(np.all(g == 1 / 64) for g in grads)
    j, _, grads = sparsity_penalty([dense, full[:4]], ec=0.25)
    assert j == 0.0 and all(np.all(g == 0) for g in grads)


def test_fraction_of_ones_counts_zero_as_one():
    ws = [np.array([0.0, -0.0, -1.0, 2.0]), np.array([[-1.0, -2.0]])]
    assert fraction_of_ones(ws) == 3 / 6
    assert fraction_of_ones_per_layer(ws) == [0.75, 0.0]


def test_penalty_errors():
    with pytest.raises(ValueError, match=r"\bec must be in \(0.0, 1.0\]"):
        sparsity_penalty([np.ones(3)], 0.0)
    with pytest.raises(ValueError, match="weights"):
        sparsity_penalty([], 0.1)


# ---------------------------------------------------------------- Eq. 18: lambda

@given(losses(), st.floats(1e-4, 1.0, exclude_min=True), gammas())
def test_gamma_rule_gives_the_requested_share(loss, j, gamma):
    lam = gamma_lambda(loss, j, gamma)
    assert lam >= 0
    assert lam * j / (loss + lam * j) == pytest.approx(gamma, abs=1e-9)


@given(losses(), st.floats(0.0, 1e-4), gammas())
def test_gamma_rule_is_off_at_or_below_threshold(loss, j, gamma):
    assert gamma_lambda(loss, j, gamma) == 0.0


def test_gamma_rule_threshold_and_value():
    assert gamma_lambda(2.0, 0.5, 0.2) == pytest.approx(0.2 * 2.0 / (0.8 * 0.5), rel=1e-15)
    assert gamma_lambda(2.0, 0.5, 0.2, threshold=0.5) == 0.0
    assert gamma_lambda(2.0, 0.5, 0.0) == 0.0


@pytest.mark.parametrize("kwargs, arg", [
    (dict(loss=1.0, j=0.1, gamma=1.0), "gamma"), (dict(loss=1.0, j=0.1, gamma=-0.1), "gamma"),
    (dict(loss=-1.0, j=0.1, gamma=0.1), "loss"), (dict(loss=math.inf, j=0.1, gamma=0.1), "loss"),
    (dict(loss=math.nan, j=0.1, gamma=0.1), "loss"), (dict(loss=1.0, j=-0.1, gamma=0.1), "j"),
])
def test_gamma_rule_errors(kwargs, arg):
    with pytest.raises(ValueError, match=rf"\b{arg} must be in"):
        gamma_lambda(**kwargs)


# ---------------------------------------------------------------- Eq. 19, reference table

@given(expected_connections())
def test_bop_ratio_is_bnn_over_sbnn(ec):
    ratio = bop_ratio_bnn_over_sbnn(ec)
    assert ratio == pytest.approx(2 / ec, rel=1e-15)
    assert ratio >= 2  # the SBNN needs fewer operations, never more


def test_bop_ratio_values():
    assert bop_ratio_bnn_over_sbnn(0.05) == pytest.approx(40.0)
    assert bop_ratio_bnn_over_sbnn(1.0) == 2.0


def test_reference_table_is_the_spec():
    assert REFERENCE_EC_GAMMA == ((0.50, 0.00), (0.25, 0.02), (0.10, 0.04), (0.05, 0.07),
                                  (0.04, 0.07), (0.03, 0.08), (0.02, 0.08), (0.01, 0.10))


@pytest.mark.parametrize("ec, gamma", REFERENCE_EC_GAMMA)
def test_default_gamma_exact_at_table_points(ec, gamma):
    assert default_gamma(ec) == pytest.approx(gamma, abs=1e-15)


def test_default_gamma_interpolates_in_log_ec_and_clamps():
    # halfway between 0.25 and 0.10 in log EC
    assert default_gamma(math.sqrt(0.25 * 0.10)) == pytest.approx(0.03, abs=1e-12)
    assert default_gamma(0.9) == 0.0 and default_gamma(1.0) == 0.0
    assert default_gamma(0.001) == 0.10


@given(expected_connections(), expected_connections())
def test_default_gamma_is_non_increasing_in_ec(a, b):
    lo, hi = min(a, b), max(a, b)
    assert default_gamma(lo) >= default_gamma(hi)
    assert 0.0 <= default_gamma(lo) <= 0.10
