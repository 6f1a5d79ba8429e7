"""Function bundles: an app folder or zip file loaded into memory, checked and checksummed.

A bundle maps relative POSIX paths to file contents. It is what ``deploy``
stores and what a data owner approves by its checksum, so loading is strict.
Every limit is checked before data is read and again while it is read.
Anything that could write outside a directory, loop, block or differ between
machines is rejected or excluded by a fixed rule. docs/FUNCTIONS.md specifies
the rules and the checksum.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, BinaryIO

from .errors import BundleError

log = logging.getLogger("confidential_nb.bundles")

MiB = 1024 * 1024

# Domain prefix of the bundle checksum, so it never equals a cell checksum or any other SHA-256 in the project.
CHECKSUM_PREFIX = b"confidential_nb bundle v1\x00"

# A path is excluded when any of its components has one of these names: caches, VCS data and OS litter.
EXCLUDED_NAMES = frozenset({
    "__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints",
    "__MACOSX", ".DS_Store", "Thumbs.db",
})
# A file is excluded when its name ends with one of these suffixes (compiled Python, made per interpreter).
EXCLUDED_SUFFIXES = (".pyc", ".pyo")

HANDLER_TEMPLATE = "def cape_handler(input_bytes):"

_MAX_PATH_BYTES = 4096
_MAX_COMPONENT_BYTES = 255
_READ_CHUNK = 64 * 1024
# Zip members smaller than this skip the compression ratio check because they cannot expand much.
_RATIO_CHECK_MIN_BYTES = 1 * MiB
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class BundleLimits:
    """Size limits applied while a bundle is loaded.

    ``max_compression_ratio`` is the largest uncompressed/compressed size
    ratio allowed for a zip member of at least 1 MiB. Deflate reaches about
    1000:1 on runs of one byte, while source code and vendored packages stay
    far below 200:1 (an estimate, not a measured bound).
    """

    max_total_bytes: int = 64 * MiB
    max_files: int = 10_000
    max_file_bytes: int = 32 * MiB
    max_compression_ratio: float = 200.0


DEFAULT_LIMITS = BundleLimits()


@dataclass(frozen=True)
class Bundle:
    """An immutable set of files: relative POSIX path -> content, sorted by the path's UTF-8 bytes.

    ``name`` (the folder or zip name) and ``source`` (where it was loaded
    from) are metadata: they take no part in equality or the checksum.
    """

    files: Mapping[str, bytes]
    name: str = field(default="bundle", compare=False)
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for path, content in self.files.items():
            check_bundle_path(path)
            if not isinstance(content, bytes):
                raise BundleError(f"bundle file {path!r} has content of type {type(content).__name__}, expected bytes")

        _check_file_directory_conflicts(self.files)
        ordered = dict(sorted(self.files.items(), key=lambda item: item[0].encode("utf-8")))
        object.__setattr__(self, "files", MappingProxyType(ordered))

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of all files, in bytes."""
        return sum(len(content) for content in self.files.values())


def check_bundle_path(path: str) -> None:
    """Raise BundleError unless ``path`` is a normal relative POSIX path that stays inside its bundle.

    Rejected: empty paths, absolute paths, drive letters, backslashes, NUL,
    empty, ``.`` or ``..`` components, names that are not valid UTF-8, and
    paths longer than 4096 bytes or with a component longer than 255 bytes.
    """
    if not path:
        raise BundleError("bundle contains an empty path; rebuild the zip file from a folder")
    if "\x00" in path or "\\" in path:
        raise BundleError(f"bundle path {path!r} contains a NUL or a backslash; zip paths must use '/' separators")
    if path.startswith("/") or _DRIVE_LETTER.match(path):
        raise BundleError(f"bundle path {path!r} is absolute; paths must be relative to the app folder")

    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BundleError(f"bundle path {path!r} is not valid UTF-8; rename the file") from exc
    if len(encoded) > _MAX_PATH_BYTES:
        raise BundleError(f"bundle path {path[:80]!r}... is longer than {_MAX_PATH_BYTES} bytes; shorten it")

    for component in path.split("/"):
        if component in ("", ".", ".."):
            raise BundleError(f"bundle path {path!r} contains an empty, '.' or '..' component; "
                              "paths must stay inside the app folder")
        if len(component.encode("utf-8")) > _MAX_COMPONENT_BYTES:
            raise BundleError(f"bundle path {path!r} has a component longer than {_MAX_COMPONENT_BYTES} bytes")


