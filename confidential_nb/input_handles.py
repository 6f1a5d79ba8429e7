"""The host's record of which sealed inputs one monitor has cached, and under which handles.

After a run, the monitor names the handles of the inputs it cached. The
next run that passes the same `Sealed` object names the handle instead of
sending the blob again. The record holds `Sealed` objects weakly: when one is
garbage collected, its handle is queued, and the next request carries it
so that the monitor releases it. The finalizer only appends to a queue, so no lock is
taken and no I/O happens during garbage collection.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sealing import Sealed

# Bounds the release list of one request, so its header stays far below the protocol's 4 MiB limit.
MAX_RELEASES_PER_REQUEST = 10_000


class InputHandles:
    """Maps `Sealed` objects, held weakly, to the handles one monitor returned for them."""

    def __init__(self) -> None:
        self._handles: weakref.WeakKeyDictionary[Sealed, str] = weakref.WeakKeyDictionary()
        self._released: collections.deque[str] = collections.deque()
        self._pending: dict[str, Mapping[str, Sealed]] = {}
        self._lock = threading.Lock()

    def handles_for(self, inputs: Mapping[str, Sealed]) -> dict[str, str]:
        """Return the known handle of each input, by input name; inputs without one are left out."""
        from .sealing import Sealed

        # Anything else is left for the request builder to reject with a clear message.
        sealed_inputs = {name: sealed for name, sealed in inputs.items() if isinstance(sealed, Sealed)}
        with self._lock:
            found = {name: self._handles.get(sealed) for name, sealed in sealed_inputs.items()}
        return {name: handle for name, handle in found.items() if handle is not None}

    def expect(self, run_id: str, inputs: Mapping[str, Sealed]) -> None:
        """Remember which `Sealed` each input name of run `run_id` stands for, until `record` or `discard`."""
        with self._lock:
            self._pending[run_id] = dict(inputs)

    def discard(self, run_id: str) -> None:
        with self._lock:
            self._pending.pop(run_id, None)

    def record(self, run_id: str, reply: dict[str, Any]) -> None:
        """Store the handles a reply names under ``cached_inputs`` for the inputs of run `run_id`."""
        cached = reply.get("cached_inputs")
        with self._lock:
            inputs = self._pending.pop(run_id, {})
            if not isinstance(cached, dict):
                return
            for name, handle in cached.items():
                sealed = inputs.get(name)
                if sealed is not None and isinstance(handle, str):
                    self._store(sealed, handle)

    def _store(self, sealed: Sealed, handle: str) -> None:
        previous = self._handles.get(sealed)
        if previous == handle:
            return
        if previous is not None:
            self._released.append(previous)
        self._handles[sealed] = handle
        weakref.finalize(sealed, self._released.append, handle)

    def forget(self, inputs: Iterable[Sealed]) -> None:
        """Drop the handles of `inputs`, after the monitor reported one of them unknown."""
        with self._lock:
            for sealed in inputs:
                self._handles.pop(sealed, None)

    def take_released(self) -> list[str]:
        """Return and clear the queued handles of collected inputs, at most `MAX_RELEASES_PER_REQUEST`."""
        handles: list[str] = []
        while len(handles) < MAX_RELEASES_PER_REQUEST:
            try:
                handles.append(self._released.popleft())
            except IndexError:
                break
        return handles
