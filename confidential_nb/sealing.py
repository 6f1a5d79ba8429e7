"""Sealed blobs: HPKE wraps a random data key, AES-256-GCM chunks carry the payload.

Layout of format version 2 (all integers big-endian; docs/FORMAT.md gives
every byte and the reasons)::

    prefix     magic b"CNBSEAL\\n" | version u16 | KEM id u16 | KDF id u16 |
               AEAD id u16 | recipient fingerprint 32 bytes |
               wrapped key length u32 | metadata length u32 |
               signature block length u16 (0 or 96)
    wrapped    HPKE single-shot output: encapsulated key, then the encrypted
               32-byte data key and its tag. The HPKE info is
               b"confidential_nb seal v2\\0" + SHA-256(prefix + metadata +
               signer public key), so the header is bound to the data key.
    metadata   canonical UTF-8 JSON: content type, chunk size, plaintext
               length, policy, public schema (or null), creation time
    signature  optional: the data owner's Ed25519 public key (32 bytes), then
               an Ed25519 signature (64 bytes) over
               b"confidential_nb seal signature v2\\0" + every header byte
               before the signature
    chunks     AES-256-GCM(data key) of each chunk_size piece of the
               payload. The nonce is an 11-byte chunk counter followed by a
               last-chunk flag byte (the STREAM construction). The
               associated data is SHA-256 of the whole header.

The prefix fields are read before authentication and each is bounded. The
metadata is parsed before authentication, so that `Sealed` can show it, but
the enclave acts on it only after the data key unwraps, which authenticates it.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import struct
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from .errors import SealError, WrongKeyError
from .keys import KEM_IDS, PublicKey
from .policy import Policy
from .protocol import DescriptorAttachment
from .shared_buffers import BufferPool, SharedBuffer, default_retained_bytes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MAGIC = b"CNBSEAL\n"
VERSION = 2
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_256_GCM = 0x0002
DEFAULT_CHUNK_SIZE = 1024**2
MAX_CHUNK_SIZE = 64 * 1024**2
MAX_METADATA_BYTES = 1024**2
# 2**53 - 1 is the largest integer that JSON parsers built on IEEE 754 doubles, such as JavaScript's, read exactly.
MAX_PLAINTEXT_LENGTH = 2**53 - 1
TAG_BYTES = 16
DATA_KEY_BYTES = 32
SIGNER_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SIGNATURE_BLOCK_BYTES = SIGNER_KEY_BYTES + SIGNATURE_BYTES

_PREFIX = struct.Struct("!8sHHHH32sIIH")
_INFO_CONTEXT = b"confidential_nb seal v2\x00"
_SIGNATURE_CONTEXT = b"confidential_nb seal signature v2\x00"
# HPKE single-shot output: encapsulated key, then the sealed data key and its tag.
_WRAPPED_BYTES = {"X25519": 32 + DATA_KEY_BYTES + TAG_BYTES, "MLKEM768_X25519": 1120 + DATA_KEY_BYTES + TAG_BYTES}
_KEM_NAMES = {code: name for name, code in KEM_IDS.items()}
_METADATA_FIELDS = frozenset({"content_type", "chunk_size", "plaintext_length", "policy", "schema", "created"})
_CONTENT_TYPES = ("dataframe", "bytes")
_OPAQUE_FAILURE = "sealed data failed authentication: it was modified, truncated or is not a confidential_nb sealed blob"


@dataclass(frozen=True)
class Header:
    """The parsed header of a sealed blob.

    A present signature has been verified. The metadata stays unauthenticated
    until the data key unwraps.
    """

    kem: str
    recipient: str
    wrapped_key: bytes
    metadata: dict[str, Any]
    raw: bytes
    signer_key: bytes | None = None

    @property
    def content_type(self) -> str:
        return str(self.metadata["content_type"])

    @property
    def chunk_size(self) -> int:
        return int(self.metadata["chunk_size"])

    @property
    def plaintext_length(self) -> int:
        return int(self.metadata["plaintext_length"])

    @property
    def chunk_count(self) -> int:
        """Number of chunks: one per started chunk_size piece, and one empty chunk for an empty payload."""
        return _chunk_count(self.plaintext_length, self.chunk_size)

    @property
    def body_length(self) -> int:
        """Length in bytes of the chunks that follow the header."""
        return self.plaintext_length + self.chunk_count * TAG_BYTES

    @property
    def signer(self) -> str | None:
        """Hex SHA-256 of the signer's raw Ed25519 public key, or None for an unsigned blob."""
        return fingerprint_signer(self.signer_key) if self.signer_key is not None else None


