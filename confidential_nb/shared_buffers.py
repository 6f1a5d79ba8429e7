"""Memory-file buffers that cross process boundaries as descriptors, and pools that reuse them.

A `SharedBuffer` is a memfd of fixed capacity with a writable shared mapping
in the process that created it. Its descriptor goes to another process with
SCM_RIGHTS, so a large sealed blob or plaintext is handed over instead of
copied through a socket. A `BufferPool` keeps released buffers, up to a
bound in bytes, because writing to pages that are already faulted in is
several times faster than faulting in fresh ones.

Every buffer gets the memfd seals F_SEAL_SHRINK, F_SEAL_GROW and
F_SEAL_SEAL right after its creator maps it, so a receiver may map it
without risking SIGBUS from a file that shrinks under the mapping. A buffer
created with ``sealed=True`` also gets F_SEAL_FUTURE_WRITE: the creator
keeps writing through its existing mapping, but no process that receives
the descriptor can write to the file or map it shared and writable. A
private (copy-on-write) mapping stays possible, so the receiver's own
writes never reach the file.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import logging
import mmap
import os
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("confidential_nb.shared_buffers")

# fcntl constants from <linux/fcntl.h>; Python 3.11 has F_ADD_SEALS but not F_SEAL_FUTURE_WRITE.
_F_ADD_SEALS = 1033
_F_GET_SEALS = 1034
_F_SEAL_SEAL = 0x0001
_F_SEAL_SHRINK = 0x0002
_F_SEAL_GROW = 0x0004
_F_SEAL_FUTURE_WRITE = 0x0010
_SIZE_SEALS = _F_SEAL_SHRINK | _F_SEAL_GROW
_READ_ONLY_SEALS = _SIZE_SEALS | _F_SEAL_FUTURE_WRITE

_MIB = 1024**2
# Capacities are rounded up to this step (to whole pages below it), so inputs of similar size share buffers.
CAPACITY_STEP = _MIB


def capacity_for(length: int) -> int:
    """Return the capacity a buffer of `length` bytes gets: whole MiB from 1 MiB on, whole pages below."""
    step = CAPACITY_STEP if length >= CAPACITY_STEP else mmap.PAGESIZE
    return max(step, -(-length // step) * step)


T = TypeVar("T")


def _with_descriptor_room(create: Callable[[], T]) -> T:
    """Call `create`; when the process is out of descriptors, raise the soft limit once and call it again.

    Each buffer keeps two descriptors (its memfd and the mapping's copy), so
    a notebook that keeps hundreds of `Sealed` objects reaches a soft limit
    of 1024. Past the hard limit, the error names the fix.
    """
    from .limits import raise_open_file_limit

    try:
        return create()
    except OSError as exc:
        if exc.errno != errno.EMFILE or not raise_open_file_limit():
            if exc.errno == errno.EMFILE:
                raise OSError(errno.EMFILE, "too many open files: each Sealed and each cached input keeps two "
                                            "descriptors open; delete the ones you no longer need, or raise the "
                                            "limit with `ulimit -n`") from None
            raise
    return create()


class SharedBuffer:
    """A memfd of fixed capacity and this process's writable shared mapping of it."""

    def __init__(self, capacity: int, *, sealed: bool) -> None:
        if capacity <= 0:
            raise ValueError(f"invalid capacity {capacity}: a shared buffer needs at least one byte")
        self.fd = _with_descriptor_room(lambda: os.memfd_create("confidential_nb", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
        try:
            os.ftruncate(self.fd, capacity)
            self.mapping = _with_descriptor_room(lambda: mmap.mmap(self.fd, capacity))
            fcntl.fcntl(self.fd, _F_ADD_SEALS, (_READ_ONLY_SEALS if sealed else _SIZE_SEALS) | _F_SEAL_SEAL)
        except BaseException:
            os.close(self.fd)
            raise
        self.capacity = capacity
        self.sealed = sealed
        self.references = 0

    def view(self, length: int) -> memoryview:
        """Return a writable view of the first `length` bytes; release it before the buffer closes."""
        if not 0 <= length <= self.capacity:
            raise ValueError(f"invalid length {length}: expected 0 to {self.capacity} bytes, the buffer's capacity")
        return memoryview(self.mapping)[:length]

    def receiver_descriptor(self) -> int:
        """Return a new descriptor of this memfd for another process; the caller closes it after sending.

        For a sealed buffer it is opened read-only through /proc, so the
        receiver cannot write even before the seals are considered. Where
        /proc cannot be used it is a duplicate, which the seals still make
        read-only.
        """
        if self.sealed:
            try:
                return os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                log.debug("reopening a sealed buffer read-only failed (%s); sending a duplicate", exc.strerror)
        return os.dup(self.fd)

    def scrub(self, start: int) -> None:
        """Overwrite the bytes from `start` to the end with zeros, so a reused buffer shows no earlier data."""
        length = self.capacity - start
        if length > 0:
            self.mapping[start:] = bytes(length)

    def close(self) -> None:
        """Unmap and close; a view still exported keeps the mapping alive until it is released."""
        try:
            self.mapping.close()
        except BufferError:
            log.debug("a shared buffer was closed while a view of it was alive; its mapping ends with the view")
        os.close(self.fd)


# Each idle buffer keeps descriptors open, so the pool keeps at most this many whatever their size.
MAX_IDLE_BUFFERS = 32


class BufferPool:
    """Hands out `SharedBuffer`s and keeps released ones, at most `retained_bytes` and `MAX_IDLE_BUFFERS` in total.

    Every buffer carries a reference count: `acquire` returns it with one
    reference, `retain` adds one, and the buffer returns to the pool when
    `release` drops the last. `release_later` only queues a release, so it
    is safe in a finalizer; the queue empties on the next `acquire` or
    `release`. A buffer is reused only for a request of the same capacity.
    With ``sealed=True`` every buffer is sealed read-only for receivers (see
    the module docstring) and its bytes past the requested length are
    zeroed on reuse.
    """

    def __init__(self, retained_bytes: int, *, sealed: bool) -> None:
        self.retained_bytes = retained_bytes
        self.sealed = sealed
        self._free: collections.OrderedDict[int, SharedBuffer] = collections.OrderedDict()
        self._free_bytes = 0
        self._lock = threading.Lock()
        self._pending: collections.deque[SharedBuffer] = collections.deque()

    def acquire(self, length: int) -> SharedBuffer:
        """Return a buffer of at least `length` bytes with one reference."""
        self._drain_pending()
        capacity = capacity_for(length)
        with self._lock:
            buffer = self._take_free(capacity)
        if buffer is None:
            buffer = SharedBuffer(capacity, sealed=self.sealed)
        elif self.sealed:
            buffer.scrub(length)
        buffer.references = 1
        return buffer

    def _take_free(self, capacity: int) -> SharedBuffer | None:
        for key, buffer in self._free.items():
            if buffer.capacity == capacity:
                del self._free[key]
                self._free_bytes -= capacity
                return buffer
        return None

    def retain(self, buffer: SharedBuffer) -> None:
        with self._lock:
            if buffer.references <= 0:
                raise ValueError("retain of a shared buffer that was already released")
            buffer.references += 1

    def release(self, buffer: SharedBuffer) -> None:
        """Drop one reference; the last returns the buffer to the pool, or closes it when the pool is full."""
        self._drain_pending()
        self._release_one(buffer)

    def release_later(self, buffer: SharedBuffer) -> None:
        """Queue one release without taking a lock, for finalizers."""
        self._pending.append(buffer)

    def _drain_pending(self) -> None:
        while True:
            try:
                buffer = self._pending.popleft()
            except IndexError:
                return
            self._release_one(buffer)

    def _release_one(self, buffer: SharedBuffer) -> None:
        evicted: list[SharedBuffer] = []
        with self._lock:
            buffer.references -= 1
            if buffer.references > 0:
                return
            if buffer.capacity > self.retained_bytes:
                evicted.append(buffer)
            else:
                self._free[id(buffer)] = buffer
                self._free_bytes += buffer.capacity
                while self._free_bytes > self.retained_bytes or len(self._free) > MAX_IDLE_BUFFERS:
                    _, oldest = self._free.popitem(last=False)
                    self._free_bytes -= oldest.capacity
                    evicted.append(oldest)
        for item in evicted:
            item.close()

    @property
    def idle_buffers(self) -> int:
        """The number of buffers that wait in the pool for reuse, after applying queued releases."""
        self._drain_pending()
        return len(self._free)

    @property
    def free_bytes(self) -> int:
        """Bytes held by buffers that wait in the pool for reuse, after applying queued releases."""
        self._drain_pending()
        return self._free_bytes

    def clear(self) -> None:
        """Close every buffer waiting in the pool."""
        self._drain_pending()
        with self._lock:
            buffers = list(self._free.values())
            self._free.clear()
            self._free_bytes = 0
        for buffer in buffers:
            buffer.close()


def has_fixed_size(fd: int) -> bool:
    """Check that `fd` is a memfd sealed against shrinking and growing, so a mapping of it cannot raise SIGBUS."""
    try:
        seals = fcntl.fcntl(fd, _F_GET_SEALS)
    except OSError:
        return False
    return seals & _SIZE_SEALS == _SIZE_SEALS


def physical_memory_bytes() -> int:
    """Return the machine's physical memory in bytes, from sysconf."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_retained_bytes() -> int:
    """Return the default bound of a pool or cache: a quarter of physical memory, at most 4 GiB."""
    return min(physical_memory_bytes() // 4, 4 * 1024**3)
