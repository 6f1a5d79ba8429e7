"""The key home: the simulated platform key and the enclave's key pairs.

Layout under the home directory (``$CONFIDENTIAL_NB_HOME``, else
``$XDG_DATA_HOME/confidential_nb``, else ``~/.local/share/confidential_nb``)::

    platform/root.key                   P-384 key of the simulated platform (0600)
    platform/root.crt                   its self-signed certificate
    enclave/current                     fingerprint of the current sealing key
    enclave/keys/<fingerprint>/private.json   sealing and signing private keys (0600)
    enclave/keys/<fingerprint>/public.json    the public half, endorsed by the platform key
    pins.json                           what the host pinned on first use (attestation)

Only the monitor process reads private files; the host (the notebook kernel,
the CLI) reads public files only. Every write is atomic (temporary file,
fsync, rename), directories are owner-only (0700), and private files that
other users could read are rejected, as ssh rejects such keys. Rotation adds
a key and moves ``current``; older keys stay, so what was sealed to them
still opens. A damaged key file stops the enclave with an error and never
leads to a new key that would orphan sealed data.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AttestationError, KeyHomeError

KEM_MLKEM768_X25519 = "MLKEM768_X25519"
KEM_X25519 = "X25519"

# HPKE KEM code points: 0x0020 is DHKEM(X25519, HKDF-SHA256) from RFC 9180,
# 0x647A is the ML-KEM-768 + X25519 hybrid from draft-ietf-hpke-pq.
KEM_IDS = {KEM_X25519: 0x0020, KEM_MLKEM768_X25519: 0x647A}

log = logging.getLogger("confidential_nb.keys")

# Names the account the monitor switches to after it loads the keys (service-account mode); unset means none.
SERVICE_USER_VARIABLE = "CONFIDENTIAL_NB_SERVICE_USER"
_FINGERPRINT_CONTEXT = b"confidential_nb public key v1\x00"
_ENDORSEMENT_CONTEXT = b"confidential_nb endorsement v1\x00"
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


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


def _key_directory(home: Path, fingerprint: str) -> Path:
    return home / "enclave" / "keys" / fingerprint


def current_fingerprint(home: Path) -> str:
    """Return the fingerprint of the current sealing key."""
    path = home / "enclave" / "current"
    try:
        fingerprint = path.read_text().strip()
    except FileNotFoundError:
        raise
    if not _FINGERPRINT.match(fingerprint):
        raise KeyHomeError(f"key file {path} is damaged; restore the key home from a backup")
    return fingerprint


def load_public_key(home: Path, fingerprint: str | None = None) -> PublicKey:
    """Load an enclave public key (the current one by default) and check the platform endorsement.

    Raises FileNotFoundError when the key home has no keys yet.
    """
    from .platform import load_certificate, verify_platform_signature

    chosen = fingerprint or current_fingerprint(home)
    path = _key_directory(home, chosen) / "public.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise AttestationError(f"public key file {path} is not valid JSON; restore the key home from a backup") from exc

    if not isinstance(document, dict):
        raise AttestationError(f"public key file {path} is not a JSON object; restore the key home from a backup")
    try:
        public = PublicKey.from_dict(document.get("key"))
        signature = unb64(document.get("endorsement"), "platform endorsement")
    except AttestationError as exc:
        raise AttestationError(f"public key file {path} is invalid ({exc}); restore the key home from a backup") from exc
    verify_platform_signature(load_certificate(home / "platform"), signature, endorsement_message(public), f"public key {path}")
    if public.fingerprint != chosen:
        raise AttestationError(f"public key file {path} contains key {public.fingerprint[:16]}, not {chosen[:16]}")
    return public


@dataclass(frozen=True)
class KeyInfo:
    """One sealing key of the key home, as `list_keys` reports it."""

    fingerprint: str
    kem: str
    created: str
    current: bool


def list_keys(home: Path) -> list[KeyInfo]:
    """Return every sealing key in the key home, oldest first."""
    directory = home / "enclave" / "keys"
    if not directory.is_dir():
        return []
    current = current_fingerprint(home)
    keys = []
    for entry in directory.iterdir():
        path = entry / "public.json"
        try:
            document = json.loads(path.read_text())
            kem = str(document["key"]["kem"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyHomeError(f"key file {path} is damaged or missing; restore the key home from a backup") from exc
        keys.append(KeyInfo(entry.name, kem, str(document.get("created", "")), entry.name == current))
    return sorted(keys, key=lambda info: (info.created, info.fingerprint))


@dataclass
class EnclaveKeys:
    """Private keys held by the monitor process only."""

    public: PublicKey
    hpke_private: Any
    signing_private: Any
    platform_private: Any
    platform_certificate: Any
    older: dict[str, tuple[PublicKey, Any]] = field(default_factory=dict)

    def sign(self, message: bytes) -> bytes:
        signature: bytes = self.signing_private.sign(message)
        return signature

    def platform_sign(self, message: bytes) -> bytes:
        from .platform import platform_sign

        return platform_sign(self.platform_private, message)

    def for_recipient(self, fingerprint: str) -> tuple[PublicKey, Any] | None:
        """Return the public key and HPKE private key that open data sealed to `fingerprint`."""
        if fingerprint == self.public.fingerprint:
            return self.public, self.hpke_private
        return self.older.get(fingerprint)


def ensure_keys(home: Path, kem: str = KEM_MLKEM768_X25519, *, owner: int | None = None) -> EnclaveKeys:
    """Load the enclave keys, creating the key home on first use (monitor only).

    With `owner` (service-account mode, called as root), the private key
    files are given to that uid with mode 0600 before they are loaded, and
    loading expects that owner instead of the calling user.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        _reject_early_layout(home)
        if not (home / "enclave" / "current").exists():
            if (home / "enclave" / "keys").is_dir() and any((home / "enclave" / "keys").iterdir()):
                raise KeyHomeError(
                    f"key file {home / 'enclave' / 'current'} is missing while keys exist; restore it from a backup, "
                    "or write the fingerprint of the current key into it"
                )
            _create_platform_if_missing(home)
            _create_key(home, kem)
        if owner is not None:
            _give_private_files(home, owner)
        return _load_private_keys(home, owner)


