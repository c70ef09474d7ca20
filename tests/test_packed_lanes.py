"""The batch in the word: 64-image lanes of the packed ResNet (kernels.lanes, kernels.conv_lanes).

Kernels == NumPy references exactly (bits, sums, float32 outputs, op counts),
at the sizes where words, 8-word vectors, 64-word blocks, carry-save groups
(15 / 7 planes) and lane groups (64 images) begin and end; the lane path of a
packed ResNet gives the image path's outputs bit for bit.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from pysbnn import analysis
from pysbnn.kernels import conv_lanes, conv_sbnn, lanes
from pysbnn.kernels.conv_layout import conv_out_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JIT_OFF = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


def stream(rng, n, C, H, W):
    """A float stream (lanes past n zero) with exact zeros (sign(0) = +1) in it."""
    x = rng.standard_normal((n, H, W, C)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0
    return x, lanes.to_lanes(x)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 130])
def test_lanes_round_trip_and_padding(n):
    rng = np.random.default_rng(n)
    x, h = stream(rng, n, 3, 4, 5)
    assert h.shape == (lanes.n_lanes(n) // 64, 3, 20, 64) and h.dtype == np.float32
    np.testing.assert_array_equal(lanes.from_lanes(h, n, 4, 5), x)
    for parallel in (False, True):                         # the kernels equal the NumPy references
        np.testing.assert_array_equal(lanes.to_lanes(x, "numba", parallel), lanes.to_lanes_numpy(x))
        np.testing.assert_array_equal(lanes.from_lanes(h, n, 4, 5, "numba", parallel),
                                      lanes.from_lanes_numpy(h, n, 4, 5))
    assert not h.transpose(0, 3, 2, 1).reshape(-1, 20, 3)[n:].any()       # padding lanes are zero
    assert h[0, 2, 7, 0] == x[0, 1, 2, 2]                                  # [g, c, y W + x, j]


@pytest.mark.parametrize("n,C_in,C_out,H,W", [(1, 1, 16, 28, 28), (70, 1, 5, 6, 7), (64, 3, 8, 5, 5)])
def test_stem_writes_the_lanes_of_the_float_conv(n, C_in, C_out, H, W):
    """The stem conv computed on lanes (kernels.stem) equals im2col + GEMM + bias converted
    to lanes, to float32 rounding (another summation order); padding lanes are zero."""
    from pysbnn.kernels import stem
    rng = np.random.default_rng(n + C_in)
    x = rng.standard_normal((n, H, W, C_in)).astype(np.float32)
    w = rng.standard_normal((C_out, C_in, 3, 3)).astype(np.float32)
    b = rng.standard_normal(C_out).astype(np.float32)
    ref = stem.stem_lanes_numpy(x, w, b)
    assert ref.shape == (lanes.n_lanes(n) // 64, C_out, H * W, 64)
    np.testing.assert_array_equal(stem.stem_lanes(x, w, b, "numpy"), ref)
    for parallel in (False, True):
        got = stem.stem_lanes(x, w, b, "numba", parallel)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        assert not got.transpose(0, 3, 2, 1).reshape(-1, H * W, C_out)[n:].any()
    corner = (w[:, :, 1:, 1:] * x[0, :2, :2, :].transpose(2, 0, 1)).sum(axis=(1, 2, 3)) + b
    np.testing.assert_allclose(ref[0, :, 0, 0], corner, rtol=1e-5)       # zero padding at (0, 0)
    with pytest.raises(ValueError, match="stem_lanes takes"):
        stem.stem_lanes(x, w[:, :, :2], b)


# (C, H, W): planes of (H + 2)(W + 2) = 63 / 64 / 65 / 128 words (8-word vectors and
# 64-word blocks), C = 7 / 15 / 16 / 22 around the carry-save groups of 15 and 7
PACK_SHAPES = [(7, 7, 5), (15, 6, 6), (16, 3, 11), (22, 14, 6), (1, 1, 1), (3, 4, 4)]


@pytest.mark.parametrize("C,H,W", PACK_SHAPES)
@pytest.mark.parametrize("n", [64, 65])
def test_pack_lanes_and_phases_equal_numpy(C, H, W, n):
    rng = np.random.default_rng(C * H * W + n)
    x, h = stream(rng, n, C, H, W)
    planes, sums = lanes.pack_lanes(h, H, W, backend="numba")
    ref_planes, ref_sums = lanes.pack_lanes(h, H, W, backend="numpy")
    np.testing.assert_array_equal(planes, ref_planes)
    np.testing.assert_array_equal(sums, ref_sums)
    for parallel in (False, True):
        got = lanes.pack_lanes(h, H, W, backend="numba", parallel=parallel)
        np.testing.assert_array_equal(got[0], ref_planes)
        np.testing.assert_array_equal(got[1], ref_sums)
    # the reference itself, against its definition
    signs = conv_lanes._unpack_lanes(ref_planes, H, W)[:n]
    np.testing.assert_array_equal(signs, np.where(x >= 0, 1, -1))
    ring = ref_sums.reshape(-1, H + 2, W + 2, 64)
    inner = ring[:, 1:H + 1, 1:W + 1].transpose(0, 3, 1, 2).reshape(-1, H, W)[:n]
    np.testing.assert_array_equal(inner, np.where(x >= 0, 1, -1).sum(-1))
    ring[:, 1:H + 1, 1:W + 1] = 0
    assert not ring.any() and not ref_planes[:, C].any()                   # ring and plane C zero
    phases = lanes.split_phases(ref_planes, H, W, backend="numba")
    np.testing.assert_array_equal(phases, lanes.split_phases(ref_planes, H, W, backend="numpy"))


def ones_weights(kind, C_out, C_in, rng):
    if kind == "zero":
        return np.zeros((C_out, C_in, 3, 3), bool)
    if kind == "ones":
        return np.ones((C_out, C_in, 3, 3), bool)
    if kind == "k1":
        w = np.zeros((C_out, C_in, 9), bool)
        w[np.arange(C_out)[:, None], np.arange(C_in)[None, :], rng.integers(0, 9, (C_out, C_in))] = True
        return w.reshape(C_out, C_in, 3, 3)
    return rng.random((C_out, C_in, 3, 3)) < float(kind)


# (C_in, C_out, H, W, stride, padding, weights): output grids of H_out R = 63 / 64 / 65 / 128
# words (R = W + 2, or ceil((W + 2) / 2) for stride 2), 9 C_in ones per output around 15 / 7
UNIT_CASES = [
    (3, 4, 7, 7, 1, 1, "0.3"), (2, 5, 8, 6, 1, 1, "ones"), (4, 3, 5, 11, 1, 1, "k1"),
    (5, 6, 8, 14, 1, 1, "0.1"), (1, 2, 4, 4, 1, 1, "ones"), (6, 3, 6, 7, 1, 0, "0.5"),
    (5, 3, 9, 8, 2, 1, "0.2"), (4, 6, 7, 7, 2, 0, "ones"), (3, 4, 14, 14, 2, 1, "k1"),
    (4, 4, 4, 4, 1, 1, "zero"), (16, 17, 4, 4, 1, 1, "0.05"),
]


@pytest.mark.parametrize("C_in,C_out,H,W,stride,padding,kind", UNIT_CASES)
@pytest.mark.parametrize("n", [64, 70])
def test_unit_lanes_equals_numpy(C_in, C_out, H, W, stride, padding, kind, n):
    rng = np.random.default_rng(C_in * 31 + C_out * 7 + H + n)
    x, h = stream(rng, n, C_in, H, W)
    w01 = ones_weights(kind, C_out, C_in, rng)
    plan = conv_sbnn.SbnnConvPlan(w01, binary=True)
    Ho, Wo = conv_out_size(H, W, stride, padding)
    A, Cc = rng.normal(size=C_out), rng.normal(size=C_out)
    sc = rng.normal(size=(h.shape[0], C_out, Ho * Wo, 64)).astype(np.float32)
    planes, sums = lanes.pack_lanes(h, H, W, backend="numpy")
    want_ops = analysis.sbnn_conv_ops(w01, n * Ho * Wo)
    for clip in (True, False):
        want = conv_lanes.unit_lanes(planes, sums, plan, H, W, stride, padding, A, -0.37, Cc, sc, clip,
                                     True, n, backend="numpy")
        assert want[3] == want_ops
        for parallel in (False, True):
            got = conv_lanes.unit_lanes(planes, sums, plan, H, W, stride, padding, A, -0.37, Cc, sc, clip,
                                        True, n, backend="numba", parallel=parallel)
            for g, w in zip(got[:3], want[:3]):
                assert g.shape == w.shape and g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)
            assert got[3] == want_ops
        # the reference against Eq. 20 in float64, image by image
        xs = np.where(x >= 0, 1, -1)
        z = conv_sbnn.sbnn_conv3x3_reference(xs, w01, stride, padding)[0].astype(np.float64)
        q = conv_sbnn.conv3x3_ones(xs, stride, padding).astype(np.float64)
        real = A * (z - 0.37 * q) + Cc + lanes.from_lanes(sc, n, Ho, Wo)
        real = np.clip(real, -1, 1) if clip else real
        np.testing.assert_allclose(lanes.from_lanes(want[0], n, Ho, Wo), real, rtol=1e-5, atol=1e-4)
    no_emit = conv_lanes.unit_lanes(planes, sums, plan, H, W, stride, padding, A, -0.37, Cc, sc, False,
                                    False, n, backend="numba")                # clip as the last want
    np.testing.assert_array_equal(no_emit[0], want[0])
    assert no_emit[1] is None and no_emit[2] is None


def test_unit_lanes_refuses_mismatched_inputs():
    rng = np.random.default_rng(0)
    _, h = stream(rng, 64, 3, 5, 5)
    planes, sums = lanes.pack_lanes(h, 5, 5, backend="numpy")
    plan = conv_sbnn.SbnnConvPlan(rng.random((2, 3, 3, 3)) < 0.5, binary=True)
    sc = np.zeros((1, 2, 25, 64), np.float32)
    with pytest.raises(ValueError, match="planes / sums"):
        conv_lanes.unit_lanes(planes, sums, plan, 6, 5, 1, 1, np.ones(2), 0.1, np.zeros(2), sc)
    with pytest.raises(ValueError, match="shortcut must be"):
        conv_lanes.unit_lanes(planes, sums, plan, 5, 5, 1, 1, np.ones(2), 0.1, np.zeros(2), sc[:, :1])


def test_lane_kernels_run_uncompiled():
    """With NUMBA_DISABLE_JIT=1 the kernel code (NumPy twins of the SIMD helpers) gives the
    reference's numbers."""
    code = (
        "import numpy as np\n"
        "from pysbnn.kernels import conv_lanes, conv_sbnn, lanes\n"
        "rng = np.random.default_rng(0)\n"
        "h = lanes.to_lanes(rng.standard_normal((70, 5, 6, 3)).astype(np.float32))\n"
        "pl, su = lanes.pack_lanes(h, 5, 6, backend='numba')\n"
        "rp, rs = lanes.pack_lanes(h, 5, 6, backend='numpy')\n"
        "assert (pl == rp).all() and (su == rs).all()\n"
        "plan = conv_sbnn.SbnnConvPlan(rng.random((4, 3, 3, 3)) < 0.4, binary=True)\n"
        "for s in (1, 2):\n"
        "    ho, wo = conv_sbnn.conv_out_size(5, 6, s, 1)\n"
        "    sc = rng.normal(size=(2, 4, ho * wo, 64)).astype(np.float32)\n"
        "    a = conv_lanes.unit_lanes(pl, su, plan, 5, 6, s, 1, np.ones(4), -0.2, np.zeros(4), sc, n=70,\n"
        "                              backend='numba')\n"
        "    b = conv_lanes.unit_lanes(pl, su, plan, 5, 6, s, 1, np.ones(4), -0.2, np.zeros(4), sc, n=70,\n"
        "                              backend='numpy')\n"
        "    assert all((u == v).all() for u, v in zip(a[:3], b[:3])) and a[3] == b[3]\n"
        "from pysbnn.kernels import stem\n"
        "x, w = rng.standard_normal((70, 4, 5, 2)), rng.standard_normal((3, 2, 3, 3))\n"
        "assert np.allclose(stem.stem_lanes(x, w, np.ones(3), 'numba'), stem.stem_lanes_numpy(x, w, np.ones(3)),\n"
        "                   atol=1e-5)\n"
        "print('ok')\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------------------ the packed ResNet on lanes

def _packed_resnet(density, backend):
    import pysbnn
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_resnet import _trained_like_resnet
    model, _ = _trained_like_resnet(density, width=8)
    return model, pysbnn.pack(model, backend=backend)


@pytest.mark.parametrize("density", [0.05, 0.5])
def test_packed_resnet_lanes_equal_images_and_float(density, backend, monkeypatch):
    """From LANES_MIN_BATCH images on, the stem writes lanes and the units run on them,
    handing each other sign planes. Through the identity-shortcut units of stage 1 the stream equals the image
    path's bit for bit; after them the 1x1 shortcuts' GEMMs (BLAS on other shapes) and the
    pooling sum in other orders, so the logits agree to float32 rounding. Predictions equal
    the float simulation's, executed op counts the analytic ones."""
    from pysbnn.packed import residual
    from pysbnn.packed.stream import LaneStream
    from pysbnn.resnet import binary_conv_layers
    if JIT_OFF and backend == "numba":
        pytest.skip("the uncompiled lane kernels take minutes on 70 images (covered by the small cases)")
    model, packed = _packed_resnet(density, backend)
    units = [l for _, l in packed.net.named_layers() if isinstance(l, residual.PackedResidualUnit)]
    assert [u.emits for u in units] == [True] * 15 + [False]
    n = 70                                                  # two lane groups, the second mostly padding
    x = np.random.default_rng(1).integers(0, 256, (n, 28, 28)).astype(np.uint8)
    assert n >= residual.LANES_MIN_BATCH
    stem = packed.net.layers[0]                             # the stem writes the lanes directly
    assert stem.emits and isinstance(stem.forward(x), LaneStream)
    h0 = np.asarray(stem.forward(x))
    stage1 = packed.net.layers[1]                           # stage 1 (4 units) from the stem's output
    lane_stream = np.asarray(stage1.forward(h0))
    lane_logits = packed.forward(x)
    lane_ops = [u.conv.last_ops for u in units]
    monkeypatch.setattr(residual, "LANES_MIN_BATCH", 10 ** 9)
    h0_images = stem.forward(x)                             # im2col + GEMM: other summation order
    assert isinstance(h0_images, np.ndarray)
    np.testing.assert_allclose(h0_images, h0, rtol=1e-5, atol=1e-5 * np.abs(h0).max())
    np.testing.assert_array_equal(stage1.forward(h0), lane_stream)
    np.testing.assert_allclose(packed.forward(x), lane_logits, rtol=1e-5, atol=1e-5)
    assert [u.conv.last_ops for u in units] == lane_ops
    positions = [784] * 4 + [196] * 4 + [49] * 4 + [16] * 4
    want = [analysis.sbnn_conv_ops(c.ones(), n * p)["total"] for c, p in zip(binary_conv_layers(model), positions)]
    assert lane_ops == want
    monkeypatch.setattr(residual, "LANES_MIN_BATCH", 32)
    np.testing.assert_array_equal(packed.predict(x), model.predict(x))
