"""Training kernels against their NumPy references: the binary 3x3 conv on packed
sign bits (forward, weight and input gradients) and fused BatchNorm; both
backends in one process, compiled and as plain Python (what NUMBA_DISABLE_JIT runs)."""

import numpy as np
import pytest

from pysbnn import functional as F
from pysbnn.binary import BinaryConv2d
from pysbnn.kernels import batchnorm as kbn
from pysbnn.kernels import conv_input_grad as cig
from pysbnn.kernels import conv_sign_hist as csh
from pysbnn.kernels import conv_sign_tables as cst
from pysbnn.kernels import conv_xnor_train as cxt
from pysbnn.kernels import jit, simd
from pysbnn.kernels.conv_bnn import bnn_conv3x3_reference
from pysbnn.kernels.conv_layout import pack_pixels
from pysbnn.layers import BatchNorm2d
from pysbnn.testing import check_layer_gradients

needs_numba = pytest.mark.skipif(not jit.numba_available(), reason="needs numba")

CASES = [  # (n, h, w, c_in, c_out, stride)
    (2, 7, 6, 3, 5, 1),
    (2, 7, 7, 70, 4, 2),
    (3, 8, 8, 16, 16, 1),
    (2, 9, 9, 16, 32, 2),
    (2, 5, 5, 130, 8, 1),
    (3, 4, 4, 8, 13, 2),
    (2, 6, 7, 24, 9, 1),
    (2, 4, 4, 64, 24, 1),
]


def _data(case, dtype=np.float32, seed=0):
    n, h, w, ci, co, s = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, ci)).astype(dtype)
    x[0, 0, 0, 0] = 0.0                                 # sign(0) = +1
    wt = rng.standard_normal((co, ci, 3, 3)).astype(dtype)
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    d = rng.standard_normal((n, ho, wo, co)).astype(dtype)
    return x, wt, d


def _sign(a):
    return np.where(a >= 0, 1.0, -1.0).astype(a.dtype)


# -------------------------------------------------------------- forward
@pytest.mark.parametrize("case", CASES)
def test_packed_signs_and_the_exact_integer_product(case, backend):
    x, wt, _ = _data(case)
    s = case[-1]
    bits = cxt.pack_padded_signs(x, backend)
    np.testing.assert_array_equal(bits, pack_pixels(x, 1, "numpy"))
    S, _ = bnn_conv3x3_reference(_sign(x), wt, s, 1)             # Kernel A's integers
    out = cxt.xnor_conv3x3_train(bits, cxt.prepare_sign_weights(wt), case[1], case[2], s, 1.0, 0.0,
                                 np.float64, parallel=backend == "numba")
    np.testing.assert_array_equal(out, S)                          # tau = 1, phi = 0: S itself


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_conv_forward_equals_the_float_product(case, dtype):
    x, wt, _ = _data(case, dtype)
    tau, phi = 0.7, -0.2
    w_q = (tau * _sign(wt) + phi).astype(dtype)
    ref, _ = F.binary_conv3x3_forward(x, wt, w_q, tau, phi, case[-1], "numpy")
    out, cache = F.binary_conv3x3_forward(x, wt, w_q, tau, phi, case[-1], "numba")
    assert out.dtype == dtype and isinstance(cache, F.BinaryConvCache)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())


# -------------------------------------------------------------- gradients
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_sign_histograms_give_the_weight_gradient(case, threads):
    x, _, d = _data(case, np.float64)
    bits = cxt.pack_padded_signs(x)
    want = csh.weight_grad_reference(bits, case[3], d, case[-1])
    got = csh.sign_hist_weight_grad(bits, case[3], d, case[-1], threads)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    got32 = csh.sign_hist_weight_grad(bits, case[3], d.astype(np.float32), case[-1], threads)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("parallel", [False, True])
