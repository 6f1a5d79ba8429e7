"""The registry of deployed functions, kept under the key home.

Layout under ``<home>/functions``::

    <id>/bundle.zip       the bundle as a deterministic zip (bundles.bundle_to_zip)
    <id>/function.json    {"id", "name", "checksum", "created"}
    names.json            {name: id}, the function each name resolves to
    .lock                 serialises changes between processes

Each deploy gets a new random id, even for code deployed before, so a
function can be deleted without touching another deploy of the same code.
A name resolves to the latest deploy that used it; earlier deploys keep
their ids. A function folder is written under a temporary name and renamed
into place, and names.json is replaced atomically after it, so a deploy that
fails at any step leaves the registry as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import keys
from .bundles import Bundle, bundle_checksum, bundle_to_zip, check_requirements, read_zip, validate_cape_app
from .errors import BundleError

log = logging.getLogger("confidential_nb.registry")

FUNCTION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CHECKSUM = re.compile(r"^[0-9a-f]{64}$")
_LIST_HINT = "run 'confidential-nb list' to see the deployed functions"


@dataclass(frozen=True)
class FunctionRef:
    """A deployed function: its id, its name and the checksum of its bundle."""

    id: str
    name: str
    checksum: str

    def __post_init__(self) -> None:
        check_function_id(self.id)
        check_function_name(self.name)
        if not isinstance(self.checksum, str) or not _CHECKSUM.match(self.checksum):
            raise BundleError(f"function checksum {self.checksum!r} is not 64 lowercase hex digits")

    def to_json(self) -> str:
        """Return the reference as a JSON object with keys id, name and checksum."""
        return json.dumps({"id": self.id, "name": self.name, "checksum": self.checksum}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> FunctionRef:
        """Parse a JSON object with string keys id, name and checksum; other keys are ignored."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"function reference is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BundleError("function reference must be a JSON object with id, name and checksum")

        values = [data.get(key) for key in ("id", "name", "checksum")]
        if not all(isinstance(value, str) for value in values):
            raise BundleError("function reference is missing id, name or checksum, or one is not a string")
        return cls(id=data["id"], name=data["name"], checksum=data["checksum"])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the reference as JSON to ``path``."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FunctionRef:
        """Read a reference written by ``save``."""
        try:
            return cls.from_json(Path(path).read_bytes())
        except OSError as exc:
            raise BundleError(f"cannot read function reference {os.fspath(path)!r}: {exc.strerror or exc}") from exc


def check_function_id(value: object) -> str:
    """Return ``value`` if it is a valid function id (8 to 64 of ``A-Za-z0-9_-``), else raise BundleError."""
    if not isinstance(value, str) or not FUNCTION_ID.match(value):
        raise BundleError(f"invalid function id {value!r}: expected 8 to 64 letters, digits, '_' or '-'; "
                          f"{_LIST_HINT}")
    return value


