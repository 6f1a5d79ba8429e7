"""Network attacks: reach a TCP listener and an abstract UNIX socket of the host, resolve a name.

Every connection goes to a socket this test opened on this machine. The name
lookup is for a name under ``.invalid`` (reserved by RFC 6761), and the host
first checks that its own resolver answers that lookup with "no such name".
A runner that gets the same answer has sent a query out, which is a channel
for data even though the name does not exist.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import pytest

from confidential_nb import Enclave

from .conftest import require_layer
from .support import ATTEMPT, assert_usable


def _connection_arrived(listener: socket.socket, seconds: float = 0.5) -> bool:
    """Return True when a connection is waiting on `listener`, accepting and closing it."""
    readable, _, _ = select.select([listener], [], [], seconds)
    if not readable:
        return False
    connection, _ = listener.accept()
    connection.close()
    return True


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener


@pytest.fixture
def abstract_listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(b"\0confidential-nb-adversarial-" + os.urandom(8).hex().encode())
        listener.listen()
        yield listener


def test_tcp_listener_unreachable(enclave: Enclave, tcp_listener: socket.socket) -> None:
    require_layer(enclave, "network_namespace")
    port = tcp_listener.getsockname()[1]
    source = ATTEMPT + f"""
import socket

def connect():
    with socket.create_connection(('127.0.0.1', {port}), timeout=2) as connection:
        connection.sendall(b'leak')
    return 'connected'

result = attempt(connect)
"""

    outcome = enclave.run(source, timeout=10).value

    assert str(outcome).startswith("refused:")
    assert not _connection_arrived(tcp_listener)
    assert_usable(enclave)


def test_abstract_socket_unreachable(enclave: Enclave, abstract_listener: socket.socket) -> None:
    require_layer(enclave, "network_namespace")
    address = abstract_listener.getsockname()
    source = ATTEMPT + f"""
import socket

def connect():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(2)
        connection.connect({address!r})
        connection.sendall(b'leak')
    return 'connected'

result = attempt(connect)
"""

    outcome = enclave.run(source, timeout=10).value

    assert str(outcome).startswith("refused:")
    assert not _connection_arrived(abstract_listener)
    assert_usable(enclave)


def test_name_lookup_sends_nothing(enclave: Enclave) -> None:
    require_layer(enclave, "network_namespace")
    name = f"confidential-nb-{os.urandom(8).hex()}.invalid"
    with pytest.raises(socket.gaierror) as host_lookup:
        socket.getaddrinfo(name, 80)
    assert host_lookup.value.errno == socket.EAI_NONAME, (
        f"the host's own lookup of {name} failed with {host_lookup.value}, not 'no such name', "
        "so this machine cannot tell a blocked lookup from an unreachable resolver"
    )
    source = f"""
import socket
try:
    socket.getaddrinfo({name!r}, 80)
    result = 'resolved'
except socket.gaierror as error:
    result = 'no such name' if error.errno == socket.EAI_NONAME else 'refused:gaierror ' + str(error.errno)
except BaseException as error:
    result = 'refused:' + type(error).__name__
"""

    outcome = enclave.run(source, timeout=20).value

    assert str(outcome).startswith("refused:")
    assert_usable(enclave)
