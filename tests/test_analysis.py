"""Kernel statistics and analytic counts of pysbnn.analysis (paper Sec. 4.1-4.2)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pysbnn import analysis as an
from pysbnn.entropy import fraction_of_ones


def single_one_kernels():
    """One output channel, nine input channels: kernel i has a single one at tap i."""
    w = np.zeros((1, 9, 3, 3), bool)
    for t in range(9):
        w[0, t, t // 3, t % 3] = True
    return w


def test_single_one_at_each_position_gives_the_nine_k1_codes():
    codes = an.kernel_codes(single_one_kernels())
    assert codes.tolist() == [[1, 2, 4, 8, 16, 32, 64, 128, 256]]
    assert set(codes.ravel()) == set(an.K1_CODES)
    by_code, by_hw = an.kernel_histogram(single_one_kernels())
    assert by_hw.tolist() == [0, 9, 0, 0, 0, 0, 0, 0, 0, 0]
    assert by_code[list(an.K1_CODES)].tolist() == [1] * 9 and by_code.sum() == 9
    assert an.k0_k1(single_one_kernels()) == (0.0, 1.0, 0, 9)


def test_codes_are_row_major_and_latent_zero_is_a_one():
    w = -np.ones((2, 1, 3, 3))
    w[0, 0, 1, 2] = 0.0                        # tap t = 3*1 + 2 = 5; sign(0) = +1 -> a one
    w[1, 0] = 0.5                              # all ones
    assert an.kernel_codes(w).tolist() == [[32], [511]]
    assert an.kernel_codes(w, binary=True).tolist() == [[511 - 32], [511]]  # non-zero = one
    assert an.kernel_codes((w >= 0).astype(np.int8), binary=True).tolist() == [[32], [511]]


def test_k0_k1_zero_filters_and_histograms_on_a_hand_built_layer():
    w = np.zeros((3, 2, 3, 3), bool)
    w[0, 0, 0, 0] = True                       # K1
    w[0, 1] = True                             # HW 9
    w[1, 0, 2, :] = True                       # HW 3: code 64+128+256
    # w[1, 1] is K0, filter 2 is all zero
    codes = an.kernel_codes(w)
    assert codes.tolist() == [[1, 511], [448, 0], [0, 0]]
    f0, f1, n0, n1 = an.k0_k1(w)
    assert (n0, n1) == (3, 1) and f0 == 0.5 and f1 == pytest.approx(1 / 6)
    assert an.zero_filters(w) == 1
    by_code, by_hw = an.kernel_histogram(w)
    assert by_code[0] == 3 and by_code[1] == 1 and by_code[448] == 1 and by_code[511] == 1
    assert by_hw.tolist() == [3, 1, 0, 1, 0, 0, 0, 0, 0, 1]


def test_bops_counts():
    assert an.bops_bnn(64, 32, 3, 100) == 2 * 64 * 32 * 9 * 100
    w = np.zeros((2, 2, 3, 3), bool)
    w[0, 0, 0, 0] = True                       # K1
    w[0, 1, :2, :2] = True                     # HW 4
    w[1, 0, 1, 1] = True                       # K1;  w[1, 1] K0
    # K0 + K1 = 3 of 4 kernels: 3/4 of the BNN ops removed
    assert an.bops_pr_k0k1(w, 10) == pytest.approx(0.75)
    assert an.bops_sparse(w, 10) == 6 * 10
    assert an.sbnn_conv_ops(w, 10) == {"k1_shift": 20, "popcount": 40, "total": 60}
    # two layers: weighted by output size; second layer has no K0/K1 kernel
    dense_layer = np.ones((1, 1, 3, 3), bool)
    pr = an.bops_pr_k0k1([w, dense_layer], [10, 1000])
    assert pr == pytest.approx((3 * 18 * 10) / (4 * 18 * 10 + 18 * 1000))
    assert an.bops_sparse([w, dense_layer], [10, 1000]) == 60 + 9000


def test_bparams_table3_rule():
    w = np.zeros((1, 3, 3, 3), bool)
    w[0, 1, 0, 0] = True                       # K1: 2 + 4 bits
    w[0, 2, 0, :] = True                       # HW 3: 2 + 9 bits;  w[0, 0] K0: 2 bits
    assert an.bparams(w) == 2 + 6 + 11
    assert an.bparams_pr(w) == pytest.approx(1 - 19 / 27)
    assert an.bparams([w, w]) == 38 and an.bparams_pr([w, w]) == pytest.approx(1 - 19 / 27)
    assert an.bparams_pr(np.ones((4, 4, 3, 3), bool)) == pytest.approx(1 - 11 / 9)  # overhead
    assert an.bparams_pr(np.zeros((4, 4, 3, 3), bool)) == pytest.approx(1 - 2 / 9)


def test_dense_layer_counts():
    w = np.array([[0.5, -1.0, 0.0, -2.0], [-0.1, -0.2, -0.3, 1.0]])   # ones: 0.5, 0.0, 1.0
    assert fraction_of_ones([w]) == pytest.approx(3 / 8)
    assert an.bops_bnn_dense(2, 4, B=5) == 80
    assert an.bops_sparse_dense(w, B=5) == 15
    assert an.bits_per_weight(w) == pytest.approx(-(3 / 8) * np.log2(3 / 8) - (5 / 8) * np.log2(5 / 8))
    assert an.bits_per_weight(np.ones((3, 3))) == 0.0
    assert an.zero_filters(np.array([[-1.0, -2.0], [1.0, -1.0]])) == 1


conv_weights = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 5), st.integers(1, 6)).map(lambda s: s + (3, 3)),
    elements=st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]))


@settings(max_examples=60, deadline=None)
@given(conv_weights)
def test_histogram_invariants(w):
    codes = an.kernel_codes(w)
    assert codes.min() >= 0 and codes.max() < 512
    by_code, by_hw = an.kernel_histogram(w)
    assert by_code.sum() == by_hw.sum() == codes.size
    hw = np.array([bin(c).count("1") for c in codes.ravel()])
    assert by_hw.tolist() == np.bincount(hw, minlength=10).tolist()
    assert (by_hw * np.arange(10)).sum() == (w >= 0).sum()       # ones counted once
    f0, f1, n0, n1 = an.k0_k1(w)
    assert (n0, n1) == (by_hw[0], by_hw[1])
    assert an.bops_pr_k0k1(w, 7) == pytest.approx((n0 + n1) / codes.size)
    assert an.bops_sparse(w, 7) == an.sbnn_conv_ops(w, 7)["total"] == 7 * (w >= 0).sum()
    bits = an.bparams(w)
    assert bits == 2 * codes.size + 4 * n1 + 9 * (codes.size - n0 - n1)
    assert an.zero_filters(w) == int(((w >= 0).reshape(w.shape[0], -1).sum(1) == 0).sum())
