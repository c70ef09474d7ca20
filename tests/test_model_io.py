"""save_model / load_model round trips and clear errors on bad files."""

import numpy as np
import pytest

import pysbnn


def small_cnn():
    return pysbnn.Sequential([
        pysbnn.Normalize(mean=[0.2], std=[0.3]),
        pysbnn.Conv2d(1, 4, 3, padding=1, rng=1), pysbnn.BatchNorm2d(4), pysbnn.ReLU(),
        pysbnn.Residual(pysbnn.Sequential([pysbnn.Conv2d(4, 4, 3, padding=1, rng=2), pysbnn.BatchNorm2d(4)])),
        pysbnn.MaxPool2d(2), pysbnn.GlobalAvgPool(), pysbnn.Dense(4, 3, rng=3)])


@pytest.fixture
def trained(tmp_path):
    model = small_cnn()
    x = np.random.default_rng(0).integers(0, 256, (16, 8, 8)).astype(np.uint8)
    y = np.arange(16) % 3
    pysbnn.fit(model, x, y, epochs=1, batch_size=8, verbose=False)
    path = tmp_path / "m.npz"
    pysbnn.save_model(model, path, extra={"note": "hi"})
    return model, x, path


def test_round_trip_gives_identical_logits_and_predictions(trained):
    model, x, path = trained
    loaded = pysbnn.load_model(path)
    np.testing.assert_array_equal(loaded.forward(x, training=False), model.forward(x, training=False))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.extra == {"note": "hi"}
    assert repr(loaded) == repr(model)
    # buffers (BatchNorm running stats) travel too, not only parameters
    for (n1, a), (n2, b) in zip(model.named_buffers(), loaded.named_buffers()):
        assert n1 == n2
        np.testing.assert_array_equal(a, b)


def test_file_is_readable_without_pickle(trained):
    _, _, path = trained
    with np.load(path, allow_pickle=False) as f:
        assert "__meta__" in f.files and all(f[k].dtype != object for k in f.files)


def test_truncated_file_is_a_clear_error(trained, tmp_path):
    _, _, path = trained
    data = path.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        pysbnn.load_model(bad)


def test_garbage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(ValueError, match="garbage.npz.*corrupted|garbage.npz.*truncated"):
        pysbnn.load_model(bad)


def test_mismatched_arrays_are_a_clear_error(trained, tmp_path):
    _, _, path = trained
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["params/1.weight"] = arrays["params/1.weight"][:2]
    bad = tmp_path / "mismatch.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=r"mismatch.npz.*1\.weight.*shape"):
        pysbnn.load_model(bad)
    del arrays["params/1.weight"]
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="mismatch.npz.*missing"):
        pysbnn.load_model(bad)


def test_non_pysbnn_npz_and_wrong_version(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="plain.npz.*__meta__"):
        pysbnn.load_model(plain)
    from pysbnn.serialize import encode_json
    future = tmp_path / "future.npz"
    np.savez(future, __meta__=encode_json({"kind": "model", "format_version": 99, "spec": {}}))
    with pytest.raises(ValueError, match="future.npz.*format version 99"):
        pysbnn.load_model(future)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        pysbnn.load_model("nope.npz")
