"""Bit-packed dense kernels: packing, popcount, the three products, op counts.

Every Numba kernel must equal its NumPy reference bit for bit (values and
operation counts), at word boundaries (K = 1, 63, 64, 65, 128, odd sizes), for
odd batch and row counts, densities 0..1, empty rows and all-ones rows.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pysbnn import analysis
from pysbnn.kernels import intrinsics, jit, sliced, words, wordskip, xnor
from pysbnn.levels import sbnn_output

KS = [1, 63, 64, 65, 127, 128, 129, 300]
JIT_ON = jit.numba_available() and not jit.jit_disabled()
needs_jit = pytest.mark.skipif(not JIT_ON, reason="numba missing or NUMBA_DISABLE_JIT=1")
SETTINGS = settings(max_examples=15, deadline=None)


def _case(seed, B, K, M, density):
    """+-1 activations (with exact zeros), +-1 weights and {0,1} weights with
    an empty row and an all-ones row when M allows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, K)).astype(np.float32)
    x[rng.random((B, K)) < 0.05] = 0.0                  # sign(0) = +1
    w = rng.standard_normal((M, K))
    w01 = rng.random((M, K)) < density
    if M >= 3:
        w01[0] = False
        w01[1] = True
    return x, w, w01


def _pm1(v):
    return np.where(np.asarray(v) >= 0, 1.0, -1.0)


# ----------------------------------------------------------------------------
# Packing and popcount

@given(B=st.integers(1, 9), K=st.sampled_from(KS + [2, 31, 200]), seed=st.integers(0, 2**16))
@SETTINGS
def test_pack_signs_matches_reference_and_round_trips(B, K, seed):
    x, _, _ = _case(seed, B, K, 1, 0.5)
    packed = words.pack_signs(x)
    assert packed.dtype == np.uint64 and packed.shape == (B, words.n_words(K))
    np.testing.assert_array_equal(packed, words.pack_signs_numpy(x))
    np.testing.assert_array_equal(words.unpack_bits(packed, K), x >= 0)
    np.testing.assert_array_equal(words.unpack_signs(packed, K), _pm1(x))
    # padding bits are zero
    pad = words.n_words(K) * 64 - K
    if pad:
        high = np.uint64(((1 << pad) - 1) << (64 - pad))
        assert not np.any(packed[:, -1] & high)


@given(B=st.integers(1, 140), K=st.sampled_from(KS), seed=st.integers(0, 2**16))
@SETTINGS
def test_pack_batch_sliced_matches_reference_and_round_trips(B, K, seed):
    x, _, _ = _case(seed, B, K, 1, 0.5)
    xs = words.pack_batch_sliced(x)
    assert xs.shape == (K, words.n_words(B))
    np.testing.assert_array_equal(xs, words.pack_batch_sliced_numpy(x))
    np.testing.assert_array_equal(words.unpack_batch_sliced(xs, B), x >= 0)
    np.testing.assert_array_equal(xs, words.pack_bits((x >= 0).T))   # same words, transposed


@pytest.mark.parametrize("parallel", [False, True])
def test_packing_kernels_serial_and_parallel_agree(parallel):
    x, _, _ = _case(3, 131, 200, 1, 0.5)
    np.testing.assert_array_equal(words.pack_signs(x, parallel=parallel), words.pack_signs_numpy(x))
    np.testing.assert_array_equal(words.pack_batch_sliced(x, parallel=parallel),
                                  words.pack_batch_sliced_numpy(x))


@given(b=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=130),
                    elements=st.integers(0, 1)))
@SETTINGS
def test_pack_bits_round_trip(b):
    np.testing.assert_array_equal(words.unpack_bits(words.pack_bits(b), b.shape[1]), b)


def test_pack_bits_rejects_non_binary():
    with pytest.raises(ValueError):
        words.pack_bits(np.array([[0, 2]]))


@given(ws=hnp.arrays(np.uint64, st.integers(1, 40), elements=st.integers(0, 2**64 - 1)))
@SETTINGS
def test_swar_popcount_equals_bitwise_count(ws):
    expected = np.bitwise_count(ws)
    assert [intrinsics.popcount64(v) for v in ws] == expected.tolist()
    np.testing.assert_array_equal(words.popcount_numpy(ws), expected)


def test_swar_popcount_edge_words():
    for v in [0, 1, 2**63, 2**64 - 1, 0x5555555555555555, 0xAAAAAAAAAAAAAAAA]:
        assert intrinsics.popcount64(v) == bin(v).count("1")


