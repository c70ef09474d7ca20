"""Binarized ResNet-18 (pysbnn.resnet) and the convolution backends (pysbnn.kernels.im2col)."""

import numpy as np
import pytest

import pysbnn
from pysbnn import functional as F
from pysbnn.binary import BinaryConv2d
from pysbnn.containers import Residual, Sequential
from pysbnn.kernels import im2col as ic
from pysbnn.layers import BatchNorm2d, Conv2d, Dense, HardTanh
from pysbnn.resnet import basic_block, binary_conv_layers, binary_conv_positions, resnet18
from pysbnn.testing import check_layer_gradients


# ------------------------------------------------------------------ structure
def test_sixteen_binary_convs_with_resnet18_widths_and_strides():
    model = resnet18(width=4)
    convs = binary_conv_layers(model)
    assert len(convs) == 16
    assert [c.out_channels for c in convs] == [4] * 4 + [8] * 4 + [16] * 4 + [32] * 4
    assert [c.in_channels for c in convs] == [4] * 5 + [8] * 4 + [16] * 4 + [32] * 3
    assert [k + 1 for k, c in enumerate(convs) if c.stride == 2] == [5, 9, 13]
    assert all(c.kernel_size == 3 and c.padding == 1 and c.binarize_input for c in convs)
    assert all(c.domain.name == "learned" and c.weight_quantizer.name == "ede" for c in convs)


def test_full_precision_parts_are_stem_shortcuts_and_classifier():
    model = resnet18(width=4, num_classes=7)
    float_convs = [l for _, l in model.named_layers() if type(l) is Conv2d]
    assert [(c.kernel_size, c.stride) for c in float_convs] == [(3, 1), (1, 2), (1, 2), (1, 2)]
    dense = [l for _, l in model.named_layers() if isinstance(l, Dense)]
    assert len(dense) == 1 and (dense[0].in_features, dense[0].out_features) == (32, 7)


def test_each_binary_unit_is_residual_then_hardtanh():
    """IR-Net: HardTanh(BN(BinaryConv(x)) + shortcut(x)) for both convs of a block."""
    model = resnet18(width=4)
    blocks = [b for stage in model.layers[3:7] for b in stage.layers]
    assert len(blocks) == 8
    for k, block in enumerate(blocks):
        kinds = [type(l) for l in block.layers]
        assert kinds == [Residual, HardTanh, Residual, HardTanh]
        first, second = block.layers[0], block.layers[2]
        assert [type(l) for l in first.body.layers] == [BinaryConv2d, BatchNorm2d]
        assert second.shortcut is None
        downsamples = k in (2, 4, 6)
        assert (first.shortcut is not None) == downsamples


def test_output_shapes_for_grey_and_colour_images():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    colour = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert resnet18(width=4).forward(grey, training=True).shape == (3, 10)
    assert resnet18(width=4, in_channels=3, num_classes=5).forward(colour).shape == (2, 5)


def test_binary_conv_positions():
    model = resnet18(width=2)
    assert binary_conv_positions(model, 28) == [784] * 4 + [196] * 4 + [49] * 4 + [16] * 4
    assert binary_conv_positions(model, 32) == [1024] * 4 + [256] * 4 + [64] * 4 + [16] * 4


def test_seed_fixes_every_weight():
    a, b, c = resnet18(width=4, seed=3), resnet18(width=4, seed=3), resnet18(width=4, seed=4)
    for (n1, p1), (_, p2), (_, p3) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        np.testing.assert_array_equal(p1, p2)
    assert any(not np.array_equal(p1, p3) for (_, p1), (_, p3) in zip(a.named_parameters(), c.named_parameters())
               if p1.size > 2)


@pytest.mark.parametrize("kwargs", [dict(width=0), dict(in_channels=2), dict(num_classes=0),
                                    dict(domain="ternary"), dict(quantizer="nope"), dict(init="zeros"),
                                    dict(mean=(0.1, 0.2), in_channels=3)])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        resnet18(**kwargs)


@pytest.mark.parametrize("domain,init", [("sym", "uniform"), ("alpha_beta", "uniform"),
                                         ("learned", "all_ones"), ("zero_one", "uniform")])
def test_domains_and_inits_are_passed_to_every_binary_conv(domain, init):
    convs = binary_conv_layers(resnet18(width=2, domain=domain, init=init, init_scale=1e-3))
    assert {c.domain.name for c in convs} == {domain}
    if init == "all_ones":
        assert all((c.params["weight"] >= 0).all() for c in convs)
    else:
        assert max(np.abs(c.params["weight"]).max() for c in convs) <= 1e-3


