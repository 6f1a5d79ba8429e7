from __future__ import annotations

import hashlib
import os
import struct
import subprocess

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import confidential_nb
from confidential_nb import sealing
from confidential_nb.errors import SealError, WrongKeyError
from confidential_nb.keys import KEM_X25519, ensure_keys, load_public_key
from confidential_nb.policy import Policy
from confidential_nb.sealing import (
    SIGNATURE_BLOCK_BYTES,
    SIGNATURE_BYTES,
    TAG_BYTES,
    Sealed,
    parse_header,
    seal_bytes,
    seal_file,
    unseal_bytes,
    unseal_file,
)

CHUNK = 64


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return ensure_keys(tmp_path_factory.mktemp("sealing-home"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory):
    return ensure_keys(tmp_path_factory.mktemp("other-home"))


def _seal(keys, payload: bytes, chunk_size: int = CHUNK, **options) -> bytes:
    options.setdefault("policy", Policy())
    return seal_bytes(payload, keys.public, content_type="bytes", schema=None, chunk_size=chunk_size, **options)


def _unseal(keys, blob: bytes) -> bytes:
    return unseal_bytes(blob, keys.hpke_private, keys.public)[1]


@pytest.mark.parametrize("length", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 7])
def test_seal_round_trip_at_chunk_edges(keys, length):
    payload = os.urandom(length)
    assert _unseal(keys, _seal(keys, payload)) == payload


def test_seal_twice_gives_different_ciphertexts(keys):
    assert _seal(keys, b"same") != _seal(keys, b"same")


def _regions(blob: bytes) -> dict[str, int]:
    """Offsets of one byte inside each region of a sealed blob."""
    header = parse_header(blob)
    prefix = 58
    wrapped = len(header.wrapped_key)
    body = len(header.raw)
    return {
        "magic": 0,
        "version": 8,
        "kem id": 10,
        "kdf id": 12,
        "aead id": 14,
        "fingerprint": 20,
        "wrapped length": 48,
        "metadata length": 52,
        "signature length": 57,
        "encapsulated key": prefix + 5,
        "wrapped data key": prefix + wrapped - TAG_BYTES - 3,
        "wrapped key tag": prefix + wrapped - 1,
        "metadata": prefix + wrapped + 3,
        "first chunk": body + 1,
        "first chunk tag": body + CHUNK + TAG_BYTES - 1,
        "middle chunk": body + (CHUNK + TAG_BYTES) + 5,
        "last chunk": len(blob) - TAG_BYTES - 1,
        "last chunk tag": len(blob) - 1,
    }


@pytest.mark.parametrize("region", [
    "magic", "version", "kem id", "kdf id", "aead id", "fingerprint", "wrapped length", "metadata length",
    "signature length", "encapsulated key", "wrapped data key", "wrapped key tag", "metadata", "first chunk", "first chunk tag",
    "middle chunk", "last chunk", "last chunk tag",
])
def test_seal_tampered_byte_in_each_region_fails(keys, region):
    blob = _seal(keys, os.urandom(3 * CHUNK + 10))
    offset = _regions(blob)[region]
    tampered = bytearray(blob)
    tampered[offset] ^= 0x01
    with pytest.raises(SealError):
        _unseal(keys, bytes(tampered))


def test_seal_every_single_byte_flip_fails(keys):
    blob = _seal(keys, os.urandom(2 * CHUNK + 3))
    for offset in range(len(blob)):
        tampered = bytearray(blob)
        tampered[offset] ^= 0x80
        with pytest.raises(SealError):
            _unseal(keys, bytes(tampered))


def test_seal_truncation_at_chunk_boundary_fails(keys):
    blob = _seal(keys, os.urandom(3 * CHUNK))
    header_length = len(parse_header(blob).raw)
    for chunks_kept in (0, 1, 2):
        with pytest.raises(SealError, match="failed authentication"):
            _unseal(keys, blob[: header_length + chunks_kept * (CHUNK + TAG_BYTES)])


def test_seal_truncation_inside_chunk_fails(keys):
    blob = _seal(keys, os.urandom(3 * CHUNK))
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, blob[:-5])


def test_seal_appended_bytes_fail(keys):
    blob = _seal(keys, os.urandom(2 * CHUNK))
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, blob + b"\x00")


