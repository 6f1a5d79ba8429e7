"""Isolation applied to runner processes, and the report of which layers are active.

The zygote runs inside the sandbox that `enclave.jail` sets up: its own
mount, PID, network, IPC and UTS namespaces, a read-only filesystem view and
an unprivileged user. Each runner forked from it then enters namespaces of
its own (`enter_run_namespaces`). A user namespace lets it create the
others. Its mount namespace hides the other runs' scratch directories, and
its network namespace has only a loopback interface, which is down. Its PID
namespace ends with its PID 1, so killing the runner ends every descendant.
After that the runner gets a new session, ``no_new_privs``, a non-dumpable process, no capabilities, a clean
environment, a private scratch directory, no inherited descriptors beyond
its channel and resource limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import tempfile
from dataclasses import dataclass
from typing import Any, NoReturn

from . import namespaces

_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
# Exit status of PID 1 for a cell process killed by signal N is this plus N, as shells report it.
_SIGNAL_EXIT_BASE = 128
_SCRATCH_ROOT_FLAGS = namespaces.MS_NOSUID | namespaces.MS_NODEV | namespaces.MS_NOEXEC
RUN_NAMESPACES = (namespaces.CLONE_NEWUSER | namespaces.CLONE_NEWNS | namespaces.CLONE_NEWNET
                  | namespaces.CLONE_NEWPID | namespaces.CLONE_NEWIPC)

# Variables a runner starts with; everything else from the parent is dropped.
SINGLE_THREAD_ENVIRONMENT = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
}

# Arrow's default pool (mimalloc in pyarrow 26.0.1) reserves 1 GiB of address space on first use, and
# RLIMIT_AS counts it. Once the zygote had touched Arrow, its baseline, and so every run's minimum memory
# limit, would be 1 GiB larger. The system allocator reserves nothing ahead.
ARROW_ALLOCATOR_ENVIRONMENT = {"ARROW_DEFAULT_MEMORY_POOL": "system"}


def clean_environment() -> dict[str, str]:
    """Return the environment enclave processes start with: no user variables."""
    environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg"}
    environment.update(SINGLE_THREAD_ENVIRONMENT)
    environment.update(ARROW_ALLOCATOR_ENVIRONMENT)
    # OpenBLAS on some CPUs needs these set to pick a working kernel, so they pass through.
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            environment[name] = os.environ[name]
    return environment


@dataclass(frozen=True)
class Limits:
    """Resource limits of one runner."""

    memory_bytes: int
    cpu_seconds: int
    file_size_bytes: int
    open_files: int


def thread_count() -> int:
    """Return the number of threads of this process, from /proc."""
    return int(namespaces.status_field("Threads"))


def address_space_bytes() -> int:
    """Return this process's virtual memory size (VmSize), which RLIMIT_AS bounds."""
    return int(namespaces.status_field("VmSize")) * 1024


