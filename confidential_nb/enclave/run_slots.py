"""Run slots: at most one run per core goes on at once, and waiting runs start in the order they arrived.

A run that has to wait gets its place in the queue at once and again
every `NOTICE_INTERVAL_SECONDS`. The monitor passes these notices on to
the host. They show that the run is waiting rather than running and that
the monitor is still alive, so the host's deadline for the run starts
only when the run does.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

# How often a waiting run gets its place in the queue. The host allows a longer silence than this.
NOTICE_INTERVAL_SECONDS = 5.0
# How often a waiting run checks whether it was cancelled.
_POLL_SECONDS = 0.1


class RunSlots:
    """A fixed number of slots for runs, handed out first come, first served."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"invalid run slot count {count}: expected at least 1")
        self._free = count
        self._queue: collections.deque[object] = collections.deque()
        self._changed = threading.Condition()

    def acquire(self, cancelled: threading.Event, waiting: Callable[[int], None]) -> bool:
        """Take a slot once every run that arrived earlier has one; return False when `cancelled` is set first.

        While the run waits, `waiting` is called with its place in the
        queue (1 is next), at once and then every `NOTICE_INTERVAL_SECONDS`,
        without the lock held.
        """
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
        try:
            next_notice = 0.0
            while True:
                with self._changed:
                    if self._free > 0 and self._queue[0] is ticket:
                        self._free -= 1
                        return True
                    place = self._queue.index(ticket) + 1
                if cancelled.is_set():
                    return False
                if time.monotonic() >= next_notice:
                    waiting(place)
                    next_notice = time.monotonic() + NOTICE_INTERVAL_SECONDS
                with self._changed:
                    if not (self._free > 0 and self._queue[0] is ticket):
                        self._changed.wait(_POLL_SECONDS)
        finally:
            with self._changed:
                self._queue.remove(ticket)
                self._changed.notify_all()

    def release(self) -> None:
        """Return a slot taken by `acquire`."""
        with self._changed:
            self._free += 1
            self._changed.notify_all()

    @property
    def waiting(self) -> int:
        """The number of runs waiting for a slot."""
        with self._changed:
            return len(self._queue)
