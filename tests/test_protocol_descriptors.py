"""Attachments sent as file descriptors: round trips, opt-in, bounds and descriptor hygiene."""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from confidential_nb.errors import ProtocolError
from confidential_nb.protocol import (
    MessageTooLargeError,
    DescriptorAttachment,
    ReceivedDescriptor,
    recv_message,
    send_message,
)


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def _memfd(content: bytes) -> int:
    descriptor = os.memfd_create("test")
    os.write(descriptor, content)
    return descriptor


def _open_descriptors() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_descriptor_attachment_round_trip(pair):
    left, right = pair
    descriptor = _memfd(b"sealed blob and spare bytes")
    send_message(left, {"op": "run"}, [b"before", DescriptorAttachment(descriptor, 11), b"after"])
    os.close(descriptor)

    header, attachments = recv_message(right, accept_descriptors=True)
    assert header == {"op": "run"}
    assert attachments[0] == b"before"
    assert attachments[2] == b"after"
    received = attachments[1]
    assert isinstance(received, ReceivedDescriptor)
    assert received.length == 11
    assert os.pread(received.fd, received.length, 0) == b"sealed blob"
    received.close()


def test_descriptor_attachments_keep_their_order(pair):
    left, right = pair
    descriptors = [_memfd(f"file {index}".encode()) for index in range(5)]
    send_message(left, {}, [DescriptorAttachment(descriptor, 6) for descriptor in descriptors])
    for descriptor in descriptors:
        os.close(descriptor)

    _, attachments = recv_message(right, accept_descriptors=True)
    contents = []
    for attachment in attachments:
        assert isinstance(attachment, ReceivedDescriptor)
        contents.append(os.pread(attachment.fd, 6, 0))
        attachment.close()
    assert contents == [f"file {index}".encode() for index in range(5)]


def test_descriptor_rejected_without_opt_in(pair):
    left, right = pair
    descriptor = _memfd(b"data")
    before = _open_descriptors()
    send_message(left, {}, [DescriptorAttachment(descriptor, 4)])
    os.close(descriptor)
    with pytest.raises(ProtocolError, match="does not accept"):
        recv_message(right)
    assert _open_descriptors() <= before


def test_descriptor_longer_than_file_rejected_and_closed(pair):
    left, right = pair
    descriptor = _memfd(b"short")
    send_message(left, {}, [DescriptorAttachment(descriptor, 100)])
    os.close(descriptor)
    before = _open_descriptors()
    with pytest.raises(ProtocolError, match="at least 100 bytes"):
        recv_message(right, accept_descriptors=True)
    assert _open_descriptors() <= before


def test_descriptor_of_non_regular_file_rejected(pair):
    left, right = pair
    reader, writer = os.pipe()
    send_message(left, {}, [DescriptorAttachment(reader, 0)])
    os.close(reader)
    os.close(writer)
    with pytest.raises(ProtocolError, match="regular file"):
        recv_message(right, accept_descriptors=True)


def test_descriptor_flag_without_descriptor_rejected(pair):
    left, right = pair
    header = b"{}"
    left.sendall(b"CNBM" + struct.pack("!II", len(header), 1) + header + struct.pack("!Q", (1 << 63) | 4))
    with pytest.raises(ProtocolError, match="carried no file descriptor"):
        recv_message(right, accept_descriptors=True)


def test_extra_descriptor_rejected_and_closed(pair):
    left, right = pair
    header = b"{}"
    descriptor = _memfd(b"unannounced")
    socket.send_fds(left, [b"CNBM" + struct.pack("!II", len(header), 0) + header], [descriptor])
    os.close(descriptor)
    before = _open_descriptors()
    with pytest.raises(ProtocolError, match="more file descriptors"):
        recv_message(right, accept_descriptors=True)
    assert _open_descriptors() <= before


def test_descriptor_length_counts_against_limit(pair):
    left, right = pair
    descriptor = _memfd(b"x" * 100)
    send_message(left, {}, [DescriptorAttachment(descriptor, 100)])
    os.close(descriptor)
    with pytest.raises(MessageTooLargeError):
        recv_message(right, accept_descriptors=True, max_total_bytes=50)


def test_large_byte_attachment_with_descriptor_reader(pair):
    left, right = pair
    payload = os.urandom(3 * 1024**2)
    thread = threading.Thread(target=send_message, args=(left, {"op": "big"}, [payload]))
    thread.start()
    header, attachments = recv_message(right, accept_descriptors=True)
    thread.join()
    assert header == {"op": "big"}
    assert attachments == [payload]
