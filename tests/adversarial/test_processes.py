"""Process attacks: start a program or a shell, fork, fork repeatedly, make raw system calls through ctypes.

Each program the cells try to start is ``/bin/sh -c 'exit 7'``, so exit
status 7 proves that it ran. The seccomp filter must fail execve, fork,
clone without CLONE_THREAD and unshare with EPERM, which Python raises as
PermissionError. The audit hook raises the same exception earlier, before
the system call.
"""

from __future__ import annotations

import errno

from confidential_nb import Enclave

from .conftest import require_layer
from .support import ATTEMPT, assert_usable, leftover_processes

SUBPROCESS_CELL = ATTEMPT + """
import subprocess

def start():
    completed = subprocess.run(['/bin/sh', '-c', 'exit 7'], check=False)
    return 'ran' if completed.returncode == 7 else 'started, exit status ' + str(completed.returncode)

result = attempt(start)
"""

# os.system returns a wait status, not an exception, when the shell cannot start.
SYSTEM_CELL = ATTEMPT + """
import os

def start():
    status = os.system('exit 7')
    return 'ran' if os.waitstatus_to_exitcode(status) == 7 else 'refused:status ' + str(status)

result = attempt(start)
"""

POSIX_SPAWN_CELL = ATTEMPT + """
import os

def start():
    pid = os.posix_spawn('/bin/sh', ['sh', '-c', 'exit 7'], {})
    _, status = os.waitpid(pid, 0)
    return 'ran' if os.waitstatus_to_exitcode(status) == 7 else 'started, wait status ' + str(status)

result = attempt(start)
"""

FORK_EXEC_CELL = ATTEMPT + """
import os

def start():
    pid = os.fork()
    if pid == 0:
        try:
            os.execv('/bin/sh', ['sh', '-c', 'exit 7'])
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    return 'ran' if os.waitstatus_to_exitcode(status) == 7 else 'forked, exec failed'

result = attempt(start)
"""

# The children sleep so that they pile up, and the run's process-group kill must end them all.
FORK_REPEATEDLY_CELL = ATTEMPT + """
import os, time
children = []

def fork_many():
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        children.append(pid)
    return 'forked all'

outcome = attempt(fork_many)
result = [outcome, len(children)]
"""

UNSHARE_CELL = ATTEMPT + """
import ctypes

def unshare_user_namespace():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER
        return 'unshared'
    return 'refused:errno ' + str(ctypes.get_errno())

result = attempt(unshare_user_namespace)
"""

# clone(SIGCHLD) through syscall(2) is a fork that no Python-level hook intercepts.
RAW_CLONE_CELL = ATTEMPT + """
import ctypes, os, platform

def raw_clone():
    number = {'x86_64': 56, 'aarch64': 220}[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    pid = libc.syscall(number, 17, 0, 0, 0, 0)
    if pid == 0:
        libc._exit(7)
    if pid < 0:
        return 'refused:errno ' + str(ctypes.get_errno())
    os.waitpid(pid, 0)
    return 'cloned'

result = attempt(raw_clone)
"""

REFUSED = "refused:PermissionError"
REFUSED_NATIVE = (REFUSED, f"refused:errno {errno.EPERM}")


def test_subprocess_refused(enclave: Enclave) -> None:
    require_layer(enclave, "seccomp")

    assert enclave.run(SUBPROCESS_CELL, timeout=10).value == REFUSED
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)


def test_os_system_refused(enclave: Enclave) -> None:
    require_layer(enclave, "seccomp")

    outcome = enclave.run(SYSTEM_CELL, timeout=10).value

    assert outcome != "ran"
    assert str(outcome).startswith("refused:")
    assert_usable(enclave)


def test_posix_spawn_refused(enclave: Enclave) -> None:
    require_layer(enclave, "seccomp")

    assert enclave.run(POSIX_SPAWN_CELL, timeout=10).value == REFUSED
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)


def test_fork_exec_refused(enclave: Enclave) -> None:
    require_layer(enclave, "seccomp")

    assert enclave.run(FORK_EXEC_CELL, timeout=10).value == REFUSED
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)


def test_fork_repeatedly_refused(enclave: Enclave) -> None:
    require_layer(enclave, "seccomp")

    outcome, forked = enclave.run(FORK_REPEATEDLY_CELL, timeout=20).value

    assert outcome == REFUSED
    assert forked == 0
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)


def test_ctypes_unshare_refused(enclave: Enclave) -> None:
    require_layer(enclave, "seccomp")

    assert enclave.run(UNSHARE_CELL, timeout=10).value in REFUSED_NATIVE
    assert_usable(enclave)


def test_ctypes_raw_clone_refused(enclave: Enclave) -> None:
    require_layer(enclave, "seccomp")

    assert enclave.run(RAW_CLONE_CELL, timeout=10).value in REFUSED_NATIVE
    assert leftover_processes(enclave) == set()
    assert_usable(enclave)
