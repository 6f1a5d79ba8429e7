"""Spare runners: runners that the zygote forks and isolates before their run arrives.

Most of a runner's start does not depend on its run. That part is three
forks (the relay outside the run's PID namespace, PID 1 inside it, the
cell's process), entering the run's namespaces, reseeding, building the
seccomp filter and touching the library code a run uses. A spare does it
as soon as the zygote forks it, then waits on its control socket. The
zygote hands it the run's header and the monitor's end of the run's socket.
Only the steps that need them remain: binding the run's scratch directory,
the process isolation with the run's limits, the filters and the audit
hook.

A spare is forked from the zygote, which never has a key or a run's
plaintext, so a spare forked while another run goes on cannot see that
run's data. Each spare serves exactly one run and is never reused. The
zygote keeps a small pool of them (`SparePool`).

A spare is named ``cnb-spare`` (``/proc/PID/comm``) from its fork on.
Its relays rename themselves ``cnb-relay`` and ``cnb-init`` once they
have forked, and the cell's process renames itself ``cnb-run`` when its
run arrives. Only tools and tests read these names, because the zygote
tracks its spare by process id.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from .. import audit, seccomp
from ..protocol import PeerClosedError, ProtocolError, recv_fd, send_fd
from ..sandbox import (
    Limits, bind_run_directory, fork_run_init, isolate_runner, prepare_run_namespaces, relay_exit, thread_count,
)
from . import runner

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NAME = 15
_PR_GET_NAME = 16
SPARE_NAME = b"cnb-spare"
RUN_NAME = b"cnb-run"
_RELAY_NAME = b"cnb-relay"
_INIT_NAME = b"cnb-init"
# Runs that start less than this apart count as back to back (see `SparePool.refill`).
BACK_TO_BACK_SECONDS = 0.1
# The cell's process id inside its PID namespace: PID 1 relays its exit and forks it first.
CELL_PID_IN_NAMESPACE = 2
# Three spares cover back-to-back runs (see `SparePool`) for about 11 MiB of private memory each (a
# relay, PID 1 and a warmed-up cell process, measured with smaps_rollup on this machine).
DEFAULT_POOL_SIZE = 3


@dataclass
class Spare:
    """A spare runner, as the zygote tracks it.

    ``pid`` is the relay outside the run's PID namespace (the zygote's
    child), which `zygote._end` kills to end the run. ``control`` is the
    zygote's end of the socket on which the spare waits for its run.
    """

    pid: int
    control: socket.socket
    namespaces: bool
    scratch_root: str
    reaped: bool = False

    def matches(self, header: dict[str, Any]) -> bool:
        """Return True when this spare was prepared for the sandbox settings that the fork request names."""
        return self.namespaces == bool(header.get("namespaces")) and self.scratch_root == str(header["scratch_root"])


class SparePool:
    """The zygote's waiting spare runners, oldest first, and the sandbox settings new spares are prepared with.

    The settings start as the zygote's own view of them and follow each
    fork request, so spares match the runs the monitor requests. The pool
    keeps `size` spares. One is forked after each run, so a run arriving
    right after the previous one ended gets a spare forked `size` - 1 runs
    earlier. With two, that spare was often still warming up when runs came
    back to back; with three it has finished. Runs that start at once each
    get one too.
    """

    def __init__(self, scratch_root: str, namespaces: bool, size: int = DEFAULT_POOL_SIZE) -> None:
        if size < 1:
            raise ValueError(f"invalid spare pool size {size}: expected at least 1")
        self._scratch_root = scratch_root
        self._namespaces = namespaces
        self._size = size
        self._spares: list[Spare] = []
        # When the last two runs started, to tell runs that come back to back.
        self._starts: collections.deque[float] = collections.deque(maxlen=2)

    @property
    def spare_pids(self) -> frozenset[int]:
        """The process ids of the waiting spares' relays, which must survive the sweep after a run."""
        return frozenset(spare.pid for spare in self._spares)

    def refill(self) -> None:
        """Fork spares until the pool is full. While this process has more than one thread, none is forked.

        While runs come back to back, spares leave out the warm-up's
        training cell: it took about 7 ms of CPU on this 2-core machine,
        which would then compete with the next run for a core.
        """
        training = not runs_back_to_back(list(self._starts))
        while len(self._spares) < self._size:
            spare = fork_spare(self._scratch_root, self._namespaces, training=training)
            if spare is None:
                return
            self._spares.append(spare)

    def start_run(self, header: dict[str, Any], runner_fd: int) -> int:
        """Hand a fork request and its socket to the oldest fitting spare, or to a new one, and return the runner's pid.

        Spares prepared with other settings, and spares that died, are
        discarded. The caller has checked that this process has one thread,
        so `fork_spare` forks. `runner_fd` is closed here.
        """
        self._scratch_root, self._namespaces = str(header["scratch_root"]), bool(header.get("namespaces"))
        self._starts.append(time.monotonic())
        try:
            while self._spares:
                waiting = self._spares.pop(0)
                if waiting.matches(header) and hand_over(waiting, header, runner_fd):
                    return waiting.pid
                discard(waiting)
            fresh = fork_spare(self._scratch_root, self._namespaces)
            if fresh is None:
                raise RuntimeError("the zygote has more than one thread, so it must not fork a runner")
            if hand_over(fresh, header, runner_fd):
                return fresh.pid
            discard(fresh)
            raise RuntimeError("a new spare runner ended before it received its run")
        finally:
            os.close(runner_fd)


