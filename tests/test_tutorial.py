"""examples/tutorial.ipynb, the notebook that audits the paper's math.

* The committed file keeps its outputs, so it reads on a repository page
  without running: every code cell executed, in order, no errors, no stderr,
  its figures as PNG, the file small.
* Its text states no measured number: numbers come from its code cells.
* Executed from scratch, headless (nbclient, with the ``python3`` kernel of
  ipykernel, i.e. the Python that runs pytest), it raises nowhere and finishes
  within the issue's three minutes; its training progress renders as a live
  Jupyter display.

Refresh the committed outputs with ``jupyter execute --inplace examples/tutorial.ipynb``.
"""

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"
#: the issue's limit for the whole notebook, executed from scratch on 2 cores
BUDGET_SECONDS = 180
#: a committed notebook larger than this does not read well on a repository page
MAX_BYTES = 1_500_000


def committed():
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def text(source):
    return "".join(source) if isinstance(source, list) else source


def test_committed_notebook_keeps_its_outputs():
    nb = committed()
    cells = code_cells(nb)
    assert len(nb["cells"]) >= 20 and NOTEBOOK.stat().st_size < MAX_BYTES
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1)), \
        "every code cell executed once, top to bottom, in one run"
    outputs = [o for c in cells for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"], \
        "warnings and errors printed on stderr: handle them in the cell"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 8
    assert all(c["outputs"] for c in cells if "plt.show()" in text(c["source"]))


def test_markdown_states_no_measured_numbers():
    """Decimals and percentages belong in outputs (section numbers such as Sec. 3.5 aside)."""
    for cell in committed()["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        prose = re.sub(r"Sec\. \d+(\.\d+)*", "", text(cell["source"]))
        found = re.findall(r"\d+\.\d+|\d+ ?%", prose)
        assert not found, f"numbers typed into the text: {found} in {text(cell['source'])[:80]!r}"


def kernel_env():
    """The kernel imports this checkout's pysbnn, offline, with one BLAS thread."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, PYSBNN_OFFLINE="1",
                OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))


@pytest.mark.slow
def test_notebook_executes_from_scratch_within_budget():
    nbclient = pytest.importorskip("nbclient", reason="needs nbclient (pip install -e '.[test]')")
    nbformat = pytest.importorskip("nbformat", reason="needs nbformat (pip install -e '.[test]')")
    pytest.importorskip("ipykernel", reason="needs ipykernel (pip install -e '.[test]')")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    probe = "import sys, pysbnn\nprint(sys.executable)\nprint(pysbnn.__file__)"
    nb.cells.append(nbformat.v4.new_code_cell(probe))       # not part of the timed notebook's text
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=BUDGET_SECONDS,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    start = time.perf_counter()
    client.execute(env=kernel_env())                        # raises CellExecutionError on any error
    seconds = time.perf_counter() - start
    print(f"\nexamples/tutorial.ipynb executed in {seconds:.1f} s (load average "
          f"{os.getloadavg()[0]:.1f})")
    assert seconds < BUDGET_SECONDS

    executable, module = nb.cells[-1].outputs[0]["text"].splitlines()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(module).resolve() == ROOT / "pysbnn" / "__init__.py"
    training = [c for c in nb.cells if "pysbnn.fit(model" in c.source]
    assert len(training) == 1
    shown = [o for o in training[0].outputs if o.output_type == "display_data"]
    assert shown and all(o.data["text/plain"].startswith("(Epoch ") for o in shown), \
        "the training progress renders as Jupyter displays, one per epoch"
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "stream" and o.name == "stderr"]