def test_seal_reordered_chunks_fail(keys):
    blob = _seal(keys, os.urandom(3 * CHUNK))
    start = len(parse_header(blob).raw)
    step = CHUNK + TAG_BYTES
    first, second = blob[start : start + step], blob[start + step : start + 2 * step]
    swapped = blob[:start] + second + first + blob[start + 2 * step :]
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, swapped)


def test_seal_duplicated_chunk_fails(keys):
    blob = _seal(keys, os.urandom(3 * CHUNK))
    start = len(parse_header(blob).raw)
    step = CHUNK + TAG_BYTES
    duplicated = blob[: start + step] + blob[start : start + step] + blob[start + step :]
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, duplicated)


def test_seal_chunks_from_another_blob_fail(keys):
    first = _seal(keys, b"a" * (2 * CHUNK))
    second = _seal(keys, b"a" * (2 * CHUNK))
    start = len(parse_header(first).raw)
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, first[:start] + second[start:])


def test_seal_wrong_key_raises_wrong_key_error(keys, other_keys):
    blob = _seal(keys, b"secret")
    with pytest.raises(WrongKeyError, match="sealed to key"):
        unseal_bytes(blob, other_keys.hpke_private, other_keys.public)


def test_seal_unknown_version_rejected(keys):
    blob = bytearray(_seal(keys, b"x"))
    blob[8:10] = struct.pack("!H", 3)
    with pytest.raises(SealError, match="format version 3.*upgrade"):
        parse_header(bytes(blob))


def test_seal_version_1_rejected_with_fix(keys):
    blob = bytearray(_seal(keys, b"x"))
    blob[8:10] = struct.pack("!H", 1)
    with pytest.raises(SealError, match="format version 1.*seal the data again"):
        parse_header(bytes(blob))


def test_seal_not_a_sealed_blob_rejected():
    with pytest.raises(SealError, match="magic bytes are missing"):
        parse_header(b"PK\x03\x04 a zip file, not a sealed blob at all......................")


def test_seal_oversized_metadata_length_rejected(keys):
    blob = bytearray(_seal(keys, b"x"))
    blob[52:56] = struct.pack("!I", 1 << 30)
    with pytest.raises(SealError, match="failed authentication"):
        parse_header(bytes(blob))


def test_seal_x25519_key_round_trip(tmp_path):
    x25519_keys = ensure_keys(tmp_path, kem=KEM_X25519)
    blob = _seal(x25519_keys, b"classical")
    assert parse_header(blob).kem == "X25519"
    assert _unseal(x25519_keys, blob) == b"classical"


def test_seal_dataframe_schema_and_policy_public(keys):
    frame = pd.DataFrame({"age": [30, 40], "name": ["a", "b"]})
    sealed = confidential_nb.seal(frame, key=keys.public, policy={"max_result_bytes": 1000})
    assert sealed.kind == "dataframe"
    assert sealed.schema == {"columns": ["age", "name"], "dtypes": [str(dtype) for dtype in frame.dtypes], "rows": 2}
    assert sealed.policy.max_result_bytes == 1000
    assert sealed.recipient == keys.public.fingerprint


def test_seal_schema_withheld_when_owner_asks(keys):
    frame = pd.DataFrame({"secret_column_name": [1.0]})
    sealed = confidential_nb.seal(frame, key=keys.public, policy={"schema_public": False})
    assert sealed.schema is None
    assert b"secret_column_name" not in bytes(sealed)


def test_seal_frame_bytes_not_in_clear(keys):
    frame = pd.DataFrame({"x": ["patient-zero-record"] * 3})
    blob = bytes(confidential_nb.seal(frame, key=keys.public, policy={"schema_public": False}))
    assert b"patient-zero-record" not in blob


def test_sealed_save_and_load_round_trip(keys, tmp_path):
    sealed = confidential_nb.seal(b"payload", key=keys.public)
    path = sealed.save(tmp_path / "data.sealed")
    loaded = Sealed.load(path)
    assert bytes(loaded) == bytes(sealed)
    assert loaded.digest == sealed.digest
    assert loaded.nbytes == path.stat().st_size
    assert loaded.kind == "bytes"


def test_sealed_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Sealed.load(tmp_path / "absent.sealed")


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, np.arange(3), "text"])
def test_seal_rejects_other_types(keys, value):
    with pytest.raises(TypeError, match="takes a pandas DataFrame or bytes"):
        confidential_nb.seal(value, key=keys.public)


