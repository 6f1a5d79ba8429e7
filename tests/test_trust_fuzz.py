"""Hypothesis fuzzing of the trust parsers: only the project's own errors may escape."""

from __future__ import annotations

import copy
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confidential_nb.attestation import AttestationDocument, Receipt, sign_document, sign_receipt
from confidential_nb.errors import AttestationError, ConfidentialNBError, ProtocolError
from confidential_nb.keys import ensure_keys
from confidential_nb.platform import certificate_fingerprint
from confidential_nb.protocol import recv_message

NONCE = "cd" * 32
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    keys = ensure_keys(tmp_path_factory.mktemp("fuzz-home"))
    document = sign_document(keys, NONCE, {"resource_limits": True})
    receipt = sign_receipt(keys, {"run_id": "r", "nonce": NONCE, "result_digest": "0" * 64}, document)
    return document, receipt, certificate_fingerprint(keys.platform_certificate)


def _mutate(tree: dict, path: list[str], value: object) -> dict:
    mutated = copy.deepcopy(tree)
    node = mutated
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return mutated


DOCUMENT_PATHS = [["document", key] for key in ("module_id", "timestamp", "digest", "pcrs", "sandbox", "certificate",
                                                 "public_key", "user_data", "nonce", "debug")] + [["signature"], ["document"]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(DOCUMENT_PATHS), value=JSON_VALUES)
def test_fuzz_attestation_document_fields(signed, path, value):
    document, _, platform = signed
    mutated = _mutate(document.to_dict(), path, value)
    try:
        AttestationDocument.from_dict(mutated).verify(nonce=NONCE, platform_fingerprint=platform, expected=None)
    except ConfidentialNBError:
        return
    # Only a mutation to the identical value can pass.
    assert mutated == document.to_dict()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["run_id", "nonce", "result_digest", "enclave_key", "debug", "measurements",
                            "attestation", "attestation_digest"]), value=JSON_VALUES)
def test_fuzz_receipt_fields(signed, key, value):
    _, receipt, platform = signed
    mutated = _mutate(receipt.to_dict(), ["receipt", key], value)
    try:
        Receipt.from_dict(mutated).verify(platform_fingerprint=platform)
    except ConfidentialNBError:
        return
    assert mutated == receipt.to_dict()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_protocol_random_bytes(data):
    left, right = socket.socketpair()
    try:
        sender = threading.Thread(target=lambda: (left.sendall(data), left.close()))
        sender.start()
        try:
            recv_message(right, max_total_bytes=1 << 20)
        except ProtocolError:
            pass
        sender.join()
    finally:
        right.close()


@settings(max_examples=100, deadline=None)
@given(value=JSON_VALUES)
def test_fuzz_receipt_from_arbitrary_json(value):
    try:
        Receipt.from_dict(value).verify()
    except AttestationError:
        pass
