"""Length-prefixed messages between the host, the monitor, the zygote and runners.

A message is a fixed prefix, a JSON header and binary attachments::

    magic  b"CNBM"            4 bytes
    header length             uint32, big-endian
    attachment count          uint32, big-endian
    header                    UTF-8 JSON object
    per attachment: length    uint64, big-endian, then that many bytes

An attachment whose length has the top bit set carries no bytes on the
stream: its length bytes travel with one file descriptor (SCM_RIGHTS), and
the remaining 63 bits give how many bytes of that file, from its start, the
attachment contains. Only a receiver that passes accept_descriptors=True
accepts them. Anywhere else such an attachment is a protocol error.

Every length is checked against its bound before anything is allocated, and
nothing is ever unpickled.
"""

from __future__ import annotations

import array
import functools
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from .errors import ProtocolError

MAGIC = b"CNBM"
_PREFIX = struct.Struct("!4sII")
_LENGTH = struct.Struct("!Q")

MAX_HEADER_BYTES = 4 * 1024**2
MAX_ATTACHMENTS = 1024
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024**3
_DESCRIPTOR_FLAG = 1 << 63


class PeerClosedError(ProtocolError):
    """The other process closed its end of the channel."""


class MessageTooLargeError(ProtocolError):
    """A message declared more attachment bytes than the receiver allows."""


@dataclass(frozen=True)
class DescriptorAttachment:
    """An attachment to send as a file descriptor: the first `length` bytes of the file open as `fd`.

    The sender keeps `fd` open until `send_message` returns, and `owner`
    (any object) alive while the receiver may still read the file.
    """

    fd: int
    length: int
    owner: object = None


class ReceivedDescriptor:
    """An attachment received as a file descriptor; the receiver owns `fd` and must `close` it."""

    def __init__(self, fd: int, length: int) -> None:
        self.fd = fd
        self.length = length

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


Attachment = bytes | ReceivedDescriptor
OutgoingAttachment = bytes | bytearray | memoryview | DescriptorAttachment


def send_message(sock: socket.socket, header: dict[str, Any], attachments: Sequence[OutgoingAttachment] = ()) -> None:
    """Send one message: the JSON header, then each attachment, a `DescriptorAttachment` by SCM_RIGHTS."""
    encoded = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(encoded) > MAX_HEADER_BYTES:
        raise ProtocolError(f"message header of {len(encoded)} bytes is larger than the limit of {MAX_HEADER_BYTES}")
    if len(attachments) > MAX_ATTACHMENTS:
        raise ProtocolError(f"message has {len(attachments)} attachments, more than the limit of {MAX_ATTACHMENTS}")

    sock.sendall(_PREFIX.pack(MAGIC, len(encoded), len(attachments)) + encoded)
    for attachment in attachments:
        if isinstance(attachment, DescriptorAttachment):
            _send_descriptor(sock, attachment)
            continue
        view = memoryview(attachment).cast("B")
        sock.sendall(_LENGTH.pack(view.nbytes))
        sock.sendall(view)


def _send_descriptor(sock: socket.socket, attachment: DescriptorAttachment) -> None:
    if not 0 <= attachment.length < _DESCRIPTOR_FLAG:
        raise ProtocolError(f"invalid descriptor attachment length {attachment.length}")
    encoded = _LENGTH.pack(_DESCRIPTOR_FLAG | attachment.length)
    sent = socket.send_fds(sock, [encoded], [attachment.fd])
    # The descriptor travels with the first byte, so only the rest of a short send needs sending.
    if sent < len(encoded):
        sock.sendall(encoded[sent:])


@overload
def recv_message(sock: socket.socket, *, max_total_bytes: int = ..., deadline: float | None = ...,
                 accept_descriptors: Literal[False] = ...) -> tuple[dict[str, Any], list[bytes]]: ...


@overload
def recv_message(sock: socket.socket, *, max_total_bytes: int = ..., deadline: float | None = ...,
                 accept_descriptors: Literal[True]) -> tuple[dict[str, Any], list[Attachment]]: ...