def _give_private_files(home: Path, owner: int) -> None:
    """Make `owner` the owner of every private key file, readable by it alone."""
    paths = [home / "platform" / "root.key", *(home / "enclave" / "keys").glob("*/private.json")]
    for path in paths:
        if path.is_file() and not path.is_symlink():
            os.chown(path, owner, -1)
            os.chmod(path, 0o600)


def _reject_early_layout(home: Path) -> None:
    """Stop on a key home written by a development version before key rotation existed."""
    if (home / "enclave" / "private.json").exists() or (home / "platform" / "root.pub").exists():
        raise KeyHomeError(
            f"the key home {home} was made by an earlier development version of confidential_nb, whose key layout "
            "this version cannot read; move the directory away (data sealed to it needs that version) and start again"
        )


def rotate_keys(home: Path, kem: str = KEM_MLKEM768_X25519, *, owner: int | None = None) -> PublicKey:
    """Create a new current sealing key; older keys keep opening what was sealed to them.

    With `owner` (service-account mode, called as root), the existing
    private files must belong to that uid, and the new one is given to it.
    """
    with _locked(home / ".lock"):
        _load_private_keys(home, owner)
        public = _create_key(home, kem, owner)
        if owner is not None:
            _give_private_files(home, owner)
        return public


def _create_platform_if_missing(home: Path) -> None:
    from .platform import KEY_FILE, create_platform

    platform = home / "platform"
    platform.mkdir(mode=0o700, exist_ok=True)
    if not (platform / KEY_FILE).exists():
        create_platform(platform, _write_atomic)


def _create_key(home: Path, kem: str, platform_owner: int | None = None) -> PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

    if kem not in KEM_IDS:
        raise ValueError(f"invalid KEM {kem!r}: expected one of {sorted(KEM_IDS)}")
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
    from .platform import platform_sign

    endorsement = platform_sign(_platform_key(home, platform_owner), endorsement_message(public))
    # Microseconds keep two keys made within one second in creation order for `list_keys`.
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
    public_document = {"key": public.to_dict(), "endorsement": b64(endorsement), "created": created}

    directory = _key_directory(home, public.fingerprint)
    directory.mkdir(mode=0o700, parents=True, exist_ok=False)
    _write_atomic(directory / "private.json", canonical_json(private_document), 0o600)
    _write_atomic(directory / "public.json", json.dumps(public_document, indent=2).encode(), 0o644)
    _write_atomic(home / "enclave" / "current", public.fingerprint.encode(), 0o644)
    log.info("created sealing key %s (%s)", public.fingerprint[:16], kem)
    return public


