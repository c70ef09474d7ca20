"""Bit-packed 3x3 convolutions: Numba kernels == NumPy references == a float
conv, exactly; executed operation counts == analytic counts."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysbnn import analysis
from pysbnn.kernels import conv_bnn, conv_layout, conv_sbnn
from pysbnn.levels import sbnn_output


def float_conv(x, w, stride, padding):
    """Direct float conv: zero-padded NHWC input, einsum over each 3x3 window."""
    n, H, W, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    H_out, W_out = (H + 2 * padding - 3) // stride + 1, (W + 2 * padding - 3) // stride + 1
    out = np.zeros((n, H_out, W_out, w.shape[0]))
    for y in range(H_out):
        for x_ in range(W_out):
            win = xp[:, stride * y:stride * y + 3, stride * x_:stride * x_ + 3, :]   # n, 3, 3, C
            out[:, y, x_] = np.einsum("nhwc,ochw->no", win, w.astype(np.float64))
    return out


def pm1(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def weights_of(kind, C_out, C_in, rng):
    """(latent +-1-ish weights for Kernel A, bool {0,1} weights for Kernel B)."""
    latent = rng.standard_normal((C_out, C_in, 3, 3))
    if kind == "zero":
        w01 = np.zeros((C_out, C_in, 3, 3), bool)
    elif kind == "ones":
        w01 = np.ones((C_out, C_in, 3, 3), bool)
    elif kind == "k1":                         # every kernel has exactly one one
        w01 = np.zeros((C_out, C_in, 9), bool)
        w01[np.arange(C_out)[:, None], np.arange(C_in)[None, :], rng.integers(0, 9, (C_out, C_in))] = True
        w01 = w01.reshape(C_out, C_in, 3, 3)
    else:
        w01 = rng.random((C_out, C_in, 3, 3)) < float(kind)
    return latent, w01


def check_all(x, latent, w01, stride, padding, parallel=None):
    n = x.shape[0]
    H_out, W_out = conv_layout.conv_out_size(x.shape[1], x.shape[2], stride, padding)
    positions = n * H_out * W_out
    C_out, C_in = w01.shape[:2]

    # Kernel A: float conv == reference == numba kernel; counts == analytic
    wpm = np.where(latent >= 0, 1.0, -1.0)
    f = float_conv(x, wpm, stride, padding)
    ra, ops_ra = conv_bnn.bnn_conv3x3_reference(x, latent, stride, padding)
    ka, ops_ka = conv_bnn.bnn_conv3x3(x, latent, stride, padding, parallel=parallel, backend="numba")
    assert ra.dtype == ka.dtype == np.int32
    np.testing.assert_array_equal(ra, f)
    np.testing.assert_array_equal(ka, ra)
    assert ops_ka == ops_ra
    assert ops_ka["total"] == analysis.bops_bnn(C_out, C_in, 3, positions)

    # Kernel B
    f = float_conv(x, w01.astype(np.float64), stride, padding)
    rb, ops_rb = conv_sbnn.sbnn_conv3x3_reference(x, w01, stride, padding)
    kb, ops_kb = conv_sbnn.sbnn_conv3x3(x, w01, stride, padding, parallel=parallel, backend="numba")
    assert rb.shape == kb.shape == f.shape and kb.dtype == np.int32
    np.testing.assert_array_equal(rb, f)
    np.testing.assert_array_equal(kb, rb)
    assert ops_kb == ops_rb == analysis.sbnn_conv_ops(w01, positions)
    assert ops_kb["total"] == analysis.bops_sparse(w01, positions)


# (H, W) per (stride, padding) so that the positions per plane of Kernel B's
# output grid (H_out * W for stride 1, H_out * W_out for stride 2) are 63, 64, 65, 128
SIZES = {(1, 1): [(7, 9), (8, 8), (5, 13), (8, 16)],
         (1, 0): [(9, 9), (10, 8), (7, 13), (10, 16)],
         (2, 1): [(13, 17), (15, 15), (9, 25), (15, 31)],
         (2, 0): [(15, 19), (17, 17), (11, 27), (17, 33)]}


@pytest.mark.parametrize("C_in", [1, 63, 64, 65])
@pytest.mark.parametrize("stride,padding", sorted(SIZES))
def test_word_boundaries(C_in, stride, padding):
    rng = np.random.default_rng(C_in * 10 + stride * 2 + padding)
    for (H, W), kind, positions in zip(SIZES[stride, padding], ["0.3", "k1", "ones", "0.02"],
                                       [63, 64, 65, 128]):
        H_out, W_out = conv_layout.conv_out_size(H, W, stride, padding)
        assert H_out * (W if stride == 1 else W_out) == positions
        latent, w01 = weights_of(kind, 3, C_in, rng)
        check_all(pm1(rng, (1, H, W, C_in)), latent, w01, stride, padding)


@pytest.mark.parametrize("kind", ["zero", "ones", "k1", "0.0", "0.01", "0.05", "0.5", "1.0"])
def test_densities_and_kernel_classes(kind):
    rng = np.random.default_rng(7)
    latent, w01 = weights_of(kind, 20, 24, rng)
    check_all(pm1(rng, (2, 11, 9, 24)), latent, w01, 1, 1)


@pytest.mark.parametrize("stride,padding", [(1, 1), (1, 0), (2, 1)])
def test_wide_rows_and_multiword_pixels(stride, padding):
    """Rows longer than a word (W = 100, 130) and pixels of three words (C_in = 130)."""
    rng = np.random.default_rng(stride + padding)
    latent, w01 = weights_of("0.1", 5, 130, rng)
    check_all(pm1(rng, (1, 4, 100, 130)), latent, w01, stride, padding)
    latent, w01 = weights_of("0.3", 3, 2, rng)
    check_all(pm1(rng, (2, 3, 130, 2)), latent, w01, stride, padding)


def test_many_ones_per_filter_use_many_counter_levels():
    rng = np.random.default_rng(3)
    latent, w01 = weights_of("0.9", 2, 130, rng)          # ~1050 ones per filter: 11 levels
    check_all(pm1(rng, (1, 6, 5, 130)), latent, w01, 1, 1)


@pytest.mark.parametrize("parallel", [False, True])
def test_batches_serial_and_parallel(parallel):
    rng = np.random.default_rng(11)
    latent, w01 = weights_of("0.1", 9, 17, rng)
    check_all(pm1(rng, (3, 9, 10, 17)), latent, w01, 1, 1, parallel=parallel)
    check_all(pm1(rng, (3, 9, 10, 17)), latent, w01, 2, 1, parallel=parallel)


def test_k1_layer_is_a_sum_of_shifted_copies():
    """All-K1 layer: z'[o] = sum_i of input plane i shifted by the tap of (o, i)."""
    rng = np.random.default_rng(5)
    _, w01 = weights_of("k1", 4, 6, rng)
    x = pm1(rng, (1, 7, 8, 6))
    z, ops = conv_sbnn.sbnn_conv3x3(x, w01, 1, 1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros_like(z, dtype=np.float64)
    for o in range(4):
        for i in range(6):
            dy, dx = np.argwhere(w01[o, i])[0]
            want[0, :, :, o] += xp[0, dy:dy + 7, dx:dx + 8, i]
    np.testing.assert_array_equal(z, want)
    assert ops == {"k1_shift": 4 * 6 * 56, "popcount": 0, "total": 4 * 6 * 56}


def test_packed_entry_points_and_layouts():
    rng = np.random.default_rng(2)
    x = pm1(rng, (2, 6, 7, 70))
    latent, w01 = weights_of("0.2", 5, 70, rng)
    xp = conv_layout.pack_pixels(x, 1, backend="numpy")
    assert xp.shape == (2, 8, 9, 2) and xp.dtype == np.uint64
    assert not xp[:, 0].any() and not xp[:, :, -1].any()          # padding ring is zero
    planes = conv_layout.pack_planes(x, backend="numpy")
    np.testing.assert_array_equal(conv_layout._unpack_planes(planes, 6, 7), x >= 0)
    bplan, splan = conv_bnn.prepare_bnn_conv3x3(latent), conv_sbnn.prepare_sbnn_conv3x3(w01)
    a1, _ = conv_bnn.bnn_conv3x3_packed(xp, bplan, 6, 7, 1, 1)
    b1, _ = conv_sbnn.sbnn_conv3x3_packed(planes, splan, 6, 7, 1, 1)
    np.testing.assert_array_equal(a1, conv_bnn.bnn_conv3x3_reference(x, latent)[0])
    np.testing.assert_array_equal(b1, conv_sbnn.sbnn_conv3x3_reference(x, w01)[0])
    # the NumPy backend gives the same numbers
    np.testing.assert_array_equal(conv_bnn.bnn_conv3x3_packed(xp, bplan, 6, 7, backend="numpy")[0], a1)
    np.testing.assert_array_equal(conv_sbnn.sbnn_conv3x3_packed(planes, splan, 6, 7, backend="numpy")[0], b1)
    with pytest.raises(ValueError):
        conv_sbnn.sbnn_conv3x3_packed(planes, splan, 20, 7)
    with pytest.raises(ValueError):
        conv_layout.conv_out_size(1, 5, 1, 0)


@pytest.mark.parametrize("shape", [(1, 3, 3, 1), (2, 7, 9, 63), (1, 8, 8, 64), (3, 5, 13, 65)])
def test_numba_packers_equal_the_references(shape):
    x = pm1(np.random.default_rng(1), shape)
    x[..., 0] = 0.0                                          # sign(0) = +1
    for p in (0, 1):
        np.testing.assert_array_equal(conv_layout.pack_pixels(x, p, backend="numba"),
                                      conv_layout.pack_pixels(x, p, backend="numpy"))
    np.testing.assert_array_equal(conv_layout.pack_planes(x, backend="numba"),
                                  conv_layout.pack_planes(x, backend="numpy"))
    xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)   # channel-major
    assert conv_layout._channel_major(xc) == (x.shape[3] > 1 and x.shape[1] * x.shape[2] > 1)
    np.testing.assert_array_equal(conv_layout.pack_pixels(xc, 1, backend="numba"),
                                  conv_layout.pack_pixels(x, 1, backend="numpy"))
    np.testing.assert_array_equal(conv_layout.pack_planes(xc, backend="numba"),
                                  conv_layout.pack_planes(x, backend="numpy"))


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"),
                    reason="the channel-major view is the compiled kernel's layout; "
                           "with JIT disabled the NumPy reference returns plain NHWC")
