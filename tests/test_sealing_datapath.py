"""Sealing straight into pooled memory files, and unsealing chunk by chunk into a buffer."""

from __future__ import annotations

import copy
import gc
import hashlib
import os
import pickle

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb import sealing
from confidential_nb.errors import SealError
from confidential_nb.frame_codec import decode_frame, encode_frame, encode_frame_parts
from confidential_nb.keys import ensure_keys
from confidential_nb.policy import Policy
from confidential_nb.sealing import (
    Sealed,
    host_pool,
    input_digest,
    read_header_at,
    seal_bytes,
    seal_parts,
    unseal_bytes,
    unseal_into,
)
from confidential_nb.shared_buffers import BufferPool


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return ensure_keys(tmp_path_factory.mktemp("datapath-keys"))


@pytest.fixture(scope="module")
def key_pair(keys):
    pair = keys.for_recipient(keys.public.fingerprint)
    assert pair is not None
    return pair


def _reader(blob: bytes):
    source = memoryview(blob)

    def read_at(offset: int, view: memoryview) -> int:
        piece = source[offset : offset + len(view)]
        view[: len(piece)] = piece
        return len(piece)

    return read_at


def _unseal(blob: bytes, key_pair) -> tuple[bytes, str]:
    public, private = key_pair
    read_at = _reader(blob)
    header = read_header_at(read_at)
    output = bytearray()

    def allocate(length: int) -> memoryview:
        output.extend(bytes(length))
        return memoryview(output)

    digest = unseal_into(read_at, len(blob), header, private, public, allocate)
    return bytes(output), digest


PART_CASES = [
    [b""],
    [b"abc"],
    [b"0123456789", b"ab", b"", b"cdefghijklmnopq"],
    [os.urandom(100) for _ in range(7)],
]


@pytest.mark.parametrize("parts", PART_CASES)
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
def test_seal_parts_unseals_to_joined_parts(parts, chunk_size, keys, key_pair):
    pool = BufferPool(1024**2, sealed=False)
    buffer, length = seal_parts(parts, keys.public, content_type="bytes", policy=Policy(), schema=None, pool=pool,
                                chunk_size=chunk_size)
    blob = bytes(buffer.mapping[:length])
    pool.release(buffer)

    public, private = key_pair
    _, payload = unseal_bytes(blob, private, public)
    assert payload == b"".join(parts)
    assert _unseal(blob, key_pair) == (payload, input_digest(blob))


def test_seal_parts_matches_seal_bytes(keys, monkeypatch):
    # With the same data key, creation time and HPKE output, both sealers must write the same bytes.
    data_key = bytes(range(32))
    monkeypatch.setattr(sealing.os, "urandom", lambda count: data_key[:count])
    parts = [b"x" * 3000, memoryview(b"y" * 5000), b"z"]
    pool = BufferPool(1024**2, sealed=False)
    buffer, length = seal_parts(parts, keys.public, content_type="bytes", policy=Policy(), schema=None, pool=pool,
                                chunk_size=1024)
    blob = bytes(buffer.mapping[:length])
    pool.release(buffer)

    header = Sealed(blob).header
    reference = seal_bytes(b"".join(parts), keys.public, content_type="bytes", policy=Policy(), schema=None,
                           chunk_size=1024, created=header.metadata["created"], data_key=data_key,
                           wrapped_key=header.wrapped_key)
    assert blob == reference


