"""The Cape-style Python SDK: get the attested key, seal data, deploy, run and manage functions.

`Client` wraps the lower-level parts (`Enclave`, `seal`, `seal_file`, the
bundle loader and the registry) behind the calls of Cape's SDK, on one key
home. `load_sealing_key` reads a public key that an enclave's operator
exported, so that a data owner can seal on a machine without an enclave.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bundles import Bundle
from .errors import AttestationError, BundleError, ConfidentialNBError
from .keys import PublicKey, home_dir
from .policy import Policy
from .registry import FunctionRef
from .sealing import Sealed

if TYPE_CHECKING:
    from .client import Enclave
    from .results import RunResult

log = logging.getLogger("confidential_nb.sdk")

# A key file is about 2 KiB and an attestation document about 5 KiB, so this bound is generous.
MAX_KEY_FILE_BYTES = 1024 * 1024
SEALED_SUFFIX = ".sealed"
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def check_fingerprint(value: str) -> str:
    """Return a 64-digit hex fingerprint in lowercase, or raise ValueError naming the value."""
    normalised = value.strip().lower()
    if not _FINGERPRINT.match(normalised):
        raise ValueError(f"invalid fingerprint {value!r}: expected 64 hex digits, as 'confidential-nb key' prints")
    return normalised


def load_sealing_key(path: str | os.PathLike[str], expected_fingerprint: str) -> PublicKey:
    """Load an enclave's public key from a file and check it against a fingerprint from a trusted channel.

    The file is either a key file written by ``confidential-nb key --out`` or
    an attestation document written by ``confidential-nb attest --out``. A
    file alone proves nothing, because anyone can write one, so the caller
    must give the fingerprint the enclave's operator published:

    - for a key file, the key's fingerprint;
    - for an attestation document, the key's fingerprint or the platform's
      (``confidential-nb key`` prints both). The document's platform
      signature is checked offline, without its nonce or age, because a
      saved document cannot be fresh.

    Raises `AttestationError` when the file is invalid or the fingerprint
    does not match.
    """
    expected = check_fingerprint(expected_fingerprint)
    source = Path(path)
    document = _read_key_document(source)

    if "document" in document:
        return _key_from_attestation(source, document, expected)
    if "kem" in document:
        key = _parse_key(source, document)
        if key.fingerprint != expected:
            raise AttestationError(
                f"key file {source} contains key {key.fingerprint}, not the expected {expected}; get the key file "
                "and its fingerprint again from the enclave's operator"
            )
        return key
    raise AttestationError(f"{source} is neither a key file from 'confidential-nb key --out' nor an attestation "
                           "document from 'confidential-nb attest --out'")


def _read_key_document(source: Path) -> dict[str, Any]:
    with open(source, "rb") as reader:
        data = reader.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise AttestationError(f"{source} is larger than {MAX_KEY_FILE_BYTES} bytes, so it is not a key file")

    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise AttestationError(f"{source} is not valid JSON; pass the file 'confidential-nb key --out' wrote") from exc
    if not isinstance(document, dict):
        raise AttestationError(f"{source} is not a JSON object; pass the file 'confidential-nb key --out' wrote")
    return document


def _parse_key(source: Path, document: dict[str, Any]) -> PublicKey:
    try:
        return PublicKey.from_dict(document)
    except AttestationError as exc:
        raise AttestationError(f"invalid key file {source}: {exc}") from None


def _key_from_attestation(source: Path, data: dict[str, Any], expected: str) -> PublicKey:
    from .attestation import AttestationDocument
    from .platform import certificate_fingerprint

    try:
        document = AttestationDocument.from_dict(data)
        platform = certificate_fingerprint(document.certificate)
        key = _verify_saved_document(document, platform)
    except AttestationError as exc:
        raise AttestationError(f"invalid attestation document {source}: {exc}") from None

    if expected not in (key.fingerprint, platform):
        raise AttestationError(
            f"attestation document {source} attests key {key.fingerprint} on platform {platform}; neither is the "
            f"expected {expected}. Get the document and the fingerprint again from the enclave's operator"
        )
    log.info("loaded key %s from attestation document %s of platform %s", key.fingerprint, source, platform)
    return key


def _verify_saved_document(document: Any, platform: str) -> PublicKey:
    """Check a saved document's platform signature, module, measurements and debug flag; return its key.

    The nonce and the clock check protect a live session against replayed
    documents. A saved document is old by design, so it is checked against
    its own nonce and at its own timestamp, and the trust comes from the
    fingerprint the caller compares afterwards.
    """
    try:
        signed_at = dt.datetime.fromisoformat(str(document.body.get("timestamp")))
    except ValueError as exc:
        raise AttestationError("the document has no valid timestamp") from exc
    if signed_at.tzinfo is None:
        raise AttestationError("the document's timestamp has no UTC offset")
    key: PublicKey = document.verify(nonce=document.nonce, platform_fingerprint=platform, expected=None, now=signed_at)
    return key


class Client:
    """Cape-style SDK on one key home (default: ``$CONFIDENTIAL_NB_HOME``, see `keys.home_dir`)."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home).resolve() if home is not None else home_dir()

    def key(self) -> PublicKey:
        """Start an enclave on this key home, verify a fresh attestation and return the attested key."""
        from .client import Enclave

        with Enclave(self.home) as enclave:
            return enclave.public_key()

    def encrypt(
        self,
        data: bytes | str | os.PathLike[str] | Any,
        *,
        key: PublicKey | str | os.PathLike[str] | None = None,
        expect_fingerprint: str | None = None,
        policy: Policy | dict[str, Any] | None = None,
        out: str | os.PathLike[str] | None = None,
    ) -> Sealed:
        """Seal bytes, a DataFrame or a file to the enclave's key.

        A path (str or os.PathLike) is sealed one chunk at a time into
        ``out``, by default the path with ``.sealed`` appended, and the
        file-backed `Sealed` is returned. Bytes and DataFrames are sealed in
        memory. ``key`` is a `PublicKey`, a key file or attestation document
        (then ``expect_fingerprint`` is required, see `load_sealing_key`), or
        None for this key home's current key. ``expect_fingerprint`` with any
        key must match it.
        """
        from .sealing import seal, seal_file

        recipient = self._sealing_key(key, expect_fingerprint)
        resolved_policy = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
        if isinstance(data, (str, os.PathLike)):
            source = Path(data)
            target = Path(out) if out is not None else source.with_name(source.name + SEALED_SUFFIX)
            return seal_file(source, target, policy=resolved_policy, key=recipient)

        sealed = seal(data, policy=resolved_policy, key=recipient)
        if out is not None:
            return Sealed.load(sealed.save(out))
        return sealed

    def _sealing_key(self, key: PublicKey | str | os.PathLike[str] | None, expected: str | None) -> PublicKey:
        from .client import ensure_public_key

        if isinstance(key, (str, os.PathLike)):
            if expected is None:
                raise ValueError("a key file needs expect_fingerprint=HEX, the fingerprint the enclave's operator "
                                 "published, because the file alone proves nothing")
            return load_sealing_key(key, expected)

        chosen = key if key is not None else ensure_public_key(self.home)
        if expected is not None and chosen.fingerprint != check_fingerprint(expected):
            raise AttestationError(f"the enclave key is {chosen.fingerprint}, not the expected {expected.lower()}")
        return chosen

    def checksum(self, path: str | os.PathLike[str]) -> str:
        """Return the checksum of an app folder or zip file, as a data owner lists it in a policy."""
        from .bundles import bundle_checksum, read_bundle

        return bundle_checksum(read_bundle(path))

    def deploy(self, path: str | os.PathLike[str], name: str | None = None) -> FunctionRef:
        """Check an app folder or zip file as a Cape app and record it in this key home's registry.

        Requirement warnings are logged on ``confidential_nb.bundles``.
        Raises `BundleError` when the bundle is invalid; the registry is then
        unchanged.
        """
        from . import registry
        from .bundles import read_bundle

        return registry.deploy(read_bundle(path), name, home=self.home)

    def functions(self) -> list[FunctionRef]:
        """Return the deployed functions, oldest first."""
        from . import registry

        return registry.list_functions(self.home)

    def delete(self, id_or_name: str) -> FunctionRef:
        """Delete a deployed function by id or name and return its reference."""
        from . import registry

        return registry.delete(id_or_name, self.home)

    def run(self, function: FunctionRef | str, data: Any = None, *, function_checksum: str | None = None,
            timeout: float | None = None) -> RunResult:
        """Run a deployed function's ``cape_handler`` once on `data` in a fresh enclave and return the result.

        `data` is a `Sealed` (passed through), bytes, a DataFrame, a path to
        a sealed or plain file, or None for empty input; anything not sealed
        yet is sealed on this side to the enclave's attested key. With
        `function_checksum`, a function whose checksum differs is not run.
        """
        with self.connect(function, function_checksum=function_checksum) as session:
            return session.invoke(data, timeout=timeout)

    def connect(self, function: FunctionRef | str, *, function_checksum: str | None = None) -> Session:
        """Start an enclave for repeated runs of one deployed function; close it with ``with`` or `Session.close`."""
        from . import registry
        from .client import Enclave

        ref = function if isinstance(function, FunctionRef) else registry.resolve(function, self.home)
        if function_checksum is not None and ref.checksum != check_fingerprint(function_checksum):
            raise BundleError(f"function {ref.name} ({ref.id}) has checksum {ref.checksum}, not the expected "
                              f"{function_checksum.lower()}; check which code was deployed under that name")
        bundle = registry.load_bundle(ref, self.home)
        return Session(Enclave(self.home), ref, bundle)


