r"""Training progress for :func:`pysbnn.fit`: three displays, chosen once per run.

* **Jupyter** (inside an IPython kernel, and ``fit`` was given no ``stream``):
  one output per epoch, a progress bar updated in place (IPython's
  ``display`` with a ``display_id``) that becomes the epoch's summary line
  when the epoch ends. It needs nothing but IPython, which every Jupyter
  kernel has; a saved notebook keeps the summary lines as plain text.
* **terminal** (``stream.isatty()``): a bar redrawn with ``\r``, then the
  epoch's summary line.
* **lines** (files, pipes, CI logs, ``io.StringIO``, an explicit ``stream``
  in Jupyter): one summary line per epoch.

``verbose=False`` shows nothing.
"""

import html
import sys
import time

__all__ = ["Progress", "jupyter_display", "bar_text", "epoch_text"]

#: width of the bar in characters
BAR = 30
#: the Jupyter bar is redrawn at most this often (seconds), and at an epoch's last step
JUPYTER_INTERVAL = 0.1


def jupyter_display():
    """IPython's ``display`` when this process is a Jupyter (IPython) kernel, else None.

    IPython is never imported here: a kernel has imported it already.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    if getattr(shell, "kernel", None) is None:          # a terminal IPython has no kernel
        return None
    from IPython.display import display
    return display


def bar_text(epoch, epochs, i, steps, loss):
    """``(Epoch e / E) [####......] i/steps loss L`` (``epoch`` 0-based)."""
    done = int(BAR * i / steps)
    return (f"(Epoch {epoch + 1} / {epochs}) [{'#' * done}{'.' * (BAR - done)}] "
            f"{i}/{steps} loss {loss:.4f}")


def epoch_text(row, epochs):
    """The summary line of a history row (see :func:`pysbnn.fit`)."""
    parts = [f"(Epoch {row['epoch'] + 1} / {epochs})", f"loss {row['loss']:.4f}",
             f"train acc {row['train_acc']:.4f}"]
    if "val_acc" in row:
        parts.append(f"val acc {row['val_acc']:.4f}")
    if "ones" in row:
        parts.append(f"ones {row['ones']:.4f} (target {row['target_ec']:.4f}) "
                     f"bits/w {row['bits_per_weight']:.3f} lambda {row['lambda']:.3g}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


class Progress:
    """Per-step and per-epoch progress of one ``fit`` run.

    ``stream``: where terminal bars and lines go (default ``sys.stdout``; an
    explicit stream is always written to, never a Jupyter display);
    ``enabled``: False shows nothing. ``mode`` is ``"jupyter"``,
    ``"terminal"``, ``"lines"`` or ``"off"``.
    """

    def __init__(self, epochs, steps, stream=None, enabled=True):
        self.epochs, self.steps = epochs, steps
        self.display = jupyter_display() if enabled and stream is None else None
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.tty = (enabled and self.display is None and hasattr(self.stream, "isatty")
                    and self.stream.isatty())
        self.mode = ("off" if not enabled else "jupyter" if self.display is not None
                     else "terminal" if self.tty else "lines")
        self._handle, self._shown = None, 0.0

    def step(self, epoch, i, loss):
        """After step ``i`` (1-based) of ``epoch`` (0-based)."""
        if self.mode == "jupyter":
            now = time.perf_counter()
            if self._handle is None or i == self.steps or now - self._shown >= JUPYTER_INTERVAL:
                self._show(self._bar_bundle(epoch, i, loss))
                self._shown = now
        elif self.tty and (i % 5 == 0 or i == self.steps):
            self.stream.write("\r" + bar_text(epoch, self.epochs, i, self.steps, loss))
            self.stream.flush()

    def epoch(self, row):
        """After an epoch, with its history row."""
        if not self.enabled:
            return
        line = epoch_text(row, self.epochs)
        if self.mode == "jupyter":
            self._show({"text/plain": line})             # the bar's output becomes the line
            self._handle = None                          # the next epoch gets its own output
            return
        self.stream.write(("\r" if self.tty else "") + line + "\n")
        self.stream.flush()

    def _bar_bundle(self, epoch, i, loss):
        """The bar as plain text, and as an HTML ``<progress>`` element for Jupyter."""
        text = bar_text(epoch, self.epochs, i, self.steps, loss)
        label = html.escape(f"(Epoch {epoch + 1} / {self.epochs}) {i}/{self.steps} loss {loss:.4f}")
        return {"text/plain": text,
                "text/html": f'<progress value="{i}" max="{self.steps}" style="width: 20em"></progress> '
                             f"<code>{label}</code>"}

    def _show(self, bundle):
        if self._handle is None:
            self._handle = self.display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
