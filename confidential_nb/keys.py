"""The key home: the simulated platform root key and the enclave's key pairs.

Layout under the home directory (``$CONFIDENTIAL_NB_HOME``, else
``$XDG_DATA_HOME/confidential_nb``, else ``~/.local/share/confidential_nb``)::

    platform/root.key      Ed25519 private key of the simulated hypervisor (0600)
    platform/root.pub      its public key, raw bytes, hex
    enclave/private.json   the enclave's sealing and signing private keys (0600)
    enclave/public.json    the public half, endorsed by the platform key

Only the monitor process reads private files. The host (the notebook kernel,
the CLI) reads ``public.json`` and ``root.pub``. Every write is atomic
(temporary file, fsync, rename) and the directories are owner-only (0700).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AttestationError

KEM_MLKEM768_X25519 = "MLKEM768_X25519"
KEM_X25519 = "X25519"

# HPKE KEM code points: 0x0020 is DHKEM(X25519, HKDF-SHA256) from RFC 9180,
# 0x647A is the ML-KEM-768 + X25519 hybrid from draft-ietf-hpke-pq.
KEM_IDS = {KEM_X25519: 0x0020, KEM_MLKEM768_X25519: 0x647A}

log = logging.getLogger("confidential_nb.keys")

_FINGERPRINT_CONTEXT = b"confidential_nb public key v1\x00"
_ENDORSEMENT_CONTEXT = b"confidential_nb endorsement v1\x00"


def home_dir() -> Path:
    """Return the key home directory (it may not exist yet)."""
    configured = os.environ.get("CONFIDENTIAL_NB_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return (Path(data_home) / "confidential_nb").resolve()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, field_name: str) -> bytes:
    if not isinstance(text, str):
        raise AttestationError(f"{field_name} is missing or not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError as exc:
        raise AttestationError(f"{field_name} is not valid base64") from exc


def canonical_json(value: Any) -> bytes:
    """Encode a JSON value the same way every time, for signing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


@dataclass(frozen=True)
class PublicKey:
    """The enclave's public keys: the HPKE sealing key and the receipt signing key."""

    kem: str
    mlkem768: bytes
    x25519: bytes
    signing: bytes

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 over the KEM id and the sealing key parts (not the signing key)."""
        digest = hashlib.sha256(_FINGERPRINT_CONTEXT)
        digest.update(struct.pack("!H", KEM_IDS[self.kem]))
        digest.update(struct.pack("!I", len(self.mlkem768)) + self.mlkem768)
        digest.update(struct.pack("!I", len(self.x25519)) + self.x25519)
        return digest.hexdigest()

    def to_dict(self) -> dict[str, str]:
        return {
            "kem": self.kem,
            "mlkem768": b64(self.mlkem768),
            "x25519": b64(self.x25519),
            "signing_ed25519": b64(self.signing),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: object) -> PublicKey:
        if not isinstance(data, dict):
            raise AttestationError("public key is not a JSON object")
        kem = data.get("kem")
        if kem not in KEM_IDS:
            raise AttestationError(f"public key names an unknown KEM {kem!r}; expected one of {sorted(KEM_IDS)}")
        key = cls(
            kem=str(kem),
            mlkem768=unb64(data.get("mlkem768", ""), "ML-KEM-768 public key"),
            x25519=unb64(data.get("x25519"), "X25519 public key"),
            signing=unb64(data.get("signing_ed25519"), "Ed25519 signing key"),
        )
        key._check_lengths()
        if data.get("fingerprint") not in (None, key.fingerprint):
            raise AttestationError("public key fingerprint does not match its key bytes")
        return key

    def _check_lengths(self) -> None:
        expected_mlkem = 1184 if self.kem == KEM_MLKEM768_X25519 else 0
        if len(self.mlkem768) != expected_mlkem or len(self.x25519) != 32 or len(self.signing) != 32:
            raise AttestationError("public key has parts of the wrong length")

    def hpke_public_key(self) -> Any:
        """Return the key object that `cryptography`'s HPKE suite encrypts to."""
        from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
        from cryptography.hazmat.primitives.hpke import MLKEM768X25519PublicKey

        classical = x25519.X25519PublicKey.from_public_bytes(self.x25519)
        if self.kem == KEM_X25519:
            return classical
        return MLKEM768X25519PublicKey(mlkem.MLKEM768PublicKey.from_public_bytes(self.mlkem768), classical)

    def verify_signature(self, signature: bytes, message: bytes) -> None:
        """Raise `AttestationError` unless `signature` is this enclave's over `message`."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ed25519

        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.signing).verify(signature, message)
        except InvalidSignature as exc:
            raise AttestationError("signature does not verify under the enclave's signing key") from exc


def endorsement_message(public: PublicKey) -> bytes:
    return _ENDORSEMENT_CONTEXT + canonical_json(public.to_dict())


def verify_platform_signature(root_public: bytes, signature: bytes, message: bytes, subject: str) -> None:
    """Raise `AttestationError` unless the platform root key signed `message`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        ed25519.Ed25519PublicKey.from_public_bytes(root_public).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise AttestationError(f"{subject} is not signed by this machine's platform key") from exc


