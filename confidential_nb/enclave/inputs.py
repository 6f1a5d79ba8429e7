"""Opening a run's sealed inputs in the monitor: authenticate, decrypt, check the policy.

An input arrives in one of four ways. A blob in memory comes as the
descriptor of the host's memory file (or, from older clients, as bytes in
the request) and is decrypted into a sealed memory file from the monitor's
pool, which the runner maps copy-on-write. Every chunk is copied out of the
host's file before it is hashed, authenticated or decrypted, because the
host can still write to that file. A handle names an input the monitor
cached on an earlier run (see `input_cache`). A file-backed `Sealed` comes
as the path of its file on this machine and is decrypted one chunk at a
time into the run's private scratch directory, so the monitor's memory does
not grow with its size; the runner reads it from there, and the directory
is removed after the run. File inputs are not cached.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import PolicyError, SealError, WrongKeyError
from ..keys import EnclaveKeys
from ..policy import Policy
from ..protocol import Attachment, ReceivedDescriptor
from ..sealing import Header, ReadAt, input_digest, read_header, read_header_at, unseal_file, unseal_into
from ..shared_buffers import BufferPool, SharedBuffer, has_fixed_size
from .input_cache import MAX_HANDLE_LENGTH, CachedInput, InputCache

log = logging.getLogger("confidential_nb.enclave")


@dataclass
class OpenedInput:
    """One authenticated input: its plaintext in a pooled buffer, or the name of its plaintext file in the scratch directory.

    `header` and `buffer` are set for a buffer input, and `handle` when it
    came from the cache. The run holds one reference on `buffer` until
    `release`.
    """

    name: str
    kind: str
    policy: Policy
    digest: str
    plaintext_length: int
    file: str | None = None
    header: Header | None = None
    buffer: SharedBuffer | None = None
    handle: str | None = None

    def plaintext(self) -> memoryview:
        """Return a view of a buffer input's plaintext; release it before the buffer may close."""
        assert self.buffer is not None
        return self.buffer.view(self.plaintext_length)

    def cache_entry(self) -> CachedInput | None:
        """Return what the cache keeps of a freshly opened buffer input, or None for other inputs."""
        if self.buffer is None or self.header is None or self.handle is not None:
            return None
        return CachedInput(self.header, self.kind, self.policy, self.digest, self.plaintext_length, self.buffer)


class HostMappings:
    """Keeps the last mapped host memory file, so a host that reuses its sealing buffer spares the monitor a new mapping.

    Mapping 240 MB again costs about as much as copying it (measured with
    MAP_POPULATE on a two-core machine), so the mapping is reused when the
    next blob arrives in the same file. Each user takes the mapping out
    while it reads, so a concurrent run maps its own.
    NOTE: the last mapping also keeps that host file's memory allocated
    after the host closes it, until a blob in another file replaces it.
    At most one blob stays allocated this way.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[tuple[int, int, int], mmap.mmap] | None = None

    @contextlib.contextmanager
    def mapped(self, descriptor: int, length: int) -> Iterator[mmap.mmap]:
        """Yield a read-only shared mapping of at least the first `length` bytes of a size-sealed memory file."""
        status = os.fstat(descriptor)
        key = (status.st_dev, status.st_ino, status.st_size)
        with self._lock:
            last, self._last = self._last, None
        if last is not None and last[0] == key:
            mapping = last[1]
        else:
            if last is not None:
                last[1].close()
            mapping = mmap.mmap(descriptor, status.st_size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                                prot=mmap.PROT_READ)
        try:
            yield mapping
        finally:
            with self._lock:
                replaced, self._last = self._last, (key, mapping)
            if replaced is not None:
                replaced[1].close()

    def clear(self) -> None:
        with self._lock:
            last, self._last = self._last, None
        if last is not None:
            last[1].close()


@dataclass(frozen=True)
class InputSources:
    """The monitor's sources of input memory besides the request: its buffer pool, input cache and host mappings."""

    pool: BufferPool
    cache: InputCache
    host_mappings: HostMappings = field(default_factory=HostMappings)

    def release(self, inputs: list[OpenedInput]) -> None:
        """Drop the run's reference on each input's buffer."""
        for item in inputs:
            if item.buffer is not None:
                self.pool.release(item.buffer)
                item.buffer = None


def attachment_count(specs: list[dict[str, Any]]) -> int:
    """Return how many request attachments the input specs take: one per input sent in memory."""
    return sum(1 for spec in specs if "path" not in spec and "handle" not in spec)


