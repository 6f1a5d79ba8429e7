"""Protocol attacks: end the runner early, or close or write garbage to its socket to the monitor.

Each attack must reach the host as one error while the monitor keeps
running, so the next run works without a restart.
"""

from __future__ import annotations

import time

import pytest

from confidential_nb import Enclave
from confidential_nb.errors import EnclaveError, EnclaveResourceError

from .support import RUNNER_SOCKET, assert_usable


def _monitor_pid(enclave: Enclave) -> int:
    return int(enclave.status()["monitor_pid"])


def test_os_exit_one_error(enclave: Enclave) -> None:
    monitor = _monitor_pid(enclave)

    with pytest.raises(EnclaveResourceError) as caught:
        enclave.run("import os\nos._exit(0)", timeout=10)

    assert "without a result" in str(caught.value)
    assert _monitor_pid(enclave) == monitor
    assert_usable(enclave)


def test_sys_exit_one_error(enclave: Enclave) -> None:
    monitor = _monitor_pid(enclave)

    with pytest.raises(EnclaveError) as caught:
        enclave.run("import sys\nsys.exit(0)", timeout=10)

    assert caught.value.exception_type == "SystemExit"
    assert caught.value.line == 2
    assert _monitor_pid(enclave) == monitor
    assert_usable(enclave)


def test_closed_socket_one_error(enclave: Enclave) -> None:
    monitor = _monitor_pid(enclave)

    with pytest.raises(EnclaveResourceError) as caught:
        enclave.run(RUNNER_SOCKET + "os.close(channel_fd)\nresult = 1", timeout=10)

    assert "without a result" in str(caught.value)
    assert _monitor_pid(enclave) == monitor
    assert_usable(enclave)


def test_garbage_on_socket_one_error(enclave: Enclave) -> None:
    # The runner keeps sleeping, so the error must come from the monitor rejecting the bytes, not from the timeout.
    monitor = _monitor_pid(enclave)
    source = RUNNER_SOCKET + "os.write(channel_fd, b'garbage' * 10)\nimport time\ntime.sleep(60)"
    started = time.monotonic()

    with pytest.raises(EnclaveResourceError) as caught:
        enclave.run(source, timeout=20)

    assert time.monotonic() - started < 10
    assert "without a result" in str(caught.value)
    assert _monitor_pid(enclave) == monitor
    assert_usable(enclave)
