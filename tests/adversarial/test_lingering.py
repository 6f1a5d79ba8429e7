"""Lingering-code attacks: keep running after the result is sent and change a file or the reply afterwards.

The late write targets a file of this test on the host and a file in /tmp
that the next run looks for. The monitor kills the runner's process group
right after the reply, so neither may appear and no process may remain.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confidential_nb import Enclave

from .support import RUNNER_SOCKET, assert_usable, leftover_processes

# Seconds the lingering code waits after the cell returns, and the host waits for it.
LATE_SECONDS = 0.5
HOST_WAIT_SECONDS = 2.0

# Cell prelude: `write_late()` writes to the paths in `targets`, ignoring those it cannot reach.
WRITE_LATE = """
import os

def write_late():
    for target in targets:
        try:
            with open(target, 'w') as handle:
                handle.write('written after the result')
        except OSError:
            pass
"""

LINGER_CELLS = {
    "thread": WRITE_LATE + f"""
import threading, time

def late():
    time.sleep({LATE_SECONDS})
    write_late()

threading.Thread(target=late).start()
result = 'sent'
""",
    "timer": WRITE_LATE + f"""
import threading
threading.Timer({LATE_SECONDS}, write_late).start()
result = 'sent'
""",
    "atexit": WRITE_LATE + """
import atexit
atexit.register(write_late)
result = 'sent'
""",
}

# The next run looks for the shared file, so a late write would reach it.
LOOK_CELL = "import os\nresult = os.path.exists(shared_path)"


@pytest.fixture
def late_targets(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A host file of this test and a shared file in /tmp, both removed afterwards."""
    shared = Path("/tmp") / f"confidential-nb-lingering-{os.urandom(8).hex()}"
    try:
        yield tmp_path / "late-write", shared
    finally:
        shared.unlink(missing_ok=True)


@pytest.mark.parametrize("mechanism", sorted(LINGER_CELLS))
def test_late_write_prevented(enclave: Enclave, late_targets: tuple[Path, Path], mechanism: str) -> None:
    host_file, shared_file = late_targets
    params = {"targets": [str(host_file), str(shared_file)]}

    assert enclave.run(LINGER_CELLS[mechanism], params=params, timeout=10).value == "sent"
    time.sleep(HOST_WAIT_SECONDS)

    assert not host_file.exists()
    assert not shared_file.exists()
    assert enclave.run(LOOK_CELL, params={"shared_path": str(shared_file)}, timeout=10).value is False
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)


def test_late_reply_ignored(enclave: Enclave) -> None:
    # A thread sends a second, forged reply after the real one; the host must keep the real value.
    source = RUNNER_SOCKET + f"""
import threading, time
from confidential_nb.protocol import send_message
from confidential_nb.result_codec import encode_result

def forge():
    time.sleep({LATE_SECONDS})
    with socket.socket(fileno=os.dup(channel_fd)) as channel:
        send_message(channel, {{'ok': True, 'result_name': 'result'}}, [encode_result('forged')])

threading.Thread(target=forge).start()
result = 'real'
"""

    assert enclave.run(source, timeout=10).value == "real"
    time.sleep(HOST_WAIT_SECONDS)

    assert enclave.run("'next'", timeout=10).value == "next"
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)
