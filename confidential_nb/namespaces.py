"""Linux namespace, mount and capability calls through ctypes.

Python 3.11 has no ``os.unshare`` and no mount API, so the sandbox calls
libc directly. Every wrapper raises `OSError` with the errno and the call
that failed, so a missing permission shows up as a clear reason in the
sandbox's layer report.
"""

from __future__ import annotations

import ctypes
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522

# pivot_root has no libc wrapper; numbers from arch/x86/entry/syscalls/syscall_64.tbl and
# include/uapi/asm-generic/unistd.h (which arm64 uses).
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, call: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{call} failed: {os.strerror(error)}")


def unshare(flags: int) -> None:
    """Move this process into new namespaces (see unshare(2))."""
    _check(_libc.unshare(flags), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """Mount `source` on `target` (see mount(2))."""
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None), f"mount {source} on {target}")


def bind_read_only(source: str, target: str) -> None:
    """Bind `source` (and the mounts below it) on `target`, read-only and without set-user-ID or devices."""
    mount(source, target, None, MS_BIND | MS_REC)
    mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def bind_writable(source: str, target: str) -> None:
    """Bind `source` on `target`, writable but without set-user-ID files, devices or programs."""
    mount(source, target, None, MS_BIND)
    mount("none", target, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def make_mounts_private() -> None:
    """Stop mount events from propagating between this mount namespace and its parent."""
    mount("none", "/", None, MS_REC | MS_PRIVATE)


def pivot_root_here() -> None:
    """Make the current directory the root and detach the old root (pivot_root(".", ".") idiom)."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount2 of the old root")
    os.chdir("/")


def write_id_maps(uid: int, gid: int) -> None:
    """Map `uid` and `gid` to themselves in a new user namespace, the only mapping an unprivileged process may write."""
    with open("/proc/self/setgroups", "w") as setgroups:
        setgroups.write("deny")
    with open("/proc/self/uid_map", "w") as uid_map:
        uid_map.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as gid_map:
        gid_map.write(f"{gid} {gid} 1")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_bounding_set() -> None:
    """Empty the capability bounding set, so no later execve can regain a capability; needs CAP_SETPCAP."""
    with open("/proc/sys/kernel/cap_last_cap") as last_cap:
        last = int(last_cap.read())
    for capability in range(last + 1):
        _check(_libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0), f"dropping capability {capability} from the bounding set")


def drop_capabilities() -> None:
    """Empty every capability set of this thread: bounding, ambient, effective, permitted and inheritable.

    A process without any effective capability cannot change its bounding
    set, so it skips that step. With ``no_new_privs`` set, no later execve
    could use the bounding set to gain a capability anyway.
    """
    if effective_capabilities() != 0:
        drop_bounding_set()
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def status_field(name: str) -> str:
    """Return the first word of the field `name` in /proc/self/status, such as "2" for ``Threads:\t2``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{name}:"):
                return line.split()[1]
    raise RuntimeError(f"/proc/self/status has no {name} line")


def effective_capabilities() -> int:
    """Return this process's effective capability mask."""
    return int(status_field("CapEff"), 16)
