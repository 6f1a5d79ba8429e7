"""Attestation documents, pinned measurements and run receipts, modelled on AWS Nitro's.

The monitor signs an attestation document with the platform key (the
simulated hypervisor, ECDSA P-384): it binds the host's nonce, three
PCR-like measurements and the enclave's public keys. The host checks it
against what it pinned on first use in the key home (the platform
certificate and the measurements), never against values recomputed from the
same files. Each run then returns a receipt signed by the enclave's own
signing key, binding the run's nonce, code, inputs, policies and result, and
embedding the attestation document for offline checks.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AttestationError
from .keys import PublicKey, b64, canonical_json, unb64
from .progress_records import progress_digest

_DOCUMENT_CONTEXT = b"confidential_nb attestation v1\x00"
_RECEIPT_CONTEXT = b"confidential_nb receipt v1\x00"
MODULE_ID = "confidential_nb-process-enclave"
DIGEST_ALGORITHM = "SHA256"
FRESHNESS_SECONDS = 300
PCR_NAMES = {"0": "runtime files", "1": "installed dependencies", "2": "sandbox configuration"}
# Distributions whose code runs in the enclave; their RECORD files list every installed file with its hash.
ENCLAVE_DEPENDENCIES = ("numpy", "pandas", "cryptography")
PINS_FILE = "pins.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@functools.lru_cache(maxsize=1)
def runtime_measurement() -> str:
    """Return the hex SHA-256 over every Python source file of the installed package (PCR 0)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256(b"confidential_nb runtime v1\x00")
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(relative).to_bytes(4, "big") + relative)
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def dependency_measurement() -> str:
    """Return the hex SHA-256 over the RECORD files of the enclave's dependencies (PCR 1)."""
    from importlib import metadata

    digest = hashlib.sha256(b"confidential_nb dependencies v1\x00")
    for name in ENCLAVE_DEPENDENCIES:
        distribution = metadata.distribution(name)
        record = (distribution.read_text("RECORD") or "").encode()
        header = f"{name}=={distribution.version}".encode()
        digest.update(len(header).to_bytes(4, "big") + header)
        digest.update(len(record).to_bytes(8, "big") + record)
    return digest.hexdigest()


def sandbox_measurement(settings: dict[str, Any]) -> str:
    """Return the hex SHA-256 of the sandbox configuration (PCR 2)."""
    return hashlib.sha256(b"confidential_nb sandbox v1\x00" + canonical_json(settings)).hexdigest()


def measurements(settings: dict[str, Any]) -> dict[str, str]:
    """Return the three measurements an attestation document carries, by PCR index."""
    return {"0": runtime_measurement(), "1": dependency_measurement(), "2": sandbox_measurement(settings)}


def is_editable_install() -> bool:
    """Return True when the package runs from a source tree (``pip install -e``), where PCR 0 moves with every edit."""
    return "site-packages" not in Path(__file__).resolve().parts and "dist-packages" not in Path(__file__).resolve().parts


def _signed_message(context: bytes, body: object) -> bytes:
    """Return the bytes a signature covers; a body JSON cannot encode canonically fails verification."""
    try:
        return context + canonical_json(body)
    except (TypeError, ValueError) as exc:
        raise AttestationError("the signed document contains a value outside canonical JSON, such as Infinity") from exc


