"""Sealed blobs: HPKE wraps a random data key, AES-256-GCM chunks carry the payload.

Layout (all integers big-endian)::

    prefix    magic b"CNBSEAL\\n" | version u16 | KEM id u16 | KDF id u16 |
              AEAD id u16 | recipient fingerprint 32 bytes |
              wrapped key length u32 | metadata length u32
    wrapped   HPKE single-shot ciphertext (encapsulated key, then the
              encrypted 32-byte data key); HPKE info is
              b"confidential_nb seal v1\\0" + SHA-256(prefix + metadata)
    metadata  UTF-8 JSON: content type, chunk size, plaintext length,
              policy, public schema (or null), creation time
    chunks    AES-256-GCM(data key) of each chunk_size piece of the
              payload. The nonce is an 11-byte chunk counter followed by a
              last-chunk flag byte (the STREAM construction). The
              associated data is SHA-256 of everything before the chunks.

The prefix fields are read before authentication and each is bounded; the
metadata is acted on only after the data key unwraps, which authenticates it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SealError, WrongKeyError
from .keys import KEM_IDS, PublicKey
from .policy import Policy

MAGIC = b"CNBSEAL\n"
VERSION = 1
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_256_GCM = 0x0002
DEFAULT_CHUNK_SIZE = 1024**2
MAX_CHUNK_SIZE = 64 * 1024**2
MAX_METADATA_BYTES = 1024**2
TAG_BYTES = 16
DATA_KEY_BYTES = 32

_PREFIX = struct.Struct("!8sHHHH32sII")
_INFO_CONTEXT = b"confidential_nb seal v1\x00"
# HPKE single-shot output: encapsulated key, then the sealed data key and its tag.
_WRAPPED_BYTES = {"X25519": 32 + DATA_KEY_BYTES + TAG_BYTES, "MLKEM768_X25519": 1120 + DATA_KEY_BYTES + TAG_BYTES}
_KEM_NAMES = {code: name for name, code in KEM_IDS.items()}
_OPAQUE_FAILURE = "sealed data failed authentication: it was modified, truncated or is not a confidential_nb sealed blob"


@dataclass(frozen=True)
class Header:
    """The parsed header of a sealed blob; the metadata is unauthenticated until unsealed."""

    kem: str
    recipient: str
    wrapped_key: bytes
    metadata: dict[str, Any]
    raw: bytes

    @property
    def content_type(self) -> str:
        return str(self.metadata["content_type"])

    @property
    def chunk_size(self) -> int:
        return int(self.metadata["chunk_size"])

    @property
    def plaintext_length(self) -> int:
        return int(self.metadata["plaintext_length"])


def _suite() -> Any:
    from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

    return {name: Suite(getattr(KEM, name), KDF.HKDF_SHA256, AEAD.AES_256_GCM) for name in KEM_IDS}


def _hpke_info(prefix: bytes, metadata: bytes) -> bytes:
    return _INFO_CONTEXT + hashlib.sha256(prefix + metadata).digest()


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def seal_bytes(
    payload: bytes,
    recipient: PublicKey,
    *,
    content_type: str,
    policy: Policy,
    schema: dict[str, Any] | None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    created: str | None = None,
    data_key: bytes | None = None,
) -> bytes:
    """Seal `payload` to `recipient`; `created` and `data_key` are fixed only by tests."""
    if content_type not in ("dataframe", "bytes"):
        raise ValueError(f"invalid content_type {content_type!r}: expected 'dataframe' or 'bytes'")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"invalid chunk_size {chunk_size}: expected 1 to {MAX_CHUNK_SIZE} bytes")

    metadata = json.dumps(
        {
            "content_type": content_type,
            "chunk_size": chunk_size,
            "plaintext_length": len(payload),
            "policy": policy.to_dict(),
            "schema": schema if policy.schema_public else None,
            "created": created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    prefix = _PREFIX.pack(
        MAGIC, VERSION, KEM_IDS[recipient.kem], KDF_HKDF_SHA256, AEAD_AES_256_GCM,
        bytes.fromhex(recipient.fingerprint), _WRAPPED_BYTES[recipient.kem], len(metadata),
    )

    key = data_key if data_key is not None else os.urandom(DATA_KEY_BYTES)
    wrapped = _suite()[recipient.kem].encrypt(key, recipient.hpke_public_key(), info=_hpke_info(prefix, metadata))
    header = prefix + wrapped + metadata
    return header + b"".join(_encrypt_chunks(payload, key, hashlib.sha256(header).digest(), chunk_size))


def _encrypt_chunks(payload: bytes, key: bytes, associated: bytes, chunk_size: int) -> Iterator[bytes]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(key)
    view = memoryview(payload)
    count = max(1, -(-len(payload) // chunk_size))
    for index in range(count):
        piece = view[index * chunk_size : (index + 1) * chunk_size]
        yield cipher.encrypt(_nonce(index, index == count - 1), piece, associated)


def parse_header(data: bytes | memoryview) -> Header:
    """Parse and bound the header fields of a sealed blob, without authenticating them."""
    view = memoryview(data)
    if len(view) < _PREFIX.size or bytes(view[:8]) != MAGIC:
        raise SealError("not a confidential_nb sealed blob (the magic bytes are missing)")
    magic, version, kem_id, kdf_id, aead_id, fingerprint, wrapped_length, metadata_length = _PREFIX.unpack(view[: _PREFIX.size])
    if version != VERSION:
        raise SealError(f"sealed blob has format version {version}; this confidential_nb reads version {VERSION}, so upgrade it")
    if kem_id not in _KEM_NAMES or kdf_id != KDF_HKDF_SHA256 or aead_id != AEAD_AES_256_GCM:
        raise SealError(f"sealed blob uses unsupported algorithms (KEM 0x{kem_id:04x}, KDF 0x{kdf_id:04x}, AEAD 0x{aead_id:04x})")
    kem = _KEM_NAMES[kem_id]
    if wrapped_length != _WRAPPED_BYTES[kem] or metadata_length > MAX_METADATA_BYTES:
        raise SealError(_OPAQUE_FAILURE)

    end = _PREFIX.size + wrapped_length + metadata_length
    if len(view) < end:
        raise SealError(_OPAQUE_FAILURE)
    try:
        metadata = json.loads(bytes(view[_PREFIX.size + wrapped_length : end]))
        _check_metadata(metadata)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SealError(_OPAQUE_FAILURE) from exc
    return Header(
        kem=kem,
        recipient=fingerprint.hex(),
        wrapped_key=bytes(view[_PREFIX.size : _PREFIX.size + wrapped_length]),
        metadata=metadata,
        raw=bytes(view[:end]),
    )


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict) or metadata["content_type"] not in ("dataframe", "bytes"):
        raise ValueError("bad metadata")
    chunk_size, length = metadata["chunk_size"], metadata["plaintext_length"]
    if not (isinstance(chunk_size, int) and 1 <= chunk_size <= MAX_CHUNK_SIZE and isinstance(length, int) and length >= 0):
        raise ValueError("bad sizes")


def unseal_bytes(data: bytes, private_key: Any, public: PublicKey) -> tuple[Header, bytes]:
    """Authenticate and decrypt a sealed blob with the enclave's private key (monitor only)."""
    header = parse_header(data)
    if header.recipient != public.fingerprint:
        raise WrongKeyError(
            f"the input was sealed to key {header.recipient[:16]}, but this enclave's key is "
            f"{public.fingerprint[:16]}; seal the data again with this enclave's key"
        )

    prefix = header.raw[: _PREFIX.size]
    metadata = header.raw[_PREFIX.size + len(header.wrapped_key) :]
    try:
        key = _suite()[header.kem].decrypt(header.wrapped_key, private_key, info=_hpke_info(prefix, metadata))
    except Exception as exc:  # cryptography raises InvalidTag or ValueError; both mean the same to the user.
        raise SealError(_OPAQUE_FAILURE) from exc

    body = memoryview(data)[len(header.raw) :]
    payload = _decrypt_chunks(body, key, hashlib.sha256(header.raw).digest(), header.chunk_size)
    if len(payload) != header.plaintext_length:
        raise SealError(_OPAQUE_FAILURE)
    return header, payload