# ------------------------------------------------------------ forward values
def _sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def _bn_eval(x, bn):
    return ((x - bn.buffers["running_mean"]) / np.sqrt(bn.buffers["running_var"] + bn.eps)
            * bn.params["gamma"] + bn.params["beta"])


def test_block_forward_matches_the_ir_net_formula():
    """Eval-mode block output written out by hand from conv2d, sign and BN formulas."""
    rng = np.random.default_rng(1)
    block = basic_block(3, 5, 2, dict(domain="learned"), rng).astype(np.float64)
    for _, layer in block.named_layers():
        if isinstance(layer, BatchNorm2d):
            c = layer.num_features
            layer.buffers["running_mean"][:] = rng.standard_normal(c)
            layer.buffers["running_var"][:] = rng.uniform(0.5, 2.0, c)
            layer.params["gamma"][:] = rng.uniform(0.5, 1.5, c)
            layer.params["beta"][:] = rng.standard_normal(c)
        if isinstance(layer, BinaryConv2d):
            layer.params["tau"][:] = rng.uniform(0.5, 1.5)
            layer.params["phi"][:] = rng.uniform(-0.3, 0.3)
    x = rng.standard_normal((2, 7, 7, 3))
    unit1, unit2 = block.layers[0], block.layers[2]

    def binary_conv(inp, conv):
        w_q = conv.params["tau"] * _sign(conv.params["weight"]) + conv.params["phi"]
        return F.conv2d_forward(_sign(inp), w_q, None, conv.stride, 1)[0]

    sc_conv, sc_bn = unit1.shortcut.layers
    shortcut = _bn_eval(F.conv2d_forward(x, sc_conv.params["weight"], None, 2, 0)[0], sc_bn)
    h = np.clip(_bn_eval(binary_conv(x, unit1.body.layers[0]), unit1.body.layers[1]) + shortcut, -1, 1)
    expected = np.clip(_bn_eval(binary_conv(h, unit2.body.layers[0]), unit2.body.layers[1]) + h, -1, 1)
    np.testing.assert_allclose(block.forward(x, training=False), expected, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------- gradients
def _non_latent(layer):
    """Names of every parameter except latent binary weights (those go through an STE)."""
    latent = {id(l.params["weight"]) for _, l in layer.named_layers() if isinstance(l, BinaryConv2d)}
    return [n for n, p in layer.named_parameters() if id(p) not in latent]


@pytest.mark.parametrize("training", [True, False])
def test_binary_unit_with_downsampling_shortcut_gradients(training):
    """tau, phi, BN and the 1x1 shortcut conv of one unit, in float64."""
    rng = np.random.default_rng(2)
    block = basic_block(3, 4, 2, dict(domain="learned"), rng)
    unit = Sequential(block.layers[:2])           # Residual(BinaryConv -> BN, 1x1 conv -> BN), HardTanh
    x = rng.standard_normal((3, 5, 5, 3)) * 0.5
    names = _non_latent(unit)
    assert any(n.endswith("tau") for n in names) and any(n.endswith("phi") for n in names)
    assert sum(n.endswith("weight") for n in names) == 1       # the shortcut conv
    check_layer_gradients(unit, x, training=training, rng=3, wrt_input=False, params=names)


def test_whole_block_gradients_of_the_second_unit_and_the_classifier_end():
    """Through a whole block: parameters that reach the output without a sign."""
    rng = np.random.default_rng(4)
    block = basic_block(2, 2, 1, dict(domain="learned"), rng)
    model = Sequential([block, pysbnn.GlobalAvgPool(), pysbnn.BatchNorm1d(2), pysbnn.Dense(2, 3, rng=5)])
    x = rng.standard_normal((4, 4, 4, 2)) * 0.5
    second = "0.2"
    names = [n for n in _non_latent(model) if n.startswith(second) or not n.startswith("0.")]
    assert len(names) == 2 + 2 + 2 + 2    # tau, phi, BN2d gamma/beta, BN1d gamma/beta, dense w/b
    check_layer_gradients(model, x, training=True, rng=6, wrt_input=False, params=names)


def test_gradient_check_catches_a_wrong_backward(monkeypatch):
    """The check above is not vacuous: a backward that drops the shortcut fails it."""
    rng = np.random.default_rng(2)
    unit = Sequential(basic_block(3, 4, 2, dict(domain="learned"), rng).layers[:2])
    res = unit.layers[0]
    monkeypatch.setattr(res, "backward", lambda dout: res.body.backward(dout))
    with pytest.raises(AssertionError):
        check_layer_gradients(unit, rng.standard_normal((3, 5, 5, 3)), rng=3, wrt_input=False,
                              params=_non_latent(unit))


# ------------------------------------------------------------------ save/load
def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = resnet18(width=4, domain="learned", seed=7)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 28, 28), dtype=np.uint8)
    y = np.arange(24) % 10
    pysbnn.fit(model, x, y, epochs=1, batch_size=8, target_ec=0.3, gamma=0.5, verbose=False, seed=1)
    path = tmp_path / "resnet.npz"
    pysbnn.save_model(model, path)
    loaded = pysbnn.load_model(path)
    np.testing.assert_array_equal(loaded.forward(x, training=False), model.forward(x, training=False))
    for a, b in zip(binary_conv_layers(model), binary_conv_layers(loaded)):
        assert a.get_config() == b.get_config()           # includes the EDE epoch
        np.testing.assert_array_equal(a.params["weight"], b.params["weight"])


