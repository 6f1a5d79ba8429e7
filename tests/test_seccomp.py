"""The runner seccomp filter, tried in forked children so pytest itself is never filtered.

Each child installs the filter (or not, for the control cases that show an
attack works without it), runs one attempt, sends a JSON report through a
pipe and leaves with os._exit.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import platform
import resource
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confidential_nb import seccomp

SUPPORTED, REASON = seccomp.supported()
pytestmark = pytest.mark.skipif(not SUPPORTED, reason=f"seccomp filter unsupported here: {REASON}")

_PR_SET_DUMPABLE = 4
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_VM_SIGHAND_THREAD = 0x00000100 | 0x00000800 | 0x00010000


def run_in_child(attempt: Callable[[], Any], *, install: bool = True) -> tuple[int, Any]:
    """Fork, install the filter unless `install` is False, run `attempt`, and return the wait status and report."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(attempt, install, read_end, write_end)

    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    return status, json.loads(raw) if raw else None


def _child(attempt: Callable[[], Any], install: bool, read_end: int, write_end: int) -> None:
    try:
        os.close(read_end)
        # A seccomp kill would otherwise leave a core dump behind.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        if install:
            seccomp.install_filter()
        try:
            report: Any = {"value": attempt()}
        except Exception as exc:
            report = {"error": type(exc).__name__, "errno": getattr(exc, "errno", None)}
        os.write(write_end, json.dumps(report).encode())
    finally:
        os._exit(0)


def report_of(attempt: Callable[[], Any], *, install: bool = True) -> Any:
    """Run `attempt` in a child that must exit normally, and return its report."""
    status, report = run_in_child(attempt, install=install)
    assert os.WIFEXITED(status), f"child ended with wait status {status}"
    assert report is not None
    return report


