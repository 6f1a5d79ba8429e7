"""Live display of training progress on the host: a notebook bar or a terminal line.

``progress_display()`` picks the display for the current process: a bar in
a Jupyter notebook, a text line when stderr is a terminal, or None. A
display is a callable that takes the progress records of one run (see
``confidential_nb.progress_records``) and a context manager that removes
what it showed when the run ends, also on errors and interrupts::

    display = progress_display()
    if display is None:
        result = enclave.run(source, inputs=inputs)
    else:
        with display:
            result = enclave.run(source, inputs=inputs, progress=display)

Nothing of the display stays in a saved notebook, so notebooks keep testing
cleanly under nbval.
"""

from __future__ import annotations

import html
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO, TypeVar

from confidential_nb.progress_records import normalize_record

T = TypeVar("T")
ProgressCallback = Callable[[dict[str, Any]], None]

logger = logging.getLogger("confidential_nb.progress")

DEFAULT_MIN_INTERVAL = 0.1

# Width of the terminal line's text bar, in characters.
_TEXT_BAR_WIDTH = 20

# ANSI "erase in line" from the cursor to the end of the line.
_ERASE_TO_END = "\x1b[K"


def format_progress(record: dict[str, Any]) -> str:
    """Format a normalized record as "LogisticRegression  epoch 120/300  loss 0.1234  accuracy 0.951"."""
    parts = [record["model"], f"epoch {record['epoch']}/{record['epochs']}"]
    if record["loss"] is not None:
        parts.append(f"loss {record['loss']:.4g}")
    if record["accuracy"] is not None:
        parts.append(f"accuracy {record['accuracy']:.3f}")
    return "  ".join(parts)


class ProgressDisplay:
    """Shows the progress records of one run, throttled to one update per ``min_interval`` seconds.

    A record that starts a new bar (another model, another epoch count, or
    an epoch before the one shown, as the next fold of a cross-validation
    sends) and a record of the last epoch (``epoch == epochs``) are shown at
    once. Other records are dropped when they arrive within
    ``min_interval`` of the last update. Records that fail
    ``normalize_record`` are dropped and counted in ``rejected``.
    Subclasses implement ``_show`` and ``_erase``.
    """

    def __init__(self, min_interval: float = DEFAULT_MIN_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self.clock = clock
        self.rejected = 0
        self.current_record: dict[str, Any] | None = None
        self._last_update: float | None = None
        self._closed = False

    def __call__(self, record: dict[str, Any]) -> None:
        """Show the record, unless the display is closed or throttled."""
        if self._closed:
            return
        normalized = normalize_record(record)
        if normalized is None:
            self.rejected += 1
            return
        restart = self._starts_new_bar(normalized)
        now = self.clock()
        recent = self._last_update is not None and now - self._last_update < self.min_interval
        if recent and not restart and normalized["epoch"] != normalized["epochs"]:
            return
        self._show(normalized)
        self.current_record = normalized
        self._last_update = now

    def _starts_new_bar(self, record: dict[str, Any]) -> bool:
        current = self.current_record
        if current is None:
            return True
        return record["model"] != current["model"] or record["epochs"] != current["epochs"] or record["epoch"] < current["epoch"]

    def close(self) -> None:
        """Remove what the display showed; later records are ignored. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.rejected:
            logger.warning("dropped %d malformed progress record(s) of this run", self.rejected)
        if self.current_record is not None:
            self._erase()

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _show(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def _erase(self) -> None:
        raise NotImplementedError


class NotebookProgressBar(ProgressDisplay):
    """An HTML progress bar with the record's text, updated in place in a Jupyter notebook.

    The bar is one display output, created on the first record with an
    empty MIME bundle and then changed by ``update_display_data`` messages.
    nbval 0.11 compares only the MIME types of the outputs it receives,
    ignores ``update_display_data`` and ``clear_output`` messages, and so
    finds no output of this display whether or not updates happened. On
    ``close`` the output is updated to an empty bundle again, and with
    ``clear_cell_output=True`` the cell's output is cleared so a saved
    notebook contains no output of the display at all. Clearing also
    removes every output the cell showed before, so that mode suits a
    ``%%cape`` cell that closes the display before it shows anything else.
    """

    def __init__(
        self,
        *,
        clear_cell_output: bool = True,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(min_interval, clock)
        self.clear_cell_output = clear_cell_output
        self._handle: Any = None

    def _show(self, record: dict[str, Any]) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display({}, raw=True, display_id=True)
        self._handle.update(_bar_bundle(record), raw=True)

    def _erase(self) -> None:
        from IPython.display import clear_output

        self._handle.update({}, raw=True)
        if self.clear_cell_output:
            clear_output()


def _bar_bundle(record: dict[str, Any]) -> dict[str, str]:
    text = format_progress(record)
    bar = f'<progress value="{record["epoch"]}" max="{record["epochs"]}" style="width: 16em"></progress>'
    return {
        "text/html": f'<div>{bar} <code style="white-space: pre">{html.escape(text)}</code></div>',
        "text/plain": text,
    }


class TerminalProgressLine(ProgressDisplay):
    """One text line on a terminal stream, rewritten in place with a carriage return and erased at close.

    The line is cut to the terminal's width, because a carriage return
    cannot rewrite a line that wrapped.
    """

    def __init__(
        self, stream: TextIO, *, min_interval: float = DEFAULT_MIN_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(min_interval, clock)
        self.stream = stream

    def _show(self, record: dict[str, Any]) -> None:
        filled = _TEXT_BAR_WIDTH * record["epoch"] // record["epochs"]
        line = f"[{'#' * filled}{'.' * (_TEXT_BAR_WIDTH - filled)}] {format_progress(record)}"
        width = shutil.get_terminal_size().columns
        self.stream.write("\r" + line[: max(width - 1, 1)] + _ERASE_TO_END)
        self.stream.flush()

    def _erase(self) -> None:
        self.stream.write("\r" + _ERASE_TO_END)
        self.stream.flush()


def progress_display(*, clear_cell_output: bool = True) -> ProgressDisplay | None:
    """Return the progress display for this process, or None when there is nowhere to show one.

    In a Jupyter kernel (an IPython ``ZMQInteractiveShell`` or a subclass)
    it is a ``NotebookProgressBar``, which passes ``clear_cell_output`` on.
    Elsewhere, when stderr is a terminal (plain IPython, or a script or the
    CLI run from a shell), it is a ``TerminalProgressLine`` on stderr.
    """
    if _in_jupyter_kernel():
        return NotebookProgressBar(clear_cell_output=clear_cell_output)
    stream = sys.stderr
    if stream is not None and _is_terminal(stream):
        return TerminalProgressLine(stream)
    return None


def _in_jupyter_kernel() -> bool:
    # A process that has not imported IPython runs no IPython shell, and
    # this check avoids importing it (and ipykernel) for nothing.
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        # A replaced stream may lack isatty, and a closed one raises ValueError.
        return False


def run_with_progress(call: Callable[[ProgressCallback | None], T], *, clear_cell_output: bool = True) -> T:
    """Call `call` with this process's progress display (or None), closed before any warning of the run shows.

    The enclave's warnings are raised while the result is checked, still
    inside `call`. They are held back and raised again once the display has
    closed, because closing a notebook bar clears the cell's output so far.
    """
    display = progress_display(clear_cell_output=clear_cell_output)
    if display is None:
        return call(None)

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught, display:
            return call(display)
    finally:
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
