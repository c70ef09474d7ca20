"""Training progress (pysbnn.progress): a live output per epoch in Jupyter, a
``\\r`` bar on a terminal, one line per epoch elsewhere, nothing when quiet.

The Jupyter display is IPython's; here a recorder stands in for it (the
notebook test, tests/test_tutorial.py, runs the real one in a kernel).
"""

import io

import numpy as np
import pytest

import pysbnn
from pysbnn import progress


def tiny_run(**kwargs):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 4, 4)).astype(np.uint8)
    y = rng.integers(0, 3, 48)
    model = pysbnn.binary_mlp((16, 8, 3), seed=0)
    return pysbnn.fit(model, x, y, epochs=2, batch_size=16, seed=0, target_ec=0.2, gamma=0.1, **kwargs)


class Recorder:
    """Stands in for ``IPython.display.display``: one handle per ``display_id=True`` call."""

    def __init__(self):
        self.outputs = []                 # one list of bundles per output, in update order

    def __call__(self, bundle, raw=False, display_id=None):
        assert raw and display_id is True
        self.outputs.append([bundle])
        updates = self.outputs[-1]

        class Handle:
            def update(self, bundle, raw=False):
                assert raw
                updates.append(bundle)
        return Handle()


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_no_jupyter_display_outside_a_kernel():
    assert progress.jupyter_display() is None
    assert progress.Progress(2, 3).mode in ("lines", "terminal")


def test_jupyter_shows_one_live_output_per_epoch_ending_in_its_line(monkeypatch, capsys):
    recorder = Recorder()
    monkeypatch.setattr(progress, "jupyter_display", lambda: recorder)
    history = tiny_run()
    assert capsys.readouterr().out == ""                   # nothing printed: all displayed
    assert len(recorder.outputs) == 2
    for epoch, (updates, row) in enumerate(zip(recorder.outputs, history)):
        bars, last = updates[:-1], updates[-1]
        assert bars and all('<progress value="' in b["text/html"] for b in bars)
        assert bars[0]["text/plain"].startswith(f"(Epoch {epoch + 1} / 2) [")
        assert " 3/3 loss " in bars[-1]["text/plain"]            # the last step is always shown
        assert last == {"text/plain": progress.epoch_text(row, 2)}   # the saved, plain line
        assert "ones" in last["text/plain"] and "lambda" in last["text/plain"]


def test_an_explicit_stream_wins_over_jupyter(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(progress, "jupyter_display", lambda: recorder)
    out = io.StringIO()
    tiny_run(stream=out)
    assert recorder.outputs == []
    lines = out.getvalue().splitlines()
    assert [l.split(")")[0] for l in lines] == ["(Epoch 1 / 2", "(Epoch 2 / 2"]


def test_terminal_bar_is_redrawn_then_replaced_by_the_line():
    out = TTY()
    history = tiny_run(stream=out)
    text = out.getvalue()
    assert "\r(Epoch 1 / 2) [" in text and "3/3 loss" in text
    assert text.endswith("\r" + progress.epoch_text(history[-1], 2) + "\n")


@pytest.mark.parametrize("jupyter", [False, True])
def test_verbose_false_shows_nothing(monkeypatch, capsys, jupyter):
    recorder = Recorder()
    if jupyter:
        monkeypatch.setattr(progress, "jupyter_display", lambda: recorder)
    tiny_run(verbose=False, stream=TTY())
    tiny_run(verbose=False)
    assert capsys.readouterr().out == "" and recorder.outputs == []