class Session:
    """Repeated runs of one deployed function on one warm enclave."""

    def __init__(self, enclave: Enclave, ref: FunctionRef, bundle: Bundle) -> None:
        self.enclave = enclave
        self.function = ref
        self.bundle = bundle

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def invoke(self, data: Any = None, *, timeout: float | None = None,
               progress: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
        """Run the function's ``cape_handler`` on `data` (see `Client.run`) and return the result.

        `progress` receives the progress records of library models trained
        by the handler, as in `Enclave.run`.
        """
        result = self.enclave.invoke(self.bundle, self._sealed(data), timeout=timeout, progress=progress)
        # The enclave computed this from the code it ran, so it also catches a registry changed on disk.
        ran = result.receipt.function_checksum if result.receipt is not None else "unknown"
        if ran != self.function.checksum:
            raise BundleError(f"the enclave ran code with checksum {ran}, not the deployed "
                              f"{self.function.checksum}; deploy the function again")
        return result

    def _sealed(self, data: Any) -> Sealed | None:
        from .sealing import seal

        if data is None or isinstance(data, Sealed):
            return data
        if isinstance(data, (str, os.PathLike)):
            return load_input_file(Path(data), self.enclave.public_key())
        return seal(data, key=self.enclave.public_key())

    def close(self) -> None:
        """Stop the session's enclave."""
        self.enclave.close()


def load_input_file(path: Path, key: PublicKey) -> Sealed:
    """Return a sealed file as it is, or seal a plain file's bytes to `key` in memory."""
    from .sealing import MAGIC, seal

    with open(path, "rb") as handle:
        start = handle.read(len(MAGIC))
    if start == MAGIC:
        return Sealed.load(path)
    if not start and path.stat().st_size == 0:
        raise ConfidentialNBError(f"the input file {path} is empty; pass a file with the function's input data")
    return seal(path.read_bytes(), key=key)
