"""The zygote: imports numpy and pandas once, then forks one runner per run.

It has no key and never receives a run's plaintext, because the monitor
sends the runner's end of a fresh socket pair with each fork request and
talks to the runner directly. Started by the monitor as
``python -I -m confidential_nb.enclave.zygote --fd N``.
"""

from __future__ import annotations

import os

from ..sandbox import ARROW_ALLOCATOR_ENVIRONMENT, SINGLE_THREAD_ENVIRONMENT

# BLAS and Arrow must see these before numpy or pandas load, or they start thread pools.
os.environ.update(SINGLE_THREAD_ENVIRONMENT)
os.environ.update(ARROW_ALLOCATOR_ENVIRONMENT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy  # noqa: E402, F401
import pandas  # noqa: E402, F401

from .. import audit, bundles, frame_codec, result_codec, seccomp, training  # noqa: E402, F401
from ..protocol import PeerClosedError, recv_fd, recv_message, send_message  # noqa: E402
from ..namespaces import effective_capabilities  # noqa: E402
from ..sandbox import Limits, address_space_bytes, probe_run_namespaces, thread_count  # noqa: E402
from . import runner  # noqa: E402
from .spare import CELL_PID_IN_NAMESPACE, SparePool  # noqa: E402

# Headroom a runner needs above the zygote's mapped memory to start any code at all.
_STARTUP_HEADROOM_BYTES = 64 * 1024**2
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
# How long a runner whose channel closed may take to exit by itself before it is killed.
_CRASH_GRACE_SECONDS = 2.0
# How long a timed-out runner gets after SIGINT, and again after SIGTERM, before SIGKILL.
_ESCALATION_STEP_SECONDS = 0.5
_SWEEP_ROUNDS = 100

# Runners forked and not yet ended; several runs may go on at once.
_active_runners: set[int] = set()
# Runners sent SIGKILL and not reaped yet.
_dying: set[int] = set()
# Exit statuses of runners reaped by `_poll` that the monitor has not ended yet.
_exited: dict[int, int] = {}
# The runners prepared for the next runs (see `spare`); None until `main` starts serving.
_spares: SparePool | None = None


def main() -> None:
    global _spares
    parser = argparse.ArgumentParser(prog="confidential_nb.enclave.zygote")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--scratch-root", required=True)
    arguments = parser.parse_args()

    # If the monitor dies without closing the channel, the kernel ends the zygote too.
    libc = ctypes.CDLL(None)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Orphans of a run (a child that called setsid, then lost its parent) come back to us to be killed.
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    channel = socket.socket(fileno=arguments.fd)
    # Runners share this uid; a non-dumpable zygote cannot be traced or read through /proc by them.
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    # The warm-up imports modules too, and the hello lists the modules that runners inherit, so it comes first.
    _prepare_for_forks()
    hello = _hello(arguments.scratch_root)
    send_message(channel, hello)
    # The monitor gives runners their own namespaces exactly when the probe succeeded.
    namespaces = hello["run_namespaces"] is None
    if namespaces and hello["seccomp"] is None:
        # Every cell process is the first child of its namespace's PID 1, so one filter serves all spares.
        seccomp.prepare_filter(CELL_PID_IN_NAMESPACE)
    _spares = SparePool(arguments.scratch_root, namespaces)
    _spares.refill()
    while True:
        try:
            _serve_one(channel)
        except PeerClosedError:
            return


def _hello(scratch_root: str) -> dict[str, Any]:
    """Describe this zygote's sandbox to the monitor; it runs no user code, so the monitor may rely on it."""
    return {
        "ready": True,
        "uid": os.getuid(),
        "capabilities": effective_capabilities(),
        "run_namespaces": probe_run_namespaces(scratch_root),
        "seccomp": _seccomp_unavailable(),
        # A Cape function's vendored package of one of these names is not used, because runners inherit the module.
        "preloaded_modules": sorted({name.partition(".")[0] for name in sys.modules}),
    }


def _prepare_for_forks() -> None:
    """Load once what every runner would otherwise set up by itself, then freeze the heap for forking.

    The warm-up runs the frame codec and the cell machinery on synthetic
    data, so pandas' lazy set-up happens here, once. Freezing moves every
    object to the garbage collector's permanent generation, so collections
    in runners do not touch, and so copy, the zygote's pages.
    """
    audit.resolved_default_read_roots()
    runner.warm_up()
    gc.collect()
    gc.freeze()


def _seccomp_unavailable() -> str | None:
    """Return None when runners can get the seccomp filter, else the reason they cannot."""
    supported, reason = seccomp.supported()
    return None if supported else reason


def _serve_one(channel: socket.socket) -> None:
    """Handle one request from the monitor: a fork (with a descriptor) or the end of a runner."""
    header, runner_fd = recv_fd(channel)
    _reap_exited_children()
    if header.get("op") == "end":
        _serve_end(channel, header)
        return
    if header.get("op") == "poll":
        send_message(channel, {"status": _poll(int(header["pid"]))})
        return
    if header.get("op") == "signal":
        _signal_runner(int(header["pid"]), int(header["signal"]))
        send_message(channel, {"ok": True})
        return
    if header.get("op") == "clear":
        _clear_directory(str(header["path"]))
        send_message(channel, {"ok": True})
        return
    if header.get("op") == "refill":
        # After the reply, so the monitor goes on while the new spares prepare.
        send_message(channel, {"ok": True})
        if _spares is not None:
            _spares.refill()
        return

    if runner_fd is None:
        send_message(channel, {"error": "protocol"})
        return
    limits = Limits(**header["limits"])
    rejection = _check_fork(limits)
    if rejection is not None:
        os.close(runner_fd)
        send_message(channel, rejection)
        return

    assert _spares is not None, "main creates the spare pool before it serves requests"
    try:
        pid = _spares.start_run(header, runner_fd)
    except (OSError, RuntimeError) as exc:
        # For example, fork fails with EAGAIN at the process limit. The monitor reports the error and the zygote stays up.
        send_message(channel, {"error": f"starting a runner failed ({type(exc).__name__}: {exc})"})
        return
    _active_runners.add(pid)
    send_message(channel, {"pid": pid})


def _serve_end(channel: socket.socket, header: dict[str, Any]) -> None:
    """End a runner as the monitor requests, and reply.

    With ``"reap": false`` (a run that replied normally) every process of
    the run gets SIGKILL at once and the reply follows right away. The
    processes tear down their memory by themselves, and `_reap_exited_children`
    collects them when the next request arrives. A process sent SIGKILL
    runs no more user code, so the monitor may then guard the reply.
    """
    pid = int(header["pid"])
    if pid not in _active_runners:
        send_message(channel, {"status": 0})
        return
    _active_runners.discard(pid)
    if pid in _exited:
        # The runner exited while the monitor waited for it (see `_poll`); only its orphans are left to sweep.
        send_message(channel, {"status": _exited.pop(pid)})
        _sweep_orphans(pid)
    elif header.get("reap") is False:
        _kill_run(pid)
        send_message(channel, {"status": 0})
        _dying.add(pid)
    else:
        send_message(channel, {"status": _end(pid, bool(header.get("grace")), bool(header.get("escalate")))})


def _poll(pid: int) -> int | None:
    """Return the runner's exit code or minus its signal once it has exited, else None, without waiting.

    The monitor polls a runner it gives time to exit, so that the zygote
    stays free for the other runs meanwhile.
    """
    if pid in _exited:
        return _exited[pid]
    if pid not in _active_runners:
        return 0
    reaped, status = os.waitpid(pid, os.WNOHANG)
    if reaped != pid:
        return None
    _exited[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return _exited[pid]


def _signal_runner(pid: int, number: int) -> None:
    """Send an interrupt or termination signal to a runner still going, as a timeout's first steps."""
    if pid in _active_runners and pid not in _exited and number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, number)


def _reap_exited_children() -> None:
    """Reap every child that has exited, without waiting for the others.

    Besides the killed runs' relays, that is the PID 1 of each such run:
    it outlives its relay by a moment, so it comes back to this process,
    the subreaper, and would stay a zombie that counts against pids.max.
    A runner still in use that exited keeps its status for `_poll`.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _dying.discard(pid)
        if pid in _active_runners:
            _exited[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _kill_run(pid: int) -> None:
    """Send SIGKILL to the runner, its process group and every process below it, without waiting."""
    for target in (pid, *_descendants(pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Return the processes below `pid`, read from the children files of each one's threads in /proc."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children") as children:
                    pending += [int(child) for child in children.read().split()]
            except (OSError, ValueError):
                continue
        if parent != pid:
            found.append(parent)
    return found


def _check_fork(limits: Limits) -> dict[str, Any] | None:
    threads = thread_count()
    if threads != 1:
        return {"error": "threads", "threads": threads}
    baseline = address_space_bytes() + _STARTUP_HEADROOM_BYTES
    if limits.memory_bytes < baseline:
        return {"error": "memory", "baseline": baseline}
    return None


def _end(pid: int, grace: bool, escalate: bool = False) -> int:
    """Kill a runner's process group, reap it and every orphan of its run; return its exit code or minus its signal.

    With `grace`, a runner that is already ending (its channel closed) gets
    a short time to exit by itself, so its real status (a limit signal, say)
    is reported rather than the kill. With `escalate` (a timeout), the
    runner first gets SIGINT, then SIGTERM, each with a short wait, so the
    cell may stop by itself before SIGKILL ends its process group.
    """
    status = _wait_briefly(pid, _CRASH_GRACE_SECONDS) if grace else None
    for request in (signal.SIGINT, signal.SIGTERM) if escalate else ():
        if status is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, request)
        status = _wait_briefly(pid, _ESCALATION_STEP_SECONDS)
    if status is None:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    _sweep_orphans(pid)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _clear_directory(path: str) -> None:
    """Remove what a run left in its scratch directory, even where the cell took away permissions.

    Runners run as this process's uid, so it owns their files and may
    restore their modes. The monitor removes the directory itself afterwards,
    but as a service account it could not enter directories the cell made
    private. An entry that cannot be removed is left for the monitor.
    """
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                _clear_directory(entry.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)


def _wait_briefly(pid: int, seconds: float) -> int | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return status
        time.sleep(0.01)
    return None


def _sweep_orphans(ended: int) -> None:
    """Kill and reap every child that is neither a runner still in use nor a waiting spare.

    In the run's own PID namespace orphans go to its PID 1 and die with it.
    Without that namespace, a process a cell detached with setsid comes
    back here as an orphan when its parent dies.
    """
    spares = _spares.spare_pids if _spares is not None else frozenset()
    for _ in range(_SWEEP_ROUNDS):
        children = [child for child in _children()
                    if child == ended or not (child in _active_runners or child in spares or child in _dying)]
        if not children:
            return
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)


def _children() -> list[int]:
    """Return the ids of this process's children, read from /proc."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == me:
            found.append(int(entry))
    return found


if __name__ == "__main__":
    main()
