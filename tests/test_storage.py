"""Sub-bit storage of packed models: coded weights near h(p), exact round trips,
clear errors on damaged files."""

import json
import zipfile

import numpy as np
import pytest

import pysbnn
from pysbnn.entropy import binary_entropy
from pysbnn.packed import storage


def sparse_mlp(density, sizes=(784, 512, 512, 10), seed=0):
    rng = np.random.default_rng(seed)
    model = pysbnn.binary_mlp(sizes, seed=seed, init_scale=1e-2)
    side = int(round(sizes[0] ** 0.5))
    x = rng.integers(0, 256, (300, side, sizes[0] // side)).astype(np.uint8)
    model.forward(x[:200], training=True)
    for layer in model.layers[1::2]:
        w = layer.params["weight"]
        w[...] = -np.abs(w) - 1e-3
        w[rng.random(w.shape) < density] = 0.01
    model.parameters_changed()
    return model, x


@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
def test_saved_model_predicts_exactly_as_before(density, tmp_path):
    model, x = sparse_mlp(density, (100, 70, 65, 10))
    packed = pysbnn.pack(model)
    packed.save(tmp_path / "m.npz")
    loaded = pysbnn.load_packed(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.forward(x), packed.forward(x))
    for (_, a), (_, b) in zip(loaded.packed_layers(), packed.packed_layers()):
        np.testing.assert_array_equal(a.words, b.words)
    with zipfile.ZipFile(tmp_path / "m.npz") as z:         # one payload, no pickle
        assert sorted(z.namelist()) == ["__meta__.npy", "payload.npy"]


def test_stored_bytes_near_the_entropy_bound(tmp_path):
    """Every layer of >= 4096 weights with 0.001 <= p <= 0.3: at most 1.03 ceil(N h(p)/8) + 16
    bytes, never more than the bitmap + 16; whole files near the bound too."""
    sizes = {}
    for density in (0.5, 0.3, 0.1, 0.05, 0.01, 0.002):
        model, _ = sparse_mlp(density)
        packed = pysbnn.pack(model)
        for name, r in packed.storage_report():
            p = r["ones"] / r["weights"]
            assert r["stored"] <= r["bnn"] + 16, (density, name, r)
            if r["weights"] >= 4096 and 0.001 <= p <= 0.3:
                bound = int(np.ceil(r["weights"] * binary_entropy(p) / 8))
                assert r["bound"] == bound
                assert r["stored"] <= 1.03 * bound + 16, (density, name, r)
        packed.save(tmp_path / f"{density}.npz")
        sizes[density] = (storage.file_bytes(tmp_path / f"{density}.npz"),
                          sum(r["bound"] for _, r in packed.storage_report()))
    for density, (size, bound) in sizes.items():
        if density < 0.5:
            assert size <= 1.03 * bound + 15 * 1024, (density, size, bound)
    assert sizes[0.1][0] <= 0.55 * sizes[0.5][0] and sizes[0.01][0] <= 0.15 * sizes[0.5][0]


def _damaged(path, tmp_path, edit):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k].copy() for k in f.files}
    edit(arrays)
    out = tmp_path / "damaged.npz"
    np.savez(out, **arrays)
    return out


def test_damaged_payloads_give_a_clear_error(tmp_path):
    model, _ = sparse_mlp(0.05, (100, 70, 65, 10))
    pysbnn.pack(model).save(tmp_path / "m.npz")
    meta = json.loads(np.load(tmp_path / "m.npz")["__meta__"].tobytes())
    name, (offset, nbytes, _) = next(iter(meta["coded"].items()))

    def flip(a):
        a["payload"][offset + nbytes // 2] ^= 0x5A

    def truncate(a):
        a["payload"] = a["payload"][:offset + nbytes // 2]

    for edit, match in [(flip, f"layer {name}"), (truncate, "payload|layer")]:
        with pytest.raises(ValueError, match=match) as err:
            pysbnn.load_packed(_damaged(tmp_path / "m.npz", tmp_path, edit))
        assert "damaged.npz" in str(err.value)
    cut = tmp_path / "cut.npz"
    cut.write_bytes((tmp_path / "m.npz").read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.npz"):
        pysbnn.load_packed(cut)


def test_old_packed_files_fail_with_a_hint(tmp_path):
    model, _ = sparse_mlp(0.05, (16, 8, 3))
    pysbnn.save_model(model, tmp_path / "v1.npz", kind="packed")      # the format-1 layout
    with pytest.raises(ValueError, match="format version 1.*re-pack"):
        pysbnn.load_packed(tmp_path / "v1.npz")
