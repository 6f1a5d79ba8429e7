"""Stored test vectors of the sealed format (tests/vectors/sealed_v2.json).

The vectors pin format version 2 byte for byte: a change to sealing.py that
alters any byte fails here. `test_vector_matches_spec_reading` rereads each
blob with only the standard primitives and the steps in docs/FORMAT.md, as a
second implementation would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, MLKEM768X25519PrivateKey, Suite

from confidential_nb.frame_codec import decode_frame
from confidential_nb.keys import PublicKey
from confidential_nb.policy import Policy
from confidential_nb.sealing import Sealed, _unwrap_data_key, parse_header, seal_bytes, unseal_bytes

VECTORS = json.loads((Path(__file__).parent / "vectors" / "sealed_v2.json").read_text())
CASES = VECTORS["cases"]


def _private_key(kem: str) -> Any:
    material = VECTORS["recipients"][kem]
    classical = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(material["x25519_private"]))
    if kem == "X25519":
        return classical
    return MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(material["mlkem768_seed"])), classical)


def _public_key(kem: str) -> PublicKey:
    return PublicKey.from_dict(VECTORS["recipients"][kem]["public_key"])


def _signer(case: dict[str, Any]) -> ed25519.Ed25519PrivateKey | None:
    seed = case["signer_ed25519_private"]
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed)) if seed else None


def _ids(case: dict[str, Any]) -> str:
    return str(case["name"]).replace(" ", "-")


def test_vectors_cover_each_kind():
    names = {case["name"] for case in CASES}
    for kem in ("X25519", "MLKEM768_X25519"):
        assert {f"{kem} bytes", f"{kem} dataframe", f"{kem} signed bytes"} <= names
    assert VECTORS["format_version"] == 2


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vector_unseals_to_plaintext(case):
    blob = bytes.fromhex(case["blob"])
    header, plaintext = unseal_bytes(blob, _private_key(case["kem"]), _public_key(case["kem"]))
    assert plaintext == bytes.fromhex(case["plaintext"])
    assert header.content_type == case["content_type"]
    assert header.metadata["created"] == case["created"]
    assert header.metadata["policy"] == case["policy"]
    assert header.metadata["schema"] == case["schema"]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vector_sealed_properties(case):
    sealed = Sealed(bytes.fromhex(case["blob"]))
    assert sealed.recipient == case["recipient_fingerprint"]
    assert sealed.recipient == _public_key(case["kem"]).fingerprint
    assert sealed.signer == case["signer_fingerprint"]
    assert sealed.digest == case["input_digest"]
    assert sealed.kem == case["kem"]
    assert sealed.plaintext_nbytes == len(bytes.fromhex(case["plaintext"]))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vector_wraps_stored_data_key(case):
    header = parse_header(bytes.fromhex(case["blob"]))
    assert _unwrap_data_key(header, _private_key(case["kem"]), _public_key(case["kem"])).hex() == case["data_key"]


@pytest.mark.parametrize("case", [case for case in CASES if case["content_type"] == "dataframe"], ids=_ids)
def test_vector_dataframe_decodes(case):
    frame = decode_frame(bytes.fromhex(case["plaintext"]))
    # The string storage backend may differ between pandas builds, so compare dtypes by name.
    pd.testing.assert_frame_equal(frame, pd.DataFrame(VECTORS["dataframe"]), check_dtype=False)
    assert [str(dtype) for dtype in frame.dtypes] == case["schema"]["dtypes"]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vector_regenerates_byte_for_byte(case):
    blob = bytes.fromhex(case["blob"])
    wrapped_start = case["wrapped_key_offset"]
    wrapped_end = wrapped_start + case["wrapped_key_length"]
    rebuilt = seal_bytes(
        bytes.fromhex(case["plaintext"]),
        _public_key(case["kem"]),
        content_type=case["content_type"],
        policy=Policy.from_dict(case["policy"]),
        schema=case["schema"],
        chunk_size=case["chunk_size"],
        signer=_signer(case),
        created=case["created"],
        data_key=bytes.fromhex(case["data_key"]),
        wrapped_key=blob[wrapped_start:wrapped_end],
    )
    assert rebuilt[:wrapped_start] == blob[:wrapped_start]
    assert rebuilt[wrapped_end:] == blob[wrapped_end:]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vector_matches_spec_reading(case):
    """Read the blob with the steps of docs/FORMAT.md, without confidential_nb.sealing."""
    blob = bytes.fromhex(case["blob"])
    magic, version, kem_id, kdf_id, aead_id, fingerprint, wrapped_length, metadata_length, signature_length = struct.unpack(
        "!8sHHHH32sIIH", blob[:58]
    )
    assert (magic, version, kem_id, kdf_id, aead_id) == (b"CNBSEAL\n", 2, case["kem_id"], 0x0001, 0x0002)
    assert fingerprint.hex() == case["recipient_fingerprint"]
    assert signature_length == (96 if case["signer_fingerprint"] else 0)

    wrapped = blob[58 : 58 + wrapped_length]
    metadata_start = 58 + wrapped_length
    metadata = blob[metadata_start : metadata_start + metadata_length]
    header_end = metadata_start + metadata_length + signature_length
    header = blob[:header_end]
    assert metadata.decode("ascii") == case["metadata"]
    assert json.dumps(json.loads(metadata), sort_keys=True, separators=(",", ":")).encode() == metadata

    signer_key = b""
    if signature_length:
        signer_key = header[-96:-64]
        ed25519.Ed25519PublicKey.from_public_bytes(signer_key).verify(
            header[-64:], b"confidential_nb seal signature v2\x00" + header[:-64]
        )
        assert hashlib.sha256(signer_key).hexdigest() == case["signer_fingerprint"]

    info = b"confidential_nb seal v2\x00" + hashlib.sha256(blob[:58] + metadata + signer_key).digest()
    assert info.hex() == case["hpke_info"]
    suite = Suite(getattr(KEM, case["kem"]), KDF.HKDF_SHA256, AEAD.AES_256_GCM)
    data_key = suite.decrypt(wrapped, _private_key(case["kem"]), info=info)

    associated = hashlib.sha256(header).digest()
    assert associated.hex() == case["chunk_associated_data"]
    cipher = AESGCM(data_key)
    body = blob[header_end:]
    step = case["chunk_size"] + 16
    count = max(1, -(-len(bytes.fromhex(case["plaintext"])) // case["chunk_size"]))
    assert len(body) == len(bytes.fromhex(case["plaintext"])) + 16 * count
    pieces = []
    for index in range(count):
        nonce = index.to_bytes(11, "big") + (b"\x01" if index == count - 1 else b"\x00")
        pieces.append(cipher.decrypt(nonce, body[index * step : (index + 1) * step], associated))
    assert b"".join(pieces).hex() == case["plaintext"]
    assert hashlib.sha256(blob).hexdigest() == case["digest"]


@pytest.mark.parametrize("kem", ["X25519", "MLKEM768_X25519"])
def test_vector_recipient_fingerprint_matches_spec(kem):
    public = VECTORS["recipients"][kem]["public_key"]
    mlkem_part = base64.b64decode(public["mlkem768"])
    x25519_part = base64.b64decode(public["x25519"])
    kem_id = {"X25519": 0x0020, "MLKEM768_X25519": 0x647A}[kem]
    digest = hashlib.sha256(b"confidential_nb public key v1\x00")
    digest.update(struct.pack("!H", kem_id))
    digest.update(struct.pack("!I", len(mlkem_part)) + mlkem_part)
    digest.update(struct.pack("!I", len(x25519_part)) + x25519_part)
    assert digest.hexdigest() == public["fingerprint"]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vector_input_digest_from_spec(case):
    # Recomputed from FORMAT.md alone: context, whole header, then each chunk's last 16 bytes.
    blob = bytes.fromhex(case["blob"])
    header_length = len(parse_header(blob).raw)
    chunk_size = json.loads(blob[58 + struct.unpack("!I", blob[48:52])[0] : header_length - struct.unpack("!H", blob[56:58])[0]])["chunk_size"]
    digest = hashlib.sha256(b"confidential_nb input digest v2\x00" + blob[:header_length])
    body = blob[header_length:]
    for start in range(0, len(body), chunk_size + 16):
        chunk = body[start : start + chunk_size + 16]
        digest.update(chunk[-16:])
    assert digest.hexdigest() == case["input_digest"]