@needs_jit
def test_compiled_popcount_is_a_hardware_instruction():
    """The ctpop intrinsic must reach the CPU's popcount (popcnt / vpopcntq)."""
    assert intrinsics.popcount_backend() == "llvm.ctpop"
    asm = intrinsics.popcount_asm()
    assert "popcnt" in asm, "no popcnt instruction in the jitted probe"


# ----------------------------------------------------------------------------
# The three products against the NumPy reference and the float computation

def _run_all(x, w, w01, backend, parallel):
    B, K = x.shape
    a = words.pack_signs(x, backend=backend)
    wb, w01b = words.pack_signs(w, backend=backend), words.pack_bits(w01)
    xs = words.pack_batch_sliced(x, backend=backend)
    kw = dict(backend=backend, parallel=parallel, return_ops=True)
    return {"xnor": xnor.xnor_gemm(a, wb, K, **kw),
            "wordskip": wordskip.sbnn_gemm(a, w01b, K, **kw),
            "sliced": sliced.sbnn_gemm_sliced(xs, w01b, B, K, **kw)}


def _check_against_reference(x, w, w01, parallel):
    B, K = x.shape
    M = w.shape[0]
    got = _run_all(x, w, w01, "numba", parallel)
    want = _run_all(x, w, w01, "numpy", None)
    z_bnn = (_pm1(x) @ _pm1(w).T).astype(np.int64)
    z_sbnn = (_pm1(x) @ w01.T.astype(np.float64)).astype(np.int64)
    for name, z_float in [("xnor", z_bnn), ("wordskip", z_sbnn), ("sliced", z_sbnn)]:
        z, ops = got[name]
        assert z.dtype == np.int32 and z.shape == (B, M), name
        np.testing.assert_array_equal(z, want[name][0], err_msg=name)
        np.testing.assert_array_equal(z, z_float, err_msg=name + " vs float")
        assert ops == want[name][1], name
    w01b = words.pack_bits(w01)
    assert got["xnor"][1] == analysis.bops_bnn_dense(M, K, B)
    assert got["wordskip"][1] == analysis.bops_wordskip(w01b, B)
    assert got["sliced"][1] == analysis.bops_sparse(w01, B)


@given(B=st.integers(1, 70), K=st.sampled_from(KS), M=st.integers(1, 70),
       density=st.sampled_from([0.0, 0.05, 0.3, 0.9, 1.0]), seed=st.integers(0, 2**16),
       parallel=st.booleans())
@SETTINGS
def test_kernels_equal_reference_and_float(B, K, M, density, seed, parallel):
    x, w, w01 = _case(seed, B, K, M, density)
    _check_against_reference(x, w, w01, parallel)


@pytest.mark.parametrize("B, K, M, density", [
    (1, 784, 130, 0.05),      # batch 1, several panels and row blocks
    (600, 65, 33, 0.5),       # two 512-sample blocks of the sliced kernel
    (3, 300, 5, 1.0),         # > 255 ones per row: the 16-level counters
    (64, 128, 64, 0.0),       # all rows empty
])
@pytest.mark.parametrize("parallel", [False, True])
def test_kernels_on_edge_shapes(B, K, M, density, parallel):
    x, w, w01 = _case(B + K + M, B, K, M, density)
    _check_against_reference(x, w, w01, parallel)


def test_prepared_weights_give_the_same_result():
    x, w, w01 = _case(7, 9, 100, 70, 0.2)
    a, w01b = words.pack_signs(x), words.pack_bits(w01)
    wb = words.pack_signs(w)
    np.testing.assert_array_equal(xnor.xnor_gemm(a, xnor.prepare_xnor(wb, 100)), xnor.xnor_gemm(a, wb, 100))
    np.testing.assert_array_equal(wordskip.sbnn_gemm(a, wordskip.prepare_wordskip(w01b, 100)),
                                  wordskip.sbnn_gemm(a, w01b, 100))
    xs = words.pack_batch_sliced(x)
    np.testing.assert_array_equal(sliced.sbnn_gemm_sliced(xs, sliced.prepare_sliced(w01b, 100), 9),
                                  wordskip.sbnn_gemm(a, w01b, 100))
    with pytest.raises(ValueError):
        xnor.xnor_gemm(a, xnor.prepare_xnor(wb, 100), 101)


def test_prepare_sliced_lists_the_ones():
    w01 = np.zeros((3, 70), bool)
    w01[1, [0, 5, 69]] = True
    w01[2] = True
    w = sliced.prepare_sliced(words.pack_bits(w01), 70)
    assert w.ones.tolist() == [0, 3, 70]
    assert w.levels.tolist() == [0, 2, 7]
    assert np.diff(w.indptr).tolist() == [0, 16, 80]
    row1 = w.indices[w.indptr[1]:w.indptr[2]]
    assert row1[:3].tolist() == [0, 5, 69] and (row1[3:] == 70).all()


