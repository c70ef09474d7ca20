"""Bad input gets a clear error at the boundary (issue 14).

Every public entry point refuses generated bad inputs with a TypeError or
ValueError whose message starts with the argument's name, raised in
``pysbnn/validation.py`` (never inside NumPy) before any forward pass runs;
valid inputs of every accepted dtype still work. ``fit`` stops a diverging
run with the epoch and step, and its checkpoint keeps a finite model.
"""

import functools
import math
import os
import re
import traceback

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pysbnn
from pysbnn.serialize import load_arrays, read_npz
from strategies import BAD_INPUT_DTYPES, bad_labels, non_finite_arrays, wrong_shapes

CLASSES = 3


def _count_forwards(model):
    """Wrap the first leaf layer's forward so that ``model.forwards`` counts its calls."""
    net = model.net if isinstance(model, pysbnn.PackedModel) else model
    leaf = next(l for _, l in net.named_layers() if not l.children())
    inner, model.forwards = leaf.forward, 0

    def counted(x, training=False):
        model.forwards += 1
        return inner(x, training=training)
    leaf.forward = counted
    return model


def build(name):
    """A fresh (model, valid input shape, accepts(shape)) for three kinds of first layer."""
    if name == "mlp":              # Normalize(flatten) -> BinaryDense(16 -> 8): 4x4 grey images
        model = pysbnn.binary_mlp((16, 8, CLASSES), seed=0)
        return model, (5, 4, 4), lambda s: len(s) in (3, 4) and math.prod(s[1:]) == 16
    if name == "cnn":              # Normalize(3 channels) -> BinaryConv2d(3 -> 4, 3x3, no padding)
        model = pysbnn.Sequential([
            pysbnn.Normalize(mean=[0.5] * 3, std=[0.25] * 3),
            pysbnn.BinaryConv2d(3, 4, 3, binarize_input=False, rng=0), pysbnn.BatchNorm2d(4),
            pysbnn.HardTanh(), pysbnn.GlobalAvgPool(), pysbnn.Dense(4, CLASSES, rng=1)])
        return model, (5, 6, 5, 3), lambda s: len(s) == 4 and s[-1] == 3 and min(s[1:3]) >= 3
    model = pysbnn.mlp((7, 4, CLASSES), normalize=False, seed=0)           # Dense(7 -> 4) first
    return model, (5, 7), lambda s: len(s) == 2 and s[1] == 7


@functools.cache
def subject(name, packed):
    """The model of ``build(name)`` (packed or not), built once, its forwards counted."""
    model, shape, accepts = build(name)
    model = _count_forwards(pysbnn.pack(model) if packed else model)
    model.good = np.full(shape, 128, np.uint8), labels_for(np.zeros(shape))
    return model, shape, accepts


def labels_for(x):
    return np.arange(len(x) if np.ndim(x) else 1) % CLASSES


#: entry point -> (call(model, x, y), name of the argument x travels as, of y)
ENTRY_POINTS = {
    "predict": (lambda m, x, y: m.predict(x), "x", None),
    "forward": (lambda m, x, y: m.forward(x), "x", None),
    "evaluate": (lambda m, x, y: pysbnn.evaluate(m, x, y), "x", "y"),
    "fit": (lambda m, x, y: pysbnn.fit(m, x, y, epochs=1, batch_size=2, verbose=False),
            "x_train", "y_train"),
    "fit_validation": (lambda m, x, y: pysbnn.fit(m, *m.good, epochs=1, batch_size=2,
                                                  verbose=False, validation=(x, y)),
                       "validation[0]", "validation[1]"),
}
CASES = [(e, m, p) for e in ENTRY_POINTS for m in ("mlp", "cnn", "dense")
         for p in (False, True) if not (p and e in ("evaluate", "fit", "fit_validation"))]
IDS = [f"{e}-{m}{'-packed' if p else ''}" for e, m, p in CASES]