def test_seal_rejects_unknown_policy_field(keys):
    with pytest.raises(confidential_nb.errors.PolicyError, match="unknown policy fields"):
        confidential_nb.seal(b"x", key=keys.public, policy={"max_rows": 3})


def test_seal_default_key_created_by_one_shot_enclave(tmp_path, monkeypatch):
    home = tmp_path / "fresh-home"
    monkeypatch.setenv("CONFIDENTIAL_NB_HOME", str(home))
    sealed = confidential_nb.seal(b"first use")

    assert sealed.recipient == load_public_key(home).fingerprint
    private_files = list(home.rglob("private.json"))
    assert private_files
    for path in private_files:
        assert path.stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    # The one-shot enclave exited: no monitor process for this home remains.
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(home) not in processes


def test_seal_wrong_key_error_names_both_fingerprints(keys, other_keys):
    blob = _seal(keys, b"secret")
    with pytest.raises(WrongKeyError) as caught:
        unseal_bytes(blob, other_keys.hpke_private, other_keys.public)
    assert keys.public.fingerprint[:16] in str(caught.value)
    assert other_keys.public.fingerprint[:16] in str(caught.value)


# Fresh randomness and nonces


def test_seal_twice_uses_fresh_keys(keys):
    first, second = parse_header(_seal(keys, b"same")), parse_header(_seal(keys, b"same"))
    encapsulated = len(first.wrapped_key) - 32 - TAG_BYTES
    assert first.wrapped_key[:encapsulated] != second.wrapped_key[:encapsulated]
    first_key = sealing._unwrap_data_key(first, keys.hpke_private, keys.public)
    second_key = sealing._unwrap_data_key(second, keys.hpke_private, keys.public)
    assert first_key != second_key


def test_seal_chunk_nonces_follow_spec(keys):
    data_key = bytes(range(32))
    payload = os.urandom(4 * CHUNK + 5)
    blob = _seal(keys, payload, data_key=data_key)
    header = parse_header(blob)
    associated = hashlib.sha256(header.raw).digest()
    cipher = AESGCM(data_key)
    body = blob[len(header.raw) :]
    step = CHUNK + TAG_BYTES
    pieces = [body[index * step : (index + 1) * step] for index in range(5)]
    nonces = [index.to_bytes(11, "big") + (b"\x01" if index == 4 else b"\x00") for index in range(5)]
    plaintext = b"".join(cipher.decrypt(nonce, piece, associated) for nonce, piece in zip(nonces, pieces))
    assert plaintext == payload


def test_seal_never_repeats_nonce_under_one_key(keys, monkeypatch):
    used = []
    original = sealing._nonce

    def record(counter, last):
        nonce = original(counter, last)
        used.append(nonce)
        return nonce

    monkeypatch.setattr(sealing, "_nonce", record)
    _seal(keys, os.urandom(50 * CHUNK + 1))
    assert len(used) == 51
    assert len(set(used)) == len(used)
    assert [nonce[-1] for nonce in used] == [0] * 50 + [1]


def test_seal_empty_payload_has_one_final_chunk(keys):
    blob = _seal(keys, b"")
    header = parse_header(blob)
    assert len(blob) == len(header.raw) + TAG_BYTES
    assert _unseal(keys, blob) == b""


# Data owner signatures


@pytest.fixture(scope="module")
def owner():
    return Ed25519PrivateKey.generate()


def _signer_fingerprint(private_key) -> str:
    return hashlib.sha256(private_key.public_key().public_bytes_raw()).hexdigest()


def test_signed_seal_round_trip(keys, owner):
    sealed = confidential_nb.seal(b"owned data", key=keys.public, signer=owner)
    assert sealed.signer == _signer_fingerprint(owner)
    assert _unseal(keys, bytes(sealed)) == b"owned data"


def test_unsigned_seal_has_no_signer(keys):
    assert confidential_nb.seal(b"x", key=keys.public).signer is None


def test_signer_must_be_ed25519(keys):
    with pytest.raises(TypeError, match="Ed25519PrivateKey"):
        confidential_nb.seal(b"x", key=keys.public, signer=b"not a key")


def test_signed_tampered_signature_fails(keys, owner):
    blob = bytearray(_seal(keys, b"x" * 100, signer=owner))
    end = len(parse_header(bytes(blob)).raw)
    blob[end - 1] ^= 0x01
    with pytest.raises(SealError, match="failed authentication"):
        Sealed(bytes(blob))


