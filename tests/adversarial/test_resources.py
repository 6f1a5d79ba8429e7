"""Resource attacks: exceed the memory and file-size limits, spin or sleep past the timeout."""

from __future__ import annotations

import time

import pytest

from confidential_nb import Enclave
from confidential_nb.errors import EnclaveResourceError, EnclaveTimeoutError

from .conftest import require_layer
from .support import assert_usable, leftover_processes

# Seconds a timed-out run may take beyond its timeout before the host gets the error.
TIMEOUT_SLACK_SECONDS = 5.0


def test_memory_past_limit(enclave: Enclave) -> None:
    require_layer(enclave, "resource_limits")
    source = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024**2))"

    with pytest.raises(EnclaveResourceError) as caught:
        enclave.run(source, memory="1G", timeout=30)

    assert "memory" in str(caught.value)
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)


def test_file_past_size_limit(enclave: Enclave) -> None:
    # Seeking past the limit makes a write fail at once, without filling the disk up to it.
    require_layer(enclave, "resource_limits")
    source = "with open('large', 'wb') as handle:\n    handle.seek(4 * 1024**3)\n    handle.write(b'x')"

    with pytest.raises(EnclaveResourceError) as caught:
        enclave.run(source, timeout=10)

    assert "file size" in str(caught.value)
    assert_usable(enclave)


def test_spin_forever_times_out(enclave: Enclave) -> None:
    started = time.monotonic()

    with pytest.raises(EnclaveTimeoutError):
        enclave.run("while True:\n    pass", timeout=2)

    assert time.monotonic() - started < 2 + TIMEOUT_SLACK_SECONDS
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)


def test_sleep_signals_blocked_times_out(enclave: Enclave) -> None:
    # SIGKILL cannot be blocked, so the monitor's kill still ends the runner.
    source = "import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())\ntime.sleep(3600)"
    started = time.monotonic()

    with pytest.raises(EnclaveTimeoutError):
        enclave.run(source, timeout=2)

    assert time.monotonic() - started < 2 + TIMEOUT_SLACK_SECONDS
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)
