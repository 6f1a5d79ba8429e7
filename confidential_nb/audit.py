"""A runtime audit hook for runners: a last line that catches mistakes, not the sandbox boundary.

`install_audit_hook` adds a ``sys.addaudithook`` hook that raises
``PermissionError`` for the audit events of networking, process creation,
ctypes, signals to other processes, raising resource limits, and file
access outside an allow-list.

NOTE: the hook cannot be the boundary. Many ways to start processes or read
files raise no audit event at all (``_posixsubprocess.fork_exec``, C
extensions such as pyarrow's file readers, ``os.stat``). Cell code can rebind
any module attribute, this module's functions and ``os.path.realpath``
included, to change what the hook does. A path checked here can be swapped
for a symlink before the kernel opens it. Every outer layer
(seccomp, namespaces, mount view, resource limits) must hold without it.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import sysconfig
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("confidential_nb.audit")

# Events denied whatever their arguments: process creation, limit changes (root may raise its hard
# limits), SQLite extension loading and the URL clients, whose sockets would be denied later anyway.
_DENIED_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "pty.spawn", "os.startfile", "webbrowser.open",
    "resource.setrlimit", "resource.prlimit",
    "sqlite3.enable_load_extension", "sqlite3.load_extension",
    "urllib.Request", "http.client.connect",
})
# Every event of these families is denied: all of socket (creation, connect, bind, name lookups) and
# all of ctypes (loading libraries, calling functions, reading raw memory).
_DENIED_PREFIXES = ("socket.", "ctypes.")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_DEVICE_FILES = ("/dev/null",)

# The path arguments of each file event as (position, access, position of its dir_fd or None).
# Positions follow the CPython 3.11 audit events table; "write" covers every change to the file system.
_PATH_EVENTS: dict[str, tuple[tuple[int, str, int | None], ...]] = {
    "os.listdir": ((0, "read", None),),
    "os.scandir": ((0, "read", None),),
    "os.chdir": ((0, "read", None),),
    "os.link": ((0, "read", 2), (1, "write", 3)),
    "os.symlink": ((1, "write", 2),),
    "os.remove": ((0, "write", 1),),
    "os.rename": ((0, "write", 2), (1, "write", 3)),
    "os.mkdir": ((0, "write", 2),),
    "os.rmdir": ((0, "write", 1),),
    "os.chmod": ((0, "write", 2),),
    "os.chown": ((0, "write", 3),),
    "os.chflags": ((0, "write", None),),
    "os.lchflags": ((0, "write", None),),
    "os.truncate": ((0, "write", None),),
    "os.utime": ((0, "write", 3),),
    "os.setxattr": ((0, "write", None),),
    "os.removexattr": ((0, "write", None),),
    "shutil.rmtree": ((0, "write", 1),),
    "sqlite3.connect": ((0, "write", None),),
}


@dataclass(frozen=True)
class _Roots:
    """The resolved directories and single files a runner may read and write."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    files: tuple[str, ...]
    proc_self: str


def default_read_roots() -> list[str]:
    """Return the directories every runner may read: the standard library, site-packages and sys.path.

    Time zone data is included because pandas loads zones through zoneinfo.
    """
    paths = sysconfig.get_paths()
    candidates = [paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths]
    # An empty sys.path entry means the working directory at import time, which is not library code.
    candidates += [entry for entry in sys.path if isinstance(entry, str) and entry]
    candidates += list(zoneinfo.TZPATH)
    # The package itself, which an editable install serves from outside site-packages.
    candidates.append(str(Path(__file__).resolve().parent))
    return [path for path in candidates if os.path.isdir(path)]


def install_audit_hook(read_roots: Sequence[str], write_roots: Sequence[str]) -> None:
    """Install the runner audit hook, which stays for the life of the process.

    `read_roots` are directories to read on top of `default_read_roots`, and
    `write_roots` are the only directories that may be changed (they are
    readable too). Install it after the last fork, after creating every
    socket and after using ctypes (so after `seccomp.install_filter`),
    because those events are denied from then on. Raises ValueError for a
    root that resolves to ``/``, which would disable the file checks.
    """
    roots = _build_roots(read_roots, write_roots)
    check = _make_hook(roots)
    sys.addaudithook(check)
    logger.debug("audit hook installed with %d read roots and %d write roots", len(roots.read), len(roots.write))


def _build_roots(read_roots: Sequence[str], write_roots: Sequence[str]) -> _Roots:
    for root in (*read_roots, *write_roots):
        if os.path.realpath(root) == "/":
            raise ValueError(f"audit hook root {root!r} resolves to '/', which would allow every path")

    write = _resolve_all(write_roots)
    read = tuple(dict.fromkeys((*_resolve_all(read_roots), *write, *resolved_default_read_roots())))
    return _Roots(read, write, _DEVICE_FILES, f"/proc/{os.getpid()}")