def runs_back_to_back(starts: list[float]) -> bool:
    """Return True when the last two of `starts` (monotonic times at which runs started) are under `BACK_TO_BACK_SECONDS` apart."""
    return len(starts) >= 2 and starts[-1] - starts[-2] < BACK_TO_BACK_SECONDS


def fork_spare(scratch_root: str, namespaces: bool, *, training: bool = True) -> Spare | None:
    """Fork a spare runner, or return None when this process has more than one thread and so must not fork.

    Without `training`, its warm-up leaves out the cell that trains a model.
    """
    if thread_count() != 1:
        return None
    ours, theirs = socket.socketpair()
    zygote_pid = os.getpid()
    # The child inherits the name at the fork, so no moment shows a spare under the zygote's name.
    zygote_name = _name()
    _set_name(SPARE_NAME)
    pid = os.fork()
    if pid != 0:
        _set_name(zygote_name)
    if pid == 0:
        ours.close()
        _become_spare(theirs, scratch_root, namespaces, zygote_pid, training)
    theirs.close()
    return Spare(pid, ours, namespaces, scratch_root)


def hand_over(spare: Spare, header: dict[str, Any], runner_fd: int) -> bool:
    """Send the run's fork request and socket to `spare`; return False when the spare is gone.

    The zygote's end of the control socket is closed either way, so a spare
    receives at most one run. A spare that dies after the check still
    receives the run, whose monitor then reports a crash.
    """
    try:
        if _reap_if_exited(spare):
            return False
        send_fd(spare.control, header, runner_fd)
    except OSError:
        return False
    finally:
        spare.control.close()
    return True


def _reap_if_exited(spare: Spare) -> bool:
    """Return True when the spare's relay has exited, and reap it so its pid is never signalled again."""
    try:
        reaped, _ = os.waitpid(spare.pid, os.WNOHANG)
    except ChildProcessError:
        reaped = spare.pid
    spare.reaped = reaped == spare.pid
    return spare.reaped


def discard(spare: Spare) -> None:
    """Kill an unused spare and reap its relay. PID 1 and the cell's process die with it by their parent-death signal."""
    spare.control.close()
    if spare.reaped:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(spare.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(spare.pid, 0)
    spare.reaped = True


def _become_spare(control: socket.socket, scratch_root: str, namespaces: bool, zygote_pid: int, training: bool) -> None:
    """Prepare the forked child, wait for a run and run it. Never returns.

    With namespaces, the cell runs two forks further down (see
    `_enter_namespaces`). A spare whose control socket closes before a run
    arrives exits with status 0.
    """
    status = 1
    try:
        libc = ctypes.CDLL(None)
        # A runner must not outlive the zygote; the check covers a zygote that died before the prctl call.
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != zygote_pid:
            return
        # The zygote's channel to the monitor and any other inherited descriptor close now, not at isolation.
        _close_descriptors_except(control.fileno())
        root = _enter_namespaces(control, scratch_root) if namespaces else None

        prepared_filter = _prepare(control, training)
        try:
            header, runner_fd = _await_run(control)
        except PeerClosedError:
            status = 0
            return
        control.close()
        _set_name(RUN_NAME)
        _run(header, runner_fd, root, prepared_filter)
        status = 0
    finally:
        os._exit(status)


def _close_descriptors_except(keep_fd: int) -> None:
    """Close every descriptor above the standard streams except `keep_fd`."""
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, 65536)


