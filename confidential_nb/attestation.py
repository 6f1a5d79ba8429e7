"""Attestation documents and run receipts, modelled on AWS Nitro's.

The monitor signs an attestation document with the platform root key (the
simulated hypervisor): it binds the host's nonce, the measurement of the
enclave runtime and the enclave's public keys. The host checks it against the
root key in the key home and against the measurement it computes itself from
the installed package. Each run then returns a receipt signed by the
enclave's own signing key, binding the run's nonce, code and result.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AttestationError
from .keys import PublicKey, b64, canonical_json, unb64, verify_platform_signature

_DOCUMENT_CONTEXT = b"confidential_nb attestation v1\x00"
_RECEIPT_CONTEXT = b"confidential_nb receipt v1\x00"
MODULE_ID = "confidential_nb-process-enclave"


@functools.lru_cache(maxsize=1)
def runtime_measurement() -> str:
    """Return the hex SHA-256 over every Python source file of the installed package.

    The monitor, the zygote and the runners all run this package, so any
    change to its code changes the measurement, as a changed enclave image
    changes Nitro's PCR0.
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256(b"confidential_nb runtime v1\x00")
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(relative).to_bytes(4, "big") + relative)
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


def measurements() -> dict[str, str]:
    """Return the measurements an attestation document carries."""
    import cryptography

    return {
        "runtime": runtime_measurement(),
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
    }


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
        return dict(self.body.get("measurements", {}))

    @property
    def debug(self) -> bool:
        return bool(self.body.get("debug"))

    def to_dict(self) -> dict[str, Any]:
        return {"document": self.body, "signature": b64(self.signature)}

    @classmethod
    def from_dict(cls, data: object) -> AttestationDocument:
        if not isinstance(data, dict) or not isinstance(data.get("document"), dict):
            raise AttestationError("attestation document is not a JSON object with a 'document' field")
        return cls(body=data["document"], signature=unb64(data.get("signature"), "attestation signature"))

    def verify(self, root_public: bytes, *, nonce: str, expected_runtime: str | None = None) -> PublicKey:
        """Check signature, nonce, measurement and debug flag; return the attested key."""
        verify_platform_signature(root_public, self.signature, _DOCUMENT_CONTEXT + canonical_json(self.body), "attestation document")
        if self.body.get("module_id") != MODULE_ID:
            raise AttestationError(f"attestation document is for module {self.body.get('module_id')!r}, not {MODULE_ID!r}")
        if self.nonce != nonce:
            raise AttestationError("attestation document does not carry the nonce this client sent; it may be a replay")
        runtime = self.measurements.get("runtime", "")
        if set(runtime) <= {"0"}:
            raise AttestationError("attestation document has an all-zero runtime measurement, as a debug enclave reports; refusing it")
        expected = expected_runtime or runtime_measurement()
        if runtime != expected:
            raise AttestationError(
                f"enclave runtime measurement {runtime[:16]} differs from the expected {expected[:16]}; "
                "the enclave runs different code than this installation"
            )
        if self.debug:
            raise AttestationError("attestation document is from a debug enclave; debug enclaves are not trusted for sealed data")
        return self.public_key


def sign_document(keys: Any, nonce: str, settings: dict[str, Any]) -> AttestationDocument:
    """Build and sign an attestation document (monitor only)."""
    body = {
        "module_id": MODULE_ID,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "nonce": nonce,
        "measurements": measurements(),
        "sandbox": settings,
        "public_key": keys.public.to_dict(),
        "debug": False,
    }
    return AttestationDocument(body=body, signature=keys.platform_sign(_DOCUMENT_CONTEXT + canonical_json(body)))


@dataclass
class Receipt:
    """A signed record of one run: the nonce, code, inputs, parameters and result digests."""

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
    def result_digest(self) -> str:
        return str(self.body.get("result_digest"))

    def verify(self, *, signer: PublicKey | None = None) -> bool:
        """Return True when the enclave's signing key signed this receipt, else raise `AttestationError`.

        NOTE: a receipt loaded from a file carries its own signer key, so it
        only proves integrity. A data owner checking someone else's receipt
        passes ``signer=`` the key they attested themselves.
        """
        key = signer or self.signer
        if key is None:
            raise AttestationError("no signing key to verify the receipt with; pass signer=Enclave.public_key()")
        key.verify_signature(self.signature, _RECEIPT_CONTEXT + canonical_json(self.body))
        if self.body.get("enclave_key") != key.fingerprint:
            raise AttestationError("receipt names a different enclave key than the one verifying it")
        return True

    def check_binding(self, *, nonce: str, result: bytes) -> None:
        """Raise `AttestationError` unless the receipt binds this run's nonce and result bytes."""
        if self.body.get("nonce") != nonce:
            raise AttestationError("receipt does not carry this run's nonce; it may belong to another run")
        if self.result_digest != hashlib.sha256(result).hexdigest():
            raise AttestationError("receipt's result digest does not match the result received")

    def to_dict(self) -> dict[str, Any]:
        return {"receipt": self.body, "signature": b64(self.signature)}

    @classmethod
    def from_dict(cls, data: object, signer: PublicKey | None = None) -> Receipt:
        if not isinstance(data, dict) or not isinstance(data.get("receipt"), dict):
            raise AttestationError("receipt is not a JSON object with a 'receipt' field")
        return cls(body=data["receipt"], signature=unb64(data.get("signature"), "receipt signature"), signer=signer)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the receipt as JSON, so a data owner can verify it later."""
        target = Path(path)
        document = self.to_dict()
        if self.signer is not None:
            document["signer"] = self.signer.to_dict()
        target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Receipt:
        """Read a receipt written by `save`, with the signer key it names."""
        document = json.loads(Path(path).read_text())
        signer = PublicKey.from_dict(document["signer"]) if "signer" in document else None
        return cls.from_dict(document, signer=signer)

    def __repr__(self) -> str:
        return f"<Receipt run {self.run_id[:8]} function {self.function_checksum[:12]} result {self.result_digest[:12]}>"


def sign_receipt(keys: Any, body: dict[str, Any]) -> Receipt:
    """Sign a receipt body with the enclave signing key (monitor only)."""
    complete = dict(body, enclave_key=keys.public.fingerprint, debug=False)
    return Receipt(body=complete, signature=keys.sign(_RECEIPT_CONTEXT + canonical_json(complete)), signer=keys.public)