def check_function_name(value: object) -> str:
    """Return ``value`` if it is a valid function name, else raise BundleError."""
    if not isinstance(value, str) or not FUNCTION_NAME.match(value):
        raise BundleError(f"invalid function name {value!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return value


def functions_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder of deployed functions under the key home (it may not exist yet)."""
    return (Path(home) if home is not None else keys.home_dir()) / "functions"


def deploy(bundle: Bundle, name: str | None = None, home: str | os.PathLike[str] | None = None) -> FunctionRef:
    """Validate the bundle as a Cape app, store it under a new id and point ``name`` to it.

    ``name`` defaults to the bundle's name (its folder or zip name).
    Requirement warnings are logged. Raises BundleError when validation
    fails or when the registry cannot be written; the registry is then
    unchanged.
    """
    validate_cape_app(bundle)
    check_requirements(bundle)
    function_name = check_function_name(name if name is not None else bundle.name)
    root = functions_dir(home)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)

    with _locked(root):
        names = _read_names(root)
        if FUNCTION_ID.match(function_name) and (root / function_name).is_dir():
            raise BundleError(f"function name {function_name!r} is already a function id; choose another name")

        ref = FunctionRef(id=_new_id(root, names), name=function_name, checksum=bundle_checksum(bundle))
        try:
            _store(root, ref, bundle)
        except OSError as exc:
            raise BundleError(f"deploy of {function_name!r} failed while writing to {str(root)!r}: "
                              f"{exc.strerror or exc}; the registry is unchanged") from exc
        _point_name(root, names, ref)

    log.info("deployed function %s as %s (checksum %s)", ref.id, ref.name, ref.checksum)
    return ref


def _new_id(root: Path, names: dict[str, str]) -> str:
    while True:
        candidate = secrets.token_urlsafe(12)
        # An id starting with "-" would read as an option on the command line ('confidential-nb run -x...').
        if candidate[0] in "-_":
            continue
        if candidate not in names and not _function_folder(root, candidate).exists():
            return candidate


def _store(root: Path, ref: FunctionRef, bundle: Bundle) -> None:
    """Write the function folder under a temporary name, then rename it into place."""
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
    record = {"id": ref.id, "name": ref.name, "checksum": ref.checksum, "created": created}
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".deploy-"))
    try:
        _write_file(staging / "bundle.zip", bundle_to_zip(bundle))
        _write_file(staging / "function.json", (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        os.rename(staging, _function_folder(root, ref.id))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _point_name(root: Path, names: dict[str, str], ref: FunctionRef) -> None:
    """Point ``ref.name`` at ``ref.id`` in names.json, removing the new function folder if that fails."""
    updated = {**names, ref.name: ref.id}
    try:
        _write_names(root, updated)
    except OSError as exc:
        _remove_folder(_function_folder(root, ref.id))
        raise BundleError(f"deploy of {ref.name!r} failed while updating {str(root / 'names.json')!r}: "
                          f"{exc.strerror or exc}; the registry is unchanged") from exc


def resolve(id_or_name: str, home: str | os.PathLike[str] | None = None) -> FunctionRef:
    """Return the deployed function with this id, or the latest one deployed under this name."""
    root = functions_dir(home)
    if isinstance(id_or_name, str) and FUNCTION_ID.match(id_or_name):
        folder = _function_folder(root, id_or_name)
        if folder.is_dir():
            return _read_record(folder)

    if isinstance(id_or_name, str) and FUNCTION_NAME.match(id_or_name):
        function_id = _read_names(root).get(id_or_name)
        if function_id is not None and _function_folder(root, function_id).is_dir():
            return _read_record(_function_folder(root, function_id))
        raise BundleError(f"no deployed function has the id or name {id_or_name!r}; {_LIST_HINT}")

    raise BundleError(f"invalid function id or name {id_or_name!r}: expected letters, digits, '.', '_' or '-'; "
                      f"{_LIST_HINT}")


@dataclass(frozen=True)
class Deployment:
    """A deployed function with its deploy time, an ISO 8601 UTC string as function.json records it."""

    ref: FunctionRef
    created: str


def list_functions(home: str | os.PathLike[str] | None = None) -> list[FunctionRef]:
    """Return every deployed function, oldest first. Damaged entries are logged and left out."""
    return [deployment.ref for deployment in list_deployments(home)]


def list_deployments(home: str | os.PathLike[str] | None = None) -> list[Deployment]:
    """Return every deployed function with its deploy time, oldest first. Damaged entries are logged and left out."""
    root = functions_dir(home)
    if not root.is_dir():
        return []

    found: list[Deployment] = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not FUNCTION_ID.match(folder.name):
            continue
        try:
            record = _read_json(folder / "function.json")
            found.append(Deployment(_record_to_ref(folder, record), str(record.get("created", ""))))
        except BundleError as exc:
            log.warning("skipping damaged function folder %s: %s", folder, exc)
    found.sort(key=lambda deployment: (deployment.created, deployment.ref.id))
    return found


def delete(id_or_name: str, home: str | os.PathLike[str] | None = None) -> FunctionRef:
    """Delete a deployed function by id or name and return its reference.

    A name that pointed to it is removed from names.json; other deploys
    under the same name stay, reachable by id.
    """
    root = functions_dir(home)
    ref = resolve(id_or_name, home)
    with _locked(root):
        names = _read_names(root)
        if names.get(ref.name) == ref.id:
            del names[ref.name]
            _write_names(root, names)
        _remove_folder(_function_folder(root, ref.id))

    log.info("deleted function %s (%s)", ref.id, ref.name)
    return ref


def load_bundle(ref: FunctionRef | str, home: str | os.PathLike[str] | None = None) -> Bundle:
    """Load a deployed function's bundle and check it still has the recorded checksum.

    ``ref`` is a FunctionRef or an id or name. Raises BundleError when the
    stored bundle is missing, or changed since deploy.
    """
    recorded = resolve(ref if isinstance(ref, str) else ref.id, home)
    if isinstance(ref, FunctionRef) and ref.checksum != recorded.checksum:
        raise BundleError(f"function {ref.id} has checksum {recorded.checksum}, not the expected {ref.checksum}")

    path = _function_folder(functions_dir(home), recorded.id) / "bundle.zip"
    bundle = read_zip(path, name=recorded.name)
    actual = bundle_checksum(bundle)
    if actual != recorded.checksum:
        raise BundleError(f"stored bundle of function {recorded.id} was changed after deploy (checksum {actual}, "
                          f"recorded {recorded.checksum}); delete it and deploy again")
    return bundle


def _function_folder(root: Path, function_id: str) -> Path:
    return root / check_function_id(function_id)


def _read_record(folder: Path) -> FunctionRef:
    return _record_to_ref(folder, _read_json(folder / "function.json"))


def _record_to_ref(folder: Path, record: dict[str, Any]) -> FunctionRef:
    ref = FunctionRef.from_json(json.dumps(record))
    if ref.id != folder.name:
        raise BundleError(f"{str(folder / 'function.json')!r} records id {ref.id!r}, not its folder name")
    return ref


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise BundleError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise BundleError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{str(path)!r} must contain a JSON object")
    return data


def _read_names(root: Path) -> dict[str, str]:
    path = root / "names.json"
    if not path.exists():
        return {}

    data = _read_json(path)
    names: dict[str, str] = {}
    for name, function_id in data.items():
        if isinstance(function_id, str) and FUNCTION_NAME.match(name) and FUNCTION_ID.match(function_id):
            names[name] = function_id
        else:
            log.warning("ignoring invalid entry %r in %s", name, path)
    return names


def _write_names(root: Path, names: dict[str, str]) -> None:
    _write_file(root / "names.json", (json.dumps(names, indent=2, sort_keys=True) + "\n").encode())


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, rename."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _remove_folder(folder: Path) -> None:
    """Rename a function folder out of the id namespace, then remove it, so no half-deleted function resolves."""
    trash = folder.with_name(f".delete-{folder.name}-{secrets.token_hex(4)}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
