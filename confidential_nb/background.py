"""Runs that go on in the background: `Enclave.submit` and ``%%cape --background`` return a `BackgroundRun`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .results import RunResult

log = logging.getLogger("confidential_nb.background")

# The function a background run calls: the run itself, given the progress callback, the cancel event and a
# callback that gets True while the run waits for a core, then False.
Start = Callable[[Callable[[dict[str, Any]], None], threading.Event, Callable[[bool], None]], "RunResult"]


class BackgroundRun:
    """Handle of a run going on in its own thread; several go on in parallel, one per core.

    ``done()`` returns whether it ended, ``wait(timeout)`` waits for the end,
    ``result(timeout)`` returns the `RunResult` or raises the run's error,
    ``cancel()`` stops it, and ``progress`` is the latest progress record
    of a library model training in it (None before the first).
    """

    def __init__(self, start: Start, label: str = "run") -> None:
        self.label = label
        self.progress: dict[str, Any] | None = None
        self._waiting = False
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(start,), name=f"confidential_nb-{label}", daemon=True)
        self._thread.start()

    def _work(self, start: Start) -> None:
        try:
            self._result = start(self._record_progress, self._cancel, self._record_waiting)
        except BaseException as exc:  # The error is raised by result(), not in this thread.
            log.info("background %s failed: %s", self.label, type(exc).__name__)
            self._error = exc
        finally:
            self._finished.set()

    def _record_progress(self, record: dict[str, Any]) -> None:
        self.progress = record

    def _record_waiting(self, waiting: bool) -> None:
        self._waiting = waiting

    def done(self) -> bool:
        """Return True once the run has ended, with a result or an error."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run ends or `timeout` seconds pass; return whether it ended."""
        return self._finished.wait(timeout)

    def result(self, timeout: float | None = None) -> RunResult:
        """Return the run's `RunResult` once it ends, or raise its error.

        Raises TimeoutError when it is still going after `timeout` seconds.
        """
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the background {self.label} is still going after {timeout:g} seconds; "
                               "call result() again later, or cancel() it")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Stop the run; `result` then raises `RunCancelledError`. The enclave stays up."""
        self._cancel.set()

    @property
    def state(self) -> str:
        """One of ``"waiting"`` (for a free core), ``"running"``, ``"finished"``, ``"cancelled"`` or ``"failed"``."""
        from .errors import RunCancelledError

        if not self._finished.is_set():
            return "waiting" if self._waiting else "running"
        if self._error is None:
            return "finished"
        return "cancelled" if isinstance(self._error, RunCancelledError) else "failed"

    def __repr__(self) -> str:
        state = self.state
        if state == "failed":
            assert self._error is not None
            state = f"failed with {type(self._error).__name__}; result() raises it"
        elif state == "running" and self.progress is not None:
            record = self.progress
            state += f", {record['model']} epoch {record['epoch']}/{record['epochs']}"
            if record.get("loss") is not None:
                state += f", loss {record['loss']:.4g}"
        return f"<BackgroundRun {self.label}: {state}>"