class InputRejected(Exception):
    """An input failed to open; `kind` and `message` form the reply to the host."""

    def __init__(self, kind: str, message: str, name: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name


def open_inputs(keys: EnclaveKeys, specs: list[dict[str, Any]], attachments: list[Attachment], checksum: str,
                debug: bool, scratch: Path, sources: InputSources) -> list[OpenedInput]:
    """Open every input in order, or raise `InputRejected` for the first that fails, releasing those opened."""
    opened: list[OpenedInput] = []
    try:
        in_memory = iter(attachments)
        for index, spec in enumerate(specs):
            opened.append(_open_one(keys, spec, in_memory, checksum, debug, scratch / f"input-{index}", sources))
    except BaseException:
        sources.release(opened)
        raise
    return opened


def _open_one(keys: EnclaveKeys, spec: dict[str, Any], in_memory: Iterator[Attachment], checksum: str, debug: bool,
              target: Path, sources: InputSources) -> OpenedInput:
    name = str(spec["name"])
    try:
        if "path" in spec:
            item = _open_file(keys, name, Path(str(spec["path"])), target)
        elif "handle" in spec:
            item = _open_cached(sources.cache, name, spec["handle"])
        else:
            item = _open_attachment(keys, name, next(in_memory), sources)
        try:
            item.policy.check_run(checksum, debug=debug)
        except BaseException:
            sources.release([item])
            raise
        return item
    except WrongKeyError as exc:
        raise InputRejected("wrong_key", f"input {name!r}: {exc}", name) from None
    except SealError as exc:
        log.warning("input %r failed to unseal", name)
        raise InputRejected("seal", f"input {name!r}: {exc}", name) from None
    except PolicyError as exc:
        raise InputRejected("policy", f"input {name!r}: {exc}", name) from None
    except PermissionError:
        # A service-account monitor reads sealed files as that account, not as the notebook's user.
        raise InputRejected("seal", f"input {name!r}: cannot read its file: permission denied for the enclave's "
                                    f"uid {os.geteuid()}; make the sealed file and its directories readable "
                                    "by that uid", name) from None
    except OSError as exc:
        raise InputRejected("seal", f"input {name!r}: cannot read its file ({exc.strerror})", name) from None


def _key_pair(keys: EnclaveKeys, recipient: str) -> tuple[Any, Any]:
    pair = keys.for_recipient(recipient)
    if pair is None:
        raise WrongKeyError(f"the input was sealed to key {recipient[:16]}, which this enclave does not hold "
                            f"(its current key is {keys.public.fingerprint[:16]}); seal the data again with this enclave's key")
    return pair


def _open_cached(cache: InputCache, name: str, handle: object) -> OpenedInput:
    entry = None
    if isinstance(handle, str) and len(handle) <= MAX_HANDLE_LENGTH:
        entry = cache.lookup(handle)
    if entry is None or not isinstance(handle, str):
        raise InputRejected("unknown_handle", f"input {name!r}: cached input handle not found in this enclave (evicted, "
                                              "released or from another enclave); send the sealed input again", name)
    return OpenedInput(name, entry.kind, entry.policy, entry.digest, entry.plaintext_length, header=entry.header,
                       buffer=entry.buffer, handle=handle)


def _open_attachment(keys: EnclaveKeys, name: str, attachment: Attachment, sources: InputSources) -> OpenedInput:
    """Decrypt a blob sent in memory into a buffer from the pool, copying each chunk out of the sender's memory first."""
    pool = sources.pool
    acquired: list[SharedBuffer] = []

    def allocate(length: int) -> memoryview:
        acquired.append(pool.acquire(length))
        return acquired[0].view(length)

    try:
        with _reader(attachment, sources.host_mappings) as (read_at, size):
            header = read_header_at(read_at)
            public, private = _key_pair(keys, header.recipient)
            digest = unseal_into(read_at, size, header, private, public, allocate)
    except BaseException:
        for buffer in acquired:
            pool.release(buffer)
        raise
    return OpenedInput(name, header.content_type, _policy(header), digest, header.plaintext_length, header=header,
                       buffer=acquired[0])


@contextlib.contextmanager
def _reader(attachment: Attachment, host_mappings: HostMappings) -> Iterator[tuple[ReadAt, int]]:
    """Yield a function that copies the attachment's bytes at an offset into a view, and the attachment's length.

    A memory file sealed against size changes is mapped read-only and
    copied from with memcpy, about three times faster than pread on a
    loaded two-core machine. Any other descriptor is read with pread, because
    a file that shrinks under a mapping raises SIGBUS.
    """
    if not isinstance(attachment, ReceivedDescriptor):
        blob = memoryview(attachment)
        yield _copier(blob), len(blob)
        return
    descriptor, length = attachment.fd, attachment.length
    if length == 0 or not has_fixed_size(descriptor):

        def read_descriptor(offset: int, view: memoryview) -> int:
            return os.preadv(descriptor, [view[: max(0, length - offset)]], offset)

        yield read_descriptor, length
        return
    with host_mappings.mapped(descriptor, length) as mapping:
        view = memoryview(mapping)[:length]
        try:
            yield _copier(view), length
        finally:
            view.release()


def _copier(source: memoryview) -> ReadAt:
    def read(offset: int, view: memoryview) -> int:
        piece = source[offset : offset + len(view)]
        view[: len(piece)] = piece
        count = len(piece)
        piece.release()
        return count

    return read


def _open_file(keys: EnclaveKeys, name: str, path: Path, target: Path) -> OpenedInput:
    # One open file for the decryption and the digest, so a file renamed over the path midway changes neither.
    with _open_regular_file(path) as reader:
        public, private = _key_pair(keys, read_header(reader).recipient)
        # Decrypting first authenticates the header's lengths before the digest trusts them.
        header = unseal_file(f"/proc/self/fd/{reader.fileno()}", target, private, public)
        reader.seek(0)
        digest = input_digest(reader)
    os.chmod(target, 0o600)
    return OpenedInput(name, header.content_type, _policy(header), digest, header.plaintext_length, file=target.name)


def _open_regular_file(path: Path) -> BinaryIO:
    """Open `path` for reading only if it is a regular file, without blocking on a FIFO or device."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise SealError(f"{path} is not a regular file; pass the sealed file itself")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _policy(header: Header) -> Policy:
    return Policy.from_dict(header.metadata.get("policy"))