def test_unseal_into_rejects_each_tampered_region(keys, key_pair):
    blob = seal_bytes(os.urandom(5000), keys.public, content_type="bytes", policy=Policy(), schema=None,
                      chunk_size=1024)
    header_length = len(Sealed(blob).header.raw)
    for position in (header_length - 1, header_length, header_length + 1500, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(SealError):
            _unseal(bytes(tampered), key_pair)


def test_unseal_into_rejects_truncated_blob(keys, key_pair):
    blob = seal_bytes(os.urandom(5000), keys.public, content_type="bytes", policy=Policy(), schema=None,
                      chunk_size=1024)
    with pytest.raises(SealError):
        _unseal(blob[:-1], key_pair)


def test_unseal_into_allocates_only_after_authentication(keys, key_pair):
    blob = bytearray(seal_bytes(b"payload", keys.public, content_type="bytes", policy=Policy(), schema=None))
    blob[len(Sealed(bytes(blob)).header.raw) - 1] ^= 0x01
    public, private = key_pair
    read_at = _reader(bytes(blob))
    calls = []

    def allocate(length: int) -> memoryview:
        calls.append(length)
        return memoryview(bytearray(length))

    with pytest.raises(SealError):
        unseal_into(read_at, len(blob), read_header_at(read_at), private, public, allocate)
    assert calls == []


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(rng.random((4, 3000)).T, columns=["a", "b", "c", "d"])


def test_encode_frame_parts_join_to_encoding(frame):
    assert b"".join(encode_frame_parts(frame)) == encode_frame(frame)


def test_encode_frame_parts_view_column_buffers(frame):
    parts = encode_frame_parts(frame)
    block = frame._mgr.blocks[0].values
    shared = [part for part in parts if isinstance(part, memoryview) and np.shares_memory(np.frombuffer(part, np.uint8), block)]
    assert len(shared) == frame.shape[1]


def test_sealed_frame_in_memory_file(frame, keys, key_pair):
    sealed = confidential_nb.seal(frame, key=keys.public)
    assert sealed.path is None
    attachment = sealed.wire_attachment()
    assert not isinstance(attachment, bytes)
    assert attachment.length == sealed.nbytes
    assert os.pread(attachment.fd, 8, 0) == b"CNBSEAL\n"

    public, private = key_pair
    _, payload = unseal_bytes(bytes(sealed), private, public)
    pd.testing.assert_frame_equal(decode_frame(payload), frame)
    assert sealed.digest == input_digest(bytes(sealed))


def test_sealed_bytes_is_a_copy(keys):
    sealed = confidential_nb.seal(b"secret bytes", key=keys.public)
    copy = bytes(sealed)
    assert isinstance(copy, bytes)
    assert hashlib.sha256(copy).hexdigest() == hashlib.sha256(bytes(sealed)).hexdigest()


def test_sealed_save_and_load(frame, keys, tmp_path):
    sealed = confidential_nb.seal(frame, key=keys.public)
    path = sealed.save(tmp_path / "frame.sealed")
    assert path.read_bytes() == bytes(sealed)
    assert Sealed.load(path).digest == sealed.digest


def test_collected_sealed_returns_buffer_to_pool(keys):
    pool = host_pool()
    sealed = confidential_nb.seal(b"z" * 3_000_000, key=keys.public)
    descriptor = sealed.wire_attachment().fd
    free_before = pool.free_bytes
    del sealed
    gc.collect()
    reused = confidential_nb.seal(b"w" * 3_000_000, key=keys.public)
    # The first seal's buffer came back through the finalizer's queue and was handed out again.
    assert reused.wire_attachment().fd == descriptor
    assert pool.free_bytes <= free_before


def test_copied_sealed_is_same_object(keys):
    sealed = confidential_nb.seal(b"copy me", key=keys.public)
    assert copy.copy(sealed) is sealed
    assert copy.deepcopy(sealed) is sealed


def test_pickled_sealed_outlives_original(keys):
    sealed = confidential_nb.seal(b"pickle me", key=keys.public)
    blob = bytes(sealed)
    restored = pickle.loads(pickle.dumps(sealed))
    del sealed
    gc.collect()
    confidential_nb.seal(b"reuses the buffer", key=keys.public)
    assert bytes(restored) == blob
    assert restored.wire_attachment() == blob


def test_pickled_file_sealed_keeps_path(keys, tmp_path):
    path = confidential_nb.seal(b"on disk", key=keys.public).save(tmp_path / "blob.sealed")
    restored = pickle.loads(pickle.dumps(Sealed.load(path)))
    assert restored.path == path