def is_excluded(path: str) -> bool:
    """Return whether a relative path is left out of bundles (caches, VCS data, compiled Python)."""
    components = path.split("/")
    if any(component in EXCLUDED_NAMES for component in components):
        return True
    return components[-1].endswith(EXCLUDED_SUFFIXES)


def _check_file_directory_conflicts(files: Iterable[str]) -> None:
    paths = set(files)
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in paths:
                raise BundleError(f"bundle path {parent!r} is both a file and the folder of {path!r}")


class _Collector:
    """Files gathered while loading, with the file count and total size checked on every addition."""

    def __init__(self, limits: BundleLimits, origin: str) -> None:
        self.limits = limits
        self.origin = origin
        self.files: dict[str, bytes] = {}
        self.total = 0

    def reserve(self, path: str) -> None:
        if path in self.files:
            raise BundleError(f"{self.origin} contains {path!r} twice; remove the duplicate entry")
        if len(self.files) >= self.limits.max_files:
            raise BundleError(f"{self.origin} has more than {self.limits.max_files} files; remove unneeded "
                              "files or raise BundleLimits.max_files")

    def charge(self, path: str, nbytes: int) -> None:
        """Count ``nbytes`` more of ``path``'s content against the limits."""
        self.total += nbytes
        if self.total > self.limits.max_total_bytes:
            raise BundleError(f"{self.origin} is larger than {_size(self.limits.max_total_bytes)} (reached at "
                              f"{path!r}); remove unneeded files or raise BundleLimits.max_total_bytes")

    def add(self, path: str, content: bytes) -> None:
        self.files[path] = content


def _size(nbytes: int) -> str:
    if nbytes % MiB == 0:
        return f"{nbytes // MiB} MiB"
    return f"{nbytes} bytes"