def _set_name(name: bytes) -> None:
    """Set this process's name as ps and /proc/PID/comm show it (at most 15 bytes)."""
    ctypes.CDLL(None).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def _name() -> bytes:
    buffer = ctypes.create_string_buffer(16)
    ctypes.CDLL(None).prctl(_PR_GET_NAME, buffer, 0, 0, 0)
    return buffer.value


def _enter_namespaces(control: socket.socket, scratch_root: str) -> int:
    """Enter the run's namespaces and return the scratch root's descriptor in the cell's process, two forks further down.

    This process stays outside the run's PID namespace and relays the exit
    status of PID 1 in it, which relays that of the cell's process. Each
    level has SIGKILL as its parent-death signal, so killing this process
    (as `zygote._end` does) ends the whole namespace. The relays close the
    control socket and the scratch root's descriptor, so only the cell's
    process holds them.
    """
    libc = ctypes.CDLL(None)
    root = prepare_run_namespaces(scratch_root)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    init = fork_run_init()
    if init != 0:
        _set_name(_RELAY_NAME)
        control.close()
        os.close(root)
        relay_exit(init, init=False)

    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Its parent is outside this PID namespace, so getppid() returns 0 while that parent lives.
    if os.getppid() != 0:
        os._exit(1)
    cell = os.fork()
    if cell != 0:
        _set_name(_INIT_NAME)
        control.close()
        os.close(root)
        relay_exit(cell, init=True)

    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != 1:
        os._exit(1)
    return root


def _prepare(control: socket.socket, training: bool = True) -> seccomp.PreparedFilter | None:
    """Take the steps a run does not need: warm the library code up, reseed, build the seccomp filter.

    The warm-up stops early once the run waits, because from then on it
    would only delay the run. Returns None when this platform has no
    seccomp, and a run that requests the filter then fails in
    `install_filter`.
    """
    if not _run_waiting(control):
        runner.warm_up(lambda: _run_waiting(control), training=training)
    # After the warm-up, so the run's random state is fresh whatever the warm-up drew.
    runner.reseed()
    try:
        return seccomp.prepare_filter()
    except RuntimeError:
        return None


def _run_waiting(control: socket.socket) -> bool:
    """Return True when the zygote has sent the run (or closed the control socket), without blocking."""
    readable, _, _ = select.select([control], [], [], 0)
    return bool(readable)


def _await_run(control: socket.socket) -> tuple[dict[str, Any], int]:
    """Block until the zygote hands over a run; return its fork request and the runner's socket descriptor."""
    header, runner_fd = recv_fd(control)
    if runner_fd is None:
        raise ProtocolError("the zygote handed over a run without its socket")
    return header, runner_fd


def _run(header: dict[str, Any], runner_fd: int, root: int | None, prepared_filter: seccomp.PreparedFilter | None) -> None:
    """Bind the run's directory, isolate this process with the run's limits, install the filters and run the cell."""
    scratch = str(header["scratch"])
    if root is not None:
        try:
            bind_run_directory(root, str(header["scratch_root"]), scratch)
        finally:
            os.close(root)
    # Lowering resource limits needs no privilege, so the runner sets its run's own.
    isolate_runner(scratch, runner_fd, Limits(**header["limits"]))
    channel = socket.socket(fileno=runner_fd)
    _install_filters(header, scratch, prepared_filter)
    runner.serve(channel)


def _install_filters(header: dict[str, Any], scratch: str, prepared_filter: seccomp.PreparedFilter | None) -> None:
    """Install the seccomp filter, then the audit hook, as the last steps before the cell's code.

    The filter goes first because installing it calls ctypes, which the
    hook rejects. Neither is skipped silently, because the monitor requests
    exactly what its layer report promises.
    """
    sys.dont_write_bytecode = True
    if header.get("seccomp"):
        seccomp.install_filter(prepared_filter)
    if header.get("audit_hook"):
        audit.install_audit_hook([], [scratch])