@pytest.mark.parametrize("offset", [9, 20, 60, -SIGNATURE_BLOCK_BYTES - 3])
def test_signed_tampered_header_fails_without_key(keys, owner, offset):
    blob = _seal(keys, b"x" * 100, signer=owner)
    header_length = len(parse_header(blob).raw)
    tampered = bytearray(blob)
    tampered[offset % header_length] ^= 0x01
    with pytest.raises(SealError):
        parse_header(bytes(tampered))


def test_signed_metadata_edit_fails_without_key(keys, owner):
    blob = _seal(keys, b"x", signer=owner, policy=Policy(max_result_bytes=1000))
    edited = blob.replace(b'"max_result_bytes":1000', b'"max_result_bytes":9999')
    assert edited != blob
    with pytest.raises(SealError, match="failed authentication"):
        parse_header(edited)


def test_signed_stripped_signature_block_fails_to_unseal(keys, owner):
    blob = _seal(keys, b"x" * 100, signer=owner)
    header = parse_header(blob)
    end = len(header.raw)
    stripped = bytearray(blob[: end - SIGNATURE_BLOCK_BYTES] + blob[end:])
    stripped[56:58] = struct.pack("!H", 0)
    assert parse_header(bytes(stripped)).signer is None
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, bytes(stripped))


def test_signed_swapped_signer_key_fails(keys, owner):
    blob = bytearray(_seal(keys, b"x" * 100, signer=owner))
    end = len(parse_header(bytes(blob)).raw)
    key_start = end - SIGNATURE_BLOCK_BYTES
    blob[key_start : key_start + 32] = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(SealError, match="failed authentication"):
        parse_header(bytes(blob))


def test_signed_resigned_by_other_key_fails_to_unseal(keys, owner):
    # An attacker can re-sign the header with their own key, but the signer
    # key is bound into the HPKE info, so the enclave rejects the blob.
    blob = _seal(keys, b"x" * 100, signer=owner)
    end = len(parse_header(blob).raw)
    attacker = Ed25519PrivateKey.generate()
    unsigned = blob[: end - SIGNATURE_BLOCK_BYTES] + attacker.public_key().public_bytes_raw()
    signature = attacker.sign(sealing._SIGNATURE_CONTEXT + unsigned)
    forged = unsigned + signature + blob[end:]
    assert parse_header(forged).signer == _signer_fingerprint(attacker)
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, forged)


def test_signature_not_movable_to_other_blob(keys, owner):
    first = _seal(keys, b"x" * 100, signer=owner)
    second = _seal(keys, b"x" * 100, signer=owner)
    first_end, second_end = len(parse_header(first).raw), len(parse_header(second).raw)
    moved = second[: second_end - SIGNATURE_BYTES] + first[first_end - SIGNATURE_BYTES : first_end] + second[second_end:]
    with pytest.raises(SealError, match="failed authentication"):
        parse_header(moved)


# Streaming files


@pytest.mark.parametrize("length", [0, 1, CHUNK, 3 * CHUNK + 7])
def test_seal_file_round_trip(keys, tmp_path, length):
    payload = os.urandom(length)
    (tmp_path / "plain").write_bytes(payload)
    sealed = seal_file(tmp_path / "plain", tmp_path / "blob", key=keys.public, chunk_size=CHUNK)
    assert sealed.nbytes == (tmp_path / "blob").stat().st_size
    assert sealed.plaintext_nbytes == length
    assert _unseal(keys, bytes(sealed)) == payload

    header = unseal_file(tmp_path / "blob", tmp_path / "out", keys.hpke_private, keys.public)
    assert header.plaintext_length == length
    assert (tmp_path / "out").read_bytes() == payload
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o600


def test_seal_file_signed_and_policy(keys, owner, tmp_path):
    (tmp_path / "plain").write_bytes(b"abc")
    sealed = seal_file(tmp_path / "plain", tmp_path / "blob", key=keys.public, signer=owner, policy={"max_result_bytes": 10})
    assert sealed.signer == _signer_fingerprint(owner)
    assert sealed.policy.max_result_bytes == 10
    assert Sealed.load(tmp_path / "blob").signer == sealed.signer


def test_seal_file_matches_seal_bytes_format(keys, tmp_path):
    payload = os.urandom(2 * CHUNK + 1)
    (tmp_path / "plain").write_bytes(payload)
    seal_file(tmp_path / "plain", tmp_path / "blob", key=keys.public, chunk_size=CHUNK)
    header, plaintext = unseal_bytes((tmp_path / "blob").read_bytes(), keys.hpke_private, keys.public)
    assert plaintext == payload
    assert header.chunk_size == CHUNK
    assert header.content_type == "bytes"