def _chunk_count(plaintext_length: int, chunk_size: int) -> int:
    return max(1, -(-plaintext_length // chunk_size))


@functools.cache
def _suite(kem: str) -> Any:
    from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

    return Suite(getattr(KEM, kem), KDF.HKDF_SHA256, AEAD.AES_256_GCM)


def _hpke_info(prefix: bytes, metadata: bytes, signer_key: bytes) -> bytes:
    return _INFO_CONTEXT + hashlib.sha256(prefix + metadata + signer_key).digest()


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encode_metadata(metadata: dict[str, Any]) -> bytes:
    """Encode header metadata canonically: sorted keys, no spaces, ASCII only, no NaN."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def fingerprint_signer(public_key: bytes) -> str:
    """Return the hex SHA-256 of a raw 32-byte Ed25519 public key, as `Sealed.signer` shows it."""
    return hashlib.sha256(public_key).hexdigest()


# Sealing


def seal_bytes(
    payload: bytes,
    recipient: PublicKey,
    *,
    content_type: str,
    policy: Policy,
    schema: dict[str, Any] | None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    signer: Ed25519PrivateKey | None = None,
    created: str | None = None,
    data_key: bytes | None = None,
    wrapped_key: bytes | None = None,
) -> bytes:
    """Seal `payload` to `recipient`, signed by `signer` when given.

    `created`, `data_key` and `wrapped_key` are for test vectors only. They
    fix the time, the random data key and the HPKE output, so that a stored
    blob can be rebuilt byte for byte. A `wrapped_key` must come from a blob
    with the same prefix, metadata and signer. Never pass them in production code.
    """
    key = data_key if data_key is not None else os.urandom(DATA_KEY_BYTES)
    header = _build_header(
        recipient, content_type=content_type, policy=policy, schema=schema, chunk_size=chunk_size,
        plaintext_length=len(payload), signer=signer, created=created, data_key=key, wrapped_key=wrapped_key,
    )
    encrypt = _chunk_encryptor(key, hashlib.sha256(header).digest())
    view = memoryview(payload)
    count = _chunk_count(len(payload), chunk_size)
    chunks = [encrypt(index, index == count - 1, view[index * chunk_size : (index + 1) * chunk_size]) for index in range(count)]
    return header + b"".join(chunks)


def seal_parts(
    parts: Sequence[bytes | memoryview],
    recipient: PublicKey,
    *,
    content_type: str,
    policy: Policy,
    schema: dict[str, Any] | None,
    pool: BufferPool,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    signer: Ed25519PrivateKey | None = None,
) -> tuple[SharedBuffer, int]:
    """Seal the concatenation of `parts` into a buffer from `pool`; return the buffer and the blob's length.

    The output is byte for byte what `seal_bytes` makes of ``b"".join(parts)``
    with the same data key and creation time. No joined copy is made: each
    chunk is encrypted with ``encrypt_into`` straight from the part that
    contains it, and only a chunk that spans two parts is gathered into a
    staging buffer first. The caller owns the buffer's one reference.
    """
    plaintext_length = sum(memoryview(part).nbytes for part in parts)
    key = os.urandom(DATA_KEY_BYTES)
    header = _build_header(
        recipient, content_type=content_type, policy=policy, schema=schema, chunk_size=chunk_size,
        plaintext_length=plaintext_length, signer=signer, created=None, data_key=key, wrapped_key=None,
    )
    count = _chunk_count(plaintext_length, chunk_size)
    total = len(header) + plaintext_length + count * TAG_BYTES
    buffer = pool.acquire(total)
    try:
        output = buffer.view(total)
        try:
            output[: len(header)] = header
            _encrypt_parts_into(key, hashlib.sha256(header).digest(), parts, chunk_size, count, output[len(header) :])
        finally:
            output.release()
    except BaseException:
        pool.release(buffer)
        raise
    return buffer, total


class _PartReader:
    """Takes consecutive pieces of a sequence of byte parts, as views where a piece lies within one part."""

    def __init__(self, parts: Sequence[bytes | memoryview], staging_size: int) -> None:
        self._parts = collections.deque(memoryview(part).cast("B") for part in parts if memoryview(part).nbytes)
        self._staging_size = staging_size
        self._staging: bytearray | None = None

    def take(self, size: int) -> memoryview:
        if self._parts and len(self._parts[0]) >= size:
            first = self._parts.popleft()
            if len(first) > size:
                self._parts.appendleft(first[size:])
            return first[:size]
        if self._staging is None:
            self._staging = bytearray(self._staging_size)
        staging = memoryview(self._staging)
        filled = 0
        while filled < size:
            part = self._parts.popleft()
            count = min(len(part), size - filled)
            staging[filled : filled + count] = part[:count]
            if count < len(part):
                self._parts.appendleft(part[count:])
            filled += count
        return staging[:size]


def _encrypt_parts_into(key: bytes, associated: bytes, parts: Sequence[bytes | memoryview], chunk_size: int,
                        count: int, output: memoryview) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(key)
    reader = _PartReader(parts, chunk_size)
    position = 0
    for index in range(count):
        size = min(chunk_size, len(output) - position - TAG_BYTES)
        piece = reader.take(size)
        cipher.encrypt_into(_nonce(index, index == count - 1), piece, associated, output[position : position + size + TAG_BYTES])
        position += size + TAG_BYTES


def _build_header(
    recipient: PublicKey,
    *,
    content_type: str,
    policy: Policy,
    schema: dict[str, Any] | None,
    chunk_size: int,
    plaintext_length: int,
    signer: Ed25519PrivateKey | None,
    created: str | None,
    data_key: bytes,
    wrapped_key: bytes | None,
) -> bytes:
    if content_type not in _CONTENT_TYPES:
        raise ValueError(f"invalid content_type {content_type!r}: expected 'dataframe' or 'bytes'")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"invalid chunk_size {chunk_size!r}: expected an integer from 1 to {MAX_CHUNK_SIZE} bytes")
    if plaintext_length > MAX_PLAINTEXT_LENGTH:
        raise ValueError(f"payload of {plaintext_length} bytes is above the limit of {MAX_PLAINTEXT_LENGTH} bytes; split it")
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError(f"invalid data_key of {len(data_key)} bytes: expected {DATA_KEY_BYTES}")
    signer_key = _signer_public_bytes(signer)

    metadata = encode_metadata({
        "content_type": content_type,
        "chunk_size": chunk_size,
        "plaintext_length": plaintext_length,
        "policy": policy.to_dict(),
        "schema": schema if policy.schema_public else None,
        "created": created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    if len(metadata) > MAX_METADATA_BYTES:
        raise ValueError(
            f"header metadata of {len(metadata)} bytes is above the limit of {MAX_METADATA_BYTES} bytes; "
            "shorten the column names or seal with policy={'schema_public': False}"
        )
    prefix = _PREFIX.pack(
        MAGIC, VERSION, KEM_IDS[recipient.kem], KDF_HKDF_SHA256, AEAD_AES_256_GCM,
        bytes.fromhex(recipient.fingerprint), _WRAPPED_BYTES[recipient.kem], len(metadata),
        SIGNATURE_BLOCK_BYTES if signer is not None else 0,
    )

    if wrapped_key is None:
        wrapped_key = _suite(recipient.kem).encrypt(data_key, recipient.hpke_public_key(), info=_hpke_info(prefix, metadata, signer_key))
    if len(wrapped_key) != _WRAPPED_BYTES[recipient.kem]:
        raise ValueError(f"invalid wrapped_key of {len(wrapped_key)} bytes: expected {_WRAPPED_BYTES[recipient.kem]} for {recipient.kem}")
    unsigned = prefix + wrapped_key + metadata + signer_key
    if signer is None:
        return unsigned
    return unsigned + signer.sign(_SIGNATURE_CONTEXT + unsigned)


def _signer_public_bytes(signer: Ed25519PrivateKey | None) -> bytes:
    if signer is None:
        return b""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not isinstance(signer, Ed25519PrivateKey):
        raise TypeError(f"signer must be an Ed25519PrivateKey from cryptography, not {type(signer).__name__}")
    return signer.public_key().public_bytes_raw()


def _chunk_encryptor(key: bytes, associated: bytes) -> Callable[[int, bool, bytes | memoryview], bytes]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(key)

    def encrypt(index: int, last: bool, piece: bytes | memoryview) -> bytes:
        return cipher.encrypt(_nonce(index, last), piece, associated)

    return encrypt


def seal_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    policy: Policy | dict[str, Any] | None = None,
    key: PublicKey | None = None,
    content_type: str = "bytes",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    signer: Ed25519PrivateKey | None = None,
) -> Sealed:
    """Seal the file `src` into `dst`, one chunk at a time, and return the file-backed `Sealed`.

    Memory use does not grow with the file size. `dst` appears only once it is
    complete. Use ``content_type="dataframe"`` only for bytes written by
    `confidential_nb.frame_codec.encode_frame`; the header then has no schema.
    """
    resolved_policy = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
    recipient = key if key is not None else _current_public_key()
    source, target = Path(src), Path(dst)
    data_key = os.urandom(DATA_KEY_BYTES)

    with open(source, "rb") as reader, _atomic_output(target) as writer:
        length = os.fstat(reader.fileno()).st_size
        header = _build_header(
            recipient, content_type=content_type, policy=resolved_policy, schema=None, chunk_size=chunk_size,
            plaintext_length=length, signer=signer, created=None, data_key=data_key, wrapped_key=None,
        )
        writer.write(header)
        encrypt = _chunk_encryptor(data_key, hashlib.sha256(header).digest())
        buffer = bytearray(chunk_size)
        count = _chunk_count(length, chunk_size)
        for index in range(count):
            size = min(chunk_size, length - index * chunk_size)
            if _read_into(reader, buffer, size) != size:
                raise ValueError(f"{source} changed size while it was being sealed; seal it again once it is complete")
            writer.write(encrypt(index, index == count - 1, memoryview(buffer)[:size]))
        if reader.read(1):
            raise ValueError(f"{source} changed size while it was being sealed; seal it again once it is complete")
    return Sealed(path=target)


def _read_into(reader: IO[bytes], buffer: bytearray, size: int) -> int:
    """Fill the first `size` bytes of `buffer` from `reader`; return how many bytes it read before EOF."""
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        count = reader.readinto(view[filled:size])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


@contextlib.contextmanager
def _atomic_output(target: Path) -> Iterator[BinaryIO]:
    """Yield an owner-only temporary file next to `target`, renamed onto it on success and removed on failure."""
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as writer:
            yield writer
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# Parsing and unsealing


def parse_header(data: bytes | memoryview) -> Header:
    """Parse, bound and signature-check the header of a sealed blob.

    The header need not be followed by the chunks. No enclave key is needed, so
    the metadata is not yet authenticated; a bad signature raises `SealError`.
    """
    view = memoryview(data)
    kem, fingerprint, wrapped_length, metadata_length, signature_length = _parse_prefix(view)
    metadata_start = _PREFIX.size + wrapped_length
    end = metadata_start + metadata_length + signature_length
    if len(view) < end:
        raise SealError(_OPAQUE_FAILURE)
    raw = bytes(view[:end])
    try:
        metadata = _decode_metadata(raw[metadata_start : metadata_start + metadata_length])
    except (ValueError, TypeError, RecursionError) as exc:
        raise SealError(_OPAQUE_FAILURE) from exc

    signer_key = None
    if signature_length:
        signer_key = raw[end - SIGNATURE_BLOCK_BYTES : end - SIGNATURE_BYTES]
        _verify_signature(signer_key, raw[end - SIGNATURE_BYTES :], raw[: end - SIGNATURE_BYTES])
    return Header(
        kem=kem,
        recipient=fingerprint.hex(),
        wrapped_key=raw[_PREFIX.size : metadata_start],
        metadata=metadata,
        raw=raw,
        signer_key=signer_key,
    )


def _parse_prefix(view: memoryview) -> tuple[str, bytes, int, int, int]:
    """Check the magic, version and algorithms and bound every length in the prefix."""
    if len(view) < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        raise SealError("not a confidential_nb sealed blob (the magic bytes are missing)")
    if len(view) < _PREFIX.size:
        raise SealError(_OPAQUE_FAILURE)
    _, version, kem_id, kdf_id, aead_id, fingerprint, wrapped_length, metadata_length, signature_length = _PREFIX.unpack(view[: _PREFIX.size])
    if version < VERSION:
        raise SealError(f"sealed blob has format version {version}, which this confidential_nb no longer reads; seal the data again")
    if version > VERSION:
        raise SealError(f"sealed blob has format version {version}; this confidential_nb reads version {VERSION}, so upgrade it")
    if kem_id not in _KEM_NAMES or kdf_id != KDF_HKDF_SHA256 or aead_id != AEAD_AES_256_GCM:
        raise SealError(f"sealed blob uses unsupported algorithms (KEM 0x{kem_id:04x}, KDF 0x{kdf_id:04x}, AEAD 0x{aead_id:04x})")
    kem = _KEM_NAMES[kem_id]
    if (
        wrapped_length != _WRAPPED_BYTES[kem]
        or not 1 <= metadata_length <= MAX_METADATA_BYTES
        or signature_length not in (0, SIGNATURE_BLOCK_BYTES)
    ):
        raise SealError(_OPAQUE_FAILURE)
    return kem, fingerprint, wrapped_length, metadata_length, signature_length


def _decode_metadata(encoded: bytes) -> dict[str, Any]:
    """Decode metadata that must be canonical JSON with exactly the known fields; raise ValueError otherwise."""
    metadata = json.loads(encoded.decode("ascii"), object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    if not isinstance(metadata, dict) or set(metadata) != _METADATA_FIELDS:
        raise ValueError("metadata fields differ from the format's")
    if encode_metadata(metadata) != encoded:
        raise ValueError("metadata is not in canonical encoding")
    chunk_size, length = metadata["chunk_size"], metadata["plaintext_length"]
    if metadata["content_type"] not in _CONTENT_TYPES:
        raise ValueError("unknown content type")
    if type(chunk_size) is not int or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError("chunk size out of range")
    if type(length) is not int or not 0 <= length <= MAX_PLAINTEXT_LENGTH:
        raise ValueError("plaintext length out of range")
    if not isinstance(metadata["policy"], dict) or not isinstance(metadata["schema"], (dict, type(None))):
        raise ValueError("policy or schema is not an object")
    if not isinstance(metadata["created"], str):
        raise ValueError("creation time is not a string")
    return metadata


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in metadata")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in metadata")


def _verify_signature(public_key: bytes, signature: bytes, signed: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, _SIGNATURE_CONTEXT + signed)
    except (InvalidSignature, ValueError) as exc:
        raise SealError(_OPAQUE_FAILURE) from exc


def _unwrap_data_key(header: Header, private_key: Any, public: PublicKey) -> bytes:
    """Return the data key, which authenticates the prefix, metadata and signer key."""
    if header.recipient != public.fingerprint:
        raise WrongKeyError(
            f"the input was sealed to key {header.recipient[:16]}, but this enclave's key is "
            f"{public.fingerprint[:16]}; seal the data again with this enclave's key"
        )
    metadata_start = _PREFIX.size + len(header.wrapped_key)
    metadata_end = len(header.raw) - (SIGNATURE_BLOCK_BYTES if header.signer_key is not None else 0)
    info = _hpke_info(header.raw[: _PREFIX.size], header.raw[metadata_start:metadata_end], header.signer_key or b"")
    try:
        key: bytes = _suite(header.kem).decrypt(header.wrapped_key, private_key, info=info)
    except Exception as exc:  # cryptography raises InvalidTag or ValueError; both mean the same to the user.
        raise SealError(_OPAQUE_FAILURE) from exc
    if len(key) != DATA_KEY_BYTES:
        raise SealError(_OPAQUE_FAILURE)
    return key


def _chunk_decryptor(key: bytes, associated: bytes) -> Callable[[int, bool, bytes | memoryview], bytes]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(key)

    def decrypt(index: int, last: bool, piece: bytes | memoryview) -> bytes:
        try:
            return cipher.decrypt(_nonce(index, last), piece, associated)
        except InvalidTag as exc:
            raise SealError(_OPAQUE_FAILURE) from exc

    return decrypt


def _chunk_spans(header: Header) -> Iterator[tuple[int, bool, int]]:
    """Yield (index, is last, ciphertext length) for every chunk of the body."""
    count, step = header.chunk_count, header.chunk_size + TAG_BYTES
    for index in range(count):
        last = index == count - 1
        yield index, last, (header.body_length - index * step if last else step)


_DIGEST_CONTEXT = b"confidential_nb input digest v2\x00"


def input_digest(source: bytes | memoryview | IO[bytes]) -> str:
    """Return the digest receipts name an input by: SHA-256 over the header and every chunk's tag.

    Reading only the tags costs almost nothing for a large file. Each tag
    authenticates its chunk under the data key, so the digest identifies the
    blob to anyone who does not hold that key. NOTE: the data owner, who
    chose the data key, could make a second body with the same tags.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        header = parse_header(view)
        size = len(view)

        def read_at(offset: int) -> bytes:
            return bytes(view[offset : offset + TAG_BYTES])
    else:
        header = read_header(source)
        size = os.fstat(source.fileno()).st_size

        def read_at(offset: int) -> bytes:
            source.seek(offset)
            return source.read(TAG_BYTES)

    # The lengths are not authenticated yet, so they must at least match the bytes present.
    if size != len(header.raw) + header.body_length:
        raise SealError(_OPAQUE_FAILURE)
    digest = hashlib.sha256(_DIGEST_CONTEXT + header.raw)
    position = len(header.raw)
    for _index, _last, length in _chunk_spans(header):
        position += length
        tag = read_at(position - TAG_BYTES)
        if len(tag) != TAG_BYTES:
            raise SealError(_OPAQUE_FAILURE)
        digest.update(tag)
    return digest.hexdigest()


def unseal_bytes(data: bytes, private_key: Any, public: PublicKey) -> tuple[Header, bytes]:
    """Authenticate and decrypt a sealed blob with the enclave's private key (monitor only)."""
    header = parse_header(data)
    key = _unwrap_data_key(header, private_key, public)
    body = memoryview(data)[len(header.raw) :]
    if len(body) != header.body_length:
        raise SealError(_OPAQUE_FAILURE)

    decrypt = _chunk_decryptor(key, hashlib.sha256(header.raw).digest())
    pieces = []
    offset = 0
    for index, last, length in _chunk_spans(header):
        pieces.append(decrypt(index, last, body[offset : offset + length]))
        offset += length
    return header, b"".join(pieces)


ReadAt = Callable[[int, memoryview], int]
"""Copy a sealed blob's bytes from an offset into a view and return how many were copied (fewer only at its end)."""


def read_header_at(read_at: ReadAt) -> Header:
    """Read and parse the header of a blob through `read_at`, copying at most the bounded header length."""
    prefix = bytearray(_PREFIX.size)
    if _read_fully(read_at, 0, memoryview(prefix)) != len(prefix):
        raise SealError(_OPAQUE_FAILURE)
    _, _, wrapped_length, metadata_length, signature_length = _parse_prefix(memoryview(prefix))
    # The lengths are bounded now, so this buffer is at most about 1 MiB.
    raw = bytearray(_PREFIX.size + wrapped_length + metadata_length + signature_length)
    if _read_fully(read_at, 0, memoryview(raw)) != len(raw):
        raise SealError(_OPAQUE_FAILURE)
    return parse_header(bytes(raw))


def _read_fully(read_at: ReadAt, offset: int, view: memoryview) -> int:
    filled = 0
    while filled < len(view):
        count = read_at(offset + filled, view[filled:])
        if count <= 0:
            break
        filled += count
    return filled


def unseal_into(read_at: ReadAt, size: int, header: Header, private_key: Any, public: PublicKey,
                allocate: Callable[[int], memoryview]) -> str:
    """Authenticate and decrypt a sealed blob of `size` bytes into a view from `allocate`; return its input digest.

    `header` is what `read_header_at` returned for the same blob. Every chunk
    is copied through `read_at` into a private buffer before it is hashed,
    authenticated or decrypted, so a sender that changes its memory midway
    can only make the blob fail authentication. The digest equals
    `input_digest` of the blob. `allocate` is called once, with the
    plaintext length, after the data key has authenticated the header.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = _unwrap_data_key(header, private_key, public)
    if size != len(header.raw) + header.body_length:
        raise SealError(_OPAQUE_FAILURE)
    output = allocate(header.plaintext_length)
    cipher = AESGCM(key)
    associated = hashlib.sha256(header.raw).digest()
    digest = hashlib.sha256(_DIGEST_CONTEXT + header.raw)
    chunk = memoryview(bytearray(min(header.chunk_size, header.plaintext_length) + TAG_BYTES))
    offset, written = len(header.raw), 0
    for index, last, length in _chunk_spans(header):
        piece = chunk[:length]
        if _read_fully(read_at, offset, piece) != length:
            raise SealError(_OPAQUE_FAILURE)
        digest.update(piece[length - TAG_BYTES :])
        try:
            cipher.decrypt_into(_nonce(index, last), piece, associated, output[written : written + length - TAG_BYTES])
        except InvalidTag as exc:
            raise SealError(_OPAQUE_FAILURE) from exc
        offset += length
        written += length - TAG_BYTES
    return digest.hexdigest()


def unseal_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], private_key: Any, public: PublicKey
) -> Header:
    """Authenticate and decrypt the sealed file `src` into `dst`, one chunk at a time (monitor only).

    Memory use does not grow with the file size. `dst` appears, owner-only,
    only once every chunk has authenticated, so a failure leaves no plaintext.
    """
    target = Path(dst)
    with open(src, "rb") as reader:
        header = read_header(reader)
        key = _unwrap_data_key(header, private_key, public)
        if os.fstat(reader.fileno()).st_size != len(header.raw) + header.body_length:
            raise SealError(_OPAQUE_FAILURE)

        decrypt = _chunk_decryptor(key, hashlib.sha256(header.raw).digest())
        buffer = bytearray(header.chunk_size + TAG_BYTES)
        with _atomic_output(target) as writer:
            for index, last, length in _chunk_spans(header):
                if _read_into(reader, buffer, length) != length:
                    raise SealError(_OPAQUE_FAILURE)
                writer.write(decrypt(index, last, memoryview(buffer)[:length]))
            if reader.read(1):
                raise SealError(_OPAQUE_FAILURE)
    return header


def read_header(reader: IO[bytes]) -> Header:
    """Read and parse only the header from a binary file positioned at the blob's start."""
    prefix = reader.read(_PREFIX.size)
    _, _, wrapped_length, metadata_length, signature_length = _parse_prefix(memoryview(prefix))
    # The lengths are bounded now, so this read is at most about 1 MiB.
    rest = reader.read(wrapped_length + metadata_length + signature_length)
    return parse_header(prefix + rest)


# The Sealed handle


class Sealed:
    """A sealed DataFrame or byte string, in memory or backed by a file.

    Only the header is read on construction, and a signature, when present, is
    checked then. The policy and schema it shows are what the data owner wrote;
    the enclave authenticates them before acting on them.
    """

    def __init__(self, data: bytes | None = None, *, path: Path | None = None) -> None:
        if (data is None) == (path is None):
            raise TypeError("Sealed needs either the sealed bytes or a path, not both")
        self._data = data
        self._path = path
        self._shared: SharedBuffer | None = None
        self._length = 0
        if data is not None:
            self._header = parse_header(data)
        else:
            assert path is not None
            with open(path, "rb") as reader:
                self._header = read_header(reader)

    @classmethod
    def _from_shared(cls, buffer: SharedBuffer, length: int, pool: BufferPool) -> Sealed:
        """Wrap the first `length` bytes of a pooled buffer, which returns to `pool` when this object is collected.

        No view of the buffer outlives a method call, so the pool may reuse
        it as soon as the object is gone. `bytes()` returns a copy.
        """
        sealed = cls.__new__(cls)
        sealed._data = None
        sealed._path = None
        sealed._shared = buffer
        sealed._length = length
        with sealed._blob() as view:
            sealed._header = parse_header(view)
        weakref.finalize(sealed, pool.release_later, buffer)
        return sealed

    @contextlib.contextmanager
    def _blob(self) -> Iterator[memoryview]:
        """Yield a view of the in-memory blob, released on exit."""
        if self._shared is not None:
            view = self._shared.view(self._length)
        else:
            assert self._data is not None
            view = memoryview(self._data)
        try:
            yield view
        finally:
            view.release()

    def __copy__(self) -> Sealed:
        # A Sealed never changes, and a copy sharing a pooled buffer would not keep that buffer out of the pool.
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Sealed:
        return self

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle a file-backed blob as its path and any other as its bytes, never as a pooled buffer."""
        if self._path is not None:
            return Sealed.load, (self._path,)
        return Sealed, (bytes(self),)

    def wire_attachment(self) -> bytes | DescriptorAttachment:
        """Return how the host sends an in-memory blob: its memory file's descriptor when it has one, else its bytes."""
        if self._shared is not None:
            return DescriptorAttachment(self._shared.fd, self._length, owner=self)
        return bytes(self)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Sealed:
        """Open a sealed file written by `save`, `seal_file` or ``confidential-nb encrypt``; reads only its header."""
        resolved = Path(path)
        if not resolved.is_file():
            raise FileNotFoundError(f"sealed file {resolved} not found")
        return cls(path=resolved)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the sealed bytes to `path` and return it."""
        target = Path(path)
        if self._path is None:
            with self._blob() as view:
                target.write_bytes(view)
        else:
            assert self._path is not None
            shutil.copyfile(self._path, target)
        return target

    def __bytes__(self) -> bytes:
        if self._data is not None:
            return self._data
        if self._shared is not None:
            with self._blob() as view:
                return bytes(view)
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
        if self._shared is not None:
            return self._length
        assert self._path is not None
        return self._path.stat().st_size

    @property
    def plaintext_nbytes(self) -> int:
        """Size of the serialized plaintext, as the header states it."""
        return self._header.plaintext_length

    @property
    def digest(self) -> str:
        """The input digest receipts name this blob by (see `input_digest`); a file is read only at its tags."""
        if self._path is None:
            with self._blob() as view:
                return input_digest(view)
        with open(self._path, "rb") as reader:
            return input_digest(reader)

    @property
    def path(self) -> Path | None:
        """The file behind a file-backed blob (from `load` or `seal_file`), else None."""
        return self._path

    @property
    def recipient(self) -> str:
        """Fingerprint of the enclave key the data is sealed to."""
        return self._header.recipient

    @property
    def kem(self) -> str:
        return self._header.kem

    @property
    def signer(self) -> str | None:
        """Hex SHA-256 of the data owner's raw Ed25519 public key, or None when the blob is unsigned."""
        return self._header.signer

    @property
    def header(self) -> Header:
        return self._header

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
        signed = f", signed by {self.signer[:16]}" if self.signer is not None else ""
        return f"<Sealed {self.kind}{shape}, {self.nbytes} bytes, key {self.recipient[:16]}{signed}>"


def seal(
    obj: object,
    *,
    policy: Policy | dict[str, Any] | None = None,
    key: PublicKey | None = None,
    signer: Ed25519PrivateKey | None = None,
) -> Sealed:
    """Seal a DataFrame or bytes to the enclave's attested key, signed by `signer` when given.

    With ``key=None`` the key home's current key is used. A one-shot enclave
    process creates it on first use and exits afterwards, so only the public
    key is ever loaded here.
    """
    resolved_policy = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
    recipient = key if key is not None else _current_public_key()
    content_type, parts, schema = _serialize(obj)
    pool = host_pool()
    buffer, length = seal_parts(parts, recipient, content_type=content_type, policy=resolved_policy, schema=schema,
                                pool=pool, signer=signer)
    return Sealed._from_shared(buffer, length, pool)


_host_pool: BufferPool | None = None


def host_pool() -> BufferPool:
    """Return this process's pool of memory files for sealed blobs, bounded like `default_retained_bytes`."""
    global _host_pool
    if _host_pool is None:
        _host_pool = BufferPool(default_retained_bytes(), sealed=False)
    return _host_pool


def _serialize(obj: object) -> tuple[str, list[bytes | memoryview], dict[str, Any] | None]:
    """Return the content type, the payload as parts (views of the object's buffers where possible) and the schema."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return "bytes", [memoryview(obj)], None

    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        from .frame_codec import encode_frame_parts, frame_schema

        return "dataframe", encode_frame_parts(obj), frame_schema(obj)
    raise TypeError(f"seal() takes a pandas DataFrame or bytes, not {type(obj).__name__}; convert it first (for a Series, use .to_frame())")


def _current_public_key() -> PublicKey:
    from .client import ensure_public_key

    return ensure_public_key()
