"""examples/table1_domains.py: the CSVs, the cache, and the same numbers serially,
with --jobs 2 and on a two-worker Dask LocalCluster."""

import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE1 = os.path.join(ROOT, "examples", "table1_domains.py")
GRID = ["--quick", "--grid", "baseline,sym/ste,alpha_beta/exact,learned", "--seeds", "2"]

pytestmark = pytest.mark.slow


def run(*args, timeout=300):
    proc = subprocess.run([sys.executable, TABLE1, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def per_seed(out):
    """{(row, seed): (accuracy, ones, push, xi)} of a run's table1.csv."""
    _, rows = read_csv(os.path.join(out, "table1.csv"))
    return {(r["row"], r["seed"]): (r["accuracy"], r["ones"], r["push"], r["xi"]) for r in rows}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("serial"))
    return out, run(*GRID, "--jobs", "1", "--out", out)


def test_one_csv_row_per_configuration_and_seed(serial):
    out, proc = serial
    columns, rows = read_csv(os.path.join(out, "table1.csv"))
    assert columns[:8] == ["row", "domain", "grad", "penalty_scaling", "constraint", "seed", "accuracy", "delta"]
    assert [(r["row"], r["seed"]) for r in rows] == [(k, s) for k in ("baseline", "sym/ste", "alpha_beta/exact",
                                                                       "learned") for s in ("0", "1")]
    base = {r["seed"]: float(r["accuracy"]) for r in rows if r["row"] == "baseline"}
    for r in rows[2:]:
        assert float(r["delta"]) == pytest.approx(float(r["accuracy"]) - base[r["seed"]], abs=2e-4)
        assert r["constraint"] == "95%"
    assert {r["grad"] for r in rows if r["row"] == "sym/ste"} == {"ste"}
    _, summary = read_csv(os.path.join(out, "table1_summary.csv"))
    assert [r["row"] for r in summary] == ["baseline", "sym/ste", "alpha_beta/exact", "learned"]
    for r in summary[1:]:
        deltas = [float(x["delta"]) for x in rows if x["row"] == r["row"]]
        assert float(r["delta_mean"]) == pytest.approx(sum(deltas) / 2, abs=2e-4)
        assert float(r["delta_low"]) <= float(r["delta_mean"]) <= float(r["delta_high"])
    assert summary[0]["status"] == "" and summary[1]["status"] in ("on target", "over-pruned", "target missed")
    md = open(os.path.join(out, "table1.md")).read()
    assert "Claim 1 with Eq. 15 exact" in md and "| Paired test" in md
    assert proc.stdout.count(" (trained;") == 8


def test_a_rerun_trains_only_what_is_missing(serial):
    """An interrupted sweep keeps its finished trainings: they are reused, the rest trained."""
    out, _ = serial
    before = per_seed(out)
    os.remove(os.path.join(out, "models", "learned-s1.npz"))
    again = run(*GRID, "--jobs", "1", "--out", out)
    assert again.stdout.count(" (reused;") == 7 and again.stdout.count(" (trained;") == 1
    assert per_seed(out) == before


def test_jobs_2_and_dask_give_the_same_numbers(serial, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("joblib")
    expected = per_seed(serial[0])
    run(*GRID, "--jobs", "2", "--out", str(tmp_path / "jobs2"))
    assert per_seed(tmp_path / "jobs2") == expected
    monkeypatch.setenv("PYTHONPATH", ROOT)          # the workers import this pysbnn
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        run(*GRID, "--scheduler", cluster.scheduler_address, "--out", str(tmp_path / "dask"))
    assert per_seed(tmp_path / "dask") == expected
