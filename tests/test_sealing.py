from __future__ import annotations

import json
import os
import struct
import subprocess

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb.errors import SealError, WrongKeyError
from confidential_nb.keys import KEM_X25519, ensure_keys
from confidential_nb.policy import Policy
from confidential_nb.sealing import (
    TAG_BYTES,
    Sealed,
    parse_header,
    seal_bytes,
    unseal_bytes,
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
    prefix = 56
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
    "encapsulated key", "wrapped data key", "wrapped key tag", "metadata", "first chunk", "first chunk tag",
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
    blob[8:10] = struct.pack("!H", 2)
    with pytest.raises(SealError, match="format version 2"):
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

    public = json.loads((home / "enclave" / "public.json").read_text())
    assert sealed.recipient == public["key"]["fingerprint"]
    assert (home / "enclave" / "private.json").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    # The one-shot enclave exited: no monitor process for this home remains.
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(home) not in processes
