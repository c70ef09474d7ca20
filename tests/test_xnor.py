"""The dense XNOR-popcount kernels of ``pysbnn.kernels.xnor``, both layouts.

Whatever this host would choose, each kernel (``"hs"`` carry-save, ``"direct"``
popcount per word) runs serial and parallel against an independent product
(unpacked +-1 dot products): at the word boundaries of K, through the
carry-save steps (from 24 words) and the short-row path, past the 31-step
byte-counter flushes, with saturated counters (all-ones XORs), and with the
recorded op count ``2 B K M``. One test reruns cases under
``NUMBA_DISABLE_JIT=1`` (the kernel bodies as plain Python).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysbnn.kernels import intrinsics, jit, xnor
from pysbnn.kernels.words import n_words

pytestmark = pytest.mark.skipif(not jit.numba_available(), reason="the kernels need numba")
JIT_ON = jit.numba_available() and not jit.jit_disabled()


def unpacked_product(a, w, K):
    """Independent of the kernels: unpack the bits and take the +-1 dot products."""
    def signs(x):
        bits = np.unpackbits(np.ascontiguousarray(x).view(np.uint8), axis=1, bitorder="little")[:, :K]
        return 2 * bits.astype(np.int64) - 1
    return (signs(a) @ signs(w).T).astype(np.int32)


def random_bits(rng, rows, K, p=0.5):
    """Packed rows with bits set with probability p and zero padding bits."""
    Kw = n_words(K)
    bits = rng.random((rows, Kw * 64)) < p
    bits[:, K:] = False
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64).reshape(rows, Kw)


def check(a, w, K, kind, parallel):
    z, ops = xnor.xnor_gemm(a, xnor.prepare_xnor(w, K, kind=kind), backend="numba",
                            parallel=parallel, return_ops=True)
    ref = unpacked_product(a, w, K)
    assert z.dtype == np.int32 and z.shape == ref.shape
    np.testing.assert_array_equal(z, ref)
    assert ops == 2 * a.shape[0] * K * w.shape[0]
    return z


BOUNDARY_K = [1, 2, 63, 64, 65, 127, 128, 129, 191, 448, 511, 512, 513, 784, 960, 1023, 1024, 1025,
              1535, 1536, 1537, 2047, 2048, 2049, 4096, 4097]


@pytest.mark.parametrize("kind", xnor.KINDS)
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("K", BOUNDARY_K)
def test_word_boundaries(K, kind, parallel):
    rng = np.random.default_rng(K)
    for B, M in ((1, 1), (3, 7), (5, 17), (2, 63)):
        check(random_bits(rng, B, K), random_bits(rng, M, K), K, kind, parallel)


def test_the_two_references_agree():
    """Unpacked dot products and the NumPy popcount reference of the module."""
    rng = np.random.default_rng(7)
    a, w = random_bits(rng, 4, 300), random_bits(rng, 9, 300)
    z, ops = xnor.xnor_gemm_reference(a, w, 300)
    np.testing.assert_array_equal(unpacked_product(a, w, 300), z)
    assert ops == 2 * 4 * 300 * 9


@pytest.mark.parametrize("kind", xnor.KINDS)
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("K", [64 * 300 - 5, 64 * 248, 64 * 256])
def test_saturated_counters(kind, parallel, K):
    """All-ones XORs: every byte counter reaches its largest value (31 x 8 = 248).
    300 words: 37 steps, the 31-step flush and a tail; 248 words: 31 steps, the
    longest row of the one-run block (_hs_block_one); 256: one step past it."""
    a = random_bits(np.random.default_rng(0), 3, K, p=1.0)
    z = check(a, np.zeros((11, n_words(K)), np.uint64), K, kind, parallel)
    assert (z == -K).all()
    z = check(a, a[:1].repeat(5, axis=0), K, kind, parallel)
    assert (z == K).all()


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("K", [64, 65, 1000, 64 * 40 + 3, 64 * 70 + 1])
def test_short_row_path_any_length(K, parallel, monkeypatch):
    """The one-popcount-per-word path (Kw < 24) is exact at any length,
    including its 31-word byte-counter flushes."""
    monkeypatch.setattr(xnor, "HS_MIN_WORDS", 10 ** 9)
    assert xnor.hs_words(n_words(K)) == 0
    rng = np.random.default_rng(K)
    for p in (0.5, 1.0):
        check(random_bits(rng, 3, K, p), random_bits(rng, 21, K, 1 - p), K, "hs", parallel)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("K", [64 * 24, 64 * 25 + 9, 64 * 31 + 63, 64 * 33])
def test_carry_save_path_from_24_words(K, parallel):
    assert xnor.hs_words(n_words(K)) == n_words(K) // 8 * 8
    rng = np.random.default_rng(K)
    check(random_bits(rng, 5, K), random_bits(rng, 33, K), K, "hs", parallel)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 9), K=st.integers(1, 3000), M=st.integers(1, 41),
       kind=st.sampled_from(xnor.KINDS), parallel=st.booleans(), seed=st.integers(0, 2 ** 32 - 1),
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
def test_random_shapes(B, K, M, kind, parallel, seed, p):
    rng = np.random.default_rng(seed)
    check(random_bits(rng, B, K, p), random_bits(rng, M, K, 1 - p if seed % 2 else p), K, kind, parallel)


@pytest.mark.parametrize("kind", xnor.KINDS)
def test_empty_batch_and_rows(kind):
    rng = np.random.default_rng(1)
    check(random_bits(rng, 0, 100), random_bits(rng, 5, 100), 100, kind, False)
    check(random_bits(rng, 3, 100), random_bits(rng, 0, 100), 100, kind, False)


def test_numpy_backend_ignores_the_layout():
    rng = np.random.default_rng(2)
    a, w = random_bits(rng, 4, 2000), random_bits(rng, 19, 2000)
    for kind in xnor.KINDS:
        got = xnor.xnor_gemm(a, xnor.prepare_xnor(w, 2000, kind=kind), backend="numpy", return_ops=True)
        np.testing.assert_array_equal(got[0], unpacked_product(a, w, 2000))
        assert got[1] == 2 * 4 * 2000 * 19


def test_layout_and_choice():
    w = np.zeros((13, 2), np.uint64)
    L = xnor.prepare_xnor(w, 100, kind="hs")
    assert L.kind == "hs" and L.panels.shape == (4, 2, 8) and L.panels.ctypes.data % 64 == 0
    L = xnor.prepare_xnor(w, 100, kind="direct")
    assert L.kind == "direct" and L.panels.shape == (1, 2, 64) and L.panels.ctypes.data % 64 == 0
    assert xnor.prepare_xnor(w, 100).kind == xnor.choose_kind()
    assert xnor.choose_kind(dict(avx2=True, avx512vpopcntdq=False)) == "hs"
    assert xnor.choose_kind(dict(avx2=True, avx512vpopcntdq=True)) == "direct"
    assert xnor.choose_kind(dict(avx2=False, avx512vpopcntdq=False)) == "direct"
    with pytest.raises(ValueError, match="kind"):
        xnor.prepare_xnor(w, 100, kind="nope")
    with pytest.raises(ValueError):
        xnor.prepare_xnor(w[:, :1], 100)
    with pytest.raises(ValueError):
        xnor.xnor_gemm(np.zeros((2, 1), np.uint64), xnor.prepare_xnor(w, 100))


@pytest.mark.skipif(not (JIT_ON and jit.host_features()["avx2"]), reason="AVX2 code generation check")
def test_hs_inner_loop_is_carry_save():
    """One step = 8 words x 8 rows: 8 broadcasts, 92 vector operations: 16 XORs,
    8 adders on pairs (4 each), 6 plain adders (5 each), 2 byte popcounts and
    their adds (7 each); next to no spilling. Plain Harley-Seal on XOR words
    (7-operation pairs) compiles to 100."""
    ops = intrinsics.loop_ops(xnor.kernel_asm("hs"), key="vpor")
    alu = sum(v for k, v in ops.items() if k.startswith("vp") and k != "vpbroadcastq")
    assert ops.get("vpbroadcastq") == 8 and ops.get("vpshufb") == 4, ops
    assert alu <= 92 and ops.get("vpxor", 0) >= 16 + 8 + 6 * 2, ops
    assert sum(v for k, v in ops.items() if k.startswith("vmov")) <= 6, ops


words64 = st.integers(0, 2 ** 64 - 1).map(np.uint64)


@given(words64, words64, words64)
def test_pair_adder_is_the_carry_save_adder(a, b, c):
    """_csa_pair(a, b, b ^ c) is _csa(a, b, c), and _csa adds bitwise."""
    carry, total = xnor._csa(a, b, c)
    assert xnor._csa_pair(a, b, b ^ c) == (carry, total)
    for i in (0, 17, 63):
        bit = lambda v: (int(v) >> i) & 1                                   # noqa: E731
        assert bit(a) + bit(b) + bit(c) == 2 * bit(carry) + bit(total)


def test_pair_words_layout():
    """Odd words below n hold the XOR of their pair, everything else is a copy;
    prepared hs panels and the kernel's activations use it, the direct ones do not."""
    rng = np.random.default_rng(3)
    x = random_bits(rng, 5, 64 * 27)
    y = xnor.pair_words(x, 24)
    np.testing.assert_array_equal(y[:, 0:24:2], x[:, 0:24:2])
    np.testing.assert_array_equal(y[:, 1:24:2], x[:, 0:24:2] ^ x[:, 1:24:2])
    np.testing.assert_array_equal(y[:, 24:], x[:, 24:])
    L = xnor.prepare_xnor(x, 64 * 27, kind="hs")
    np.testing.assert_array_equal(L.panels[0].T[:5], y)
    np.testing.assert_array_equal(xnor.prepare_xnor(x, 64 * 27, kind="direct").panels[0].T[:5], x)
    np.testing.assert_array_equal(xnor.pair_words(x[:, :20], 0), x[:, :20])


_NOJIT = r"""
import numpy as np
from pysbnn.kernels import xnor
from test_xnor import unpacked_product, random_bits
rng = np.random.default_rng(5)
for B, K, M in ((1, 1, 1), (3, 65, 5), (2, 784, 17), (3, 64 * 25 + 7, 9)):
    a, w = random_bits(rng, B, K), random_bits(rng, M, K)
    for kind in xnor.KINDS:
        for par in (False, True):
            z, ops = xnor.xnor_gemm(a, xnor.prepare_xnor(w, K, kind=kind), backend="numba",
                                    parallel=par, return_ops=True)
            assert np.array_equal(z, unpacked_product(a, w, K)), (B, K, M, kind, par)
            assert ops == 2 * B * K * M
print("nojit ok")
"""


def test_disable_jit_runs_the_same_code():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1",
               PYTHONPATH=os.pathsep.join([root, here, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _NOJIT], capture_output=True, text=True,
                       env=env, cwd=here, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "nojit ok" in r.stdout