def assert_refused(call, model, error, name):
    """``call()`` raises ``error`` in pysbnn/validation.py, its message starts with
    ``name``, and the model ran no forward pass and changed no weight."""
    before = [a.copy() for _, a in getattr(model, "net", model).named_parameters()]
    model.forwards = 0
    with pytest.raises(error) as info:
        call()
    assert re.match(re.escape(name) + r"(\b|\s|\[)", str(info.value)), str(info.value)
    where = traceback.extract_tb(info.tb)[-1].filename
    assert where.endswith(os.path.join("pysbnn", "validation.py")), (where, str(info.value))
    assert model.forwards == 0
    after = [a for _, a in getattr(model, "net", model).named_parameters()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    return str(info.value)


@pytest.mark.parametrize("entry,name,packed", CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_wrong_shapes_are_refused_naming_the_argument(entry, name, packed, data):
    model, good, accepts = subject(name, packed)
    shape = data.draw(wrong_shapes(good, accepts))
    call, xname, _ = ENTRY_POINTS[entry]
    x = np.zeros(shape, np.uint8)
    msg = assert_refused(lambda: call(model, x, labels_for(x)), model, ValueError, xname)
    assert f"got shape {shape}" in msg and "must have shape (n" in msg


@pytest.mark.parametrize("entry,name,packed", CASES, ids=IDS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_inputs_that_are_not_numbers_are_refused(entry, name, packed, data):
    model, good, _ = subject(name, packed)
    call, xname, _ = ENTRY_POINTS[entry]
    dtype = data.draw(st.sampled_from(BAD_INPUT_DTYPES))
    x = data.draw(st.sampled_from([np.zeros(good, dtype), [[1, 2], [3]], "images", None]))
    msg = assert_refused(lambda: call(model, x, labels_for(good)), model, TypeError, xname)
    assert "integers or floats" in msg or "array of numbers" in msg


@pytest.mark.parametrize("entry,name,packed", CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_nan_and_inf_anywhere_are_refused(entry, name, packed, data):
    model, good, _ = subject(name, packed)
    call, xname, _ = ENTRY_POINTS[entry]
    x = data.draw(non_finite_arrays(good))
    msg = assert_refused(lambda: call(model, x, labels_for(x)), model, ValueError, xname)
    assert "must be finite" in msg and "NaN/inf" in msg


@pytest.mark.parametrize("entry", ["evaluate", "fit", "fit_validation"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "dense"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_labels_of_every_wrong_kind_are_refused(entry, name, data):
    model, good, _ = subject(name, False)
    call, _, yname = ENTRY_POINTS[entry]
    y, error = data.draw(bad_labels(good[0], CLASSES))
    x = np.full(good, 128, np.uint8)
    msg = assert_refused(lambda: call(model, x, y), model, error, yname)
    if error is ValueError and y.ndim == 1 and len(y) == good[0]:
        assert f"[0, {CLASSES})" in msg


def test_validation_must_be_a_pair_of_consistent_arrays():
    model, good, _ = subject("mlp", False)
    x, y = model.good
    fit = functools.partial(pysbnn.fit, model, x, y, epochs=1, batch_size=2, verbose=False)
    assert_refused(lambda: fit(validation=x), model, TypeError, "validation")
    assert_refused(lambda: fit(validation=(x, y, y)), model, TypeError, "validation")
    msg = assert_refused(lambda: fit(validation=(x, y[:-1])), model, ValueError, "validation[1]")
    assert f"must have shape ({len(x)},)" in msg and f"got shape ({len(x) - 1},)" in msg


@pytest.mark.parametrize("name", ["mlp", "cnn", "dense"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
def test_valid_inputs_of_every_accepted_dtype_still_work(name, packed, dtype):
    model, good, _ = subject(name, packed)
    x8 = np.random.default_rng(0).integers(0, 256, good).astype(np.uint8)
    x = x8.astype(dtype)
    assert model.forward(x).shape == (good[0], CLASSES)
    pred = model.predict(x, batch_size=2)
    assert pred.shape == (good[0],) and pred.dtype.kind == "i"
    if dtype != np.float64:                       # float64 computes in float64
        np.testing.assert_array_equal(pred, model.predict(x8))
    assert model.predict(x[:0]).shape == (0,)
    if not packed:
        loss, acc = pysbnn.evaluate(model, x, labels_for(x))
        assert math.isfinite(loss) and 0 <= acc <= 1


@settings(max_examples=20, deadline=None)
@given(sides=st.lists(st.sampled_from([1, 2, 4, 8, 16]), min_size=2, max_size=3).filter(
    lambda s: math.prod(s) == 16), n=st.integers(1, 3))
def test_any_image_shape_with_the_right_number_of_values_works(sides, n):
    """The flattening MLP takes (n, h, w) and (n, h, w, c) images of h*w*c = 16 values."""
    model, _, _ = subject("mlp", False)
    x = np.full((n,) + tuple(sides), 200, np.uint8)
    np.testing.assert_array_equal(model.predict(x), model.predict(x.reshape(n, 4, 4)))


def test_the_expected_shapes_read_as_the_user_needs_them():
    """Pinned texts: what each model says it takes."""
    from pysbnn.resnet import resnet18
    from pysbnn.validation import describe
    cases = [(pysbnn.binary_mlp((784, 32, 10)), "(n, h, w) or (n, h, w, c) with 784 values per sample"),
             (resnet18(width=4), "(n, h, w) or (n, h, w, 1)"),
             (resnet18(in_channels=3, width=4), "(n, h, w, 3)"),
             (build("cnn")[0], "(n, h, w, 3) with h, w >= 3"),
             (pysbnn.mlp((7, 4, 3), normalize=False), "(n, 7)"),
             (pysbnn.Sequential([pysbnn.Flatten(), pysbnn.Dense(6, 2)]), "(n, ...) with 6 values per sample"),
             (pysbnn.Sequential([pysbnn.BatchNorm1d(5)]), "(n, 5) or (n, h, w, 5)"),
             (pysbnn.Sequential([]), "(n, ...)")]
    for model, text in cases:
        assert describe(model.input_spec()) == text
        packed = text.replace("(n, h, w) or (n, h, w, c) with 784", "(n, ...) with 784")
        assert describe(pysbnn.pack(model).net.input_spec()) == packed   # Normalize folded in
    model = pysbnn.binary_mlp((784, 32, 10))
    with pytest.raises(ValueError) as info:
        model.predict(np.zeros((2, 28, 27), np.uint8))
    assert str(info.value) == ("x must have shape (n, h, w) or (n, h, w, c) with 784 values "
                               "per sample, got shape (2, 28, 27)")
    assert model.num_classes() == 10 and resnet18(num_classes=7, width=4).num_classes() == 7
    assert pysbnn.Sequential([pysbnn.Flatten()]).num_classes() is None


def test_every_row_of_the_issue_table_is_a_clear_error_before_any_work(tmp_path):
    """Issue 14's table on an MNIST-sized model: each call raises in validation.py."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (32, 28, 28)).astype(np.uint8), np.arange(32) % 10
    xnan = x.astype(np.float32)
    xnan[3, 7, 9] = np.nan
    model = _count_forwards(pysbnn.binary_mlp((784, 16, 10), seed=0))
    packed = _count_forwards(pysbnn.pack(model))
    nan_model = pysbnn.binary_mlp((784, 16, 10), seed=0)
    nan_model.layers[1].params["weight"][0, 0] = np.nan
    fit = functools.partial(pysbnn.fit, epochs=1, batch_size=8, verbose=False)
    rows = [(lambda: model.predict(x[:, :27]), model, ValueError, "x"),
            (lambda: packed.predict(x[:, :27]), packed, ValueError, "x"),
            (lambda: model.predict(xnan), model, ValueError, "x"),
            (lambda: fit(model, xnan, y), model, ValueError, "x_train"),
            (lambda: fit(model, x, y + 0.5), model, TypeError, "y_train"),
            (lambda: fit(model, x, np.stack([y, y], 1)), model, ValueError, "y_train"),
            (lambda: fit(model, x, y, validation=(x, y[:10])), model, ValueError, "validation[1]"),
            (lambda: fit(model, x[:, :27], y), model, ValueError, "x_train")]
    for call, subject_model, error, name in rows:
        assert_refused(call, subject_model, error, name)
    for call, where in [(lambda: pysbnn.pack(nan_model), "pack"),
                        (lambda: pysbnn.save_model(nan_model, tmp_path / "m.npz"), "save_model")]:
        with pytest.raises(ValueError, match=rf"^{where}: layer '1' \(BinaryDense\) has a non-finite weight"):
            call()
    assert not (tmp_path / "m.npz").exists()


# ------------------------------------------------------ non-finite models
def _poison(model, data):
    """Put NaN or inf at a random position of a random float parameter or buffer."""
    arrays = [(f"{ln}", k, a) for ln, l in model.named_layers()
              for k, a in list(l.params.items()) + list(l.buffers.items()) if a.dtype.kind == "f"]
    lname, key, a = data.draw(st.sampled_from(arrays))
    a.reshape(-1)[data.draw(st.integers(0, a.size - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return lname, key


@pytest.mark.parametrize("name", ["mlp", "cnn", "dense"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_pack_and_save_refuse_non_finite_weights_naming_the_layer(name, data, tmp_path_factory):
    model, shape, _ = build(name)
    lname, key = _poison(model, data)
    path = tmp_path_factory.mktemp("save") / "m.npz"
    for call, where in [(lambda: pysbnn.pack(model), "pack"),
                        (lambda: pysbnn.save_model(model, path), "save_model"),
                        (lambda: pysbnn.fit(model, *subject(name, False)[0].good, verbose=False), "fit")]:
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(f"{where}: layer '{lname}' (") and f"non-finite {key}" in msg, msg
    assert not path.exists()


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_packed_save_refuses_non_finite_thresholds(data, tmp_path_factory):
    packed = pysbnn.pack(build("mlp")[0])
    lname, key = _poison(packed.net, data)
    path = tmp_path_factory.mktemp("save") / "p.npz"
    with pytest.raises(ValueError, match=rf"^PackedModel.save: layer '{lname}' .*non-finite {key}"):
        packed.save(path)
    assert not path.exists()


# ------------------------------------------------------------- divergence
def test_a_diverging_fit_names_epoch_and_step_and_suggests_a_smaller_lr(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (64, 4, 4)).astype(np.uint8)
    y = np.arange(64) % CLASSES
    ckpt = tmp_path / "run.ckpt.npz"
    with pytest.raises(pysbnn.DivergenceError) as info, np.errstate(all="ignore"):
        pysbnn.fit(pysbnn.binary_mlp((16, 8, CLASSES), seed=0), x, y, epochs=3, batch_size=16,
                   lr=1e30, checkpoint=ckpt, verbose=False)
    e = info.value
    assert isinstance(e, ValueError)
    assert re.match(rf"fit diverged at \(Epoch {e.epoch + 1} / 3\), step {e.step} / 4: ", str(e))
    assert "smaller lr" in str(e) and "lr=1e+30" in str(e)
    assert traceback.extract_tb(info.tb)[-1].filename.endswith(os.path.join("pysbnn", "train.py"))
    if ckpt.exists():
        _assert_finite_checkpoint(ckpt, pysbnn.binary_mlp((16, 8, CLASSES), seed=0))


class GradientBomb(pysbnn.Layer):
    """The identity, with one parameter whose gradient turns inf from epoch ``at`` on."""

    def __init__(self, at=1):
        super().__init__()
        self.at, self.epoch = at, 0
        self._init_param("s", np.zeros(1, np.float32))

    def set_epoch(self, epoch, epochs):
        self.epoch = epoch

    def forward(self, x, training=False):
        return x

    def backward(self, dout):
        self.grads["s"] = np.full(1, np.inf if self.epoch >= self.at else 0.0, np.float32)
        return dout


def _assert_finite_checkpoint(path, model):
    meta, arrays = read_npz(path, "checkpoint")
    load_arrays(model, {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}, path)
    assert all(np.isfinite(a).all() for _, a in model.named_parameters())
    return meta


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_divergence_stops_at_its_step_and_the_checkpoint_keeps_the_finite_epoch(tmp_path, optimizer):
    def model():
        return pysbnn.Sequential([pysbnn.Normalize(flatten=True), pysbnn.Dense(16, 8, rng=0),
                                  GradientBomb(at=1), pysbnn.ReLU(), pysbnn.Dense(8, CLASSES, rng=1)])
    x = np.random.default_rng(0).integers(0, 256, (64, 4, 4)).astype(np.uint8)
    y = np.arange(64) % CLASSES
    ckpt = tmp_path / "run.ckpt.npz"
    with pytest.raises(pysbnn.DivergenceError, match=r"\(Epoch 2 / 3\), step 1 / 4: the gradient "
                                                     r"of '2.s' holds NaN or inf") as info, \
            np.errstate(all="ignore"):
        pysbnn.fit(model(), x, y, epochs=3, batch_size=16, optimizer=optimizer, checkpoint=ckpt,
                   verbose=False)
    assert (info.value.epoch, info.value.step) == (1, 1)
    assert _assert_finite_checkpoint(ckpt, model())["epoch"] == 0
