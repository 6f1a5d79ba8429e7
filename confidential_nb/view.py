"""The filesystem view of the enclave's runners: only what a run needs, read-only.

The monitor computes a `ViewSpec` from its own interpreter: system
libraries, the interpreter and its prefixes, every import path and this
package. `build_view` then assembles those paths on a fresh tmpfs inside a
private mount namespace and makes it the root. The user's home, the key
home and the rest of the disk are simply absent. The only writable path is
the scratch root, which contains one private directory per run.

Interpreters often live inside a home directory that only its owner may
enter (pyenv under /root, mode 0700). The view re-creates each parent
directory of an exposed path with mode 0755, so an unprivileged runner can
reach the interpreter without seeing anything else in that home.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import namespaces

# Top-level system directories; merged-/usr systems have symlinks for all but /usr.
_SYSTEM_DIRECTORIES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Files of /etc that the dynamic linker and the time functions read.
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_DEVICES = ("null", "zero", "full", "random", "urandom")


@dataclass(frozen=True)
class ViewSpec:
    """Runner filesystem: read-only paths, symbolic links to re-create and the writable scratch root."""

    read_only: list[str] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)
    scratch_root: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ViewSpec:
        data = json.loads(text)
        return cls(read_only=list(data["read_only"]), symlinks=dict(data["symlinks"]), scratch_root=str(data["scratch_root"]))


def view_spec(scratch_root: str) -> ViewSpec:
    """Return the view for this interpreter, its import paths and this package."""
    read_only: list[str] = []
    symlinks: dict[str, str] = {}
    for directory in _SYSTEM_DIRECTORIES:
        if os.path.islink(directory):
            symlinks[directory] = os.readlink(directory)
        elif os.path.isdir(directory):
            read_only.append(directory)
    read_only += [path for path in _ETC_FILES if os.path.exists(path)]

    for path in _python_paths():
        _add_path(path, read_only, symlinks)
    return ViewSpec(read_only=_outermost(read_only), symlinks=symlinks, scratch_root=scratch_root)


def _python_paths() -> list[str]:
    """Return the interpreter, its prefixes, the import paths and this package's directory."""
    paths = [sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    paths += [value for value in sysconfig.get_paths().values() if value]
    paths += [entry for entry in sys.path if entry and os.path.isabs(entry)]
    paths.append(str(Path(__file__).resolve().parent))
    return [path for path in paths if os.path.exists(path)]


def _add_path(path: str, read_only: list[str], symlinks: dict[str, str]) -> None:
    """Expose `path` at its real location, and keep a symbolic link where the given path is one."""
    real = os.path.realpath(path)
    read_only.append(real)
    if os.path.abspath(path) != real and os.path.islink(path):
        symlinks[os.path.abspath(path)] = os.readlink(path)


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths that lie inside another path of the list; a recursive bind already exposes them."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(path == parent or path.startswith(parent.rstrip("/") + "/") for parent in kept):
            kept.append(path)
    return sorted(kept)


def build_view(spec: ViewSpec, new_root: str) -> None:
    """Assemble the view on a tmpfs at `new_root` and make it this mount namespace's root.

    Runs as root of the new mount namespace, before the process drops to the
    runner's user. Afterwards the root is read-only and only the scratch
    root is writable.
    """
    namespaces.make_mounts_private()
    namespaces.mount("tmpfs", new_root, "tmpfs", namespaces.MS_NOSUID | namespaces.MS_NODEV, "mode=0755")

    for path in spec.read_only:
        target = _target(new_root, path)
        namespaces.bind_read_only(path, target)
    for link, destination in sorted(spec.symlinks.items()):
        _make_parents(new_root, link)
        if not os.path.lexists(new_root + link):
            os.symlink(destination, new_root + link)

    namespaces.bind_writable(spec.scratch_root, _target(new_root, spec.scratch_root))
    _add_devices(new_root)
    os.makedirs(new_root + "/proc", mode=0o755, exist_ok=True)
    namespaces.mount("proc", new_root + "/proc", "proc", namespaces.MS_NOSUID | namespaces.MS_NODEV | namespaces.MS_NOEXEC)

    os.chdir(new_root)
    namespaces.pivot_root_here()
    namespaces.mount("none", "/", None, namespaces.MS_REMOUNT | namespaces.MS_BIND | namespaces.MS_RDONLY
                     | namespaces.MS_NOSUID | namespaces.MS_NODEV)


def _target(new_root: str, path: str) -> str:
    """Create the mount point for `path` inside `new_root`: a directory or an empty file, like the source."""
    _make_parents(new_root, path)
    target = new_root + path
    if os.path.isdir(path):
        os.makedirs(target, mode=0o755, exist_ok=True)
    elif not os.path.exists(target):
        with open(target, "w"):
            pass
    return target


def _make_parents(new_root: str, path: str) -> None:
    """Create each parent of `path` in the view with mode 0755, whatever its mode on the host."""
    current = new_root
    for part in Path(path).parent.parts[1:]:
        current = os.path.join(current, part)
        if not os.path.isdir(current):
            os.mkdir(current)
            os.chmod(current, 0o755)


def _add_devices(new_root: str) -> None:
    """Expose the harmless character devices; /dev is otherwise empty."""
    os.makedirs(new_root + "/dev", mode=0o755, exist_ok=True)
    for name in _DEVICES:
        source = f"/dev/{name}"
        if os.path.exists(source):
            target = f"{new_root}/dev/{name}"
            with open(target, "w"):
                pass
            namespaces.mount(source, target, None, namespaces.MS_BIND)
