"""The zygote: imports numpy and pandas once, then forks one runner per run.

It has no key and never receives a run's plaintext, because the monitor
sends the runner's end of a fresh socket pair with each fork request and
talks to the runner directly. Started by the monitor as
``python -I -m confidential_nb.enclave.zygote --fd N``.
"""

from __future__ import annotations

import os

from ..sandbox import SINGLE_THREAD_ENVIRONMENT

# BLAS and Arrow must see these before numpy or pandas load, or they start thread pools.
os.environ.update(SINGLE_THREAD_ENVIRONMENT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
from typing import Any  # noqa: E402

import numpy  # noqa: E402, F401
import pandas  # noqa: E402, F401

from .. import frame_codec, result_codec, training  # noqa: E402, F401
from ..protocol import PeerClosedError, recv_fd, recv_message, send_message  # noqa: E402
from ..sandbox import Limits, address_space_bytes, isolate_runner, thread_count  # noqa: E402
from . import runner  # noqa: E402

# Headroom a runner needs above the zygote's mapped memory to start any code at all.
_STARTUP_HEADROOM_BYTES = 64 * 1024**2
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_SWEEP_ROUNDS = 100


def main() -> None:
    parser = argparse.ArgumentParser(prog="confidential_nb.enclave.zygote")
    parser.add_argument("--fd", type=int, required=True)
    arguments = parser.parse_args()

    # If the monitor dies without closing the channel, the kernel ends the zygote too.
    libc = ctypes.CDLL(None)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Orphans of a run (a child that called setsid, then lost its parent) come back to us to be killed.
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    channel = socket.socket(fileno=arguments.fd)
    while True:
        try:
            _serve_one(channel)
        except PeerClosedError:
            return


def _serve_one(channel: socket.socket) -> None:
    """Handle one request from the monitor: a fork (with a descriptor) or a wait."""
    header, runner_fd = recv_fd(channel)
    if header.get("op") == "wait":
        send_message(channel, {"status": _wait(int(header["pid"]))})
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

    zygote_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        _become_runner(runner_fd, str(header["scratch"]), limits, zygote_pid)
    os.close(runner_fd)
    send_message(channel, {"pid": pid})


def _check_fork(limits: Limits) -> dict[str, Any] | None:
    threads = thread_count()
    if threads != 1:
        return {"error": "threads", "threads": threads}
    baseline = address_space_bytes() + _STARTUP_HEADROOM_BYTES
    if limits.memory_bytes < baseline:
        return {"error": "memory", "baseline": baseline}
    return None


def _become_runner(runner_fd: int, scratch: str, limits: Limits, zygote_pid: int) -> None:
    """Run in the forked child: isolate, run the cell, exit without returning."""
    status = 1
    try:
        # A runner must not outlive the zygote; the check covers a zygote that died before the prctl call.
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != zygote_pid:
            return
        isolate_runner(scratch, runner_fd, limits)
        runner.reseed()
        runner.serve(socket.socket(fileno=runner_fd))
        status = 0
    finally:
        os._exit(status)


def _wait(pid: int) -> int:
    """Reap a runner and every orphan its run left; return the runner's exit code or minus its signal."""
    _, status = os.waitpid(pid, 0)
    _sweep_orphans()
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _sweep_orphans() -> None:
    """Kill and reap every remaining child; runs are sequential, so all of them belong to the ended run."""
    for _ in range(_SWEEP_ROUNDS):
        children = _children()
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
