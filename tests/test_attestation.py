from __future__ import annotations

import copy
import datetime as dt
import hashlib

import pytest

from confidential_nb.attestation import (
    PCR_NAMES,
    AttestationDocument,
    Receipt,
    _DOCUMENT_CONTEXT,
    check_measurements,
    sign_document,
    sign_receipt,
)
from confidential_nb.errors import AttestationError
from confidential_nb.keys import canonical_json, ensure_keys
from confidential_nb.platform import certificate_fingerprint

NONCE = "ab" * 32


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return ensure_keys(tmp_path_factory.mktemp("attestation-home"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory):
    return ensure_keys(tmp_path_factory.mktemp("other-platform"))


@pytest.fixture
def document(keys):
    return sign_document(keys, NONCE, {"resource_limits": True})


@pytest.fixture
def platform(keys):
    return certificate_fingerprint(keys.platform_certificate)


def _resigned(keys, body) -> AttestationDocument:
    """A document re-signed by the real platform key, to test checks beyond the signature."""
    return AttestationDocument(body=body, signature=keys.platform_sign(_DOCUMENT_CONTEXT + canonical_json(body)))


def _verify(document, platform, **options):
    options.setdefault("nonce", NONCE)
    options.setdefault("expected", document.measurements)
    return document.verify(platform_fingerprint=platform, **options)


def test_attestation_valid_document_returns_key(document, platform, keys):
    assert _verify(document, platform).fingerprint == keys.public.fingerprint
    assert set(document.measurements) == {"0", "1", "2"}


def test_attestation_first_use_skips_measurements(document, platform, keys):
    assert _verify(document, platform, expected=None).fingerprint == keys.public.fingerprint


def test_attestation_survives_json_round_trip(document, platform):
    copied = AttestationDocument.from_dict(document.to_dict())
    assert _verify(copied, platform).fingerprint == document.public_key.fingerprint


def test_attestation_wrong_nonce_rejected(document, platform):
    with pytest.raises(AttestationError, match="nonce"):
        _verify(document, platform, nonce="cd" * 32)


@pytest.mark.parametrize("field", ["module_id", "timestamp", "digest", "pcrs", "sandbox", "certificate",
                                   "public_key", "user_data", "nonce", "debug"])
def test_attestation_each_edited_field_rejected(document, platform, field):
    body = copy.deepcopy(document.body)
    body[field] = {"edited": True} if field != "debug" else True
    with pytest.raises(AttestationError):
        _verify(AttestationDocument(body=body, signature=document.signature), platform)


def test_attestation_edited_signature_rejected(document, platform):
    signature = bytearray(document.signature)
    signature[10] ^= 1
    with pytest.raises(AttestationError, match="not signed by the platform key"):
        _verify(AttestationDocument(body=document.body, signature=bytes(signature)), platform)


def test_attestation_other_platform_rejected(other_keys, platform):
    foreign = sign_document(other_keys, NONCE, {"resource_limits": True})
    with pytest.raises(AttestationError, match="not the pinned platform"):
        _verify(foreign, platform)


def test_attestation_all_zero_measurement_rejected(keys, document, platform):
    body = copy.deepcopy(document.body)
    body["pcrs"]["0"] = "0" * 64
    with pytest.raises(AttestationError, match="all-zero"):
        _verify(_resigned(keys, body), platform, expected=None)


def test_attestation_moved_measurement_named(keys, document, platform):
    body = copy.deepcopy(document.body)
    body["pcrs"]["1"] = "1" * 64
    with pytest.raises(AttestationError, match=r"PCR 1 \(installed dependencies\).*measurements reset"):
        _verify(_resigned(keys, body), platform, expected=document.measurements)


def test_attestation_runtime_change_explains_editable_install(monkeypatch):
    import confidential_nb.attestation as attestation

    monkeypatch.setattr(attestation, "is_editable_install", lambda: True)
    with pytest.raises(AttestationError, match="editable install, so PCR 0 changes with every edit"):
        check_measurements({"0": "a", "1": "b", "2": "c"}, {"0": "x", "1": "b", "2": "c"})


def test_attestation_debug_rejected_unless_allowed(keys, document, platform):
    body = copy.deepcopy(document.body)
    body["debug"] = True
    debug_document = _resigned(keys, body)
    with pytest.raises(AttestationError, match="debug enclave"):
        _verify(debug_document, platform)
    assert _verify(debug_document, platform, allow_debug=True) is not None


def test_attestation_stale_timestamp_rejected(document, platform):
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    with pytest.raises(AttestationError, match="seconds from this machine's clock"):
        _verify(document, platform, now=later)


def test_attestation_missing_measurement_rejected(keys, document, platform):
    body = copy.deepcopy(document.body)
    del body["pcrs"]["2"]
    with pytest.raises(AttestationError, match="expected"):
        _verify(_resigned(keys, body), platform, expected=None)


def test_attestation_pcr_names_cover_three_measurements():
    assert sorted(PCR_NAMES) == ["0", "1", "2"]


@pytest.fixture
def receipt(keys, document) -> Receipt:
    body = {"run_id": "r1", "nonce": NONCE, "function_checksum": "f" * 64,
            "result_digest": hashlib.sha256(b"result").hexdigest()}
    return sign_receipt(keys, body, document)


def test_receipt_verifies_and_binds(receipt, platform):
    assert receipt.verify() is True
    assert receipt.verify(platform_fingerprint=platform) is True
    receipt.check_binding(nonce=NONCE, result=b"result")


@pytest.mark.parametrize("field", ["run_id", "nonce", "function_checksum", "result_digest", "enclave_key",
                                   "debug", "measurements", "attestation_digest"])
def test_receipt_each_edited_field_rejected(receipt, field):
    receipt.body[field] = "edited"
    with pytest.raises(AttestationError):
        receipt.verify()


def test_receipt_edited_embedded_document_rejected(receipt):
    receipt.body["attestation"]["document"]["nonce"] = "00" * 32
    with pytest.raises(AttestationError):
        receipt.verify()


def test_receipt_with_known_document_verifies(receipt, document):
    assert receipt.verify(verified_document=document) is True


def test_receipt_known_document_does_not_cover_edits(receipt, document):
    # Only the very document verified before skips the platform signature; an edited one is checked in full.
    receipt.body["attestation"]["document"]["nonce"] = "00" * 32
    with pytest.raises(AttestationError):
        receipt.verify(verified_document=document)


def test_receipt_known_document_keeps_signer_check(receipt, document, keys):
    receipt.body["run_id"] = "edited"
    with pytest.raises(AttestationError):
        receipt.verify(verified_document=document)


def test_receipt_other_result_rejected(receipt):
    with pytest.raises(AttestationError, match="result digest does not match"):
        receipt.check_binding(nonce=NONCE, result=b"tampered result")


def test_receipt_replayed_for_another_run_rejected(receipt):
    with pytest.raises(AttestationError, match="nonce"):
        receipt.check_binding(nonce="00" * 32, result=b"result")


def test_receipt_other_signer_rejected(receipt, other_keys):
    with pytest.raises(AttestationError, match="not the key its attestation document attests"):
        receipt.verify(signer=other_keys.public)


def test_receipt_other_platform_rejected(receipt, other_keys):
    with pytest.raises(AttestationError, match="not on the expected platform"):
        receipt.verify(platform_fingerprint=certificate_fingerprint(other_keys.platform_certificate))


def test_receipt_forged_by_other_enclave_rejected(receipt, other_keys, platform):
    # Another enclave signs the same body with its own key and attestation.
    foreign_document = sign_document(other_keys, NONCE, {"resource_limits": True})
    forged = sign_receipt(other_keys, {key: value for key, value in receipt.body.items()
                                       if key not in ("enclave_key", "attestation", "attestation_digest", "measurements", "debug")},
                          foreign_document)
    assert forged.verify() is True
    with pytest.raises(AttestationError, match="not on the expected platform"):
        forged.verify(platform_fingerprint=platform)


def test_receipt_without_attestation_needs_signer(keys, receipt):
    body = {key: value for key, value in receipt.body.items() if key not in ("attestation", "attestation_digest")}
    bare = Receipt(body=body, signature=keys.sign(b"confidential_nb receipt v1\x00" + canonical_json(body)))
    assert bare.verify(signer=keys.public) is True
    with pytest.raises(AttestationError, match="no signing key"):
        bare.verify()
    with pytest.raises(AttestationError, match="embeds no attestation"):
        bare.verify(signer=keys.public, platform_fingerprint="0" * 64)


def test_receipt_save_and_load_offline(receipt, platform, tmp_path):
    path = receipt.save(tmp_path / "receipt.json")
    loaded = Receipt.load(path)
    assert loaded.verify(platform_fingerprint=platform) is True
    assert loaded.body == receipt.body


def test_receipt_load_invalid_json(tmp_path):
    path = tmp_path / "receipt.json"
    path.write_text("{not json")
    with pytest.raises(AttestationError, match="not valid JSON"):
        Receipt.load(path)
