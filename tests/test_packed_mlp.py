"""The all-integer packed MLP: the gather kernel on uint8 pixels, the folded
integer threshold and the bit layouts between layers."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pysbnn
from pysbnn.kernels import gather, threshold, words
from pysbnn.packed import fold

SETTINGS = settings(max_examples=20, deadline=None)


@given(B=st.integers(1, 70), K=st.sampled_from([1, 63, 64, 65, 130]), M=st.integers(1, 40),
       density=st.sampled_from([0.0, 0.05, 0.5, 1.0]), seed=st.integers(0, 2**16),
       parallel=st.booleans())
@SETTINGS
def test_gather_kernel_equals_reference(B, K, M, density, seed, parallel):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (B, K)).astype(np.uint8)
    x[:, 0] = 255
    w01 = rng.random((M, K)) < density
    zt, Q, ops = gather.gather_dense(x, gather.prepare_gather(w01), backend="numba", parallel=parallel)
    z_ref, Q_ref, ops_ref = gather.gather_dense_reference(x, w01)
    assert zt.dtype == np.int32 and zt.shape == (M, B)
    np.testing.assert_array_equal(zt.T, z_ref)
    np.testing.assert_array_equal(Q, Q_ref)
    assert ops_ref == int(w01.sum()) * B
    assert ops == (_column_adds(x, M) if _takes_columns(x, w01) else ops_ref)


@pytest.mark.parametrize("zeros", [0.0, 0.8, 1.0])
def test_small_batches_take_the_cheaper_of_gather_and_columns(zeros):
    """Batches below BLOCK_MIN_BATCH: per sample, the adds under the ones or, for
    mostly-zero inputs and dense weights, the weight columns of the non-zero pixels."""
    rng = np.random.default_rng(5)
    x = rng.integers(1, 256, (3 + 40 * (zeros == 0.8), 300)).astype(np.uint8)
    x[rng.random(x.shape) < zeros] = 0
    for density in (0.02, 0.6):
        w01 = rng.random((40, 300)) < density
        zt, Q, ops = gather.gather_dense(x, gather.prepare_gather(w01), backend="numba")
        z_ref, Q_ref, _ = gather.gather_dense_reference(x, w01)
        np.testing.assert_array_equal(zt.T, z_ref)
        np.testing.assert_array_equal(Q, Q_ref)
        assert ops == (_column_adds(x, 40) if _takes_columns(x, w01) else int(w01.sum()) * len(x))


def _column_adds(x, M):
    return int(np.count_nonzero(x)) * M


def _takes_columns(x, w01):
    """The rule of gather.strategy: the columns when they cost less."""
    per_add = gather.COLUMN_ADDS if len(x) < gather.BLOCK_MIN_BATCH else 1
    return _column_adds(x, len(w01)) < per_add * int(w01.sum()) * len(x)


def test_gather_kernel_many_ones_do_not_overflow_16_bits(backend):
    """Rows of 784 ones of 255: sums of 199,920 need the widening every 256 ones."""
    x = np.full((40, 784), 255, np.uint8)
    w01 = np.ones((3, 784), bool)
    zt, Q, _ = gather.gather_dense(x, gather.prepare_gather(w01), backend=backend)
    assert (zt == 784 * 255).all() and (Q == 784 * 255).all()


@given(R=st.integers(1, 140), K=st.sampled_from([1, 63, 64, 65, 200]), seed=st.integers(0, 2**16))
@SETTINGS
def test_bit_transpose_round_trips(R, K, seed):
    bits = np.random.default_rng(seed).random((R, K)) < 0.5
    rows = words.pack_bits(bits)
    sliced = words.transpose_bits(rows, K)
    np.testing.assert_array_equal(sliced, words.pack_bits(bits.T))
    np.testing.assert_array_equal(words.transpose_bits(sliced, R), rows)


def _threshold_case(seed, B, M, xi, scale):
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 1, M) * rng.choice([1, -1, 0], M, p=[0.6, 0.3, 0.1])
    C = rng.normal(0, 40 * scale, M)
    aff = fold.Affine(A, xi, C)
    U = rng.integers(0, 60, M)
    z = (rng.integers(-60, 61, (B, M)) * scale).astype(np.int64)
    q = (rng.integers(-100, 101, B) * scale).astype(np.int64)
    return aff, fold.fixed_threshold(aff, scale * 60, scale * 100), z, q, U


@given(seed=st.integers(0, 2**16), xi=st.floats(-3, 3), scale=st.sampled_from([1, 255]))
@settings(max_examples=40, deadline=None)
def test_integer_threshold_is_the_real_test_away_from_ties(seed, xi, scale):
    """dir * u_F >= T equals sign(A (z' + xi q) + C) >= 0 except within 2^-F of the threshold."""
    aff, th, z, q, _ = _threshold_case(seed, 30, 20, xi, scale)
    bits = threshold.threshold_bits(z, q, th)
    real = aff.A * (z + xi * q[:, None]) + aff.C
    exact = real >= 0
    margin = np.abs(real) / np.where(aff.A == 0, 1.0, np.abs(aff.A))     # |u - T| in u units
    clear = (margin > 2.0 ** (1 - th.F)) | (aff.A == 0)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(bits[clear], exact[clear])
    assert -2**30 <= int(th.T.min()) and int(th.T.max()) <= 2**30


@pytest.mark.parametrize("layout", ["rows", "sliced"])
@pytest.mark.parametrize("neuron_major", [False, True])
def test_threshold_kernel_equals_reference(layout, neuron_major, backend):
    for B, M in [(1, 1), (5, 64), (65, 70), (130, 129)]:
        aff, th, z, q, _ = _threshold_case(B * M, B, M, -0.43, 1)
        z32 = z.astype(np.int32)
        got, ones = threshold.pack_threshold(z32.T.copy() if neuron_major else z32, q, th, layout,
                                             neuron_major=neuron_major, backend=backend)
        bits = threshold.threshold_bits(z, q, th)
        np.testing.assert_array_equal(got, words.pack_bits(bits if layout == "rows" else bits.T))
        np.testing.assert_array_equal(ones, bits.sum(axis=1))


def _fitted_threshold(rng, z_ref, q, z_bound, q_bound):
    """A folded threshold whose bits split the samples (C near the median of z' + xi q)."""
    M = z_ref.shape[1]
    xi = float(rng.uniform(-1, 1))
    A = rng.normal(0, 1, M) * rng.choice([1, -1, 0], M, p=[0.6, 0.3, 0.1])
    u = z_ref + xi * q[:, None]
    C = -A * (np.median(u, axis=0) + rng.normal(0, 2, M))
    return fold.fixed_threshold(fold.Affine(A, xi, C), z_bound, q_bound)


@given(B=st.sampled_from([1, 31, 32, 33, 63, 64, 65, 130, 200]), K=st.sampled_from([1, 63, 64, 65, 300]),
       M=st.integers(1, 70), density=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
       zeros=st.sampled_from([0.0, 0.9]), seed=st.integers(0, 2**16), parallel=st.booleans())
@SETTINGS
def test_gather_with_threshold_equals_reference(B, K, M, density, zeros, seed, parallel):
    """First layer, threshold fused: batch-sliced bits from the block path, row bits
    from the column path (mostly-zero pixels), every sample's ones, at word edges."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (B, K)).astype(np.uint8)
    x[rng.random(x.shape) < zeros] = 0
    w01 = rng.random((M, K)) < density
    z_ref, Q_ref, _ = gather.gather_dense_reference(x, w01)
    th = _fitted_threshold(rng, z_ref, Q_ref, 255 * K, 255 * K)
    plan = gather.prepare_gather(w01)
    path, adds = gather.strategy(x, plan)
    layout = {"blocks": "sliced", "columns": "rows"}.get(path)
    if layout is None:
        with pytest.raises(ValueError, match="no fused"):
            gather.gather_bits(x, plan, th, "sliced", backend="numba")
        return
    bits, ones, ops = gather.gather_bits(x, plan, th, layout, backend="numba", parallel=parallel)
    fired = threshold.threshold_bits(z_ref, Q_ref, th)
    np.testing.assert_array_equal(bits, words.pack_bits(fired.T if layout == "sliced" else fired))
    np.testing.assert_array_equal(ones, fired.sum(axis=1))
    assert ops == adds


@given(B=st.sampled_from([1, 63, 64, 65, 511, 512, 513, 1100]), K=st.sampled_from([5, 64, 300, 700]),
       M=st.sampled_from([1, 63, 64, 65, 130]), density=st.sampled_from([0.01, 0.1, 0.5, 1.0]),
       seed=st.integers(0, 2**16), parallel=st.booleans())
@SETTINGS
def test_sliced_with_threshold_equals_reference(B, K, M, density, seed, parallel):
    """Hidden layer, threshold fused into the bit-sliced kernel: 512-sample blocks,
    64-row blocks, 8 and 16 counter levels (700 ones), every sample's ones."""
    from pysbnn.kernels import sliced
    rng = np.random.default_rng(seed)
    a = rng.random((B, K)) < 0.5
    w01 = rng.random((M, K)) < density
    xs = words.pack_bits(a.T)
    q = 2 * a.sum(axis=1) - K
    z_ref = 2 * (a.astype(np.int64) @ w01.T.astype(np.int64)) - w01.sum(axis=1)
    th = _fitted_threshold(rng, z_ref, q, K, K)
    bits, ones, ops = sliced.sbnn_sliced_bits(xs, words.pack_bits(w01), B, th, q, K=K, backend="numba",
                                              parallel=parallel, return_ops=True)
    fired = threshold.threshold_bits(z_ref, q, th)
    np.testing.assert_array_equal(bits, words.pack_bits(fired.T))
    np.testing.assert_array_equal(ones, fired.sum(axis=1))
    assert ops == int(w01.sum()) * B


def test_fixed_point_uses_the_whole_int32_range():
    aff = fold.Affine(np.ones(3), 0.37, np.zeros(3))
    th = fold.fixed_threshold(aff, 255 * 784, 255 * 784)
    bound = 255 * 784 * (1 + 0.37)
    assert 2.0 ** 29 <= bound * 2.0 ** th.F < 2.0 ** 30
    assert th.G >= th.F and abs(th.XI / 2.0 ** th.G - 0.37) < 2.0 ** -30
    assert math.isclose(fold.fixed_threshold(fold.Affine(np.ones(1), 0.0, np.zeros(1)), 10, 10).XI, 0)


@pytest.mark.parametrize("domain", ["sym", "alpha_beta", "learned", "zero_one"])
def test_first_layer_reads_raw_pixels_like_the_float_simulation(domain, backend):
    """Normalize folded into the first layer: uint8 and float pixels, any batch."""
    rng = np.random.default_rng(3)
    model = pysbnn.binary_mlp((64, 40, 10), domain=domain, seed=1, mean=0.3, std=0.2)
    x = rng.integers(0, 256, (300, 8, 8)).astype(np.uint8)
    model.forward(x[:100], training=True)
    packed = pysbnn.pack(model, backend=backend)
    for batch in (1, 7, 64, 300):
        ref = model.forward(x[:batch], training=False)
        np.testing.assert_allclose(packed.forward(x[:batch]), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        np.testing.assert_allclose(packed.forward(x[:batch].astype(np.float32)), ref,
                                   rtol=1e-4, atol=1e-4 * np.abs(ref).max())