def _load_private_keys(home: Path, owner: int | None = None) -> EnclaveKeys:
    from .platform import load_certificate

    platform_private = _platform_key(home, owner)
    certificate = load_certificate(home / "platform")

    current = current_fingerprint(home)
    loaded = {entry.name: _load_key_pair(home, entry.name, owner) for entry in (home / "enclave" / "keys").iterdir()}
    if current not in loaded:
        raise KeyHomeError(f"the current key {current[:16]} named in {home / 'enclave' / 'current'} is missing; restore it from a backup")
    public, hpke_private, signing = loaded.pop(current)
    return EnclaveKeys(
        public=public, hpke_private=hpke_private, signing_private=signing, platform_private=platform_private,
        platform_certificate=certificate, older={fp: (pair[0], pair[1]) for fp, pair in loaded.items()},
    )


def _platform_key(home: Path, owner: int | None = None) -> Any:
    from .platform import load_platform_key

    path = home / "platform" / "root.key"
    check_private_file(path, owner)
    try:
        return load_platform_key(home / "platform")
    except (ValueError, TypeError) as exc:
        raise KeyHomeError(f"key file {path} is damaged; restore the key home from a backup") from exc


def _load_key_pair(home: Path, fingerprint: str, owner: int | None = None) -> tuple[PublicKey, Any, Any]:
    from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
    from cryptography.hazmat.primitives.hpke import MLKEM768X25519PrivateKey

    path = _key_directory(home, fingerprint) / "private.json"
    check_private_file(path, owner)
    try:
        document = json.loads(path.read_text())
        classical = x25519.X25519PrivateKey.from_private_bytes(unb64(document["x25519"], "X25519 private key"))
        hpke_private: Any = classical
        if document["kem"] == KEM_MLKEM768_X25519:
            seed = unb64(document["mlkem768_seed"], "ML-KEM seed")
            hpke_private = MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.from_seed_bytes(seed), classical)
        signing = ed25519.Ed25519PrivateKey.from_private_bytes(unb64(document["signing_ed25519"], "signing key"))
        public = load_public_key(home, fingerprint)
        _check_pair(public, document, classical, signing)
    except (ValueError, KeyError, TypeError, AttestationError, FileNotFoundError) as exc:
        raise KeyHomeError(
            f"key file {path} is damaged or incomplete ({type(exc).__name__}); restore the key home from a backup, "
            f"because data sealed to key {fingerprint[:16]} cannot be opened without it"
        ) from exc
    return public, hpke_private, signing


def _check_pair(public: PublicKey, document: dict[str, Any], classical: Any, signing: Any) -> None:
    """Raise ValueError unless the private keys derive exactly the public key they are stored with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import mlkem

    raw = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    seed = unb64(document["mlkem768_seed"], "ML-KEM seed")
    derived = PublicKey(
        kem=str(document["kem"]),
        mlkem768=mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw() if seed else b"",
        x25519=classical.public_key().public_bytes(*raw),
        signing=signing.public_key().public_bytes(*raw),
    )
    if derived != public:
        raise ValueError("the private keys do not match the public key stored beside them")


def check_private_file(path: Path, owner: int | None = None) -> None:
    """Reject a private key file that is missing, not `owner`'s (default: ours), or readable by others, as ssh does."""
    try:
        status = path.stat()
    except FileNotFoundError as exc:
        raise KeyHomeError(f"key file {path} is missing; restore the key home from a backup") from exc
    expected = os.geteuid() if owner is None else owner
    if status.st_uid != expected:
        raise KeyHomeError(f"key file {path} belongs to uid {status.st_uid}, not to uid {expected}; fix its owner, or "
                           f"if a service account owns it, set {SERVICE_USER_VARIABLE} to that account")
    mode = status.st_mode & 0o777
    if mode & 0o077:
        raise KeyHomeError(f"key file {path} is accessible by other users (mode {mode:o}); run: chmod 600 {path}")


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
