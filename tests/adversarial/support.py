"""Cell preludes and host-side checks shared by the attack modules."""

from __future__ import annotations

import time

from confidential_nb import Enclave, Sealed
from processes import runner_processes

# Cell prelude: `attempt(action)` calls `action` and returns its outcome, or
# 'refused:<exception type>' when it raises, so that the host asserts on what
# the cell observed instead of on an exception type that may be withheld.
ATTEMPT = """
def attempt(action):
    try:
        return action()
    except BaseException as error:
        return 'refused:' + type(error).__name__
"""

# Cell prelude: `channel_fd` is the runner's descriptor of its connection to
# the monitor, found as the only socket among its open descriptors.
RUNNER_SOCKET = """
import os, socket

def _link(name):
    try:
        return os.readlink('/proc/self/fd/' + name)
    except OSError:
        return ''

channel_fd = [int(name) for name in os.listdir('/proc/self/fd') if _link(name).startswith('socket:')][0]
"""

# Cell prelude: `ancestors()` lists the pids of the zygote and the monitor
# (the runner's parent and grandparent), read from /proc. The walk stops there
# on purpose, so no attack reaches a process this suite did not start.
ANCESTORS = """
import os

def _parent_of(pid):
    with open(f'/proc/{pid}/stat') as stat:
        return int(stat.read().rsplit(')', 1)[1].split()[1])

def ancestors(levels=2):
    found = []
    pid = os.getppid()
    while pid > 1 and len(found) < levels:
        found.append(pid)
        try:
            pid = _parent_of(pid)
        except (OSError, ValueError, IndexError):
            break
    return found
"""


def assert_usable(enclave: Enclave) -> None:
    """Assert that a trivial cell still runs on `enclave`, so the attack left it usable."""
    assert enclave.run("6 * 7", timeout=10).value == 42


def assert_usable_with(enclave: Enclave, sealed: Sealed, expected: float) -> None:
    """Assert that an aggregate over `sealed` still comes back, so the input and its budget still work."""
    assert enclave.run("float(data['x'].sum())", inputs={"data": sealed}, timeout=10).value == expected


def leftover_processes(enclave: Enclave, seconds: float = 3.0) -> set[int]:
    """Return the processes still running under the enclave's zygote after up to `seconds`.

    After a run ends the zygote has no children, so anything found here
    outlived its run. The status names the sandbox's starter process, whose
    child is the zygote, so `runner_processes` looks below the zygote itself.
    """
    zygote = int(enclave.status()["zygote_pid"])
    deadline = time.monotonic() + seconds
    remaining = runner_processes(zygote)
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = runner_processes(zygote)
    return remaining
