"""pack(model): the BNN <-> {0,1} equivalence, counts, save/load, summary."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pysbnn
from pysbnn import analysis
from pysbnn.packed import dispatch, mlp
from pysbnn.packed.layers import Bits, PackedBinaryDense

DOMAINS = ["sym", "alpha_beta", "learned", "zero_one"]


def trained_like(model, x, seed=0):
    """Give BatchNorms and learned domains the kind of values training leaves."""
    model.forward(x, training=True)
    rng = np.random.default_rng(seed)
    for _, layer in model.named_layers():
        if isinstance(layer, pysbnn.BatchNorm):
            c = layer.num_features
            layer.params["gamma"][:] = rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c, p=[0.1, 0.9])
            layer.params["beta"][:] = rng.normal(0, 0.3, c)
            layer.buffers["running_mean"][:] += rng.normal(0, 0.3, c)
        if "tau" in layer.params:
            layer.params["tau"][:] = rng.uniform(0.3, 1.2)
            layer.params["phi"][:] = rng.normal(0, 0.3)
    return model


def images(n, shape=(4, 4), seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n,) + shape).astype(np.uint8)


def small_cnn(domain, seed=0):
    rng = np.random.default_rng(seed)
    return pysbnn.Sequential([
        pysbnn.Normalize(mean=[0.4], std=[0.3]),
        pysbnn.Conv2d(1, 8, 3, padding=1, rng=rng), pysbnn.BatchNorm2d(8),
        pysbnn.BinaryConv2d(8, 16, 3, stride=2, padding=1, domain=domain, rng=rng), pysbnn.BatchNorm2d(16),
        pysbnn.Residual(pysbnn.Sequential([
            pysbnn.BinaryConv2d(16, 16, 3, padding=1, domain=domain, rng=rng), pysbnn.BatchNorm2d(16)])),
        pysbnn.HardTanh(),
        pysbnn.BinaryConv2d(16, 16, 1, domain=domain, rng=rng), pysbnn.BatchNorm2d(16),
        pysbnn.GlobalAvgPool(), pysbnn.Dense(16, 3, rng=rng)])


#: batches on both sides of every dispatch threshold and of one 512-sample block:
#: the fused per-sample MLP kernel (below mlp.SMALL_BATCH), layer by layer with
#: XNOR rows, the bit-sliced kernels with the threshold fused (from
#: dispatch.SLICED_MIN_BATCH on, sparse layers)
BATCHES = [(5, False), (mlp.SMALL_BATCH - 1, True), (mlp.SMALL_BATCH, False), (mlp.SMALL_BATCH, True),
           (dispatch.SLICED_MIN_BATCH, True), (600, True)]


@pytest.mark.parametrize("batch,sparse", BATCHES)
@pytest.mark.parametrize("domain", DOMAINS)
def test_packed_mlp_equals_float_simulation(domain, batch, sparse, backend):
    """Dense or sparse hidden layer, at every kind of batch the dispatch tells apart."""
    model = pysbnn.binary_mlp((16, 70, 65, 3), domain=domain, seed=2)
    if sparse:
        sparsify(model.layers[3], 0.05)
    model = trained_like(model, images(200))
    x = images(batch, seed=3)
    packed = pysbnn.pack(model, backend=backend)
    ref = model.forward(x, training=False)
    out = packed.forward(x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_array_equal(packed.predict(x), model.predict(x))
    # Normalize, BatchNorm and sign were folded: raw pixels in, bits between the
    # binary layers, logits out of the last one
    first, hidden, last = packed.net.layers
    assert all(isinstance(l, PackedBinaryDense) for l in (first, hidden, last))
    assert first.output == hidden.output == "bits" and last.output == "affine"
    h = first.forward(x)                 # in the layout the hidden layer's kernel reads
    assert isinstance(h, Bits) and h.layout == ("sliced" if dispatch.uses_sliced(hidden, batch) else "rows")
    bits = hidden.forward(h)
    assert isinstance(bits, Bits)
    assert 0 < bits.signs().mean() + 1 < 2        # the hidden bits are not all equal


@pytest.mark.parametrize("domain", DOMAINS)
def test_packed_cnn_equals_float_simulation(domain, backend):
    model = trained_like(small_cnn(domain), images(16, (9, 9)))
    x = images(6, (9, 9), seed=4)
    out, ref = pysbnn.pack(model, backend=backend).forward(x), model.forward(x, training=False)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))


def _executed_ops(packed):
    return [layer.last_ops for _, layer in packed.packed_layers()]


@pytest.mark.parametrize("domain", DOMAINS)
def test_numpy_and_numba_backends_give_identical_logits_and_counts(domain):
    """pack(model, backend=...) in one process: the NumPy references and the kernels."""
    for model, x in [(small_cnn(domain), images(6, (9, 9), seed=4)),
                     (pysbnn.binary_mlp((16, 70, 65, 3), domain=domain, seed=2), images(70, seed=3))]:
        model = trained_like(model, x)
        if isinstance(model.layers[3], pysbnn.BinaryDense):
            sparsify(model.layers[3], 0.05)                   # the bit-sliced kernel runs too
        by_numpy = pysbnn.pack(model, backend="numpy")
        by_numba = pysbnn.pack(model, backend="numba")
        np.testing.assert_array_equal(by_numpy.forward(x), by_numba.forward(x))
        assert _executed_ops(by_numpy) == _executed_ops(by_numba)
        assert sum(_executed_ops(by_numba)) > 0


def test_pack_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        pysbnn.pack(pysbnn.binary_mlp((16, 8, 3)), backend="gpu")


def test_packed_model_save_load_and_size(tmp_path):
    model = trained_like(pysbnn.binary_mlp((16, 70, 65, 3), seed=2), images(200))
    packed = pysbnn.pack(model)
    packed.save(tmp_path / "p.npz")
    loaded = pysbnn.load_packed(tmp_path / "p.npz")
    x = images(50, seed=5)
    np.testing.assert_array_equal(loaded.forward(x), packed.forward(x))
    with np.load(tmp_path / "p.npz", allow_pickle=False) as f:
        assert f["payload"].dtype == np.uint8                   # coded weights + every other array
    # in memory, ~half ones: bitmaps, 70 rows x 1 word + 65 rows x 2 words + 3 rows x 2 words
    assert sum(a.nbytes for n, a in packed.net.named_buffers() if n.endswith("w01")) == 8 * (70 + 130 + 6)
    assert packed.size_bytes() < packed.bytes_float32()
    with pytest.raises(ValueError, match="holds a 'packed'"):
        pysbnn.load_model(tmp_path / "p.npz")


def sparsify(layer, density, seed=0):
    w = layer.params["weight"]
    w[...] = -np.abs(w) - 1e-3
    w[np.random.default_rng(seed).random(w.shape) < density] = 0.1
    layer.parameters_changed()


def test_sparse_layers_round_trip(tmp_path):
    model = trained_like(pysbnn.binary_mlp((16, 70, 65, 3), seed=2), images(200))
    layer = model.layers[3]
    sparsify(layer, 0.02)
    w = layer.params["weight"]
    packed = pysbnn.pack(model)
    hidden = packed.net.layers[1]
    assert hidden.n_ones() == int((w >= 0).sum())
    packed.save(tmp_path / "s.npz")
    loaded = pysbnn.load_packed(tmp_path / "s.npz")
    np.testing.assert_array_equal(loaded.net.layers[1].words, pysbnn.pack(model).net.layers[1].words)
    x = images(70, seed=8)
    np.testing.assert_array_equal(loaded.forward(x), packed.forward(x))
    np.testing.assert_allclose(packed.forward(x), model.forward(x), rtol=1e-4, atol=1e-4)
    assert packed.size_bytes() < packed.bytes_bnn()


def test_counts_executed_equal_analytic():
    model = trained_like(small_cnn("learned"), images(16, (9, 9)))
    report = pysbnn.count_bops(model, (9, 9), batch=4)
    rows = {r["name"]: r for r in report.layers}
    conv = model.layers[3]
    positions = 5 * 5
    assert rows["3"]["bnn"] == 2 * 16 * 8 * 9 * positions
    assert rows["3"]["executed"] == analysis.sbnn_conv_ops(conv.ones(), positions, binary=True)["total"]
    assert rows["3"]["sparse"] == int(conv.ones().sum()) * positions
    f0, f1, _, _ = analysis.k0_k1(conv.ones(), binary=True)
    assert rows["3"]["k0k1"] == round(rows["3"]["bnn"] * (1 - (f0 + f1)))
    assert rows["3"]["bparams"] == analysis.bparams(conv.ones(), binary=True)
    assert report.total["bnn"] == sum(r["bnn"] for r in report.layers)

    mlp = trained_like(pysbnn.binary_mlp((16, 70, 65, 3), seed=2), images(200))
    sparsify(mlp.layers[3], 0.05)                    # sparse: the bit-sliced kernel runs
    rows = pysbnn.count_bops(mlp, (4, 4), batch=dispatch.SLICED_MIN_BATCH).layers
    sparse, dense = mlp.layers[3], mlp.layers[5]
    for r, layer in zip(rows[1:], [sparse, dense]):
        assert r["bnn"] == 2 * layer.in_features * layer.out_features
        assert r["sparse"] == int(layer.ones().sum())
    assert rows[1]["executed"] == int(sparse.ones().sum())           # one op per one per image
    assert rows[2]["executed"] == 2 * dense.in_features * dense.out_features   # XNOR pass: 2N
    assert not rows[0]["binary_input"]


GOLDEN = """\
layer                     params    ones bits/w     K0     K1    BNN BOPs   SBNN BOPs      f32      BNN   stored     h(p)
=========================================================================================================================
1 Conv2d                      40       -      -      -      -           -           -     160B     160B     160B        -
2 BatchNorm2d                  8       -      -      -      -           -           -      64B      64B      64B        -
3 BinaryConv2d               144   9.72%  0.460  50.0%  37.5%       1,152          56     648B      90B     104B       9B
5 Dense                       10       -      -      -      -           -           -      40B      40B      40B        -
=========================================================================================================================
total                        202                                    1,152          56     912B     354B     368B       9B
BOPs: BNN / SBNN = 20.57x (executed, per image)
binary weights: stored 24B, 2.667x their h(p) bound
memory: float32 / stored = 2.5x, BNN / stored = 0.96x"""
# Checked by hand: 14 ones of 144 (6 K1 kernels + 2 kernels of 4 ones), h(14/144) = 0.460;
# BNN BOPs 2 * 4 * 4 * 9 * (2 x 2 positions) = 1,152; executed 6 K1 * 4 + 2 * 4 ones * 4 = 56;
# the BatchNorm behind the binary conv is folded into it (16 B of float32 per channel in the
# f32 / BNN columns): float32 144 * 4 + 8 (xi, eta) + 64, BNN 144 / 8 + 8 + 64; stored: the
# 14 ones coded in 8 bytes (enumerative code, ceil(log2 C(144, 14)) = 64 bits) + a 16-byte
# header, + 16 (xi, eta) + 2 * 4 * 8 (A, C of Eq. 20 with the BatchNorm); h(p) bound
# ceil(144 * 0.460 / 8) = 9 B.


def test_summary_golden_text():
    rng = np.random.default_rng(0)
    model = pysbnn.Sequential([pysbnn.Normalize(), pysbnn.Conv2d(1, 4, 3, padding=1, rng=rng),
                               pysbnn.BatchNorm2d(4),
                               pysbnn.BinaryConv2d(4, 4, 3, padding=1, stride=2, rng=rng),
                               pysbnn.BatchNorm2d(4), pysbnn.GlobalAvgPool(), pysbnn.Dense(4, 2, rng=rng)])
    w = -np.ones((4, 4, 3, 3), np.float32)                    # 16 kernels: 8 K0, 6 K1, 2 with 4 ones
    for k, (o, i) in enumerate([(0, 1), (0, 2), (1, 0), (1, 3), (2, 2), (3, 1)]):
        w[o, i].flat[k] = 0.5
    w[3, 3, :2, :2] = 0.5
    w[2, 0, 1:, 1:] = 0.5
    model.layers[3].params["weight"][:] = w
    text = pysbnn.summary(model, (4, 4))
    assert text == GOLDEN


def test_numba_disabled_gives_identical_outputs(tmp_path):
    """The NumPy references run when JIT is disabled and agree exactly with the kernels."""
    model = trained_like(small_cnn("learned"), images(16, (9, 9)))
    pysbnn.save_model(model, tmp_path / "m.npz")
    x = images(70, (9, 9), seed=6)
    np.save(tmp_path / "x.npy", x)
    mlp = trained_like(pysbnn.binary_mlp((16, 70, 65, 3), seed=2), images(200))
    pysbnn.save_model(mlp, tmp_path / "mlp.npz")
    script = textwrap.dedent(f"""
        import numpy as np, pysbnn
        x = np.load({str(tmp_path / 'x.npy')!r})
        cnn = pysbnn.pack(pysbnn.load_model({str(tmp_path / 'm.npz')!r})).forward(x)
        mlp = pysbnn.pack(pysbnn.load_model({str(tmp_path / 'mlp.npz')!r})).forward(x[:, :4, :4])
        np.save({str(tmp_path / 'out_nojit.npy')!r}, np.concatenate([cnn.ravel(), mlp.ravel()]))
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    nojit = np.load(tmp_path / "out_nojit.npy")
    jit = np.concatenate([pysbnn.pack(model).forward(x).ravel(), pysbnn.pack(mlp).forward(x[:, :4, :4]).ravel()])
    np.testing.assert_array_equal(nojit, jit)