def test_sbnn_layers_chain_without_transposes():
    """Kernel B's NHWC view (channel-major memory) feeds the next layer's packer."""
    rng = np.random.default_rng(4)
    x = pm1(rng, (2, 6, 5, 7))
    w1, w2 = rng.random((9, 7, 3, 3)) < 0.3, rng.random((4, 9, 3, 3)) < 0.3
    z1, _ = conv_sbnn.sbnn_conv3x3(x, w1)
    a1 = np.where(z1 >= 0, 1.0, -1.0)             # elementwise ops keep the memory layout
    assert conv_layout._channel_major(a1)
    z2, _ = conv_sbnn.sbnn_conv3x3(a1, w2)
    np.testing.assert_array_equal(z2, float_conv(np.ascontiguousarray(a1), w2.astype(float), 1, 1))
    np.testing.assert_array_equal(conv_bnn.bnn_conv3x3(a1, w2 - 0.5)[0],
                                  conv_bnn.bnn_conv3x3_reference(np.ascontiguousarray(a1), w2 - 0.5)[0])


def test_sbnn_output_eq20():
    """z = eta z' + xi eta q equals the float conv with w = (w01 + xi) eta."""
    rng = np.random.default_rng(9)
    x = pm1(rng, (2, 7, 6, 5))
    w01 = rng.random((4, 5, 3, 3)) < 0.3
    for stride, padding in [(1, 1), (2, 0)]:
        zp, _ = conv_sbnn.sbnn_conv3x3(x, w01, stride, padding)
        q = conv_sbnn.conv3x3_ones(x, stride, padding)
        ones_conv = float_conv(x, np.ones((1, 5, 3, 3)), stride, padding)
        np.testing.assert_array_equal(q, ones_conv)
        xi, eta = -0.5, np.array([2.0, 1.5, 0.25, 3.0])
        z = sbnn_output(zp, q, xi, eta)
        w = (w01 + xi) * eta[:, None, None, None]
        np.testing.assert_allclose(z, float_conv(x, w, stride, padding), rtol=1e-12, atol=1e-12)