@functools.cache
def resolved_default_read_roots() -> tuple[str, ...]:
    """Return `default_read_roots` resolved, computed once per process.

    The zygote calls it before it forks, so runners inherit the result and
    installing the hook costs them no file system lookups for these roots.
    The roots depend only on the interpreter and the installed packages,
    which do not change while the zygote runs.
    """
    return tuple(path for path in _resolve_all(default_read_roots()) if path != "/")


def _resolve_all(paths: Sequence[str]) -> tuple[str, ...]:
    return tuple(os.path.realpath(path) for path in paths)


def _make_hook(roots: _Roots) -> Callable[[str, tuple[Any, ...]], None]:
    own_pid = os.getpid()

    def check(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            _check_open(args, roots)
            return

        # Most events fire for reasons that do not matter here, so one dict lookup ends them.
        spec = _PATH_EVENTS.get(event)
        if spec is not None:
            _check_path_event(event, args, spec, roots)
        elif event in ("os.kill", "os.killpg"):
            _check_signal(event, args, own_pid)
        elif event in _DENIED_EVENTS or event.startswith(_DENIED_PREFIXES):
            raise PermissionError(f"{event} denied in the runner")

    return check


def _check_open(args: tuple[Any, ...], roots: _Roots) -> None:
    path, mode, flags = args[0], args[1], args[2]
    if isinstance(path, int):
        return
    text = _exact_text(path)
    # O_TMPFILE needs O_WRONLY or O_RDWR, so it counts as a write to its directory.
    access = "write" if flags & _WRITE_FLAGS else "read"

    # Only os.open reports mode None, and it does not report its dir_fd, so a relative path may be
    # relative to a directory other than the working directory the check would use.
    if mode is None and not text.startswith("/"):
        raise PermissionError("os.open of a relative path denied: its dir_fd cannot be checked, so pass an absolute path")

    resolved = os.path.realpath(text)
    if not _path_allowed(resolved, access, roots):
        raise PermissionError(f"open for {access} denied: the path is outside the runner's {access} roots")


def _check_path_event(event: str, args: tuple[Any, ...], spec: tuple[tuple[int, str, int | None], ...],
                      roots: _Roots) -> None:
    for index, access, dir_fd_index in spec:
        path = args[index]
        if isinstance(path, int):
            continue
        text = _exact_text(path if path is not None else ".")

        dir_fd = args[dir_fd_index] if dir_fd_index is not None and dir_fd_index < len(args) else None
        if isinstance(dir_fd, int) and dir_fd >= 0 and not text.startswith("/"):
            text = os.path.join(_descriptor_path(event, dir_fd), text)

        resolved = os.path.realpath(text)
        if not _path_allowed(resolved, access, roots):
            raise PermissionError(f"{event} denied: the path is outside the runner's {access} roots")


def _descriptor_path(event: str, fd: int) -> str:
    """Return the path of the directory open as `fd`, read from /proc because events carry only the number."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:
        raise PermissionError(f"{event} with dir_fd {fd} denied: its directory cannot be found") from exc


def _check_signal(event: str, args: tuple[Any, ...], own_pid: int) -> None:
    # signal.pthread_kill is not checked because it can only reach threads of this process.
    target = args[0]
    if target != own_pid:
        raise PermissionError(f"{event} of another process denied: a runner may signal only itself")


def _exact_text(path: object) -> str:
    """Return `path` as an exact str, without calling methods that a str or bytes subclass may override."""
    if type(path) is str:
        return path
    if isinstance(path, str):
        return "".join((path,))
    if isinstance(path, bytes):
        return os.fsdecode(b"".join((path,)))
    # Python 3.11 converts path-like objects before it raises "open", so this branch is for other events.
    if isinstance(path, os.PathLike):
        return os.fsdecode(os.fspath(path))
    raise PermissionError(f"path of type {type(path).__name__} cannot be checked by the runner audit hook")


def _path_allowed(resolved: str, access: str, roots: _Roots) -> bool:
    if resolved in roots.files:
        return True
    if access == "write":
        return _under_any(resolved, roots.write)

    # /proc/<own pid> and its task directories are readable, except the mem files that expose the whole
    # address space.
    if _under_any(resolved, (roots.proc_self,)):
        return not resolved.endswith("/mem")
    return _under_any(resolved, roots.read)


def _under_any(path: str, roots: tuple[str, ...]) -> bool:
    for root in roots:
        if path == root or path.startswith(root + "/"):
            return True
    return False