# ------------------------------------------------------------------ conv backends
CASES = [  # (n, h, w, c_in, c_out, k, stride, padding, bias)
    (2, 7, 7, 3, 4, 3, 1, 1, False),
    (2, 7, 6, 3, 5, 3, 2, 1, True),
    (1, 8, 8, 2, 3, 1, 2, 0, False),
    (2, 5, 5, 2, 2, 3, 1, 0, True),
    (2, 6, 7, 3, 2, 2, 3, 2, False),
    (1, 4, 4, 1, 1, 3, 1, 2, False),
]


def direct_conv(x, w, b, stride, padding):
    """Float64 cross-correlation by explicit windows (independent of im2col)."""
    n, h, wd, _ = x.shape
    k = w.shape[2]
    xp = np.pad(x.astype(np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    out = np.zeros((n, ho, wo, w.shape[0]))
    for y in range(ho):
        for x_ in range(wo):
            win = xp[:, stride * y:stride * y + k, stride * x_:stride * x_ + k, :]
            out[:, y, x_] = np.einsum("nhwc,ochw->no", win, w.astype(np.float64))
    return out + (0 if b is None else b)


@pytest.mark.parametrize("case", CASES)
def test_conv_backends_agree_and_match_a_direct_conv(case):
    n, h, w, ci, co, k, s, p, bias = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, ci)).astype(np.float32)
    wt = rng.standard_normal((co, ci, k, k)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32) if bias else None
    ref, rcache = F.conv2d_forward(x, wt, b, s, p, backend="numpy")
    out, cache = F.conv2d_forward(x, wt, b, s, p, backend="numba")
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_array_equal(cache[1], rcache[1])                       # im2col: exact
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_allclose(out, direct_conv(x, wt, b, s, p), rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(ref.shape).astype(np.float32)
    got_all, want_all = F.conv2d_backward(dout, cache), F.conv2d_backward(dout, rcache)
    # the adjoint of im2col applied to dout @ wmat: the textbook dx, whatever path ran
    adjoint = ic.col2im_numpy(dout.reshape(-1, co).astype(np.float64) @ rcache[2].astype(np.float64),
                              x.shape, k, k, s, p)
    for got, want in zip(got_all, want_all):
        if want is None:
            assert got is None
            continue
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(got_all[0], adjoint, rtol=1e-5, atol=1e-5 * np.abs(adjoint).max())


@pytest.mark.parametrize("case", CASES)
def test_copy_kernels_are_exact_also_uncompiled(case):
    """im2col / col2im kernels, run as plain Python (what NUMBA_DISABLE_JIT=1 runs)."""
    n, h, w, ci, _, k, s, p, _ = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, h, w, ci))
    ref = ic.im2col_numpy(x, k, k, s, p)
    ho, wo = F.conv_output_size(h, k, s, p), F.conv_output_size(w, k, s, p)
    cols = np.full((n, ho, wo, k, k, ci), np.nan)
    ic.im2col_kernel(x, s, p, cols)
    np.testing.assert_array_equal(cols.reshape(ref.shape), ref)
    np.testing.assert_array_equal(ic.im2col(x, k, k, s, p, backend="numba"), ref)
    d = rng.standard_normal(ref.shape)
    want = ic.col2im_numpy(d, x.shape, k, k, s, p)
    dx = np.zeros_like(x)
    ic.col2im_kernel(d.reshape(cols.shape), s, p, dx)
    np.testing.assert_allclose(dx, want, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(ic.col2im(d, x.shape, k, k, s, p, backend="numba"), want,
                               rtol=1e-15, atol=1e-15)


def test_conv_float64_gradient_check(backend):
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 3))
    layer = Conv2d(3, 4, 3, stride=2, padding=1, rng=0, backend=backend)
    check_layer_gradients(layer, x, rng=1)
    layer = Conv2d(3, 4, 3, stride=1, padding=1, rng=0, backend=backend)
    check_layer_gradients(layer, x, rng=2)
    conv = BinaryConv2d(3, 4, 3, padding=1, domain="learned", binarize_input=False, rng=0,
                        backend=backend)           # exact in tau, phi and the real input
    check_layer_gradients(conv, x, params=["tau", "phi"], rng=3)