def _read_limited(handle: IO[bytes], path: str, collector: _Collector, declared: int | None) -> bytes:
    """Read a file in chunks, checking the per-file and total limits on the bytes actually read."""
    limit = collector.limits.max_file_bytes
    chunks: list[bytes] = []
    count = 0
    while True:
        chunk = handle.read(_READ_CHUNK)
        if not chunk:
            break

        count += len(chunk)
        if declared is not None and count > declared:
            raise BundleError(f"{collector.origin}: {path!r} expands beyond the size its zip header declares "
                              f"({declared} bytes); the zip file is damaged or forged")
        if count > limit:
            raise BundleError(f"{collector.origin}: {path!r} is larger than {_size(limit)}; remove it or "
                              "raise BundleLimits.max_file_bytes")
        collector.charge(path, len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def read_directory(directory: str | os.PathLike[str], *, limits: BundleLimits = DEFAULT_LIMITS) -> Bundle:
    """Load an app folder into a Bundle.

    Excluded names are skipped without being read. A symbolic link is
    stored as the content of its target when the target is a regular file
    inside the folder. Links that leave the folder, dangle or point to a
    directory are rejected, and so are FIFOs, sockets and device files.
    """
    requested = Path(directory)
    try:
        root = requested.resolve(strict=True)
    except OSError as exc:
        raise BundleError(f"app folder {str(requested)!r} not found: {exc.strerror or exc}") from exc
    if not root.is_dir():
        raise BundleError(f"{str(requested)!r} is not a folder; pass an app folder or a .zip file")

    collector = _Collector(limits, f"app folder {str(requested)!r}")
    for relative, entry_path, status in _walk(root, collector.origin):
        collector.reserve(relative)
        if stat.S_ISLNK(status.st_mode):
            entry_path = _link_target(root, entry_path, relative)
        collector.add(relative, _read_regular_file(entry_path, relative, collector))

    if not collector.files:
        raise BundleError(f"{collector.origin} contains no files; an app folder needs at least app.py")
    return Bundle(collector.files, name=root.name, source=root)


def _walk(root: Path, origin: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """Yield (relative path, filesystem path, lstat) for each file or link, without following links."""
    pending = [("", str(root))]
    while pending:
        prefix, folder = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            raise BundleError(f"{origin}: cannot list {prefix or './'!r}: {exc.strerror or exc}") from exc

        for entry in entries:
            relative = prefix + entry.name
            check_bundle_path(relative)
            if is_excluded(relative):
                log.debug("excluded %s from %s", relative, origin)
                continue

            status = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(status.st_mode):
                pending.append((relative + "/", entry.path))
            elif stat.S_ISREG(status.st_mode) or stat.S_ISLNK(status.st_mode):
                yield relative, entry.path, status
            else:
                raise BundleError(f"{origin}: {relative!r} is a {_file_type(status.st_mode)}, not a regular file; "
                                  "remove it from the folder")


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "directory"
    return f"special file (mode {mode:o})"


def _link_target(root: Path, link: str, relative: str) -> str:
    """Return the real path of a link's target, which must be a regular file inside ``root``."""
    target = os.path.realpath(link)
    if os.path.commonpath([str(root), target]) != str(root):
        raise BundleError(f"symbolic link {relative!r} points outside the app folder (to {target!r}); "
                          "copy the file into the folder instead")

    try:
        status = os.stat(target)
    except OSError as exc:
        raise BundleError(f"symbolic link {relative!r} is dangling ({target!r} not found); "
                          "remove it or restore its target") from exc
    if not stat.S_ISREG(status.st_mode):
        raise BundleError(f"symbolic link {relative!r} points to a {_file_type(status.st_mode)}; only links "
                          "to regular files are followed, so replace it with a copy of the folder")
    return target


def _read_regular_file(path: str, relative: str, collector: _Collector) -> bytes:
    # O_NOFOLLOW and O_NONBLOCK, then fstat: a file swapped for a link or a FIFO after the scan is
    # rejected instead of followed or blocking on open.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        raise BundleError(f"{collector.origin}: cannot read {relative!r}: {exc.strerror or exc}") from exc

    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise BundleError(f"{collector.origin}: {relative!r} is a {_file_type(mode)}, not a regular file")
        return _read_limited(handle, relative, collector, declared=None)


def read_zip(source: str | os.PathLike[str] | bytes, *, limits: BundleLimits = DEFAULT_LIMITS,
             name: str | None = None) -> Bundle:
    """Load a zip file (a path or its bytes) into a Bundle.

    Headers are checked before anything is extracted: entry paths, entry
    types (links and special files are rejected), encryption, file count,
    declared sizes and compression ratios. Sizes are checked again on the
    bytes actually decompressed. When every file sits under one top folder,
    as when a folder is zipped with its name, that folder is removed from
    the paths, so the bundle equals the one loaded from the folder.
    """
    if isinstance(source, bytes):
        origin = "zip data"
        handle: BinaryIO = io.BytesIO(source)
        default_name = "bundle"
    else:
        origin = f"zip file {os.fspath(source)!r}"
        handle = _open_zip_file(Path(source), origin)
        default_name = Path(source).stem

    with handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                return _read_archive(archive, limits, origin, name, default_name)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise BundleError(f"{origin} is damaged or not a supported zip file: {exc}") from exc


def _open_zip_file(path: Path, origin: str) -> BinaryIO:
    # O_NONBLOCK keeps the open of a FIFO from waiting for a writer; fstat then rejects it.
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise BundleError(f"{origin} cannot be opened: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise BundleError(f"{origin} is not a regular file; pass a .zip file or an app folder")
    return os.fdopen(descriptor, "rb")


def _read_archive(archive: zipfile.ZipFile, limits: BundleLimits, origin: str, name: str | None,
                  default_name: str) -> Bundle:
    members = _check_zip_headers(archive.infolist(), limits, origin)
    if not members:
        raise BundleError(f"{origin} contains no files; an app bundle needs at least app.py")

    top_folder = _common_top_folder(members)
    collector = _Collector(limits, origin)
    for path, info in members.items():
        relative = path[len(top_folder) + 1:] if top_folder else path
        collector.reserve(relative)
        with archive.open(info) as member:
            collector.add(relative, _read_limited(member, relative, collector, declared=info.file_size))

    return Bundle(collector.files, name=name or top_folder or default_name)


def _check_zip_headers(infos: list[zipfile.ZipInfo], limits: BundleLimits, origin: str) -> dict[str, zipfile.ZipInfo]:
    """Check every zip header and return the members to read, by path, before any data is decompressed."""
    members: dict[str, zipfile.ZipInfo] = {}
    declared_total = 0
    for info in infos:
        path = info.filename.rstrip("/") if info.is_dir() else info.filename
        check_bundle_path(path)
        if info.filename in members or (path in members and info.is_dir()):
            raise BundleError(f"{origin} contains {info.filename!r} twice; rebuild the zip file from a folder")
        if is_excluded(path) or info.is_dir():
            continue

        _check_zip_entry_type(info, origin)
        if len(members) >= limits.max_files:
            raise BundleError(f"{origin} has more than {limits.max_files} files; remove unneeded files or "
                              "raise BundleLimits.max_files")
        if info.file_size > limits.max_file_bytes:
            raise BundleError(f"{origin}: {path!r} declares {info.file_size} bytes, more than "
                              f"{_size(limits.max_file_bytes)}; remove it or raise BundleLimits.max_file_bytes")

        declared_total += info.file_size
        if declared_total > limits.max_total_bytes:
            raise BundleError(f"{origin} declares more than {_size(limits.max_total_bytes)} uncompressed; "
                              "remove unneeded files or raise BundleLimits.max_total_bytes")
        _check_ratio(info, limits, origin)
        members[path] = info

    _check_file_directory_conflicts(members)
    return members


def _check_zip_entry_type(info: zipfile.ZipInfo, origin: str) -> None:
    if info.flag_bits & 0x1:
        raise BundleError(f"{origin}: {info.filename!r} is encrypted; zip the folder without a password")

    mode = info.external_attr >> 16
    # Unix zip tools (create_system 3) store st_mode in the high 16 bits. Some writers, such as Python's
    # ZipFile.writestr, store permissions without a file type; a type of 0 is taken as a regular file.
    if info.create_system == 3 and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        kind = _file_type(mode)
        hint = "zip the folder without -y/--symlinks so links are stored as files" if stat.S_ISLNK(mode) else \
            "remove it from the folder and zip again"
        raise BundleError(f"{origin}: {info.filename!r} is a {kind}, not a regular file; {hint}")


def _check_ratio(info: zipfile.ZipInfo, limits: BundleLimits, origin: str) -> None:
    if info.file_size < _RATIO_CHECK_MIN_BYTES:
        return

    ratio = info.file_size / max(info.compress_size, 1)
    if ratio > limits.max_compression_ratio:
        raise BundleError(f"{origin}: {info.filename!r} expands {ratio:.0f} times ({info.compress_size} -> "
                          f"{info.file_size} bytes), above the limit of {limits.max_compression_ratio:.0f}; "
                          "this looks like a zip bomb, so it is rejected")


def _common_top_folder(paths: Iterable[str]) -> str:
    """Return the one folder every path sits under, or "" when files sit at the root or in several folders."""
    tops = set()
    for path in paths:
        head, separator, _ = path.partition("/")
        if not separator:
            return ""
        tops.add(head)
    return tops.pop() if len(tops) == 1 else ""


def read_bundle(path: str | os.PathLike[str], *, limits: BundleLimits = DEFAULT_LIMITS) -> Bundle:
    """Load a bundle from an app folder or a zip file."""
    if Path(path).is_dir():
        return read_directory(path, limits=limits)
    return read_zip(path, limits=limits)


def bundle_checksum(bundle: Bundle) -> str:
    """Return the hex SHA-256 of the normalised bundle, as docs/FUNCTIONS.md specifies.

    The digest covers the prefix ``confidential_nb bundle v1\\0`` and then,
    for each file in UTF-8 byte order of its path: the path's length as
    8-byte big-endian, the path, the content's length as 8-byte big-endian,
    the content. Names, timestamps and permissions take no part.
    """
    digest = hashlib.sha256(CHECKSUM_PREFIX)
    for path, content in bundle.files.items():
        encoded = path.encode("utf-8")
        digest.update(struct.pack(">Q", len(encoded)))
        digest.update(encoded)
        digest.update(struct.pack(">Q", len(content)))
        digest.update(content)
    return digest.hexdigest()


def bundle_to_zip(bundle: Bundle) -> bytes:
    """Return a deterministic zip of the bundle: sorted entries, fixed timestamps and modes, no compression.

    Stored (uncompressed) entries keep the bytes independent of the zlib
    build, so the same bundle always gives the same zip file. ``read_zip``
    returns an equal bundle unless all files sit under one top folder,
    which it removes.
    """
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_STORED) as archive:
        for path, content in bundle.files.items():
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, content)
    return output.getvalue()


def write_bundle(bundle: Bundle, directory: str | os.PathLike[str]) -> Path:
    """Write the bundle's files under ``directory``, which must be missing or empty, and return its path.

    Files are created exclusively and without following links, with the
    default permissions the umask allows.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise BundleError(f"cannot write the bundle to {str(target)!r}: the folder is not empty; pass a new folder")

    for path, content in bundle.files.items():
        destination = target.joinpath(*path.split("/"))
        destination.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
    return target


def validate_cape_app(bundle: Bundle) -> None:
    """Raise BundleError unless the bundle is a Cape app: ``app.py`` defining ``cape_handler(input_bytes)``.

    ``cape_handler`` must be a plain ``def`` at the top level of app.py
    that accepts a call with one positional argument. When there are
    several, the last one is checked, as Python keeps the last. So
    ``(input_bytes)``, ``(data, verbose=False)`` and ``(*args)`` pass.
    ``()``, ``(**kwargs)``, ``(a, b)``, a required keyword-only argument
    and ``async def`` fail. Decorators are not evaluated, so a decorator
    that changes the signature is not seen.
    """
    source = bundle.files.get("app.py")
    if source is None:
        raise BundleError(f"bundle {bundle.name!r} has no app.py at its top level; create app.py containing "
                          f"'{HANDLER_TEMPLATE}'")

    module = _parse_app(source)
    handler = _find_handler(module)
    _check_handler_signature(handler)


def _parse_app(source: bytes) -> ast.Module:
    try:
        return ast.parse(source, filename="app.py")
    except SyntaxError as exc:
        raise BundleError(f"app.py has a syntax error at line {exc.lineno}: {exc.msg}; fix it and try again") from exc
    except ValueError as exc:
        raise BundleError(f"app.py cannot be parsed: {exc}") from exc


def _find_handler(module: ast.Module) -> ast.FunctionDef:
    handler: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    for statement in module.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) and statement.name == "cape_handler":
            handler = statement

    if handler is None:
        raise BundleError(f"app.py does not define a top-level function cape_handler; add '{HANDLER_TEMPLATE}'")
    if isinstance(handler, ast.AsyncFunctionDef):
        raise BundleError(f"app.py line {handler.lineno}: cape_handler is async; the enclave calls it "
                          f"synchronously, so define it as '{HANDLER_TEMPLATE}'")
    return handler


def _check_handler_signature(handler: ast.FunctionDef) -> None:
    arguments = handler.args
    positional = [*arguments.posonlyargs, *arguments.args]
    required = len(positional) - len(arguments.defaults)
    required_keywords = [arg.arg for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults)
                         if default is None]

    problem = None
    if not positional and arguments.vararg is None:
        problem = "takes no positional argument"
    elif required > 1:
        problem = f"requires {required} positional arguments"
    elif required_keywords:
        problem = f"requires keyword-only arguments {', '.join(required_keywords)}"
    if problem is not None:
        raise BundleError(f"app.py line {handler.lineno}: cape_handler {problem}, but it is called with one "
                          f"argument, the input bytes; define it as '{HANDLER_TEMPLATE}'")


# Requirements ---------------------------------------------------------------------------------------

_REQUIREMENT_NAME = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)$")
_PIN = re.compile(r"^===?\s*([^\s,;]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One package line of requirements.txt: its distribution name and its ``==`` pin, if any."""

    name: str
    line: int
    pinned: str | None


def normalize_distribution_name(name: str) -> str:
    """Normalise a distribution name as PEP 503 does: lowercase, runs of ``-_.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text: str) -> tuple[list[Requirement], list[str]]:
    """Parse requirements.txt into package requirements and warnings about lines that are not checked.

    Comments, blank lines and options (``-r``, ``--index-url``, ...) are
    skipped, and backslash continuations are joined. Lines with an
    environment marker (``; sys_platform == "win32"``) or without a
    package name (URLs, paths) are not checked and produce a warning,
    because evaluating them needs the ``packaging`` library.
    """
    requirements: list[Requirement] = []
    warnings: list[str] = []
    for number, line in _logical_lines(text):
        if line.startswith("-"):
            warnings.append(f"requirements.txt line {number}: option {line.split()[0]!r} is not checked")
            continue

        match = _REQUIREMENT_NAME.match(line)
        if match is None or _is_location(line, match.group(1)):
            warnings.append(f"requirements.txt line {number}: {line!r} names no package, so it is not checked")
            continue

        name, _, specifier = match.groups()
        if ";" in specifier:
            warnings.append(f"requirements.txt line {number}: {name!r} has an environment marker, so it is not checked")
            continue
        pin = _PIN.match(specifier)
        requirements.append(Requirement(name=name, line=number, pinned=pin.group(1) if pin else None))
    return requirements, warnings


def _is_location(line: str, name: str) -> bool:
    """Return whether a requirement line is a URL, a path or an archive file rather than a package name."""
    if line.startswith((".", "/", "~")):
        return True
    if "://" in line.split("@", 1)[0]:
        return True
    return name.endswith((".whl", ".zip", ".tar.gz", ".tgz"))


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (first line number, line) with comments removed and continuations joined, as pip reads them."""
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        # pip treats '#' as a comment at the line start or after whitespace; a '#' inside a URL stays.
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if line.endswith("\\"):
            pending += line[:-1]
            continue

        line = (pending + line).strip()
        pending = ""
        if line:
            yield start, line
    if pending.strip():
        yield start, pending.strip()


def check_requirements(bundle: Bundle) -> list[str]:
    """Check that every package in requirements.txt is vendored in the bundle or installed here.

    Raises BundleError naming the missing packages and the ``pip install
    --target`` command that vendors them. Returns warnings: vendored
    packages that shadow installed ones, ``==`` pins that differ from the
    version found, and lines that are not checked. "Installed" means
    importable by this interpreter, which the enclave's runners share.
    """
    content = bundle.files.get("requirements.txt")
    warnings: list[str] = []
    if content is not None:
        requirements, warnings = parse_requirements(content.decode("utf-8", errors="replace"))
        warnings += _check_listed_packages(bundle, requirements)

    warnings += _shadowing_warnings(bundle)
    for warning in warnings:
        log.info("bundle %s: %s", bundle.name, warning)
    return warnings


def _check_listed_packages(bundle: Bundle, requirements: list[Requirement]) -> list[str]:
    vendored = _vendored_distributions(bundle)
    top_level = top_level_names(bundle)
    installed = _installed_import_names()
    warnings: list[str] = []
    missing: list[str] = []
    for requirement in requirements:
        key = normalize_distribution_name(requirement.name)
        import_names = installed.get(key, set()) | {_guess_import_name(requirement.name)}
        if key in vendored or top_level & import_names:
            found_version = vendored.get(key)
        elif any(_importable(import_name) for import_name in import_names):
            found_version = _installed_version(requirement.name)
        else:
            missing.append(requirement.name)
            continue

        if requirement.pinned and found_version and not _same_version(requirement.pinned, found_version):
            warnings.append(f"requirements.txt line {requirement.line}: {requirement.name} is pinned to "
                            f"{requirement.pinned} but version {found_version} is the one the enclave will import")

    if missing:
        folder = str(bundle.source) if bundle.source is not None else f"./{bundle.name}"
        raise BundleError(f"requirements.txt lists {', '.join(missing)}, neither vendored in the bundle nor "
                          f"installed; vendor them with: pip install --target {folder} {' '.join(missing)}")
    return warnings


def _vendored_distributions(bundle: Bundle) -> dict[str, str]:
    """Map the normalised name of each ``*.dist-info`` folder at the top of the bundle to its version."""
    found: dict[str, str] = {}
    for path in bundle.files:
        top = path.split("/", 1)[0]
        if top.endswith(".dist-info") and "-" in top:
            name, _, version = top[: -len(".dist-info")].rpartition("-")
            found[normalize_distribution_name(name)] = version
    return found


def top_level_names(bundle: Bundle) -> set[str]:
    """Return the import names the bundle provides at its top: packages, modules and extension modules."""
    names: set[str] = set()
    for path in bundle.files:
        head, separator, rest = path.partition("/")
        if separator and rest == "__init__.py":
            names.add(head)
        elif not separator and path.endswith((".py", ".so", ".pyd")) and path != "app.py":
            names.add(path.split(".", 1)[0])
    return names


def _installed_import_names() -> dict[str, set[str]]:
    """Map each installed distribution's normalised name to the top-level import names it provides."""
    mapping: dict[str, set[str]] = {}
    for import_name, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            mapping.setdefault(normalize_distribution_name(distribution), set()).add(import_name)
    return mapping


def _guess_import_name(distribution: str) -> str:
    return distribution.replace("-", "_").replace(".", "_").lower()


def _importable(import_name: str) -> bool:
    # NOTE: this searches the host's sys.path, which may include the current folder and user
    # site-packages. The enclave starts Python with -I, which searches neither, so a package found
    # only there passes this check but fails to import at run time.
    if not import_name.isidentifier():
        return False
    try:
        return importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):
        return False


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _same_version(pinned: str, found: str) -> bool:
    """Compare versions, treating trailing zero components as equal (1.26 == 1.26.0) and ``1.2.*`` as a prefix."""
    if pinned.endswith(".*"):
        prefix = pinned[:-2]
        return found == prefix or found.startswith(prefix + ".")
    if pinned == found:
        return True

    def release(version: str) -> list[int] | None:
        parts = version.split(".")
        if not all(part.isdigit() for part in parts):
            return None
        numbers = [int(part) for part in parts]
        while numbers and numbers[-1] == 0:
            numbers.pop()
        return numbers

    left, right = release(pinned), release(found)
    return left is not None and left == right


def _shadowing_warnings(bundle: Bundle) -> list[str]:
    warnings = []
    for name in sorted(top_level_names(bundle)):
        if not _importable(name):
            continue
        spec = importlib.util.find_spec(name)
        where = spec.origin if spec is not None and spec.origin else "this interpreter"
        warnings.append(f"the bundle's {name!r} shadows the installed module from {where}; the handler "
                        "will import the bundle's copy")
    return warnings