# ----------------------------------------------------------------------------
# Dequantisation (Eq. 20, corrected) and counts

@given(B=st.integers(1, 9), K=st.sampled_from(KS), M=st.integers(1, 9),
       xi=st.floats(-2, 2), eta=st.floats(0.01, 3), seed=st.integers(0, 2**16))
@SETTINGS
def test_sbnn_dense_output_equals_float_layer(B, K, M, xi, eta, seed):
    """z = eta z' + xi eta q equals x @ w.T with w = (w01 + xi) eta (Eq. 4)."""
    x, _, w01 = _case(seed, B, K, M, 0.3)
    a = words.pack_signs(x)
    z_prime = wordskip.sbnn_gemm(a, words.pack_bits(w01), K)
    q = words.input_dot_ones(a, K)
    np.testing.assert_array_equal(q, _pm1(x).sum(axis=1))
    z = sbnn_output(z_prime, q[:, None], xi, eta)
    np.testing.assert_allclose(z, _pm1(x) @ ((w01 + xi) * eta).T, rtol=1e-9, atol=1e-9)


def test_bnn_is_the_domain_xi_minus_half_eta_two():
    """xi = -1/2, eta = 2 turns {0,1} weights into +-1: the SBNN output equals XNOR."""
    x, _, w01 = _case(11, 5, 130, 7, 0.5)
    a = words.pack_signs(x)
    z = sbnn_output(wordskip.sbnn_gemm(a, words.pack_bits(w01), 130),
                    words.input_dot_ones(a, 130)[:, None], -0.5, 2.0)
    np.testing.assert_array_equal(z, xnor.xnor_gemm(a, words.pack_bits(w01), 130))


def test_analytic_counts():
    w01 = np.zeros((2, 130), bool)
    w01[0, [0, 1, 64]] = True            # two non-zero words, three ones
    w01b = words.pack_bits(w01)
    assert analysis.bops_bnn_dense(2, 130, 3) == 2 * 3 * 130 * 2
    assert analysis.bops_wordskip(w01b, 3) == 2 * 64 * 2 * 3
    assert analysis.bops_sparse(w01, 3) == 3 * 3


# ----------------------------------------------------------------------------
# Lazy numba, and the NumPy fallback under NUMBA_DISABLE_JIT=1

def _run_python(code, **env):
    full_env = dict(os.environ, **env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full_env["PYTHONPATH"] = root + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_importing_the_kernels_does_not_import_numba():
    res = _run_python("""
        import sys
        import pysbnn, pysbnn.kernels.words, pysbnn.kernels.xnor, pysbnn.kernels.sliced
        import pysbnn.kernels.wordskip, pysbnn.kernels.conv_bnn, pysbnn.kernels.conv_sbnn
        import pysbnn.kernels.im2col, pysbnn.kernels.vec4, pysbnn.packed.pack
        assert 'numba' not in sys.modules, 'numba imported at module import'
        import numpy as np
        pysbnn.kernels.xnor.prepare_xnor(np.zeros((3, 2), np.uint64), 100)   # chooses a kernel by CPU
        assert 'numba' not in sys.modules, 'numba imported by prepare_xnor'
        print('ok')
    """)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_disable_jit_runs_reference_and_uncompiled_kernels():
    res = _run_python("""
        import numpy as np
        from pysbnn.kernels import jit, words, xnor, sliced, wordskip
        assert jit.resolve_backend('auto') == 'numpy'
        rng = np.random.default_rng(0)
        B, K, M = 5, 70, 9
        x = rng.standard_normal((B, K)); w01 = rng.random((M, K)) < 0.4
        a, w01b = words.pack_signs(x), words.pack_bits(w01)
        xs = words.pack_batch_sliced(x)
        np.testing.assert_array_equal(words.pack_signs(x, backend='numba'), a)
        np.testing.assert_array_equal(words.pack_batch_sliced(x, backend='numba'), xs)
        for f, args in [(xnor.xnor_gemm, (a, w01b, K)), (wordskip.sbnn_gemm, (a, w01b, K)),
                        (sliced.sbnn_gemm_sliced, (xs, w01b, B, K))]:
            auto = f(*args, return_ops=True)
            plain = f(*args, backend='numba', return_ops=True)
            np.testing.assert_array_equal(auto[0], plain[0])
            assert auto[1] == plain[1]
        print('ok')
    """, NUMBA_DISABLE_JIT="1")
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