@dataclass(frozen=True)
class AttestationDocument:
    """A signed statement of what runs in the enclave and which keys it holds."""

    body: dict[str, Any]
    signature: bytes

    @property
    def public_key(self) -> PublicKey:
        return PublicKey.from_dict(self.body.get("public_key"))

    @property
    def nonce(self) -> str:
        return str(self.body.get("nonce"))

    @property
    def measurements(self) -> dict[str, str]:
        pcrs = self.body.get("pcrs")
        return {str(index): str(value) for index, value in pcrs.items()} if isinstance(pcrs, dict) else {}

    @property
    def debug(self) -> bool:
        return self.body.get("debug") is not False

    @property
    def certificate(self) -> Any:
        from .platform import certificate_from_der

        return certificate_from_der(unb64(self.body.get("certificate"), "platform certificate"))

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the signed document, as receipts name it."""
        return hashlib.sha256(_signed_message(b"", self.to_dict())).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"document": self.body, "signature": b64(self.signature)}

    @classmethod
    def from_dict(cls, data: object) -> AttestationDocument:
        if not isinstance(data, dict) or not isinstance(data.get("document"), dict):
            raise AttestationError("attestation document is not a JSON object with a 'document' field")
        return cls(body=data["document"], signature=unb64(data.get("signature"), "attestation signature"))

    def verify(
        self,
        *,
        nonce: str,
        platform_fingerprint: str,
        expected: dict[str, str] | None,
        allow_debug: bool = False,
        now: dt.datetime | None = None,
    ) -> PublicKey:
        """Check certificate pin, signature, nonce, freshness, debug flag and measurements; return the attested key.

        With ``expected=None`` the measurements are not compared, which only
        the first start of a key home does (trust on first use).
        """
        from .platform import certificate_fingerprint, verify_platform_signature

        certificate = self.certificate
        if certificate_fingerprint(certificate) != platform_fingerprint:
            raise AttestationError(
                f"attestation document is signed by platform {certificate_fingerprint(certificate)[:16]}, "
                f"not the pinned platform {platform_fingerprint[:16]}"
            )
        verify_platform_signature(certificate, self.signature, _signed_message(_DOCUMENT_CONTEXT, self.body), "attestation document")
        self._check_fields(nonce, allow_debug, now or dt.datetime.now(dt.timezone.utc))
        if expected is not None:
            check_measurements(self.measurements, expected)
        return self.public_key

    def _check_fields(self, nonce: str, allow_debug: bool, now: dt.datetime) -> None:
        if self.body.get("module_id") != MODULE_ID or self.body.get("digest") != DIGEST_ALGORITHM:
            raise AttestationError(f"attestation document is for module {self.body.get('module_id')!r} with digest "
                                   f"{self.body.get('digest')!r}, not {MODULE_ID!r} with {DIGEST_ALGORITHM}")
        if self.nonce != nonce:
            raise AttestationError("attestation document does not carry the nonce this client sent; it may be a replay")
        try:
            stamp = dt.datetime.fromisoformat(str(self.body.get("timestamp")))
        except ValueError as exc:
            raise AttestationError("attestation document has no valid timestamp") from exc
        if stamp.tzinfo is None or abs((now - stamp).total_seconds()) > FRESHNESS_SECONDS:
            raise AttestationError(f"attestation document's timestamp {stamp.isoformat()} is more than "
                                   f"{FRESHNESS_SECONDS} seconds from this machine's clock")
        pcrs = self.measurements
        if set(pcrs) != set(PCR_NAMES):
            raise AttestationError(f"attestation document has measurements {sorted(pcrs)}, expected {sorted(PCR_NAMES)}")
        if any(set(value) <= {"0"} for value in pcrs.values()):
            raise AttestationError("attestation document has an all-zero measurement, as a debug enclave reports; refusing it")
        if self.debug and not allow_debug:
            raise AttestationError("attestation document is from a debug enclave; pass allow_debug=True only to inspect one")


def check_measurements(actual: dict[str, str], expected: dict[str, str]) -> None:
    """Raise `AttestationError` naming each measurement that differs from the pinned value."""
    moved = [index for index in sorted(PCR_NAMES) if actual.get(index) != expected.get(index)]
    if not moved:
        return
    names = ", ".join(f"PCR {index} ({PCR_NAMES[index]})" for index in moved)
    advice = ("if you upgraded confidential_nb or its dependencies on purpose, run "
              "'confidential-nb measurements reset' to pin the new values on the next start")
    if "0" in moved and is_editable_install():
        advice = ("this is an editable install, so PCR 0 changes with every edit of the source; "
                  "run 'confidential-nb measurements reset' after editing")
    raise AttestationError(f"enclave measurements moved from the pinned values: {names}; {advice}")


def sign_document(keys: Any, nonce: str, settings: dict[str, Any], user_data: str | None = None, *,
                  debug: bool = False) -> AttestationDocument:
    """Build and sign an attestation document (monitor only).

    A debug enclave returns printed output and exception messages, so its
    sandbox settings include ``debug_output`` and its PCR 2 differs from the
    normal enclave's.
    """
    from .platform import certificate_der

    sandbox = dict(settings, debug_output=True) if debug else settings
    body = {
        "module_id": MODULE_ID,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "digest": DIGEST_ALGORITHM,
        "pcrs": measurements(sandbox),
        "sandbox": sandbox,
        "certificate": b64(certificate_der(keys.platform_certificate)),
        "public_key": keys.public.to_dict(),
        "user_data": user_data,
        "nonce": nonce,
        "debug": debug,
    }
    return AttestationDocument(body=body, signature=keys.platform_sign(_DOCUMENT_CONTEXT + canonical_json(body)))


@dataclass(frozen=True)
class Pins:
    """The platform certificate fingerprint and measurements a host pinned on first use.

    The debug enclave has its own measurements, pinned apart from the normal
    enclave's, so starting one never moves the other's pin.
    """

    platform_fingerprint: str
    measurements: dict[str, str] | None
    debug_measurements: dict[str, str] | None = None

    def measurements_for(self, debug: bool) -> dict[str, str] | None:
        """Return the pinned measurements of the debug or the normal enclave."""
        return self.debug_measurements if debug else self.measurements

    def with_measurements(self, debug: bool, pinned: dict[str, str] | None) -> Pins:
        """Return a copy with the debug or the normal enclave's measurements replaced."""
        if debug:
            return Pins(self.platform_fingerprint, self.measurements, pinned)
        return Pins(self.platform_fingerprint, pinned, self.debug_measurements)

    def to_dict(self) -> dict[str, Any]:
        return {"platform_fingerprint": self.platform_fingerprint, "measurements": self.measurements,
                "debug_measurements": self.debug_measurements}