def test_latent_weights_use_w_ge_0():
    w = np.array([0.0, -1e-9, 2.0, -3.0, 0.0, 1.0, -1.0, 0.5, -0.5]).reshape(1, 1, 3, 3)
    x = np.ones((1, 3, 3, 1))
    z, ops = conv_sbnn.sbnn_conv3x3(x, w, 1, 0)
    assert z.ravel().tolist() == [5]                              # the five w >= 0
    assert ops["popcount"] == 5


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), H=st.integers(3, 12), W=st.integers(3, 12), C_in=st.integers(1, 70),
       C_out=st.integers(1, 6), stride=st.sampled_from([1, 2]), padding=st.sampled_from([0, 1]),
       density=st.sampled_from([0.0, 0.03, 0.2, 0.7, 1.0]), seed=st.integers(0, 2**16))
def test_random_shapes(n, H, W, C_in, C_out, stride, padding, density, seed):
    rng = np.random.default_rng(seed)
    latent, w01 = weights_of(str(density), C_out, C_in, rng)
    check_all(pm1(rng, (n, H, W, C_in)), latent, w01, stride, padding)


def test_kernel_code_runs_uncompiled():
    """With NUMBA_DISABLE_JIT=1 the same kernel code (and the NumPy twins of
    its SIMD helpers) runs as plain Python and gives the same numbers."""
    code = (
        "import numpy as np\n"
        "from pysbnn.kernels import conv_bnn, conv_sbnn\n"
        "rng = np.random.default_rng(0)\n"
        "x = np.where(rng.random((1, 6, 5, 3)) < 0.5, -1.0, 1.0)\n"
        "w = rng.standard_normal((2, 3, 3, 3)); w01 = rng.random((2, 3, 3, 3)) < 0.4\n"
        "for s, p in [(1, 1), (2, 0)]:\n"
        "    a = conv_bnn.bnn_conv3x3(x, w, s, p, backend='numba')\n"
        "    b = conv_sbnn.sbnn_conv3x3(x, w01, s, p, backend='numba')\n"
        "    assert (a[0] == conv_bnn.bnn_conv3x3_reference(x, w, s, p)[0]).all() and a[1]['total'] > 0\n"
        "    rb = conv_sbnn.sbnn_conv3x3_reference(x, w01, s, p)\n"
        "    assert (b[0] == rb[0]).all() and b[1] == rb[1]\n"
        "print('ok')\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("shape", [(1, 1, 3, 3), (2, 5, 7, 9), (3, 64, 4, 4), (2, 3, 8, 8)])
def test_residual_passes_equal_their_references(shape):
    """Sign planes with counts, window sums and the fused unit output: kernels == NumPy."""
    from pysbnn.kernels import residual
    rng = np.random.default_rng(sum(shape))
    h = rng.standard_normal(shape).astype(np.float32)
    h[..., 0, 0] = 0.0                                            # sign(0) = +1
    planes, ones = residual.pack_planes_counting(h, backend="numba")
    planes_ref, ones_ref = residual.pack_planes_counting(h, backend="numpy")
    np.testing.assert_array_equal(planes, planes_ref)
    np.testing.assert_array_equal(ones, ones_ref)
    nhwc = h.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(planes, conv_layout.pack_planes(nhwc, backend="numpy"))
    n, C, H, W = shape
    for stride, padding in [(1, 1), (2, 1), (1, 0)]:
        if (H + 2 * padding - 3) < 0 or (W + 2 * padding - 3) < 0:
            continue
        q = residual.window_sums((2 * ones - C).reshape(n, H, W), stride, padding, backend="numba")
        np.testing.assert_array_equal(q, residual.window_sums((2 * ones - C).reshape(n, H, W), stride,
                                                              padding, backend="numpy"))
        np.testing.assert_array_equal(q[..., None], conv_sbnn.conv3x3_ones(np.where(nhwc >= 0, 1, -1), stride, padding))
        Ho, Wo = q.shape[1:]
        R = W if stride == 1 else Wo
        Pw = -(-Ho * R // 64)
        zbuf = rng.integers(-50, 50, (n, 4, Pw * 64)).astype(np.int32)
        A, Cc, sc = rng.normal(size=4), rng.normal(size=4), rng.normal(size=(n, 4, Ho, Wo)).astype(np.float32)
        for clip in (True, False):
            got = residual.unit_output(zbuf, R, q, A, -0.37, Cc, sc, clip, backend="numba")
            want = residual.unit_output(zbuf, R, q, A, -0.37, Cc, sc, clip, backend="numpy")
            np.testing.assert_array_equal(got, want)
            z = zbuf[:, :, :Ho * R].reshape(n, 4, Ho, R)[..., :Wo]
            real = A[None, :, None, None] * (z - 0.37 * q[:, None]) + Cc[None, :, None, None] + sc
            np.testing.assert_allclose(got, np.clip(real, -1, 1) if clip else real, rtol=1e-5, atol=1e-4)
