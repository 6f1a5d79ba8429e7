"""Isolation applied to runner processes, and the report of which layers are active.

Each runner gets a new session and process group, so a timeout kills every
descendant that stays in the group. It also gets ``no_new_privs``, a
non-dumpable process, a clean environment, a private scratch directory as
working directory and ``TMPDIR``, no inherited descriptors beyond its
channel, and limits on address space, CPU time, file size and open files.
Where the process may create one (as root), each runner also gets its own
network namespace. Mount and PID namespaces, seccomp and a separate uid are
not applied yet and are reported as inactive.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
from dataclasses import dataclass

_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNET = 0x40000000

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


def clean_environment() -> dict[str, str]:
    """Return the environment enclave processes start with: no user variables."""
    environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg"}
    environment.update(SINGLE_THREAD_ENVIRONMENT)
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
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no Threads line")


def address_space_bytes() -> int:
    """Return this process's virtual memory size (VmSize), which RLIMIT_AS bounds."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmSize line")


def _prctl(option: int, value: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def isolate_runner(scratch: str, keep_fd: int, limits: Limits) -> dict[str, bool]:
    """Apply every available layer to the current (freshly forked) process."""
    layers = {"process_group": False, "no_new_privs": False, "not_dumpable": False, "clean_environment": False,
              "scratch_directory": False, "closed_descriptors": False, "resource_limits": False,
              "network_namespace": False}

    # A new network namespace has only a loopback interface, which is down, and its own abstract sockets.
    layers["network_namespace"] = _unshare(_CLONE_NEWNET)
    os.setsid()
    layers["process_group"] = True
    layers["no_new_privs"] = _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    layers["not_dumpable"] = _prctl(_PR_SET_DUMPABLE, 0)

    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, 65536)
    layers["closed_descriptors"] = True

    os.chdir(scratch)
    os.environ.clear()
    os.environ.update(clean_environment())
    os.environ.update({"TMPDIR": scratch, "HOME": scratch})
    layers["scratch_directory"] = True
    layers["clean_environment"] = True

    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    layers["resource_limits"] = True
    return layers


def _unshare(flags: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.unshare(flags) == 0)


@functools.lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Return whether runners can get a network namespace, probed once in a short-lived child.

    Creating one needs CAP_SYS_ADMIN (root, as on these machines); the
    probe's child runs no user code and exits at once.
    """
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _unshare(_CLONE_NEWNET) else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def layer_report() -> dict[str, bool]:
    """Return which isolation layers runners get on this machine."""
    return {
        "process_group": True,
        "no_new_privs": True,
        "not_dumpable": True,
        "clean_environment": True,
        "scratch_directory": True,
        "closed_descriptors": True,
        "resource_limits": True,
        "separate_uid": False,
        "network_namespace": network_namespace_available(),
        "mount_namespace": False,
        "pid_namespace": False,
        "seccomp": False,
    }
