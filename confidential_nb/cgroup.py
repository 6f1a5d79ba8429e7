"""A pids cgroup around the sandbox, where the cgroup file system is writable.

The seccomp filter already rejects process creation in runners; ``pids.max``
is a second, independent bound that also holds for threads. Both cgroup v1
(a ``pids`` hierarchy) and v2 (the ``pids`` controller enabled for the
enclave's own cgroup) are supported. Anything else is reported with the
reason, and the sandbox runs without this layer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import time
from pathlib import Path

log = logging.getLogger("confidential_nb.enclave")

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Processes and threads of the whole sandbox: the zygote, two processes per run and their threads.
DEFAULT_PIDS_MAX = 512
# Each enclave's cgroup is named this prefix, its monitor's pid and a random part.
CGROUP_PREFIX = "confidential_nb-"


def create_pids_cgroup(name: str, pids_max: int = DEFAULT_PIDS_MAX) -> tuple[Path | None, str | None]:
    """Create a cgroup named `name` with ``pids.max``; return its path, or None and the reason it is unavailable."""
    parent, reason = _pids_parent()
    if parent is None:
        return None, reason
    remove_stale_cgroups(parent)
    path = parent / name
    try:
        path.mkdir(mode=0o755)
        (path / "pids.max").write_text(str(pids_max))
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.rmdir()
        return None, f"cannot create a pids cgroup in {parent}: {exc.strerror}"
    return path, None


def cgroup_name() -> str:
    """Return a new name for this enclave's cgroup: its monitor's pid and a random part, so a later monitor with the same pid gets another name."""
    return f"{CGROUP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def remove_stale_cgroups(parent: Path) -> None:
    """Remove the empty cgroups of enclaves whose monitor has ended, for example after it was killed."""
    for path in parent.glob(f"{CGROUP_PREFIX}*"):
        pid = path.name[len(CGROUP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        # A cgroup that still has members cannot be removed, and is left as it is.
        with contextlib.suppress(OSError):
            path.rmdir()


def _pids_parent() -> tuple[Path | None, str | None]:
    """Return the cgroup directory under which the enclave may create a pids cgroup."""
    v1 = CGROUP_ROOT / "pids"
    if (v1 / "cgroup.procs").exists():
        own = _own_cgroup("pids")
        parent = v1 / own.lstrip("/") if own and (v1 / own.lstrip("/")).is_dir() else v1
        return (parent, None) if os.access(parent, os.W_OK) else (None, f"{parent} is not writable")

    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists():
        own = _own_cgroup("")
        parent = CGROUP_ROOT / (own or "/").lstrip("/")
        enabled = (parent / "cgroup.subtree_control").read_text().split() if (parent / "cgroup.subtree_control").exists() else []
        if "pids" not in enabled:
            return None, f"the pids controller is not enabled for child cgroups of {parent}"
        return (parent, None) if os.access(parent, os.W_OK) else (None, f"{parent} is not writable")
    return None, "no cgroup file system with a pids controller is mounted"


def _own_cgroup(controller: str) -> str | None:
    """Return this process's cgroup path for `controller` ("" for the v2 hierarchy), from /proc/self/cgroup."""
    with open("/proc/self/cgroup") as lines:
        for line in lines:
            _, names, path = line.rstrip("\n").split(":", 2)
            if names.split(",") == [controller] or (controller == "" and names == ""):
                return path
    return None


def join_cgroup(path: Path) -> None:
    """Move the calling process into the cgroup at `path`; its later children start there too."""
    (path / "cgroup.procs").write_text(str(os.getpid()))


def kill_members_and_remove(path: Path, seconds: float = 2.0) -> None:
    """Send SIGKILL to every process in the cgroup at `path`, then remove it once empty; log when that takes over `seconds`.

    A monitor whose start is cut short calls this: the sandbox starter,
    which would otherwise remove the cgroup, may not have got that far.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            members = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except OSError:
            members = []
        if not members:
            with contextlib.suppress(OSError):
                path.rmdir()
                return
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            log.info("could not remove the cgroup %s within %g s; the next enclave start removes it", path, seconds)
            return
        time.sleep(0.02)


def leave_and_remove_cgroup(path: Path) -> None:
    """Move the calling process back to the parent cgroup, then remove `path`; log instead of raising when it cannot.

    The sandbox starter calls this after the zygote ended, as the last
    process in the cgroup; a cgroup with a member cannot be removed.
    """
    try:
        (path.parent / "cgroup.procs").write_text(str(os.getpid()))
        path.rmdir()
    except OSError as exc:
        log.info("could not remove the cgroup %s: %s", path, exc.strerror)
