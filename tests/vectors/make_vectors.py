"""Write the sealed-format test vectors in sealed_v2.json.

Run from the repository root: ``python3 tests/vectors/make_vectors.py``.

Every input is fixed: the recipient keys, the data owner's signing key and
the data keys derive from SHA-256 of fixed labels, and the creation time is a
constant. The HPKE encapsulation is random, because `cryptography` offers no
way to fix the ephemeral key, so each run writes different wrapped keys and
chunks. Rerun it only when the format changes, and bump the format version
then. These keys are for tests only: never seal real data to them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from confidential_nb.frame_codec import encode_frame, frame_schema
from confidential_nb.keys import KEM_IDS, KEM_MLKEM768_X25519, KEM_X25519, PublicKey
from confidential_nb.policy import Policy
from confidential_nb.sealing import SIGNATURE_BLOCK_BYTES, VERSION, _hpke_info, encode_metadata, input_digest, parse_header, seal_bytes

OUTPUT = Path(__file__).with_name("sealed_v2.json")
CREATED = "2026-01-01T00:00:00+00:00"
CHUNK_SIZE = 32


def derive(label: str, length: int = 32) -> bytes:
    """Return `length` fixed bytes for `label` (SHA-256 in counter mode)."""
    output = b""
    counter = 0
    while len(output) < length:
        output += hashlib.sha256(f"confidential_nb test vector {label} {counter}".encode()).digest()
        counter += 1
    return output[:length]


def recipient_keys(kem: str) -> dict[str, Any]:
    """Return the fixed private key material of the test recipient for `kem`, hex encoded."""
    return {
        "kem": kem,
        "x25519_private": derive(f"{kem} x25519").hex(),
        "mlkem768_seed": derive(f"{kem} mlkem768", 64).hex() if kem == KEM_MLKEM768_X25519 else "",
        "signing_ed25519_private": derive(f"{kem} signing").hex(),
    }


def public_key(private: dict[str, str]) -> PublicKey:
    seed = bytes.fromhex(private["mlkem768_seed"])
    return PublicKey(
        kem=private["kem"],
        mlkem768=mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw() if seed else b"",
        x25519=x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(private["x25519_private"])).public_key().public_bytes_raw(),
        signing=ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private["signing_ed25519_private"])).public_key().public_bytes_raw(),
    )


def sample_frame() -> pd.DataFrame:
    return pd.DataFrame({"age": [34, 51, 27], "score": [0.5, 1.25, -3.0], "name": ["ann", "bo", "cy"]})


def frame_to_json(frame: pd.DataFrame) -> dict[str, list[Any]]:
    return {str(column): frame[column].tolist() for column in frame.columns}


def make_case(name: str, kem: str, recipient: PublicKey, *, content_type: str, plaintext: bytes,
              policy: Policy, schema: dict[str, Any] | None, signer_seed: bytes | None) -> dict[str, Any]:
    data_key = derive(f"{name} data key")
    signer = ed25519.Ed25519PrivateKey.from_private_bytes(signer_seed) if signer_seed is not None else None
    blob = seal_bytes(plaintext, recipient, content_type=content_type, policy=policy, schema=schema,
                      chunk_size=CHUNK_SIZE, signer=signer, created=CREATED, data_key=data_key)
    header = parse_header(blob)
    metadata = encode_metadata(header.metadata)
    metadata_start = 58 + len(header.wrapped_key)
    signature_block = blob[metadata_start + len(metadata) : len(header.raw)]
    return {
        "name": name,
        "kem": kem,
        "kem_id": KEM_IDS[kem],
        "recipient_fingerprint": recipient.fingerprint,
        "content_type": content_type,
        "chunk_size": CHUNK_SIZE,
        "created": CREATED,
        "policy": policy.to_dict(),
        "schema": schema,
        "data_key": data_key.hex(),
        "signer_ed25519_private": signer_seed.hex() if signer_seed is not None else None,
        "signer_fingerprint": header.signer,
        "plaintext": plaintext.hex(),
        "header_length": len(header.raw),
        "wrapped_key_offset": 58,
        "wrapped_key_length": len(header.wrapped_key),
        "metadata": metadata.decode("ascii"),
        "signature_block": signature_block.hex(),
        "hpke_info": _hpke_info(blob[:58], metadata, header.signer_key or b"").hex(),
        "chunk_associated_data": hashlib.sha256(header.raw).hexdigest(),
        "digest": hashlib.sha256(blob).hexdigest(),
        "input_digest": input_digest(blob),
        "blob": blob.hex(),
    }


def main() -> None:
    frame = sample_frame()
    recipients = {kem: recipient_keys(kem) for kem in (KEM_X25519, KEM_MLKEM768_X25519)}
    signer_seed = derive("data owner signing key")
    cases = []
    for kem, private in recipients.items():
        recipient = public_key(private)
        private["public_key"] = recipient.to_dict()
        cases.append(make_case(f"{kem} bytes", kem, recipient, content_type="bytes",
                               plaintext=b"confidential_nb sealed format test vector, three chunks and a bit.\n",
                               policy=Policy(), schema=None, signer_seed=None))
        cases.append(make_case(f"{kem} dataframe", kem, recipient, content_type="dataframe",
                               plaintext=encode_frame(frame), policy=Policy(), schema=frame_schema(frame), signer_seed=None))
        cases.append(make_case(f"{kem} signed bytes", kem, recipient, content_type="bytes", plaintext=b"signed by the data owner",
                               policy=Policy(max_result_bytes=4096, expires="2030-01-01T00:00:00+00:00", schema_public=False),
                               schema=None, signer_seed=signer_seed))
        cases.append(make_case(f"{kem} empty", kem, recipient, content_type="bytes", plaintext=b"",
                               policy=Policy(), schema=None, signer_seed=None))
    document = {
        "description": "confidential_nb sealed format test vectors; docs/FORMAT.md explains every field. Test keys only.",
        "format_version": VERSION,
        "recipients": recipients,
        "dataframe": frame_to_json(frame),
        "cases": cases,
    }
    OUTPUT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {len(cases)} vectors to {OUTPUT}")


if __name__ == "__main__":
    main()
