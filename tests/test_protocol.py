from __future__ import annotations

import socket
import struct
import threading

import pytest

from confidential_nb.errors import ProtocolError
from confidential_nb.protocol import (
    MAX_ATTACHMENTS,
    MAX_HEADER_BYTES,
    PeerClosedError,
    recv_fd,
    recv_message,
    send_fd,
    send_message,
)


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def _send_in_thread(sock: socket.socket, data: bytes) -> threading.Thread:
    thread = threading.Thread(target=sock.sendall, args=(data,))
    thread.start()
    return thread


def test_message_round_trip(pair):
    left, right = pair
    attachments = [b"", b"\x00" * 10, bytes(range(256)) * 1000]
    thread = threading.Thread(target=send_message, args=(left, {"op": "run", "n": [1, 2]}, attachments))
    thread.start()
    header, received = recv_message(right)
    thread.join()
    assert header == {"op": "run", "n": [1, 2]}
    assert received == attachments


def test_message_clean_close_raises_peer_closed(pair):
    left, right = pair
    left.close()
    with pytest.raises(PeerClosedError, match="closed"):
        recv_message(right)


def test_message_truncated_raises_protocol_error(pair):
    left, right = pair
    header = b'{"op":"x"}'
    left.sendall(struct.pack("!4sII", b"CNBM", len(header) + 5, 0) + header)
    left.close()
    with pytest.raises(ProtocolError, match="channel closed after"):
        recv_message(right)


def test_message_bad_magic_rejected(pair):
    left, right = pair
    left.sendall(struct.pack("!4sII", b"XXXX", 2, 0) + b"{}")
    with pytest.raises(ProtocolError, match="magic"):
        recv_message(right)


def test_message_oversized_header_rejected_before_reading(pair):
    left, right = pair
    left.sendall(struct.pack("!4sII", b"CNBM", MAX_HEADER_BYTES + 1, 0))
    with pytest.raises(ProtocolError, match="over the limits"):
        recv_message(right)


def test_message_too_many_attachments_rejected(pair):
    left, right = pair
    left.sendall(struct.pack("!4sII", b"CNBM", 2, MAX_ATTACHMENTS + 1) + b"{}")
    with pytest.raises(ProtocolError, match="over the limits"):
        recv_message(right)


def test_message_attachment_over_total_limit_rejected(pair):
    left, right = pair
    left.sendall(struct.pack("!4sII", b"CNBM", 2, 1) + b"{}" + struct.pack("!Q", 1 << 40))
    with pytest.raises(ProtocolError, match="exceeds the message limit"):
        recv_message(right, max_total_bytes=1 << 20)


@pytest.mark.parametrize("body", [b"[1,2]", b"\xff\xfe", b"{not json"])
def test_message_header_not_object_rejected(pair, body):
    left, right = pair
    left.sendall(struct.pack("!4sII", b"CNBM", len(body), 0) + body)
    with pytest.raises(ProtocolError, match="header"):
        recv_message(right)


def test_send_message_refuses_non_json_header(pair):
    left, _ = pair
    with pytest.raises(ValueError):
        send_message(left, {"x": float("nan")})


def test_fd_passing_round_trip(pair, tmp_path):
    left, right = pair
    target = tmp_path / "file"
    target.write_bytes(b"passed")
    with open(target, "rb") as handle:
        send_fd(left, {"op": "fork"}, handle.fileno())
    header, fd = recv_fd(right)
    assert header == {"op": "fork"}
    assert fd is not None
    with open(fd, "rb") as received:
        assert received.read() == b"passed"


def test_fd_passing_without_descriptor(pair):
    left, right = pair
    send_fd(left, {"op": "wait", "pid": 3}, None)
    assert recv_fd(right) == ({"op": "wait", "pid": 3}, None)
