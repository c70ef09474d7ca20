"""The ResNet-18 examples run end to end with --quick (Table 1 has its own file, test_table1.py)."""

import csv
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIG2 = os.path.join(ROOT, "examples", "fig2_kernel_histograms.py")
TABLE1 = os.path.join(ROOT, "examples", "table1_domains.py")

pytestmark = pytest.mark.slow


def run(script, *args, timeout=120):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
    return proc, time.perf_counter() - t0


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_fig2_quick_writes_png_and_csv(tmp_path):
    proc, seconds = run(FIG2, "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert seconds < 120
    png = tmp_path / "fig2.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    columns, rows = read_csv(tmp_path / "fig2.csv")
    assert columns == ["layer", "constraint", "hamming_weight", "percent"]
    assert len(rows) == 3 * 3 * 10
    assert {r["layer"] for r in rows} == {"5", "10", "15"}
    assert {r["constraint"] for r in rows} == {"none", "95%", "99%"}
    for layer in ("5", "10", "15"):
        for constraint in ("none", "95%", "99%"):
            pct = [float(r["percent"]) for r in rows if r["layer"] == layer and r["constraint"] == constraint]
            assert len(pct) == 10 and abs(sum(pct) - 100) < 1e-2
    _, layer_rows = read_csv(tmp_path / "fig2_layers.csv")
    assert len(layer_rows) == 16 * 3
    assert "K0" in proc.stdout and "BOPs PR" in proc.stdout and "BParams PR" in proc.stdout
    assert sorted(os.listdir(tmp_path / "models")) == ["ec0.01.npz", "ec0.05.npz", "none.npz"]

    # A second run reuses the saved models instead of training again.
    again, _ = run(FIG2, "--quick", "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("reusing") == 3 and "Epoch" not in again.stdout
    _, rows2 = read_csv(tmp_path / "fig2.csv")
    assert rows2 == rows

    # One process instead of three: the same models (each job is single-threaded).
    serial, _ = run(FIG2, "--quick", "--jobs", "1", "--out", str(tmp_path / "serial"))
    assert serial.returncode == 0, serial.stderr[-2000:]
    default_jobs = 3 if (os.cpu_count() or 1) > 1 else 1
    assert "in 1 process(es)" in serial.stdout and f"in {default_jobs} process(es)" in proc.stdout
    assert read_csv(tmp_path / "serial" / "fig2_layers.csv") == read_csv(tmp_path / "fig2_layers.csv")


@pytest.mark.parametrize("script,args", [
    (FIG2, ["--width", "0"]),
    (FIG2, ["--gamma-95", "1"]),
    (FIG2, ["--jobs", "0"]),
    (FIG2, ["--dataset", "imagenet"]),
    (TABLE1, ["--seeds", "-1"]),
    (TABLE1, ["--quick", "--batch-size", "1000"]),
    (TABLE1, ["--quick", "--grid", "sym/approx"]),
    (TABLE1, ["--quick", "--grid", "learned/exact"]),
    (TABLE1, ["--quick", "--grid", "baseline,baseline"]),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(script, args):
    proc, _ = run(script, *args, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
