"""One run as the monitor serves it on a run channel: cancellation, the runner's end, and progress relay.

While a run is in progress, a watcher thread reads the host's run channel,
so that a ``cancel`` message, or the host closing the channel, stops the
runner at once. Progress records from the runner pass through
`ProgressRelay`, which checks, rate-limits and charges them against the
run's result budget before they go to the host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..progress_records import normalize_record, progress_digest, record_bytes
from ..protocol import ProtocolError, recv_message, send_message

log = logging.getLogger("confidential_nb.enclave")

# Progress may use at most this share of a run's result budget; later records are dropped.
PROGRESS_BUDGET_SHARE = 0.25
# A token bucket: bursts of this many records, refilled at this many records per second.
PROGRESS_BURST = 5
PROGRESS_RATE_PER_SECOND = 10.0


class RunCancelled(Exception):
    """The host cancelled the run, or closed its channel, before the run ended."""


class RunSession:
    """The state one run shares between the thread that runs it and the watcher of the host's channel."""

    def __init__(self, channel: socket.socket, end_runner: Callable[[int, bool, bool, bool], int]) -> None:
        self.channel = channel
        self._end_runner = end_runner
        self.cancelled = threading.Event()
        self.cancel_requested = False
        self.host_gone = False
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._status: int | None = None
        self._send_lock = threading.Lock()
        # Held while the watcher reads the host's message, so `finish` never returns while it is reading.
        self._watch_lock = threading.Lock()
        self._finished = False
        self._stop_read, self._stop_write = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name="confidential_nb-run-watcher", daemon=True)
        try:
            self._watcher.start()
        except RuntimeError:
            os.close(self._stop_read)
            os.close(self._stop_write)
            raise

    # The runner

    def attach(self, pid: int) -> None:
        """Record the runner's pid; a run cancelled meanwhile ends it at once."""
        with self._lock:
            self._pid, self._status = pid, None
        if self.cancelled.is_set():
            self.end()

    def end(self, *, grace: bool = False, escalate: bool = False, reap: bool = True) -> int:
        """End the runner once, however many threads ask; return its status (0 when there is none).

        With ``reap=False`` this returns once every process of the run has
        been sent SIGKILL, before they are reaped, and the status is 0.
        """
        with self._lock:
            if self._pid is None:
                return 0
            if self._status is None:
                self._status = self._end_runner(self._pid, grace, escalate, reap)
            return self._status

    @property
    def runner_ended(self) -> bool:
        with self._lock:
            return self._pid is None or self._status is not None

    def detach(self) -> None:
        """Forget the runner, after `end`, so a later cancel of this session reaches nothing."""
        with self._lock:
            self._pid = None

    # The host's channel

    def send_progress(self, record: dict[str, Any]) -> None:
        """Send a checked progress record to the host; a host that went away only stops the run."""
        self.send_notice({"op": "progress", "record": record})

    def send_notice(self, header: dict[str, Any]) -> None:
        """Send the host a message about the run before its reply; a host that went away only stops the run."""
        try:
            with self._send_lock:
                send_message(self.channel, header)
        except OSError:
            self._host_went_away()

    def _watch(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.channel, selectors.EVENT_READ)
        selector.register(self._stop_read, selectors.EVENT_READ)
        try:
            ready = {key.fileobj for key, _ in selector.select()}
        finally:
            selector.close()
        try:
            with self._watch_lock:
                # After `finish` the channel belongs to the next run, whose request may already be waiting.
                # The host sends at most one message during a run, so one read ends the watch.
                if not self._finished and self._stop_read not in ready:
                    self._read_host_message()
        finally:
            os.close(self._stop_read)

    def _read_host_message(self) -> None:
        """Read the host's one message during a run: a cancel, or the end of the channel."""
        try:
            header, _ = recv_message(self.channel, max_total_bytes=0)
        except (ProtocolError, OSError):
            self._host_went_away()
            return
        if header.get("op") == "cancel":
            log.info("the host cancelled the run")
            self.cancel_requested = True
        else:
            # The host sends nothing else before the run's reply, so the channel is out of step.
            log.warning("unexpected %r message during a run; ending the run", header.get("op"))
            self.host_gone = True
        self._cancel()

    def _host_went_away(self) -> None:
        self.host_gone = True
        self._cancel()

    def _cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            running = self._pid is not None and self._status is None
        if running:
            self.end()

    def finish(self) -> None:
        """Stop the watcher; after this only the run's own thread uses the channel.

        It waits only for a read the watcher has begun. It does not join
        the thread, because the reply waits for this, and waking the thread
        took about 2 ms on a busy 2-core machine.
        """
        with self._watch_lock:
            self._finished = True
        with contextlib.suppress(OSError):
            os.write(self._stop_write, b"x")
        os.close(self._stop_write)


class ProgressRelay:
    """Checks a run's progress records and forwards those within the rate limit and the budget share."""

    def __init__(self, budget: int, forward: Callable[[dict[str, Any]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.allowance = int(budget * PROGRESS_BUDGET_SHARE)
        self.bytes = 0
        self.records: list[dict[str, Any]] = []
        self.dropped = 0
        self._forward = forward
        self._clock = clock
        self._tokens = float(PROGRESS_BURST)
        self._refilled = clock()

    def offer(self, header: dict[str, Any]) -> bool:
        """Forward the record in a runner's progress message; return False when the message is malformed."""
        record = normalize_record(header.get("record"))
        if record is None:
            return False
        size = record_bytes(record)
        if not self._take_token() or self.bytes + size > self.allowance:
            self.dropped += 1
            return True
        self.bytes += size
        self.records.append(record)
        self._forward(record)
        return True

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(float(PROGRESS_BURST), self._tokens + (now - self._refilled) * PROGRESS_RATE_PER_SECOND)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def receipt_fields(self) -> dict[str, Any]:
        """Return what the receipt records of the progress sent: the record count and their digest."""
        return {"progress_records": len(self.records), "progress_digest": progress_digest(self.records)}