def test_register_blocked_input_gradient(case, parallel):
    _, wt, d = _data(case, np.float64)
    n, h, w, ci, co, s = case
    want = cig.input_grad_reference(d, wt, (n, h, w, ci), s)
    w9 = cig.tap_weights(wt, cig.padded_channels(ci))
    plain = cig.conv3x3_input_grad(d, w9, h, w, s, ci, parallel)
    np.testing.assert_allclose(plain, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    x = np.random.default_rng(1).standard_normal(want.shape)
    x.flat[:3] = [1.0, -1.0, np.nan]                          # the clipped STE: edges pass, NaN not
    got = cig.conv3x3_input_grad(d, w9, h, w, s, ci, parallel, x, 1.0)
    np.testing.assert_array_equal(got, plain * (np.abs(x) <= 1))


def test_vector_kernels_as_plain_python():
    """The kernel bodies with the NumPy vectors of pysbnn.kernels.simd (NUMBA_DISABLE_JIT=1)."""
    x, wt, d = _data((2, 5, 6, 16, 11, 2), np.float64)
    bits = cxt.pack_padded_signs(x, "numpy")
    G, C_out = 2, d.shape[3]
    H = np.zeros(9 * G * 256 * C_out)
    csh._hist_serial(bits.reshape(-1).view(np.uint8), (7, 8, 8), G, d, 2, cxt.valid_taps(3, 5, 2),
                     cxt.valid_taps(3, 6, 2), H)
    np.testing.assert_allclose(csh.expand_histograms(H.reshape(9, G, 256, C_out), 16),
                               csh.weight_grad_reference(bits, 16, d, 2), rtol=1e-12, atol=1e-12)
    w9 = cig.tap_weights(wt, 16)
    pix0, toff = cig.geometry(5, 6, 2)
    dx = np.empty((2, 5, 6, 16))
    cig._input_grad_serial(d.reshape(-1), w9, pix0, toff, x, -1.0, dx)
    np.testing.assert_allclose(dx, cig.input_grad_reference(d, wt, (2, 5, 6, 16), 2), rtol=1e-12, atol=1e-12)
    n, d8 = 9, np.concatenate([d] * 5)[:9]                   # two octets, the second partial
    x9 = np.concatenate([x] * 5)[:9]
    bits9 = cxt.pack_padded_signs(x9, "numpy")
    kb, codes = 4, cst.weight_codes(wt, 4)
    out = np.empty((n, 5, 6, 16))
    cst._input_grad_serial(d8.reshape(n, 9, 11), codes, kb, 0.5, 0.25, 2, cxt.valid_taps(3, 5, 2),
                           cxt.valid_taps(3, 6, 2), x9, -1.0, out)
    np.testing.assert_allclose(out, cig.input_grad_reference(d8, 0.5 * _sign(wt) + 0.25, x9.shape, 2),
                               rtol=1e-12, atol=1e-12)
    K, dws = np.zeros((2, 7, 8, 16), np.uint8), np.zeros((1, 9 * 16 * 8))
    d16 = np.concatenate([d8, d8[..., :5]], axis=3)[..., :8].copy()
    cst._weight_serial(bits9, K, d16.reshape(n, 9, 8), 2, cxt.valid_taps(3, 5, 2), cxt.valid_taps(3, 6, 2), dws, 8)
    np.testing.assert_array_equal(K, cst.image_sign_bytes(bits9, 16))
    np.testing.assert_allclose(dws[0].reshape(9, 16, 8).transpose(2, 1, 0).reshape(8, 16, 3, 3),
                               csh.weight_grad_reference(bits9, 16, d16, 2), rtol=1e-12, atol=1e-12)
    v = simd.vfma(simd.vbroadcast(np.arange(3.0), 2), simd.vload(np.arange(10.0), 1), simd.vzero(np.ones(2)))
    np.testing.assert_array_equal(v, 2 * np.arange(1.0, 9.0))


@pytest.mark.parametrize("case", CASES[:4])
@pytest.mark.parametrize("quantizer", ["clipped", "ede"])
def test_binary_conv_layer_backends_agree(case, quantizer):
    """Every gradient of a BinaryConv2d (input through the STE, latent weight, tau, phi);
    the clipped STE is fused into the input-gradient kernels, EDE's is applied after."""
    x, _, d = _data(case, np.float64)
    n, h, w, ci, co, s = case
    grads = {}
    for backend in ("numpy", "numba"):
        layer = BinaryConv2d(ci, co, 3, stride=s, padding=1, rng=3, backend=backend,
                             weight_quantizer=quantizer, input_quantizer=quantizer).astype(np.float64)
        layer.params["tau"][:], layer.params["phi"][:] = 0.8, 0.1
        out = layer.forward(x * 0.7, training=True)
        grads[backend] = (out, layer.backward(d), *(layer.grads[k] for k in ("weight", "tau", "phi")))
    for got, want in zip(grads["numba"], grads["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


@needs_numba
def test_binary_conv_float64_gradient_check_on_packed_bits():
    """tau and phi through the packed path (the input goes through sign, an STE)."""
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 16))
    for stride in (1, 2):
        conv = BinaryConv2d(16, 8, 3, stride=stride, padding=1, rng=0, backend="numba")
        check_layer_gradients(conv, x, params=["tau", "phi"], wrt_input=False, rng=3)


# -------------------------------------------------------------- batchnorm
@pytest.mark.parametrize("shape", [(5, 4, 4, 3), (2, 7, 7, 16), (3, 5, 5, 20), (64, 40)])
@pytest.mark.parametrize("training", [True, False])
def test_fused_batchnorm_equals_the_formulas(shape, training):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 2 + 30                      # mean >> std: no cancellation
    d = rng.standard_normal(shape)
    res = {}
    for backend in ("numpy", "numba"):
        bn = BatchNorm2d(shape[-1], backend=backend).astype(np.float64)
        bn.params["gamma"][:] = np.linspace(0.5, 1.5, shape[-1])
        bn.params["beta"][:] = np.linspace(-1, 1, shape[-1])
        bn.buffers["running_mean"][:] = 29.0
        out = bn.forward(x, training=training)
        res[backend] = (out, bn.backward(d), bn.grads["gamma"], bn.grads["beta"],
                        bn.buffers["running_mean"], bn.buffers["running_var"])
    for got, want in zip(res["numba"], res["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("threads", [1, 2])
def test_channel_sums_with_shifts(threads):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((1000, 24)).astype(np.float32) + 100, rng.standard_normal((1000, 24))
    y = y.astype(np.float32)
    mu = x.astype(np.float64).mean(axis=0)
    s1, s2 = kbn.channel_sums(y, x, 0.0, mu, threads)
    np.testing.assert_allclose(s1, y.sum(axis=0, dtype=np.float64), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(s2, (y * (x - mu)).sum(axis=0), rtol=1e-4, atol=1e-3)


@needs_numba
def test_batchnorm_gradient_check_on_the_kernels():
    bn = BatchNorm2d(8, backend="numba")
    check_layer_gradients(bn, np.random.default_rng(3).standard_normal((4, 3, 3, 8)) + 2.0, rng=4)
    check_layer_gradients(bn, np.random.default_rng(3).standard_normal((4, 3, 3, 8)), training=False, rng=5)


# -------------------------------------------------------------- parameters only
@pytest.mark.parametrize("build", ["resnet", "mlp"])
def test_backward_params_gives_the_same_gradients(build, backend):
    """fit() skips the input gradient of the first layers; the parameters' gradients
    are those of a full backward."""
    import pysbnn
    rng = np.random.default_rng(5)
    if build == "resnet":
        from pysbnn.resnet import resnet18
        model, x = resnet18(width=8, seed=1), rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    else:
        model, x = pysbnn.binary_mlp((784, 32, 10), seed=1), rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    model.set_backend(backend)
    logits = model.forward(x, training=True)
    d = rng.standard_normal(logits.shape).astype(np.float32)
    model.backward(d)
    full = {k: v.copy() for k, v in model.named_grads()}
    model.zero_grad()
    model.forward(x, training=True)
    assert model.backward_params(d) is None
    for name, g in model.named_grads():
        np.testing.assert_array_equal(g, full[name], err_msg=name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_tables_over_image_octets_give_both_gradients(case, threads):
    n, h, w, ci, co, s = case
    rng = np.random.default_rng(6)
    n = 2 * n + 5                                          # octets: full ones and a partial one
    x = rng.standard_normal((n, h, w, ci))
    wt = rng.standard_normal((co, ci, 3, 3))
    d = rng.standard_normal((n, (h - 1) // s + 1, (w - 1) // s + 1, co))
    tau, phi = 0.8, -0.15
    w_q = tau * _sign(wt) + phi
    want = cig.input_grad_reference(d, w_q, x.shape, s)
    got = cst.sign_table_input_grad(d, wt, tau, phi, h, w, s, parallel=threads > 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    x.flat[:3] = [1.0, -1.0, np.nan]
    masked = cst.sign_table_input_grad(d, wt, tau, phi, h, w, s, threads > 1, x, 1.0)
    np.testing.assert_array_equal(masked, got * (np.abs(x) <= 1))
    bits = cxt.pack_padded_signs(x)
    np.testing.assert_array_equal(cst.image_sign_bytes(bits, ci).shape, (-(-n // 8), h + 2, w + 2, ci))
    if co % 8 == 0:
        want = csh.weight_grad_reference(bits, ci, d, s)
        got = cst.sign_table_weight_grad(bits, ci, d, s, threads)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


# -------------------------------------------------------------- pass-through
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_pass_equals_the_numpy_mask(dtype, backend):
    from pysbnn.kernels.passthrough import clip_pass, clip_pass_numpy
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 6, 7, 5)) * 1.5).astype(dtype)
    x.flat[:4] = [1.0, -1.0, np.nan, 0.0]                     # both edges pass, NaN does not
    d = rng.standard_normal((3, 8, 9, 8)).astype(dtype)      # a padded gradient, channels padded
    want = clip_pass_numpy(d[:, 1:7, 1:8, :5], x, 1.0)
    for got in (clip_pass(np.ascontiguousarray(d[:, 1:7, 1:8, :5]), x, 1.0, backend),
                clip_pass(d[:, 1:7, 1:8, :5], x, 1.0, backend)):
        assert got.dtype == dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(clip_pass(d[0, 0], d[1, 0], 0.5, backend), clip_pass_numpy(d[0, 0], d[1, 0], 0.5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("epoch", [0, 4, 10])
def test_ede_pass_equals_dout_times_the_ede_gradient(dtype, epoch):
    """EDE's chain rule in one pass, 4 k t e / (1 + e)^2 with e = exp(-2 t |x|), equals
    dout * EDE.grad(x) (k t (1 - tanh^2(t x))) to rounding, on both sides of zero, far out
    (where tanh rounds to 1) and at +-inf; serial and parallel; the layer path uses it."""
    from pysbnn.functional import sign_ste_backward
    from pysbnn.kernels.passthrough import CHUNK, ede_pass
    from pysbnn.quantizers import EDE
    q = EDE(epoch, 10)
    rng = np.random.default_rng(epoch)
    x = (rng.standard_normal(4 * CHUNK + 37) * 2).astype(dtype)
    x[:6] = [0.0, -0.0, 1e-3, -30.0, np.inf, -np.inf]
    d = rng.standard_normal(x.shape).astype(dtype)
    want = d * q.grad(x)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    atol = rtol * q.k * q.t * np.abs(d).max()              # cancellation in 1 - tanh^2 far out
    for parallel in (False, True):
        got = ede_pass(d, x, q.t, q.k, parallel)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    assert ede_pass(d, x, q.t, q.k)[0] == pytest.approx(d[0] * q.k * q.t, rel=1e-6)
    assert ede_pass(d, x, q.t, q.k)[4] == 0.0
    d4, x4 = d[:120].reshape(2, 3, 4, 5), x[:120].reshape(2, 3, 4, 5)
    np.testing.assert_allclose(sign_ste_backward(d4, x4, q, "numba"), d4 * q.grad(x4), rtol=rtol, atol=atol)
    with pytest.raises(ValueError, match="C-contiguous"):
        ede_pass(d4[:, ::2], x4[:, ::2], q.t, q.k)


def test_exp_nonpositive32_is_within_2_ulp_and_compiles_to_the_same_bits():
    """The vectorisable float32 exponential of the EDE kernel: within 2 ulp of
    e^y (float64 reference) over y in [-87.33, 0] including both ends and the
    reduction's half-way points; 0 below; NaN stays NaN; the compiled twin
    (bitcast intrinsic, see kernels.intrinsics) gives the Python twin's bits."""
    numba = pytest.importorskip("numba")
    from pysbnn.kernels.intrinsics import float32_from_bits
    from pysbnn.kernels.passthrough import _EDE, exp_nonpositive32
    from pysbnn.kernels.jit import jit_disabled
    assert float32_from_bits((-3 + 127) << 23) == np.float32(0.125)
    assert float32_from_bits(0xBF800000) == np.float32(-1.0)
    rng = np.random.default_rng(1)
    y = np.concatenate([-rng.uniform(0, 87.33, 3000), -np.arange(0, 126) * np.log(2) - np.log(2) / 2,
                        [0.0, -0.0, -1e-30, -87.33, -87.3, -87.34, -100.0, -np.inf]]).astype(np.float32)
    got = np.array([exp_nonpositive32(v) for v in y], np.float32)
    ref = np.exp(y.astype(np.float64))
    normal = y >= np.float32(-87.33)
    ulp = np.spacing(ref[normal].astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got[normal] - ref[normal]) <= 2 * ulp)
    assert np.all(got[~normal] == 0) and exp_nonpositive32(np.float32(0.0)) == 1.0
    assert np.isnan(exp_nonpositive32(np.float32("nan")))
    if jit_disabled():
        return
    compiled = numba.njit(lambda v: exp_nonpositive32(v))
    _ = _EDE["ede"]                                 # registers the helpers and intrinsics
    np.testing.assert_array_equal(np.array([compiled(v) for v in y], np.float32), got)


# -------------------------------------------------------------- Adam
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_kernel_gives_the_bits_of_the_numpy_formula(dtype, weight_decay, backend):
    from pysbnn.kernels.adam import adam_numpy, adam_update
    rng = np.random.default_rng(3)
    shape = (3, 1037)                             # not a whole number of vectors
    w0 = rng.standard_normal(shape).astype(dtype)
    state = {k: (w0.copy(), np.zeros_like(w0), np.zeros_like(w0)) for k in ("ref", "got")}
    for t in range(1, 4):                         # bias corrections change every step
        g = (rng.standard_normal(shape) * 10.0 ** -t).astype(dtype)
        g.flat[:2] = [0.0, -0.0]
        adam_numpy(*state["ref"][:1], g, *state["ref"][1:], 1e-3, 0.9, 0.999, 1e-8, t, weight_decay)
        adam_update(*state["got"][:1], g, *state["got"][1:], 1e-3, 0.9, 0.999, 1e-8, t, weight_decay, backend)
        for want, got in zip(state["ref"], state["got"]):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(state["got"][0], w0)
    # non-contiguous moments fall back to the formula, same bits
    w, m, v = w0.copy(), np.zeros((shape[1], shape[0]), dtype).T, np.zeros_like(w0)
    adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 1, weight_decay, backend)
    wr, mr, vr = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    adam_numpy(wr, g, mr, vr, 1e-3, 0.9, 0.999, 1e-8, 1, weight_decay)
    np.testing.assert_array_equal(w, wr)
    np.testing.assert_array_equal(m, mr)