def load_pins(home: Path) -> Pins | None:
    """Read the key home's pins, or None before the first verified start."""
    path = home / PINS_FILE
    try:
        return pins_from_json(path.read_text())
    except FileNotFoundError:
        return None
    except AttestationError as exc:
        raise AttestationError(f"pin file {path} is damaged ({exc}); delete it to pin again on the next start") from exc


def pins_from_json(text: str) -> Pins:
    """Parse and validate pins: a 64-hex platform fingerprint and PCRs 0 to 2 as 64-hex strings, or null."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AttestationError("not valid JSON") from exc
    if not isinstance(document, dict):
        raise AttestationError("not a JSON object")
    fingerprint = document.get("platform_fingerprint")
    if not isinstance(fingerprint, str) or not _HEX64.match(fingerprint):
        raise AttestationError("platform_fingerprint must be 64 lowercase hex digits")
    measured = _pinned_measurements(document, "measurements")
    return Pins(fingerprint, measured, _pinned_measurements(document, "debug_measurements"))


def _pinned_measurements(document: dict[str, Any], name: str) -> dict[str, str] | None:
    measured = document.get(name)
    if measured is None:
        return None
    valid = isinstance(measured, dict) and set(measured) == set(PCR_NAMES) and all(
        isinstance(value, str) and _HEX64.match(value) for value in measured.values())
    if not valid:
        raise AttestationError(f'{name} must map "0", "1" and "2" to 64 lowercase hex digits, or be null')
    return dict(measured)


def save_pins(home: Path, pins: Pins) -> None:
    from .keys import _write_atomic

    _write_atomic(home / PINS_FILE, (json.dumps(pins.to_dict(), indent=2, sort_keys=True) + "\n").encode(), 0o644)


@dataclass
class Receipt:
    """A signed record of one run, embedding the attestation document of its enclave.

    The body names the run's nonce, the function checksum and the kind of
    function (a cell or a Cape function). It has a digest of each sealed
    input, of each input's policy, of the parameters and of the result, and
    the result's name. It also records the measurements, the debug flag and
    the start and end times, rounded to seconds.
    """

    body: dict[str, Any]
    signature: bytes
    signer: PublicKey | None = field(default=None, compare=False)

    @property
    def run_id(self) -> str:
        return str(self.body.get("run_id"))

    @property
    def function_checksum(self) -> str:
        return str(self.body.get("function_checksum"))

    @property
    def function_kind(self) -> str:
        """What ran: ``"cell"`` (a notebook cell or source text) or ``"cape_function"`` (a bundle's cape_handler).

        Receipts signed before the field existed lack it, and they all came from cells.
        """
        return str(self.body.get("function_kind", "cell"))

    @property
    def result_digest(self) -> str:
        return str(self.body.get("result_digest"))

    @property
    def attestation(self) -> AttestationDocument | None:
        embedded = self.body.get("attestation")
        return AttestationDocument.from_dict(embedded) if embedded is not None else None

    @property
    def debug(self) -> bool:
        """Whether the run was a debug run, which returned printed output and exception messages."""
        return self.body.get("debug") is not False

    def verify(self, *, signer: PublicKey | None = None, platform_fingerprint: str | None = None,
               allow_debug: bool = False, verified_document: AttestationDocument | None = None) -> bool:
        """Return True when the receipt checks out, else raise `AttestationError`.

        The embedded attestation document must be signed by its platform
        certificate. With `platform_fingerprint`, that certificate must be the
        pinned one. The receipt must be signed by the key that the document
        attests, and a `signer` given here must be that same key. A receipt
        of a debug run is rejected unless `allow_debug` is True. When the
        embedded document is exactly `verified_document`, one the caller
        verified before (as `Enclave` does when it starts), its platform
        signature is not checked again.
        """
        if self.debug and not allow_debug:
            raise AttestationError("receipt comes from a debug run, whose printed output and exception messages "
                                   "left the enclave; pass allow_debug=True to accept it")
        key = signer or self.signer
        document = self.attestation
        if document is not None:
            if document.debug and not allow_debug:
                raise AttestationError("receipt's attestation document is from a debug enclave; "
                                       "pass allow_debug=True to accept it")
            if document.debug != self.debug:
                raise AttestationError("receipt's debug flag does not match its attestation document's")
            attested = _verify_embedded(document, platform_fingerprint, self.body.get("attestation_digest"),
                                        verified_document)
            # The whole key, signing part included: a fingerprint covers only the sealing parts.
            if key is not None and key != attested:
                raise AttestationError("receipt's signer is not the key its attestation document attests")
            key = attested
        elif platform_fingerprint is not None:
            raise AttestationError("receipt embeds no attestation document, so its platform cannot be checked")
        if key is None:
            raise AttestationError("no signing key to verify the receipt with; pass signer=Enclave.public_key()")

        key.verify_signature(self.signature, _signed_message(_RECEIPT_CONTEXT, self.body))
        if self.body.get("enclave_key") != key.fingerprint:
            raise AttestationError("receipt names a different enclave key than the one verifying it")
        return True

    def check_binding(self, *, nonce: str, result: bytes, progress: list[dict[str, Any]] | None = None) -> None:
        """Raise `AttestationError` unless the receipt binds this run's nonce, result bytes and progress records.

        `progress`, the records received during the run, is checked against
        the receipt's progress digest when given.
        """
        if self.body.get("nonce") != nonce:
            raise AttestationError("receipt does not carry this run's nonce; it may belong to another run")
        if self.result_digest != hashlib.sha256(result).hexdigest():
            raise AttestationError("receipt's result digest does not match the result received")
        if progress is not None and self.body.get("progress_digest") != progress_digest(progress):
            raise AttestationError(f"receipt's progress digest does not match the {len(progress)} progress records "
                                   "received")

    @property
    def progress_records(self) -> int:
        """How many progress records the enclave sent during the run (0 in receipts older than the field)."""
        count = self.body.get("progress_records", 0)
        return count if type(count) is int else 0

    def to_dict(self) -> dict[str, Any]:
        return {"receipt": self.body, "signature": b64(self.signature)}

    @classmethod
    def from_dict(cls, data: object, signer: PublicKey | None = None) -> Receipt:
        if not isinstance(data, dict) or not isinstance(data.get("receipt"), dict):
            raise AttestationError("receipt is not a JSON object with a 'receipt' field")
        return cls(body=data["receipt"], signature=unb64(data.get("signature"), "receipt signature"), signer=signer)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the receipt as JSON, so a data owner can verify it offline."""
        target = Path(path)
        target.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Receipt:
        """Read a receipt written by `save`."""
        try:
            document = json.loads(Path(path).read_text())
        except (ValueError, RecursionError) as exc:
            raise AttestationError(f"receipt file {path} is not valid JSON or is nested too deeply") from exc
        return cls.from_dict(document)

    def __repr__(self) -> str:
        return f"<Receipt run {self.run_id[:8]} function {self.function_checksum[:12]} result {self.result_digest[:12]}>"


def _verify_embedded(document: AttestationDocument, platform_fingerprint: str | None, digest: object,
                     verified: AttestationDocument | None = None) -> PublicKey:
    from .platform import certificate_fingerprint, verify_platform_signature

    if verified is not None and digest == document.digest == verified.digest and platform_fingerprint is None:
        return verified.public_key

    certificate = document.certificate
    if platform_fingerprint is not None and certificate_fingerprint(certificate) != platform_fingerprint:
        raise AttestationError(f"receipt's enclave ran on platform {certificate_fingerprint(certificate)[:16]}, "
                               f"not on the expected platform {platform_fingerprint[:16]}")
    verify_platform_signature(certificate, document.signature, _signed_message(_DOCUMENT_CONTEXT, document.body),
                              "receipt's attestation document")
    if digest != document.digest:
        raise AttestationError("receipt's attestation digest does not match its embedded document")
    return document.public_key


def sign_receipt(keys: Any, body: dict[str, Any], document: AttestationDocument) -> Receipt:
    """Sign a receipt body with the enclave signing key, embedding `document` (monitor only)."""
    complete = dict(
        body,
        enclave_key=keys.public.fingerprint,
        debug=document.debug,
        measurements=document.measurements,
        attestation=document.to_dict(),
        attestation_digest=document.digest,
    )
    return Receipt(body=complete, signature=keys.sign(_RECEIPT_CONTEXT + canonical_json(complete)), signer=keys.public)