def recv_message(
    sock: socket.socket, *, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES, deadline: float | None = None,
    accept_descriptors: bool = False,
) -> tuple[dict[str, Any], list[Any]]:
    """Receive one message; raise `PeerClosedError` at a clean end of stream.

    With a `deadline` (a `time.monotonic()` value) the whole message must
    arrive before it, however the sender splits it, or `TimeoutError` is raised.
    With `accept_descriptors`, descriptor attachments arrive as
    `ReceivedDescriptor`s, each checked to be a regular file (a memfd
    counts) at least as long as it declares; the caller closes them.
    """
    if not accept_descriptors:
        return _recv_message(functools.partial(_recv_exact, sock, deadline=deadline), max_total_bytes, None)
    received: list[int] = []
    try:
        header, attachments = _recv_message(functools.partial(_recv_exact_with_fds, sock, received, deadline=deadline),
                                            max_total_bytes, received)
    except BaseException:
        for fd in received:
            os.close(fd)
        raise
    if received:
        for fd in received:
            os.close(fd)
        _close_descriptors(attachments)
        raise ProtocolError(f"message carried {len(received)} more file descriptors than its attachments declare")
    return header, attachments


def _recv_message(receive: Any, max_total_bytes: int, descriptors: list[int] | None) -> tuple[dict[str, Any], list[Any]]:
    prefix = receive(_PREFIX.size, allow_eof=True)
    magic, header_length, count = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError("message does not start with the protocol magic; the peer is not a confidential_nb process")
    if header_length > MAX_HEADER_BYTES or count > MAX_ATTACHMENTS:
        raise ProtocolError(f"message declares a {header_length}-byte header and {count} attachments, over the limits")

    header = _decode_header(receive(header_length))

    attachments: list[Any] = []
    remaining = max_total_bytes
    try:
        for _ in range(count):
            (length,) = _LENGTH.unpack(receive(_LENGTH.size))
            by_descriptor = bool(length & _DESCRIPTOR_FLAG)
            length &= ~_DESCRIPTOR_FLAG
            if length > remaining:
                raise MessageTooLargeError(f"attachment of {length} bytes exceeds the message limit of {max_total_bytes} bytes")
            remaining -= length
            attachments.append(_take_descriptor(descriptors, length) if by_descriptor else receive(length))
    except BaseException:
        _close_descriptors(attachments)
        raise
    return header, attachments


def _take_descriptor(descriptors: list[int] | None, length: int) -> ReceivedDescriptor:
    """Return the next received descriptor as an attachment of `length` bytes, after checking the file."""
    if descriptors is None:
        raise ProtocolError("message carries a file descriptor, which this channel does not accept")
    if not descriptors:
        raise ProtocolError("message declares a descriptor attachment but carried no file descriptor")
    attachment = ReceivedDescriptor(descriptors.pop(0), length)
    status = os.fstat(attachment.fd)
    if not stat.S_ISREG(status.st_mode) or status.st_size < length:
        attachment.close()
        raise ProtocolError(f"a descriptor attachment is not a regular file of at least {length} bytes")
    return attachment


def _close_descriptors(attachments: list[Any]) -> None:
    for attachment in attachments:
        if isinstance(attachment, ReceivedDescriptor):
            attachment.close()


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


_MAX_FDS_PER_READ = 16


def _recv_exact_with_fds(sock: socket.socket, received: list[int], length: int, *, allow_eof: bool = False,
                         deadline: float | None = None) -> bytes:
    """Read exactly `length` bytes like `_recv_exact`, appending every descriptor that arrives to `received`."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    control_size = socket.CMSG_SPACE(_MAX_FDS_PER_READ * array.array("i").itemsize)
    count = 0
    while count < length:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the message did not arrive before the deadline")
            sock.settimeout(remaining)
        got, ancillary, flags, _ = sock.recvmsg_into([view[count:count + min(length - count, 1 << 24)]], control_size)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                received.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise ProtocolError("message carried more file descriptors than one read accepts")
        if got == 0:
            if allow_eof and count == 0:
                raise PeerClosedError("the peer closed the channel")
            raise ProtocolError(f"channel closed after {count} of {length} expected bytes")
        count += got
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