def load_root_public(home: Path) -> bytes:
    """Read the platform root public key that every attestation is checked against."""
    path = home / "platform" / "root.pub"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError as exc:
        raise AttestationError(f"platform root key {path} not found; start an enclave once to create the key home") from exc
    except ValueError as exc:
        raise AttestationError(f"platform root key {path} is not hex") from exc


def load_public_key(home: Path) -> PublicKey:
    """Load the enclave's public key from the key home and check the platform endorsement."""
    path = home / "enclave" / "public.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise AttestationError(f"public key file {path} is not valid JSON; delete the key home to start over") from exc

    if not isinstance(document, dict):
        raise AttestationError(f"public key file {path} is not a JSON object; delete the key home to start over")
    try:
        public = PublicKey.from_dict(document.get("key"))
        signature = unb64(document.get("endorsement"), "platform endorsement")
    except AttestationError as exc:
        raise AttestationError(f"public key file {path} is invalid ({exc}); delete the key home to start over") from exc
    verify_platform_signature(load_root_public(home), signature, endorsement_message(public), f"public key {path}")
    return public


@dataclass
class EnclaveKeys:
    """Private keys held by the monitor process only."""

    public: PublicKey
    hpke_private: Any
    signing_private: Any
    platform_private: Any

    def sign(self, message: bytes) -> bytes:
        signature: bytes = self.signing_private.sign(message)
        return signature

    def platform_sign(self, message: bytes) -> bytes:
        signature: bytes = self.platform_private.sign(message)
        return signature


def ensure_keys(home: Path, kem: str = KEM_MLKEM768_X25519) -> EnclaveKeys:
    """Load the enclave keys, creating the key home on first use (monitor only)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if not (home / "enclave" / "private.json").exists():
            _create_keys(home, kem)
        return _load_private_keys(home)


def _create_keys(home: Path, kem: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

    platform = home / "platform"
    platform.mkdir(mode=0o700, exist_ok=True)
    if not (platform / "root.key").exists():
        root = ed25519.Ed25519PrivateKey.generate()
        raw = root.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        _write_atomic(platform / "root.key", raw.hex().encode(), 0o600)
        public_raw = root.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        _write_atomic(platform / "root.pub", public_raw.hex().encode(), 0o644)
    root_private = _load_platform_private(home)

    mlkem_seed = os.urandom(64) if kem == KEM_MLKEM768_X25519 else b""
    x25519_private = x25519.X25519PrivateKey.generate()
    signing_private = ed25519.Ed25519PrivateKey.generate()
    raw_format = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    raw_public = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    public = PublicKey(
        kem=kem,
        mlkem768=mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed).public_key().public_bytes_raw() if mlkem_seed else b"",
        x25519=x25519_private.public_key().public_bytes(*raw_public),
        signing=signing_private.public_key().public_bytes(*raw_public),
    )
    private_document = {
        "kem": kem,
        "mlkem768_seed": b64(mlkem_seed),
        "x25519": b64(x25519_private.private_bytes(*raw_format)),
        "signing_ed25519": b64(signing_private.private_bytes(*raw_format)),
    }
    public_document = {"key": public.to_dict(), "endorsement": b64(root_private.sign(endorsement_message(public)))}

    enclave = home / "enclave"
    enclave.mkdir(mode=0o700, exist_ok=True)
    _write_atomic(enclave / "private.json", canonical_json(private_document), 0o600)
    _write_atomic(enclave / "public.json", json.dumps(public_document, indent=2).encode(), 0o644)


def _load_platform_private(home: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    raw = bytes.fromhex((home / "platform" / "root.key").read_text().strip())
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw)


def _load_private_keys(home: Path) -> EnclaveKeys:
    from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
    from cryptography.hazmat.primitives.hpke import MLKEM768X25519PrivateKey

    path = home / "enclave" / "private.json"
    _restrict_permissions(path)
    _restrict_permissions(home / "platform" / "root.key")
    document = json.loads(path.read_text())
    public = load_public_key(home)
    classical = x25519.X25519PrivateKey.from_private_bytes(unb64(document["x25519"], "X25519 private key"))
    hpke_private: Any = classical
    if document["kem"] == KEM_MLKEM768_X25519:
        seed = unb64(document["mlkem768_seed"], "ML-KEM seed")
        hpke_private = MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.from_seed_bytes(seed), classical)
    signing = ed25519.Ed25519PrivateKey.from_private_bytes(unb64(document["signing_ed25519"], "signing key"))
    return EnclaveKeys(public=public, hpke_private=hpke_private, signing_private=signing, platform_private=_load_platform_private(home))


def _restrict_permissions(path: Path) -> None:
    """Make a private key file owner-only again if someone widened its mode."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("private key file %s had mode %o; setting it to 600", path, mode)
        os.chmod(path, 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