def raw_syscall(number: int, *args: int) -> tuple[int, int]:
    """Call libc's syscall() and return the result and errno. A process it creates exits at once."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(arg) for arg in args))
    if result == 0 and number == syscall_number("clone"):
        os._exit(0)
    return result, ctypes.get_errno()


def syscall_number(name: str) -> int:
    arch = seccomp.current_architecture()
    assert arch is not None
    return arch.numbers[name]


def fork_and_reap() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_filter_active_after_install() -> None:
    assert report_of(seccomp.filter_active) == {"value": True}
    assert report_of(seccomp.filter_active, install=False) == {"value": False}


def test_prepared_filter_installs() -> None:
    def prepare_then_install() -> list[object]:
        prepared = seccomp.prepare_filter()
        before = seccomp.filter_active()
        seccomp.install_filter(prepared)
        return [before, seccomp.filter_active(), fork_denied_errno()]

    assert report_of(prepare_then_install, install=False) == {"value": [False, True, errno.EPERM]}


def test_prepared_filter_kept_by_pid() -> None:
    # A zygote prepares the filter of its runners' pid once, and the spares it forks afterwards inherit it.
    first = seccomp.prepare_filter(424242)
    assert first.pid == 424242
    assert seccomp.prepare_filter(424242) is first
    assert seccomp.prepare_filter().pid == os.getpid()


def test_prepared_filter_of_other_process_rejected() -> None:
    # Prepared here, in pytest, so it embeds pytest's pid rather than the child's.
    prepared = seccomp.prepare_filter()

    def install_foreign() -> bool:
        try:
            seccomp.install_filter(prepared)
        except ValueError:
            return seccomp.filter_active()
        raise AssertionError("install_filter accepted a filter prepared for another process")

    assert report_of(install_foreign, install=False) == {"value": False}


def fork_denied_errno() -> int:
    try:
        fork_and_reap()
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_install_twice_stacks_one_filter() -> None:
    def install_again() -> str:
        seccomp.install_filter()
        status = Path("/proc/self/status").read_text()
        return status.split("Seccomp_filters:")[1].split()[0]

    assert report_of(install_again) == {"value": "1"}


def test_subprocess_run_denied(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    def run_touch() -> int:
        return subprocess.run(["/bin/touch", str(marker)]).returncode

    assert report_of(run_touch) == {"error": "PermissionError", "errno": errno.EPERM}
    assert not marker.exists()
    assert report_of(run_touch, install=False) == {"value": 0}
    assert marker.exists()


def test_fork_denied() -> None:
    assert report_of(fork_and_reap) == {"error": "PermissionError", "errno": errno.EPERM}
    assert "value" in report_of(fork_and_reap, install=False)


def test_posix_spawn_denied(tmp_path: Path) -> None:
    marker = tmp_path / "spawned"

    def spawn() -> int:
        pid = os.posix_spawn("/bin/touch", ["touch", str(marker)], {})
        return os.waitpid(pid, 0)[1]

    assert report_of(spawn) == {"error": "PermissionError", "errno": errno.EPERM}
    assert not marker.exists()


def test_os_system_fails(tmp_path: Path) -> None:
    marker = tmp_path / "system"
    report = report_of(lambda: os.system(f"touch {marker}"))
    assert report["value"] != 0
    assert not marker.exists()


def test_raw_clone_without_thread_flag_denied() -> None:
    def clone_process() -> list[int]:
        result, error = raw_syscall(syscall_number("clone"), signal.SIGCHLD, 0, 0, 0, 0)
        if result > 0:
            os.waitpid(result, 0)
        return [result, error]

    assert report_of(clone_process) == {"value": [-1, errno.EPERM]}
    assert report_of(clone_process, install=False)["value"][0] > 0


def test_thread_in_new_namespace_denied() -> None:
    # The kernel accepts CLONE_THREAD | CLONE_NEWNET from root. There is no run without the filter,
    # because the new thread would start on the caller's stack (the stack argument is 0).
    def clone_thread_in_namespace() -> list[int]:
        return list(raw_syscall(syscall_number("clone"), CLONE_VM_SIGHAND_THREAD | CLONE_NEWNET, 0, 0, 0, 0))

    assert report_of(clone_thread_in_namespace) == {"value": [-1, errno.EPERM]}


def test_clone3_returns_enosys() -> None:
    assert report_of(lambda: list(raw_syscall(syscall_number("clone3"), 0, 0))) == {"value": [-1, errno.ENOSYS]}


def test_unshare_user_namespace_denied() -> None:
    def unshare_user() -> list[int]:
        libc = ctypes.CDLL(None, use_errno=True)
        return [libc.unshare(CLONE_NEWUSER), ctypes.get_errno()]

    assert report_of(unshare_user) == {"value": [-1, errno.EPERM]}
    assert report_of(unshare_user, install=False)["value"][0] == 0


def test_signal_to_other_process_denied() -> None:
    parent = os.getpid()
    assert report_of(lambda: os.kill(parent, 0)) == {"error": "PermissionError", "errno": errno.EPERM}
    assert report_of(lambda: os.kill(os.getpid(), 0)) == {"value": None}
    assert report_of(lambda: os.kill(parent, 0), install=False) == {"value": None}


def test_setrlimit_denied_getrlimit_allowed() -> None:
    def set_open_files_limit() -> str:
        # Python reports EPERM from setrlimit as ValueError("not allowed to raise maximum limit").
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
        except ValueError as exc:
            return str(exc)
        return "set"

    assert report_of(set_open_files_limit) == {"value": "not allowed to raise maximum limit"}
    assert report_of(set_open_files_limit, install=False) == {"value": "set"}
    assert report_of(lambda: resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 0) == {"value": True}


def test_prlimit_of_other_process_denied() -> None:
    parent = os.getpid()
    assert report_of(lambda: resource.prlimit(parent, resource.RLIMIT_NOFILE)) == {
        "error": "PermissionError", "errno": errno.EPERM}
    assert report_of(lambda: resource.prlimit(0, resource.RLIMIT_NOFILE)[0] > 0) == {"value": True}


def test_personality_query_allowed_change_denied() -> None:
    def personality(persona: int) -> list[int]:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.personality.argtypes = [ctypes.c_ulong]
        return [libc.personality(persona), ctypes.get_errno()]

    assert report_of(lambda: personality(0xFFFFFFFF))["value"][0] >= 0
    assert report_of(lambda: personality(0x0040000))["value"] == [-1, errno.EPERM]  # ADDR_NO_RANDOMIZE


def test_device_node_denied_fifo_allowed(tmp_path: Path) -> None:
    device = tmp_path / "null-device"
    fifo = tmp_path / "fifo"
    assert report_of(lambda: os.mknod(device, 0o600 | 0o020000, os.makedev(1, 3))) == {
        "error": "PermissionError", "errno": errno.EPERM}
    assert report_of(lambda: os.mkfifo(fifo)) == {"value": None}
    assert fifo.exists()


def test_threads_still_start() -> None:
    def start_threads() -> list[int]:
        results: list[int] = []
        threads = [threading.Thread(target=results.append, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(results)

    assert report_of(start_threads) == {"value": [0, 1, 2, 3]}


def test_numpy_pandas_work(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    target = tmp_path / "grouped.csv"

    def analyse() -> list[Any]:
        product = np.arange(9.0).reshape(3, 3) @ np.eye(3)
        frame = pd.DataFrame({"key": ["a", "b", "a"], "value": [1.0, 2.0, 3.0]})
        grouped = frame.groupby("key")["value"].sum()
        grouped.to_csv(target)
        return [float(product.sum()), grouped.to_dict(), pd.read_csv(target)["value"].tolist()]

    assert report_of(analyse) == {"value": [36.0, {"a": 4.0, "b": 2.0}, [4.0, 2.0]]}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 system calls exist only on x86_64")
def test_x32_syscall_kills_process() -> None:
    x32_getpid = 0x40000000 | 39
    status, report = run_in_child(lambda: raw_syscall(x32_getpid))
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGSYS
    assert report is None


def _i386_getpid() -> int:
    """Run getpid through `int 0x80`, the i386 entry, from a small machine-code function."""
    # Instructions: mov eax, 20 (i386 __NR_getpid), then int 0x80, then ret.
    code = bytes([0xB8, 0x14, 0x00, 0x00, 0x00, 0xCD, 0x80, 0xC3])
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return int(ctypes.CFUNCTYPE(ctypes.c_int)(address)())


def _i386_entry_works() -> bool:
    status, report = run_in_child(_i386_getpid, install=False)
    return os.WIFEXITED(status) and report is not None and isinstance(report.get("value"), int)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the i386 entry is an x86_64 feature")
def test_foreign_architecture_kills_process() -> None:
    if not _i386_entry_works():
        pytest.skip("int 0x80 fails here without a filter (kernel built or booted without IA32 emulation)")

    status, report = run_in_child(_i386_getpid)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGSYS
    assert report is None


def test_aarch64_program_assembles() -> None:
    # The aarch64 table has no fork, vfork or mknod, and the program must still resolve every jump.
    program = seccomp.build_program(seccomp._ARCHITECTURES["aarch64"], 1234)
    assert program[0] == (0x20, 0, 0, 4)
    assert program[1][3] == 0xC00000B7
    assert (0x06, 0, 0, 0x7FFF0000) in program
