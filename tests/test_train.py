"""Optimisers against their formulas, reproducibility, checkpoints and resume."""

import io

import numpy as np
import pytest

import pysbnn
from pysbnn.optim import Adam, SGD, cosine_lr


def tiny_model(seed=0):
    return pysbnn.Sequential([pysbnn.Normalize(flatten=True), pysbnn.Dense(16, 8, rng=seed),
                              pysbnn.BatchNorm1d(8), pysbnn.HardTanh(), pysbnn.Dense(8, 3, rng=seed + 1)])


def tiny_data(n=96):
    rng = np.random.default_rng(42)
    y = rng.integers(0, 3, n)
    x = (rng.integers(0, 80, (n, 4, 4)) + 60 * y[:, None, None]).astype(np.uint8)
    return x, y


def weights(model):
    return {k: v.copy() for k, v in model.named_parameters()}


def test_adam_matches_its_formula():
    model = pysbnn.Sequential([pysbnn.Dense(3, 2, rng=0)]).astype(np.float64)
    p0 = model.layers[0].params["weight"].copy()
    g1, g2 = np.full((2, 3), 0.5), np.linspace(-1, 1, 6).reshape(2, 3)
    opt = Adam(model, lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    m = v = 0
    p = p0.copy()
    for t, g in enumerate([g1, g2], start=1):
        model.layers[0].grads["weight"] = g.copy()
        model.layers[0].grads["bias"] = np.zeros(2)
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        p = p - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-8)
    np.testing.assert_allclose(model.layers[0].params["weight"], p, rtol=1e-12)


def test_sgd_momentum_matches_its_formula():
    model = pysbnn.Sequential([pysbnn.Dense(2, 1, bias=False, rng=0)]).astype(np.float64)
    w0 = model.layers[0].params["weight"].copy()
    opt = SGD(model, lr=0.5, momentum=0.9)
    for _ in range(2):
        model.layers[0].grads["weight"] = np.ones((1, 2))
        opt.step()
    np.testing.assert_allclose(model.layers[0].params["weight"], w0 - 0.5 * 1 - 0.5 * 1.9)


def test_cosine_schedule_endpoints_and_errors():
    assert cosine_lr(1e-3, 0, 10) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 5, 10) == pytest.approx(5e-4)
    assert cosine_lr(1e-3, 10, 10) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="epoch"):
        cosine_lr(1e-3, 11, 10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(betas=(1.0, 0.9)), r"betas\[0\]")])
def test_optimizer_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Adam(tiny_model(), **kwargs)


def test_training_learns_and_same_seed_is_bit_identical():
    x, y = tiny_data()
    runs = []
    for _ in range(2):
        model = tiny_model()
        hist = pysbnn.fit(model, x, y, epochs=4, batch_size=16, seed=3, mixup_alpha=0.2,
                          augment=lambda xb, rng: pysbnn.random_crop_flip(xb, rng, pad=1),
                          verbose=False)
        runs.append(weights(model))
    assert hist[-1]["loss"] < hist[0]["loss"]
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])
    other = tiny_model()
    pysbnn.fit(other, x, y, epochs=4, batch_size=16, seed=4, mixup_alpha=0.2, verbose=False)
    assert any(not np.array_equal(runs[0][k], v) for k, v in weights(other).items())


def test_resume_after_interruption_gives_the_same_final_weights(tmp_path):
    x, y = tiny_data()
    ref = tiny_model()
    pysbnn.fit(ref, x, y, epochs=4, batch_size=16, seed=7, verbose=False)

    ckpt = tmp_path / "run.ckpt.npz"
    calls = {"n": 0}

    def interrupt_in_epoch_3(xb, rng):
        calls["n"] += 1
        if calls["n"] == 2 * 6 + 3:            # 6 steps per epoch; die inside the 3rd epoch
            raise KeyboardInterrupt
        return xb

    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        pysbnn.fit(model, x, y, epochs=4, batch_size=16, seed=7, verbose=False,
                   checkpoint=ckpt, augment=interrupt_in_epoch_3)
    assert ckpt.exists()
    resumed = tiny_model(seed=99)                  # even different initial weights
    hist = pysbnn.fit(resumed, x, y, epochs=4, batch_size=16, seed=7, verbose=False, checkpoint=ckpt)
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    for k, v in weights(ref).items():
        np.testing.assert_array_equal(weights(resumed)[k], v)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    x, y = tiny_data()
    ckpt = tmp_path / "c.npz"
    pysbnn.fit(tiny_model(), x, y, epochs=1, batch_size=16, seed=1, verbose=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match="different run"):
        pysbnn.fit(tiny_model(), x, y, epochs=1, batch_size=16, seed=2, verbose=False, checkpoint=ckpt)


def test_progress_lines_when_not_a_terminal():
    x, y = tiny_data()
    out = io.StringIO()
    pysbnn.fit(tiny_model(), x, y, epochs=2, batch_size=16, seed=0, stream=out,
               validation=(x, y))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("(Epoch 2 / 2)")
    assert "val acc" in lines[0] and "\r" not in out.getvalue()


@pytest.mark.parametrize("kwargs,match", [
    (dict(epochs=0), "epochs"), (dict(batch_size=1), "batch_size"), (dict(gamma=1.0), "gamma"),
    (dict(target_ec=0.0), "target_ec"), (dict(mixup_alpha=-1.0), "mixup_alpha"),
    (dict(batch_size=1000), "batch_size"), (dict(optimizer="rmsprop"), "optimizer")])
def test_fit_argument_errors(kwargs, match):
    x, y = tiny_data()
    with pytest.raises(ValueError, match=match):
        pysbnn.fit(tiny_model(), x, y, verbose=False, **kwargs)


def test_random_crop_flip_moves_pixels_consistently():
    rng = np.random.default_rng(0)
    x = np.arange(2 * 5 * 5 * 2).reshape(2, 5, 5, 2)
    out = pysbnn.random_crop_flip(x, rng, pad=2)
    assert out.shape == x.shape
    # every output image is a shifted (possibly flipped) window of the zero-padded input
    for i in range(2):
        xp = np.pad(x[i], ((2, 2), (2, 2), (0, 0)))
        found = any(np.array_equal(out[i], w) or np.array_equal(out[i], w[:, ::-1])
                    for dy in range(5) for dx in range(5) for w in [xp[dy:dy + 5, dx:dx + 5]])
        assert found


def test_conv_nets_train_with_single_threaded_blas():
    """fit's thread policy: BLAS on one thread for a model with binary convs when
    numba runs several threads (OpenBLAS's spinning workers would take the core
    numba's second thread needs), BLAS untouched for dense models."""
    numba = pytest.importorskip("numba")
    from threadpoolctl import threadpool_info

    from pysbnn.kernels.jit import jit_disabled
    from pysbnn.resnet import resnet18
    from pysbnn.train import training_threads
    if numba.config.NUMBA_NUM_THREADS < 2 or jit_disabled():
        pytest.skip("needs numba with two threads")

    def blas():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    before, threads = blas(), numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        with training_threads(resnet18(width=4)):
            inside = blas()
        with training_threads(tiny_model()):
            dense = blas()
    finally:
        numba.set_num_threads(threads)
    assert inside == [1] * len(before) and dense == before and blas() == before
