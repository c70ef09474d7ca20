"""Forward values against naive loops, and float64 gradient checks of every layer."""

import numpy as np
import pytest

import pysbnn
from pysbnn import functional as F
from pysbnn.testing import check_layer_gradients, directional_check


def naive_conv(x, w, b, stride, padding):
    """Direct loops over output pixels: the slow, obviously-correct conv."""
    n, h, wd, c = x.shape
    co, ci, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nyxc,ocyx->no", patch, w)
    return out + (0 if b is None else b)


@pytest.mark.parametrize("stride,padding,k", [(1, 0, 3), (2, 1, 3), (1, 1, 3), (2, 0, 1), (3, 2, 2)])
def test_conv_forward_matches_naive_loops(stride, padding, k):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 6, 3))
    w = rng.standard_normal((4, 3, k, k))
    b = rng.standard_normal(4)
    out, _ = F.conv2d_forward(x, w, b, stride, padding)
    np.testing.assert_allclose(out, naive_conv(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)


def test_pool_forward_matches_naive():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 6, 3))
    out, _ = F.maxpool_forward(x, 2, 2)
    ref = x.reshape(2, 3, 2, 3, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(out, ref)
    out, _ = F.avgpool_forward(x, 3, 3)
    np.testing.assert_allclose(out, x.reshape(2, 2, 3, 2, 3, 3).mean(axis=(2, 4)))


def test_batchnorm_normalises_and_tracks_running_stats():
    rng = np.random.default_rng(3)
    bn = pysbnn.BatchNorm1d(5, momentum=0.5).astype(np.float64)
    x = rng.standard_normal((64, 5)) * 3 + 7
    out = bn.forward(x, training=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.5 * x.mean(axis=0))
    np.testing.assert_allclose(bn.buffers["running_var"], 0.5 + 0.5 * x.var(axis=0, ddof=1))
    out_eval = bn.forward(x, training=False)
    expected = (x - bn.buffers["running_mean"]) / np.sqrt(bn.buffers["running_var"] + 1e-5)
    np.testing.assert_allclose(out_eval, expected)


LAYERS = {
    "dense": (lambda: pysbnn.Dense(7, 5, rng=0), (4, 7)),
    "dense_nobias": (lambda: pysbnn.Dense(7, 5, bias=False, rng=0), (4, 7)),
    "conv_s1_p0": (lambda: pysbnn.Conv2d(3, 4, 3, rng=0), (2, 6, 5, 3)),
    "conv_s2_p1": (lambda: pysbnn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0), (2, 7, 6, 3)),
    "conv_1x1_s2": (lambda: pysbnn.Conv2d(3, 2, 1, stride=2, rng=0), (2, 6, 6, 3)),
    "batchnorm1d": (lambda: pysbnn.BatchNorm1d(5), (8, 5)),
    "batchnorm2d": (lambda: pysbnn.BatchNorm2d(3), (4, 3, 3, 3)),
    "hardtanh": (lambda: pysbnn.HardTanh(), (6, 5)),
    "relu": (lambda: pysbnn.ReLU(), (6, 5)),
    "maxpool": (lambda: pysbnn.MaxPool2d(2), (2, 4, 6, 3)),
    "maxpool_overlap": (lambda: pysbnn.MaxPool2d(3, stride=2), (2, 7, 7, 2)),
    "avgpool": (lambda: pysbnn.AvgPool2d(2), (2, 4, 6, 3)),
    "gap": (lambda: pysbnn.GlobalAvgPool(), (2, 3, 4, 5)),
    "flatten": (lambda: pysbnn.Flatten(), (2, 3, 4, 5)),
    "residual_identity": (lambda: pysbnn.Residual(pysbnn.Sequential([
        pysbnn.Conv2d(3, 3, 3, padding=1, rng=1), pysbnn.BatchNorm2d(3)])), (4, 5, 5, 3)),
    "residual_projection": (lambda: pysbnn.Residual(
        pysbnn.Sequential([pysbnn.Conv2d(3, 4, 3, stride=2, padding=1, rng=1), pysbnn.BatchNorm2d(4)]),
        pysbnn.Sequential([pysbnn.Conv2d(3, 4, 1, stride=2, rng=2), pysbnn.BatchNorm2d(4)])), (4, 6, 6, 3)),
    "mlp": (lambda: pysbnn.Sequential([pysbnn.Flatten(), pysbnn.Dense(12, 6, rng=3), pysbnn.BatchNorm1d(6),
                                      pysbnn.HardTanh(), pysbnn.Dense(6, 3, rng=4)]), (5, 3, 4)),
}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradients(name, training):
    make, shape = LAYERS[name]
    x = np.random.default_rng(5).standard_normal(shape)
    layer = make()
    if training is False:                      # give BatchNorm non-trivial running stats
        layer.forward(x.astype(np.float32) * 2 + 1, training=True)
    check_layer_gradients(layer, x, training=training, rng=6)


def test_gradient_check_catches_a_wrong_backward():
    """The checker itself must be able to fail."""

    class WrongDense(pysbnn.Dense):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["weight"] = self.grads["weight"] * 1.01
            return dx

    with pytest.raises(AssertionError, match="gradient check failed"):
        check_layer_gradients(WrongDense(4, 3, rng=0), np.ones((2, 4)), rng=1)


def test_normalize_backward_and_shapes():
    layer = pysbnn.Normalize(mean=[0.5], std=[0.25], flatten=True)
    x = np.random.default_rng(7).integers(0, 256, (3, 4, 4)).astype(np.uint8)
    out = layer.forward(x)
    assert out.shape == (3, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, ((x / 255.0 - 0.5) / 0.25).reshape(3, 16), rtol=1e-5, atol=1e-6)
    check_layer_gradients(layer, x.astype(np.float64), rng=1)


@pytest.mark.parametrize("soft", [False, True])
def test_softmax_cross_entropy_gradient(soft):
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((6, 4)) * 3
    y = rng.integers(0, 4, 6)
    t = F.one_hot(y, 4, np.float64)
    targets = 0.3 * t + 0.7 * t[::-1] if soft else y
    loss, dlogits = F.softmax_cross_entropy(logits, targets)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    tt = targets if soft else t
    assert loss == pytest.approx(-(tt * np.log(p)).sum() / 6, rel=1e-12)
    a, n = directional_check(lambda args: F.softmax_cross_entropy(args[0], targets)[0],
                             [logits], [dlogits], rng=9)
    assert a == pytest.approx(n, rel=1e-6)


@pytest.mark.parametrize("bad", [dict(in_features=0, out_features=3), dict(in_features=3, out_features=-1),
                                 dict(in_features=2.5, out_features=3)])
def test_dense_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="features"):
        pysbnn.Dense(**bad)


def test_conv_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        pysbnn.Conv2d(3, 4, 3).forward(np.zeros((1, 5, 5, 2), np.float32))