@pytest.mark.parametrize("mutation", ["flip", "truncate", "append", "flip header"])
def test_unseal_file_failure_leaves_no_output(keys, tmp_path, mutation):
    blob = _seal(keys, os.urandom(3 * CHUNK))
    mutated = {
        "flip": blob[:-20] + bytes([blob[-20] ^ 1]) + blob[-19:],
        "truncate": blob[: -CHUNK - TAG_BYTES],
        "append": blob + b"\x00",
        "flip header": blob[:300] + bytes([blob[300] ^ 1]) + blob[301:],
    }[mutation]
    (tmp_path / "blob").write_bytes(mutated)
    with pytest.raises(SealError, match="failed authentication"):
        unseal_file(tmp_path / "blob", tmp_path / "out", keys.hpke_private, keys.public)
    assert not (tmp_path / "out").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["blob"]


def test_unseal_file_wrong_key(keys, other_keys, tmp_path):
    (tmp_path / "blob").write_bytes(_seal(keys, b"x"))
    with pytest.raises(WrongKeyError):
        unseal_file(tmp_path / "blob", tmp_path / "out", other_keys.hpke_private, other_keys.public)
    assert not (tmp_path / "out").exists()


def test_sealed_load_reads_only_header(keys, tmp_path, monkeypatch):
    path = tmp_path / "blob"
    path.write_bytes(_seal(keys, os.urandom(20 * CHUNK)))
    header_length = len(parse_header(path.read_bytes()).raw)
    reads = []
    original = sealing.read_header

    def counting(reader):
        header = original(reader)
        reads.append(reader.tell())
        return header

    monkeypatch.setattr(sealing, "read_header", counting)
    loaded = Sealed.load(path)
    assert reads == [header_length]
    assert loaded.digest == sealing.input_digest(path.read_bytes())


def test_sealed_file_backed_save_copies(keys, tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(_seal(keys, os.urandom(3 * CHUNK)))
    copy = Sealed.load(path).save(tmp_path / "copy")
    assert copy.read_bytes() == path.read_bytes()


def test_sealed_load_truncated_header(keys, tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(_seal(keys, b"x")[:100])
    with pytest.raises(SealError, match="failed authentication"):
        Sealed.load(path)


# Bounds and fuzzing


def test_seal_metadata_must_be_canonical(keys):
    blob = _seal(keys, b"x")
    spaced = blob.replace(b'"chunk_size":', b'"chunk_size": ', 1)
    metadata_length = struct.unpack("!I", blob[52:56])[0]
    spaced = spaced[:52] + struct.pack("!I", metadata_length + 1) + spaced[56:]
    with pytest.raises(SealError, match="failed authentication"):
        parse_header(spaced)


def test_seal_header_without_body_fails(keys):
    blob = _seal(keys, b"x")
    header = parse_header(blob)
    with pytest.raises(SealError, match="failed authentication"):
        unseal_bytes(blob[: len(header.raw)], keys.hpke_private, keys.public)


_FUZZ_SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fuzz_blob(keys):
    return _seal(keys, os.urandom(3 * CHUNK + 1), signer=Ed25519PrivateKey.generate())


@_FUZZ_SETTINGS
@given(data=st.binary(max_size=2048))
def test_fuzz_random_input_raises_only_seal_error(keys, data):
    for candidate in (data, sealing.MAGIC + data):
        with pytest.raises(SealError):
            parse_header(candidate)
        with pytest.raises(SealError):
            unseal_bytes(candidate, keys.hpke_private, keys.public)


@_FUZZ_SETTINGS
@given(
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    tail=st.binary(max_size=8),
)
def test_fuzz_mutated_blob_raises_only_seal_error(keys, fuzz_blob, edits, cut, tail):
    mutated = bytearray(fuzz_blob)
    for offset, mask in edits:
        mutated[offset % len(mutated)] ^= mask
    if cut is not None:
        del mutated[cut % len(mutated) :]
    mutated += tail
    assume(bytes(mutated) != fuzz_blob)
    try:
        parse_header(bytes(mutated))
    except SealError:
        pass
    with pytest.raises(SealError):
        unseal_bytes(bytes(mutated), keys.hpke_private, keys.public)