def _prctl(option: int, value: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def enter_run_namespaces(scratch_root: str, scratch: str) -> None:
    """Give this runner its own user, mount, network, IPC and PID namespaces, and hide the other runs.

    The PID namespace applies to the children of this process, so the
    caller forks next (`fork_run_init`). In the new mount namespace a
    small tmpfs covers the scratch root and only this run's directory is
    bound back, so a run cannot even list the directories of runs that go
    on at the same time.
    """
    root = prepare_run_namespaces(scratch_root)
    try:
        bind_run_directory(root, scratch_root, scratch)
    finally:
        os.close(root)


def prepare_run_namespaces(scratch_root: str) -> int:
    """Enter the run's namespaces, cover the scratch root with a writable tmpfs and return a descriptor of the root.

    These are the steps of `enter_run_namespaces` that do not depend on
    the run, so a spare runner takes them before its run exists. The
    returned ``O_PATH`` descriptor names the real scratch root under the
    tmpfs. `bind_run_directory` uses it, and the caller must close it before
    any user code runs, because through it every run's directory is
    reachable.
    """
    uid, gid = os.getuid(), os.getgid()
    # A non-dumpable process may not write its own uid_map, which /proc then gives to root; no secret is here yet.
    _require(_prctl(_PR_SET_DUMPABLE, 1), "the dumpable flag")
    namespaces.unshare(RUN_NAMESPACES)
    namespaces.write_id_maps(uid, gid)
    namespaces.make_mounts_private()

    # Opened in the new mount namespace, the descriptor names the scratch root after the tmpfs covers it.
    root = os.open(scratch_root, os.O_PATH | os.O_DIRECTORY)
    try:
        namespaces.mount("tmpfs", scratch_root, "tmpfs", _SCRATCH_ROOT_FLAGS, "mode=0755,size=64k")
    except BaseException:
        os.close(root)
        raise
    return root


def bind_run_directory(root: int, scratch_root: str, scratch: str) -> None:
    """Bind the run's directory `scratch`, found under the covered scratch root `root`, and make the tmpfs read-only.

    Needs the mount namespace and capabilities of `prepare_run_namespaces`.
    Raises ValueError when `scratch` is not a directory directly under
    `scratch_root`, the only layout the monitor creates.
    """
    name = os.path.basename(scratch)
    if os.path.join(scratch_root, name) != scratch or name in ("", ".", ".."):
        raise ValueError(f"invalid run directory {scratch!r}: expected a directory directly under {scratch_root!r}")
    kept = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
    try:
        os.mkdir(scratch, 0o700)
        namespaces.mount(f"/proc/self/fd/{kept}", scratch, None, namespaces.MS_BIND | namespaces.MS_REC)
        namespaces.mount("none", scratch_root, None, namespaces.MS_REMOUNT | namespaces.MS_RDONLY | _SCRATCH_ROOT_FLAGS)
    finally:
        os.close(kept)


def fork_run_init() -> int:
    """Fork the process that becomes PID 1 of the run's PID namespace; return its pid, or 0 in the child.

    In the child, /proc is mounted again so that it lists this run's
    processes only. The child should fork the cell's process and wait for
    it (`relay_exit`) rather than run the cell itself: PID 1 ignores every
    signal it sends itself and the CPU-time limit's SIGXCPU, which would
    change how a cell fails.
    """
    child = os.fork()
    if child == 0:
        namespaces.mount("proc", "/proc", "proc", namespaces.MS_NOSUID | namespaces.MS_NODEV | namespaces.MS_NOEXEC)
    return child


def relay_exit(child: int, *, init: bool) -> NoReturn:
    """Wait for `child` and end this process the same way, so the zygote reaps the run's real status.

    PID 1 (`init`) cannot kill itself with a signal, so it exits with 128
    plus the signal number, and the process outside the namespace turns
    such a status back into the signal. An interrupt or a termination
    request sent to this process is passed on to `child`, so the zygote's
    escalation reaches the cell inside the run's PID namespace.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for forwarded in (signal.SIGINT, signal.SIGTERM):
        signal.signal(forwarded, lambda number, _frame: os.kill(child, number))
    _, status = os.waitpid(child, 0)
    number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    if not init and code > _SIGNAL_EXIT_BASE:
        number = code - _SIGNAL_EXIT_BASE
    if number and init:
        os._exit(_SIGNAL_EXIT_BASE + number)
    if number:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(code)


def isolate_runner(scratch: str, keep_fd: int, limits: Limits) -> None:
    """Apply the per-process layers to the process that runs the cell."""
    os.setsid()
    _require(_prctl(_PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
    _require(_prctl(_PR_SET_DUMPABLE, 0), "the non-dumpable flag")
    namespaces.drop_capabilities()

    # Standard streams point at /dev/null; the cell's print output is counted, not kept.
    null = os.open(os.devnull, os.O_RDWR)
    for standard in (0, 1, 2):
        os.dup2(null, standard)
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, 65536)

    os.chdir(scratch)
    # Files the cell creates stay writable for the runners' group, which a service-account monitor uses to remove them.
    os.umask(0o007)
    os.environ.clear()
    os.environ.update(clean_environment())
    os.environ.update({"TMPDIR": scratch, "HOME": scratch})

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))


def _require(done: bool, what: str) -> None:
    if not done:
        raise OSError(f"failed to set {what}")


def probe_run_namespaces(scratch_root: str) -> str | None:
    """Return None when runners can enter their namespaces here, else the reason they cannot.

    The probe forks a child that goes through the same steps as a runner
    on an empty directory, then exits; it runs no user code.
    """
    probe = tempfile.mkdtemp(prefix="probe-", dir=scratch_root)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        reason = b""
        try:
            enter_run_namespaces(scratch_root, probe)
            child = fork_run_init()
            if child == 0:
                os._exit(0)
            _, status = os.waitpid(child, 0)
            if status != 0:
                reason = b"mounting /proc in the run's PID namespace failed"
        except OSError as exc:
            reason = str(exc).encode()[:500]
        os.write(writer, reason)
        os._exit(0)

    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        reason_text = pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    os.rmdir(probe)
    return reason_text or None


@dataclass(frozen=True)
class SandboxState:
    """Sandbox facts the monitor collects when it starts the zygote."""

    view: str | None
    """None when the zygote runs in the filesystem view, else why it does not."""
    runner_uid: int
    notebook_uid: int
    run_namespaces: str | None
    """None when runners get their own namespaces, else why they do not."""
    seccomp: str | None
    audit_hook: bool
    cgroup: str | None
    """None when the sandbox has a pids.max limit, else why it has none."""


def layer_report(state: SandboxState) -> dict[str, dict[str, Any]]:
    """Return each isolation layer as ``{"active": bool, "detail": str}``."""
    def layer(active: bool, detail: str) -> dict[str, Any]:
        return {"active": active, "detail": detail}

    separate = state.runner_uid not in (0, state.notebook_uid)
    namespaces_detail = state.run_namespaces or "created for each run"
    return {
        "separate_uid": layer(separate, f"runners run as uid {state.runner_uid}" if separate else
                              f"runners keep uid {state.runner_uid}: {state.view or 'the enclave was not started as root'}"),
        "no_capabilities": layer(True, "runners drop every capability before the cell runs"),
        "no_new_privs": layer(True, "set on every runner"),
        "not_dumpable": layer(True, "set on every runner"),
        "filesystem_view": layer(state.view is None, state.view or "system libraries, the interpreter, site-packages and "
                                 "the package, read-only; the run's scratch directory writable"),
        "user_namespace": layer(state.run_namespaces is None, namespaces_detail),
        "mount_namespace": layer(state.run_namespaces is None, namespaces_detail),
        "network_namespace": layer(state.run_namespaces is None, namespaces_detail),
        "pid_namespace": layer(state.run_namespaces is None, namespaces_detail),
        "seccomp": layer(state.seccomp is None, state.seccomp or "execve, fork and namespace calls rejected"),
        "cgroup_pids": layer(state.cgroup is None, state.cgroup or "pids.max bounds the sandbox's processes"),
        "process_group": layer(True, "each run has its own session, killed as a whole"),
        "clean_environment": layer(True, "runners start with a fixed environment"),
        "scratch_directory": layer(True, "private directory per run, removed afterwards"),
        "closed_descriptors": layer(True, "only the run's channel stays open"),
        "resource_limits": layer(True, "memory, CPU time, file size and open files"),
        "audit_hook": layer(state.audit_hook, "refuses sockets, processes, ctypes and files outside the view"
                            if state.audit_hook else "disabled by configuration"),
    }


def describe_layers(layers: dict[str, Any]) -> list[str]:
    """Return one line per layer, such as ``seccomp: active (execve, fork and namespace calls rejected)``."""
    lines = []
    for name, entry in layers.items():
        state = "active" if entry.get("active") else "unavailable"
        lines.append(f"{name}: {state} ({entry.get('detail', '')})")
    return lines


def measured_layers(report: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """Return the part of the report that the attestation measures: which layers are active."""
    return {name: bool(entry["active"]) for name, entry in report.items()}

