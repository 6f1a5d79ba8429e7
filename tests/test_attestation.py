from __future__ import annotations

import copy
import hashlib

import pytest

from confidential_nb.attestation import AttestationDocument, Receipt, runtime_measurement, sign_document, sign_receipt
from confidential_nb.errors import AttestationError
from confidential_nb.keys import ensure_keys, load_public_key, load_root_public

NONCE = "ab" * 32


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("attestation-home")
    ensure_keys(path)
    return path


@pytest.fixture(scope="module")
def keys(home):
    return ensure_keys(home)


@pytest.fixture
def document(keys):
    return sign_document(keys, NONCE, {"resource_limits": True})


def _resigned(keys, body) -> AttestationDocument:
    """A document re-signed by the real platform key, to test checks beyond the signature."""
    from confidential_nb.attestation import _DOCUMENT_CONTEXT
    from confidential_nb.keys import canonical_json

    return AttestationDocument(body=body, signature=keys.platform_sign(_DOCUMENT_CONTEXT + canonical_json(body)))


def test_attestation_valid_document_returns_key(home, document, keys):
    key = document.verify(load_root_public(home), nonce=NONCE)
    assert key.fingerprint == keys.public.fingerprint
    assert document.measurements["runtime"] == runtime_measurement()


def test_attestation_survives_json_round_trip(home, document):
    copied = AttestationDocument.from_dict(document.to_dict())
    assert copied.verify(load_root_public(home), nonce=NONCE).fingerprint == document.public_key.fingerprint


def test_attestation_wrong_nonce_rejected(home, document):
    with pytest.raises(AttestationError, match="nonce"):
        document.verify(load_root_public(home), nonce="cd" * 32)


def test_attestation_edited_body_rejected(home, document):
    body = copy.deepcopy(document.body)
    body["debug"] = True
    with pytest.raises(AttestationError, match="not signed by this machine's platform key"):
        AttestationDocument(body=body, signature=document.signature).verify(load_root_public(home), nonce=NONCE)


def test_attestation_other_platform_key_rejected(document, tmp_path):
    other = tmp_path / "other"
    ensure_keys(other)
    with pytest.raises(AttestationError, match="platform key"):
        document.verify(load_root_public(other), nonce=NONCE)


def test_attestation_all_zero_measurement_rejected(home, keys, document):
    body = copy.deepcopy(document.body)
    body["measurements"]["runtime"] = "0" * 64
    with pytest.raises(AttestationError, match="all-zero"):
        _resigned(keys, body).verify(load_root_public(home), nonce=NONCE)


def test_attestation_other_runtime_rejected(home, keys, document):
    body = copy.deepcopy(document.body)
    body["measurements"]["runtime"] = "1" * 64
    with pytest.raises(AttestationError, match="runs different code"):
        _resigned(keys, body).verify(load_root_public(home), nonce=NONCE)


def test_attestation_debug_enclave_rejected(home, keys, document):
    body = copy.deepcopy(document.body)
    body["debug"] = True
    with pytest.raises(AttestationError, match="debug enclave"):
        _resigned(keys, body).verify(load_root_public(home), nonce=NONCE)


def test_attestation_public_key_file_endorsed(home, keys):
    assert load_public_key(home).fingerprint == keys.public.fingerprint


def test_attestation_forged_public_key_file_rejected(home, tmp_path):
    import json
    import shutil

    forged_home = tmp_path / "forged"
    shutil.copytree(home, forged_home)
    other = ensure_keys(tmp_path / "elsewhere")
    path = forged_home / "enclave" / "public.json"
    document = json.loads(path.read_text())
    document["key"] = other.public.to_dict()
    path.write_text(json.dumps(document))
    with pytest.raises(AttestationError, match="not signed by this machine's platform key"):
        load_public_key(forged_home)


@pytest.fixture
def receipt(keys) -> Receipt:
    return sign_receipt(keys, {"run_id": "r1", "nonce": NONCE, "function_checksum": "f" * 64,
                               "result_digest": hashlib.sha256(b"result").hexdigest()})


def test_receipt_verifies_and_binds(receipt):
    assert receipt.verify() is True
    receipt.check_binding(nonce=NONCE, result=b"result")


def test_receipt_edited_body_rejected(receipt):
    receipt.body["result_digest"] = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(AttestationError, match="does not verify"):
        receipt.verify()


def test_receipt_other_result_rejected(receipt):
    with pytest.raises(AttestationError, match="result digest does not match"):
        receipt.check_binding(nonce=NONCE, result=b"tampered result")


def test_receipt_other_nonce_rejected(receipt):
    with pytest.raises(AttestationError, match="nonce"):
        receipt.check_binding(nonce="00" * 32, result=b"result")


def test_receipt_other_signer_rejected(receipt, tmp_path):
    other = ensure_keys(tmp_path / "other-signer")
    with pytest.raises(AttestationError, match="does not verify"):
        receipt.verify(signer=other.public)


def test_receipt_without_signer_rejected(receipt):
    unsigned = Receipt.from_dict(receipt.to_dict())
    with pytest.raises(AttestationError, match="no signing key"):
        unsigned.verify()


def test_receipt_save_and_load(receipt, tmp_path):
    path = receipt.save(tmp_path / "receipt.json")
    loaded = Receipt.load(path)
    assert loaded.verify() is True
    assert loaded.body == receipt.body


def test_keys_widened_private_file_restricted_again(tmp_path):
    home = tmp_path / "widened"
    ensure_keys(home)
    private = home / "enclave" / "private.json"
    private.chmod(0o644)
    ensure_keys(home)
    assert private.stat().st_mode & 0o777 == 0o600


def test_keys_corrupt_public_file_named(tmp_path):
    home = tmp_path / "corrupt"
    ensure_keys(home)
    (home / "enclave" / "public.json").write_text('{"key": 5}')
    with pytest.raises(AttestationError, match=r"public key file .*public.json is invalid .*delete the key home"):
        load_public_key(home)
