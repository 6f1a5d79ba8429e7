"""Start the zygote inside the sandbox: new namespaces, the filesystem view, an unprivileged user.

Started by the monitor as ``python -I -m confidential_nb.enclave.jail
--spec JSON --uid N --gid N -- ZYGOTE_ARGUMENTS``. As root it creates a
PID namespace and forks the process that becomes PID 1 there. That process
creates new mount, network, IPC and UTS namespaces and assembles the
filesystem view. It then drops every capability, switches to the runner
user (a host uid that is neither root nor the notebook's) and executes the
zygote. Without root the starter creates a user namespace first and keeps
its own uid, which the layer report shows.

The process that stays outside only waits for PID 1 and exits with its
status, so the monitor can treat it as the zygote's process. When it dies,
the kernel kills PID 1 and with it every process in the namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

from .. import namespaces
from ..cgroup import join_cgroup, leave_and_remove_cgroup
from ..view import ViewSpec, build_view

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38

# Exit status of the inside process when it could not set up the sandbox, so the monitor can tell.
SETUP_FAILED = 70


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confidential_nb.enclave.jail")
    parser.add_argument("--spec", required=True, help="the filesystem view as JSON")
    parser.add_argument("--uid", type=int, required=True, help="host uid of the sandbox when started as root")
    parser.add_argument("--gid", type=int, required=True, help="host gid of the sandbox when started as root")
    parser.add_argument("--cgroup", type=Path, help="a cgroup directory to join before starting the sandbox")
    parser.add_argument("zygote", nargs=argparse.REMAINDER, help="the zygote's command line, after --")
    arguments = parser.parse_args(argv)
    command = [part for part in arguments.zygote if part != "--"]
    spec = ViewSpec.from_json(arguments.spec)

    libc = ctypes.CDLL(None)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    privileged = os.geteuid() == 0
    if arguments.cgroup is not None:
        join_cgroup(arguments.cgroup)
    uid, gid = os.getuid(), os.getgid()

    # This process enters only the PID namespace's parent side, so it keeps the host's mounts to clean up with.
    namespaces.unshare(namespaces.CLONE_NEWPID if privileged else namespaces.CLONE_NEWPID | namespaces.CLONE_NEWUSER)
    if not privileged:
        namespaces.write_id_maps(uid, gid)

    pid = os.fork()
    if pid == 0:
        _enter(spec, arguments.uid, arguments.gid, privileged, command)
    status = _wait_for(pid)
    if arguments.cgroup is not None:
        leave_and_remove_cgroup(arguments.cgroup)
    return status


def _enter(spec: ViewSpec, uid: int, gid: int, privileged: bool, command: list[str]) -> None:
    """Become the sandboxed zygote: PID 1 of the new namespace, in the view, unprivileged. Never returns."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        namespaces.unshare(namespaces.CLONE_NEWNS | namespaces.CLONE_NEWNET | namespaces.CLONE_NEWIPC | namespaces.CLONE_NEWUTS)
        new_root = os.path.join(spec.scratch_root, "view")
        # Only the leaf: a scratch root the monitor removed after a start cut short must not come back.
        with contextlib.suppress(FileExistsError):
            os.mkdir(new_root, mode=0o700)
        build_view(spec, new_root)
        # The view's mount point is an empty directory in the scratch root, which runs should not see.
        os.rmdir(new_root)
        os.chdir(spec.scratch_root)
        if privileged:
            _become(uid, gid)
        else:
            namespaces.drop_capabilities()
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        # Changing credentials cleared the parent-death signal, so set it again.
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # Setup errors went to the monitor through stderr; the zygote and its runners get /dev/null.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.execv(command[0], command)
    except BaseException as exc:  # Report any setup failure through the exit status; the monitor names it.
        sys.stderr.write(f"sandbox setup failed: {type(exc).__name__}: {exc}\n")
    os._exit(SETUP_FAILED)


def _become(uid: int, gid: int) -> None:
    """Switch from root to `uid` and `gid` with no supplementary groups; the kernel clears every capability."""
    namespaces.drop_bounding_set()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if namespaces.effective_capabilities() != 0:
        raise PermissionError("capabilities remain after switching to the runner user")


def _wait_for(pid: int) -> int:
    """Wait for PID 1 of the sandbox and return its exit status in the shell's convention."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