def test_set_backend_routes_every_layer():
    model = resnet18(width=4, seed=1)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    ref = model.set_backend("numpy").forward(x, training=False)
    assert all(l.backend == "numpy" for _, l in model.named_layers() if hasattr(l, "backend"))
    np.testing.assert_allclose(model.set_backend("numba").forward(x, training=False), ref,
                               rtol=1e-4, atol=1e-4)
    assert all(l.backend == "numba" for _, l in model.named_layers() if hasattr(l, "backend"))
    with pytest.raises(ValueError, match="backend must be one of"):
        model.set_backend("fast")
    with pytest.raises(ValueError, match="backend must be one of"):
        Conv2d(1, 1, 3, backend="cuda")


def _trained_like_resnet(density, width, seed=0):
    """A ResNet-18 with {0,1} weights of the given density and BatchNorms as training leaves them."""
    rng = np.random.default_rng(seed)
    model = resnet18(num_classes=10, in_channels=1, width=width, seed=seed)
    for conv in binary_conv_layers(model):                 # sparse kernels: many K0/K1
        w = conv.params["weight"]
        w[...] = -np.abs(w) - 1e-3
        w[rng.random(w.shape) < density] = 0.01
    model.parameters_changed()
    model.forward(rng.integers(0, 256, (16, 28, 28)).astype(np.uint8), training=True)
    for _, layer in model.named_layers():
        if isinstance(layer, pysbnn.BatchNorm):
            layer.params["gamma"][:] = rng.uniform(0.5, 1.5, layer.num_features)
            layer.params["beta"][:] = rng.normal(0, 0.2, layer.num_features)
        if "tau" in layer.params:
            layer.params["tau"][:] = rng.uniform(0.5, 1.5)
            layer.params["phi"][:] = rng.uniform(-0.3, 0.3)
    model.parameters_changed()
    return model, rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)


@pytest.mark.parametrize("density", [0.05, 0.5])
def test_packed_resnet_agrees_with_float_simulation(density, backend, tmp_path):
    """pack() fuses the stem (Normalize, conv, BatchNorm) and every IR-Net unit (K0/K1 conv
    kernels + Eq. 20 + BatchNorm + residual + HardTanh) and agrees with the float
    simulation after every stage."""
    from pysbnn.packed.residual import PackedResidualUnit
    from pysbnn.packed.stem import PackedStem
    model, x = _trained_like_resnet(density, width=8)
    packed = pysbnn.pack(model, backend=backend)
    units = [l for _, l in packed.net.named_layers() if isinstance(l, PackedResidualUnit)]
    assert len(units) == 16 and len(packed.packed_layers()) == 16
    assert sum(u.shortcut_stride > 0 for u in units) == 3
    assert isinstance(packed.net.layers[0], PackedStem) and len(packed.net.layers) == len(model.layers) - 2
    for k in range(3, len(model.layers) + 1):              # the stream after the stem and every stage
        ref = Sequential(model.layers[:k]).forward(x, training=False)
        out = Sequential(packed.net.layers[:k - 2]).forward(x, training=False)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))
    assert np.std(Sequential(model.layers[:4]).forward(x), axis=0).max() > 1e-2   # not a constant
    np.testing.assert_array_equal(packed.predict(x), model.predict(x))
    packed.save(tmp_path / "r.npz")
    np.testing.assert_array_equal(pysbnn.load_packed(tmp_path / "r.npz", backend=backend).forward(x),
                                  packed.forward(x))