def _decrypt_chunks(body: memoryview, key: bytes, associated: bytes, chunk_size: int) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(key)
    step = chunk_size + TAG_BYTES
    count = max(1, -(-len(body) // step))
    pieces = []
    for index in range(count):
        piece = body[index * step : (index + 1) * step]
        if len(piece) < TAG_BYTES:
            raise SealError(_OPAQUE_FAILURE)
        try:
            pieces.append(cipher.decrypt(_nonce(index, index == count - 1), piece, associated))
        except InvalidTag as exc:
            raise SealError(_OPAQUE_FAILURE) from exc
    return b"".join(pieces)


class Sealed:
    """A sealed DataFrame or byte string, in memory or backed by a file.

    Only the header is read on construction. The policy and schema it shows
    are what the data owner wrote; the enclave authenticates them before
    acting on them.
    """

    def __init__(self, data: bytes | None = None, *, path: Path | None = None) -> None:
        if (data is None) == (path is None):
            raise TypeError("Sealed needs either the sealed bytes or a path, not both")
        self._data = data
        self._path = path
        head = data if data is not None else _read_head(path)  # type: ignore[arg-type]
        self._header = parse_header(head)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Sealed:
        """Open a sealed file written by `save` or by ``confidential-nb encrypt``."""
        resolved = Path(path)
        if not resolved.is_file():
            raise FileNotFoundError(f"sealed file {resolved} not found")
        return cls(path=resolved)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the sealed bytes to `path` and return it."""
        target = Path(path)
        target.write_bytes(bytes(self))
        return target

    def __bytes__(self) -> bytes:
        if self._data is not None:
            return self._data
        assert self._path is not None
        return self._path.read_bytes()

    @property
    def kind(self) -> str:
        """``"dataframe"`` or ``"bytes"``."""
        return self._header.content_type

    @property
    def nbytes(self) -> int:
        """Size of the sealed blob in bytes."""
        if self._data is not None:
            return len(self._data)
        assert self._path is not None
        return self._path.stat().st_size

    @property
    def plaintext_nbytes(self) -> int:
        """Size of the serialized plaintext, as the header states it."""
        return self._header.plaintext_length

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the whole sealed blob; receipts name inputs by it."""
        return hashlib.sha256(bytes(self)).hexdigest()

    @property
    def recipient(self) -> str:
        """Fingerprint of the enclave key the data is sealed to."""
        return self._header.recipient

    @property
    def kem(self) -> str:
        return self._header.kem

    @property
    def policy(self) -> Policy:
        return Policy.from_dict(self._header.metadata.get("policy"))

    @property
    def schema(self) -> dict[str, Any] | None:
        """Column names, dtypes and row count, when the data owner made them public."""
        schema = self._header.metadata.get("schema")
        return schema if isinstance(schema, dict) else None

    def __repr__(self) -> str:
        shape = ""
        if self.schema is not None:
            shape = f", {self.schema.get('rows')} rows x {len(self.schema.get('columns', []))} columns"
        return f"<Sealed {self.kind}{shape}, {self.nbytes} bytes, key {self.recipient[:16]}>"


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_PREFIX.size + 4096 + MAX_METADATA_BYTES)


def seal(obj: object, *, policy: Policy | dict[str, Any] | None = None, key: PublicKey | None = None) -> Sealed:
    """Seal a DataFrame or bytes to the enclave's attested key.

    With ``key=None`` the key home's current key is used. A one-shot enclave
    process creates it on first use and exits afterwards, so only the public
    key is ever loaded here.
    """
    resolved_policy = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
    recipient = key if key is not None else _current_public_key()
    content_type, payload, schema = _serialize(obj)
    return Sealed(seal_bytes(payload, recipient, content_type=content_type, policy=resolved_policy, schema=schema))


def _serialize(obj: object) -> tuple[str, bytes, dict[str, Any] | None]:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return "bytes", bytes(obj), None

    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        from .frame_codec import encode_frame, frame_schema

        return "dataframe", encode_frame(obj), frame_schema(obj)
    raise TypeError(f"seal() takes a pandas DataFrame or bytes, not {type(obj).__name__}; convert it first (for a Series, use .to_frame())")


def _current_public_key() -> PublicKey:
    from .client import ensure_public_key

    return ensure_public_key()
