"""Length-prefixed messages between the host, the monitor, the zygote and runners.

A message is a fixed prefix, a JSON header and binary attachments::

    magic  b"CNBM"            4 bytes
    header length             uint32, big-endian
    attachment count          uint32, big-endian
    header                    UTF-8 JSON object
    per attachment: length    uint64, big-endian, then that many bytes

Every length is checked against its bound before anything is allocated, and
nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import json
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

from .errors import ProtocolError

MAGIC = b"CNBM"
_PREFIX = struct.Struct("!4sII")
_LENGTH = struct.Struct("!Q")

MAX_HEADER_BYTES = 4 * 1024**2
MAX_ATTACHMENTS = 1024
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024**3


class PeerClosedError(ProtocolError):
    """The other process closed its end of the channel."""


class MessageTooLargeError(ProtocolError):
    """A message declared more attachment bytes than the receiver allows."""


def send_message(sock: socket.socket, header: dict[str, Any], attachments: Sequence[bytes | bytearray | memoryview] = ()) -> None:
    """Send one message: the JSON header, then each attachment."""
    encoded = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(encoded) > MAX_HEADER_BYTES:
        raise ProtocolError(f"message header of {len(encoded)} bytes is larger than the limit of {MAX_HEADER_BYTES}")
    if len(attachments) > MAX_ATTACHMENTS:
        raise ProtocolError(f"message has {len(attachments)} attachments, more than the limit of {MAX_ATTACHMENTS}")

    sock.sendall(_PREFIX.pack(MAGIC, len(encoded), len(attachments)) + encoded)
    for attachment in attachments:
        view = memoryview(attachment).cast("B")
        sock.sendall(_LENGTH.pack(view.nbytes))
        sock.sendall(view)


def recv_message(
    sock: socket.socket, *, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES, deadline: float | None = None
) -> tuple[dict[str, Any], list[bytes]]:
    """Receive one message; raise `PeerClosedError` at a clean end of stream.

    With a `deadline` (a `time.monotonic()` value) the whole message must
    arrive before it, however the sender splits it, or `TimeoutError` is raised.
    """
    receive = functools.partial(_recv_exact, sock, deadline=deadline)
    prefix = receive(_PREFIX.size, allow_eof=True)
    magic, header_length, count = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError("message does not start with the protocol magic; the peer is not a confidential_nb process")
    if header_length > MAX_HEADER_BYTES or count > MAX_ATTACHMENTS:
        raise ProtocolError(f"message declares a {header_length}-byte header and {count} attachments, over the limits")

    header = _decode_header(receive(header_length))

    attachments: list[bytes] = []
    remaining = max_total_bytes
    for _ in range(count):
        (length,) = _LENGTH.unpack(receive(_LENGTH.size))
        if length > remaining:
            raise MessageTooLargeError(f"attachment of {length} bytes exceeds the message limit of {max_total_bytes} bytes")
        remaining -= length
        attachments.append(receive(length))
    return header, attachments


def _decode_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("message header is not valid UTF-8 JSON") from exc
    if not isinstance(header, dict):
        raise ProtocolError("message header is not a JSON object")
    return header


def _recv_exact(sock: socket.socket, length: int, *, allow_eof: bool = False, deadline: float | None = None) -> bytes:
    buffer = bytearray(length)
    view = memoryview(buffer)
    received = 0
    while received < length:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the message did not arrive before the deadline")
            sock.settimeout(remaining)
        count = sock.recv_into(view[received:], min(length - received, 1 << 24))
        if count == 0:
            if allow_eof and received == 0:
                raise PeerClosedError("the peer closed the channel")
            raise ProtocolError(f"channel closed after {received} of {length} expected bytes")
        received += count
    return bytes(buffer)


def send_fd(sock: socket.socket, header: dict[str, Any], fd: int | None) -> None:
    """Send a small JSON header, with one file descriptor (SCM_RIGHTS) or none."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    socket.send_fds(sock, [_PREFIX.pack(MAGIC, len(encoded), 0) + encoded], [fd] if fd is not None else [])


def recv_fd(sock: socket.socket) -> tuple[dict[str, Any], int | None]:
    """Receive a message sent by `send_fd`; return its header and the descriptor, if any."""
    data, fds, _flags, _address = socket.recv_fds(sock, _PREFIX.size + 64 * 1024, 1)
    if not data:
        raise PeerClosedError("the peer closed the channel")
    fd = fds[0] if fds else None

    magic, header_length, count = _PREFIX.unpack(data[: _PREFIX.size])
    if magic != MAGIC or count != 0 or header_length != len(data) - _PREFIX.size:
        if fd is not None:
            socket.close(fd)
        raise ProtocolError("malformed descriptor-passing message")
    return _decode_header(data[_PREFIX.size :]), fd
