"""The monitor's cache of opened inputs, so that rerunning a cell does not send its sealed input again.

An entry is created only after the input authenticated: it keeps the
decrypted plaintext in a sealed memory file, with the authenticated header,
policy, kind and input digest. Entries are named by handles from
`secrets.token_urlsafe`, which the host cannot guess and which mean nothing
to any other monitor. The host may name a handle instead of sending the
input; every run still checks the entry's policy against its own function
checksum. The cache is bounded in plaintext bytes (counted by buffer
capacity) and evicts the least recently used entry first. An input larger
than the whole bound is not cached.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import threading
from dataclasses import dataclass

from ..policy import Policy
from ..sealing import Header
from ..shared_buffers import BufferPool, SharedBuffer, default_retained_bytes

log = logging.getLogger("confidential_nb.enclave")

CACHE_BYTES_VARIABLE = "CONFIDENTIAL_NB_INPUT_CACHE_BYTES"
# Handles are token_urlsafe(24): 32 characters from 192 random bits.
# Each entry keeps two descriptors open in the monitor (its memory file and the mapping's copy), so
# the count is bounded as well as the bytes: 256 entries are 512 descriptors.
MAX_ENTRIES = 256
HANDLE_BYTES = 24
MAX_HANDLE_LENGTH = 64


@dataclass(frozen=True)
class CachedInput:
    """One authenticated input: its header, policy, kind, digest and the buffer that contains its plaintext."""

    header: Header
    kind: str
    policy: Policy
    digest: str
    plaintext_length: int
    buffer: SharedBuffer


class InputCache:
    """A thread-safe LRU map from handles to `CachedInput`s, bounded by `capacity_bytes` and `MAX_ENTRIES`.

    The cache holds one reference on each entry's buffer (see `BufferPool`).
    `lookup` adds one for the caller, so a run keeps its buffer even when
    the entry is evicted or released while the run uses it.
    """

    def __init__(self, capacity_bytes: int, pool: BufferPool) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"invalid input cache size {capacity_bytes}: expected a number of bytes, 0 or more")
        self.capacity_bytes = capacity_bytes
        self._pool = pool
        self._entries: collections.OrderedDict[str, CachedInput] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, entry: CachedInput) -> str | None:
        """Cache `entry`, evicting the least recently used entries to make room; return its handle, or None if too large."""
        size = entry.buffer.capacity
        if size > self.capacity_bytes:
            log.debug("input of %d bytes not cached: it is larger than the cache bound of %d bytes", size, self.capacity_bytes)
            return None
        handle = secrets.token_urlsafe(HANDLE_BYTES)
        evicted: list[CachedInput] = []
        with self._lock:
            self._pool.retain(entry.buffer)
            self._entries[handle] = entry
            self._bytes += size
            while self._bytes > self.capacity_bytes or len(self._entries) > MAX_ENTRIES:
                _, oldest = self._entries.popitem(last=False)
                self._bytes -= oldest.buffer.capacity
                evicted.append(oldest)
        for item in evicted:
            self._pool.release(item.buffer)
        if evicted:
            log.debug("evicted %d cached inputs to make room for %d bytes", len(evicted), size)
        return handle

    def lookup(self, handle: str) -> CachedInput | None:
        """Return the entry named `handle` with one more reference on its buffer, for the caller to release, or None."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None:
                return None
            self._entries.move_to_end(handle)
            self._pool.retain(entry.buffer)
            return entry

    def release(self, handles: list[str]) -> None:
        """Drop the entries named by `handles`; names of unknown or evicted entries are ignored."""
        dropped: list[CachedInput] = []
        with self._lock:
            for handle in handles:
                entry = self._entries.pop(handle, None)
                if entry is not None:
                    self._bytes -= entry.buffer.capacity
                    dropped.append(entry)
        for entry in dropped:
            self._pool.release(entry.buffer)

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, int]:
        """Return the entry count, the bytes held and the bound, as the status request reports them."""
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "capacity": self.capacity_bytes}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, handle: object) -> bool:
        return handle in self._entries


def cache_bytes_from_environment(environ: dict[str, str] | None = None) -> int:
    """Return the cache bound from ``$CONFIDENTIAL_NB_INPUT_CACHE_BYTES``, else `default_retained_bytes`."""
    value = (environ if environ is not None else os.environ).get(CACHE_BYTES_VARIABLE)
    if value is None or value == "":
        return default_retained_bytes()
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"invalid {CACHE_BYTES_VARIABLE} {value!r}: expected a whole number of bytes") from None
    if size < 0:
        raise ValueError(f"invalid {CACHE_BYTES_VARIABLE} {value!r}: expected a number of bytes, 0 or more")
    return size
