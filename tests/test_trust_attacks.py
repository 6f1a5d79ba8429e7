"""Attacks on the trust protocol: sealed blobs, attestation, receipts, the key home and file-backed inputs.

Every test asserts the safe behaviour, with real enclave processes and real
cryptography. Tests that currently fail are marked strict xfail with the
defect they show.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

import confidential_nb
from confidential_nb import Enclave
from confidential_nb.attestation import _DOCUMENT_CONTEXT, _RECEIPT_CONTEXT, AttestationDocument, Receipt, load_pins
from confidential_nb.errors import AttestationError, KeyHomeError, SealError, WrongKeyError
from confidential_nb.keys import EnclaveKeys, b64, canonical_json, ensure_keys, rotate_keys
from confidential_nb.platform import certificate_fingerprint
from confidential_nb.policy import Policy
from confidential_nb.sealing import (
    _OPAQUE_FAILURE,
    _PREFIX,
    Sealed,
    encode_metadata,
    parse_header,
    seal_bytes,
    seal_file,
    unseal_bytes,
)

PAYLOAD = bytes(range(64))
CHUNK = 16
NAMED_MESSAGES = ("magic bytes are missing", "format version", "unsupported algorithms")


# Fixtures: one key home with a running enclave, shared by the module.


def _new_home(label: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"reviewer-{label}-", dir="/tmp"))


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    directory = _new_home("home")
    previous = os.environ.get("CONFIDENTIAL_NB_HOME")
    os.environ["CONFIDENTIAL_NB_HOME"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("CONFIDENTIAL_NB_HOME", None)
    else:
        os.environ["CONFIDENTIAL_NB_HOME"] = previous
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def enclave(home: Path) -> Iterator[Enclave]:
    with Enclave(home) as shared:
        shared.start()
        yield shared


@pytest.fixture(scope="module")
def keys(home: Path, enclave: Enclave) -> EnclaveKeys:
    return ensure_keys(home)


@pytest.fixture(scope="module")
def platform(home: Path, enclave: Enclave) -> str:
    pins = load_pins(home)
    assert pins is not None
    return pins.platform_fingerprint


@pytest.fixture(scope="module")
def run(enclave: Enclave) -> Any:
    return enclave.run("result = 41 + 1")


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = _new_home("work")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def signer() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def signed_blob(keys: EnclaveKeys, signer: ed25519.Ed25519PrivateKey) -> bytes:
    return seal_bytes(PAYLOAD, keys.public, content_type="bytes", policy=Policy(), schema=None, chunk_size=CHUNK, signer=signer)


def _copy_home(source: Path, label: str) -> Path:
    target = _new_home(label)
    shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True)
    return target


def _unseal(keys: EnclaveKeys, blob: bytes) -> bytes:
    return unseal_bytes(blob, keys.hpke_private, keys.public)[1]


def _split(blob: bytes) -> tuple[bytes, list[bytes]]:
    header = parse_header(blob)
    body = blob[len(header.raw):]
    step = CHUNK + 16
    return header.raw, [body[offset : offset + step] for offset in range(0, len(body), step)]


def _reheadered(blob: bytes, **metadata: Any) -> bytes:
    """Return the unsigned `blob` with metadata fields replaced and re-encoded canonically, chunks unchanged."""
    header = parse_header(blob)
    fields = list(_PREFIX.unpack(blob[: _PREFIX.size]))
    encoded = encode_metadata({**header.metadata, **metadata})
    fields[7] = len(encoded)
    wrapped_end = _PREFIX.size + fields[6]
    return _PREFIX.pack(*fields) + blob[_PREFIX.size : wrapped_end] + encoded + blob[len(header.raw):]


def _attacker_platform() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """Return a P-384 key and the DER of its self-signed certificate, as another platform would hold."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker platform")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    return key, certificate.public_bytes(serialization.Encoding.DER)


def _platform_signed(key: Any, body: dict[str, Any]) -> AttestationDocument:
    return AttestationDocument(body=body, signature=key.sign(_DOCUMENT_CONTEXT + canonical_json(body), ec.ECDSA(hashes.SHA384())))


def _receipt_signed(signing_key: Any, body: dict[str, Any]) -> Receipt:
    return Receipt(body=body, signature=signing_key.sign(_RECEIPT_CONTEXT + canonical_json(body)))


def _run_cli(home: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, CONFIDENTIAL_NB_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "confidential_nb.cli", *arguments],
                          capture_output=True, text=True, timeout=60, env=environment, check=False)


def _assert_one_error_line(completed: subprocess.CompletedProcess[str]) -> None:
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert completed.stderr.startswith("error: "), completed.stderr


# Sealed blobs


def test_seal_every_byte_flip_rejected(keys, signed_blob):
    assert _unseal(keys, signed_blob) == PAYLOAD
    for offset in range(len(signed_blob)):
        mutated = signed_blob[:offset] + bytes([signed_blob[offset] ^ 0x01]) + signed_blob[offset + 1 :]
        with pytest.raises(SealError) as caught:
            _unseal(keys, mutated)
        message = str(caught.value)
        if offset >= 16:
            assert message == _OPAQUE_FAILURE or isinstance(caught.value, WrongKeyError), (offset, message)
        else:
            assert message == _OPAQUE_FAILURE or any(name in message for name in NAMED_MESSAGES), (offset, message)


def test_seal_every_truncation_rejected(keys, signed_blob):
    for length in range(len(signed_blob)):
        with pytest.raises(SealError):
            _unseal(keys, signed_blob[:length])


def test_seal_appended_bytes_rejected(keys, signed_blob):
    for extra in (b"\x00", bytes(16), bytes(CHUNK + 16)):
        with pytest.raises(SealError, match="failed authentication"):
            _unseal(keys, signed_blob + extra)


def test_seal_chunk_reorder_rejected(keys, signed_blob):
    header, chunks = _split(signed_blob)
    assert len(chunks) == 4
    variants = {
        "swapped": [chunks[1], chunks[0], *chunks[2:]],
        "duplicated": [chunks[0], chunks[0], *chunks[2:]],
        "dropped middle": [chunks[0], *chunks[2:]],
        "dropped last": chunks[:3],
        "last repeated": [*chunks, chunks[3]],
    }
    for body in variants.values():
        with pytest.raises(SealError, match="failed authentication"):
            _unseal(keys, header + b"".join(body))


def test_seal_chunk_splice_rejected(keys, signed_blob, signer):
    other = seal_bytes(PAYLOAD, keys.public, content_type="bytes", policy=Policy(), schema=None, chunk_size=CHUNK, signer=signer)
    header, chunks = _split(signed_blob)
    _, foreign = _split(other)
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, header + chunks[0] + foreign[1] + b"".join(chunks[2:]))


def test_seal_signature_stripped_rejected(keys, signed_blob):
    header, chunks = _split(signed_blob)
    fields = list(_PREFIX.unpack(signed_blob[: _PREFIX.size]))
    fields[8] = 0
    stripped = _PREFIX.pack(*fields) + header[_PREFIX.size : -96] + b"".join(chunks)
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, stripped)


def test_seal_signature_replaced_rejected(keys, signed_blob):
    header, chunks = _split(signed_blob)
    other = ed25519.Ed25519PrivateKey.generate()
    unsigned = header[:-96] + other.public_key().public_bytes_raw()
    resigned = unsigned + other.sign(b"confidential_nb seal signature v2\x00" + unsigned)
    assert parse_header(resigned + b"".join(chunks)).signer_key == other.public_key().public_bytes_raw()
    with pytest.raises(SealError, match="failed authentication"):
        _unseal(keys, resigned + b"".join(chunks))


def test_seal_signature_moved_rejected(keys, signed_blob, signer):
    other = seal_bytes(b"other", keys.public, content_type="bytes", policy=Policy(), schema=None, chunk_size=CHUNK, signer=signer)
    other_header = parse_header(other).raw
    moved = other_header[:-64] + signed_blob[len(parse_header(signed_blob).raw) - 64 : len(parse_header(signed_blob).raw)]
    with pytest.raises(SealError, match="failed authentication"):
        parse_header(moved + other[len(other_header):])


@pytest.mark.parametrize("version", [0, 1, 3, 0xFFFF])
def test_seal_unknown_version_rejected(keys, signed_blob, version):
    mutated = signed_blob[:8] + version.to_bytes(2, "big") + signed_blob[10:]
    with pytest.raises(SealError, match=f"format version {version}"):
        _unseal(keys, mutated)


def test_seal_forged_length_no_allocation(keys):
    import tracemalloc

    blob = seal_bytes(PAYLOAD, keys.public, content_type="bytes", policy=Policy(), schema=None, chunk_size=CHUNK)
    forged = _reheadered(blob, plaintext_length=2**53 - 1, chunk_size=64 * 1024**2)
    tracemalloc.start()
    try:
        with pytest.raises(SealError, match="failed authentication"):
            _unseal(keys, forged)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2


def test_seal_forged_metadata_length_bounded(workdir):
    prefix = _PREFIX.pack(b"CNBSEAL\n", 2, 0x0020, 1, 2, bytes(32), 80, 2**32 - 1, 0)
    path = workdir / "huge-metadata.sealed"
    path.write_bytes(prefix + bytes(200))
    with pytest.raises(SealError, match="failed authentication"):
        Sealed.load(path)
    with pytest.raises(SealError, match="failed authentication"):
        parse_header(prefix + bytes(200))


def test_seal_wrong_key_names_both(keys):
    stranger_home = _new_home("stranger")
    stranger = ensure_keys(stranger_home)
    blob = seal_bytes(b"x", stranger.public, content_type="bytes", policy=Policy(), schema=None)
    shutil.rmtree(stranger_home, ignore_errors=True)
    with pytest.raises(WrongKeyError) as caught:
        _unseal(keys, blob)
    assert stranger.public.fingerprint[:16] in str(caught.value)
    assert keys.public.fingerprint[:16] in str(caught.value)


# Attestation


def test_attestation_own_certificate_rejected(enclave, platform):
    document = enclave.attest("cd" * 32)
    attacker_key, attacker_der = _attacker_platform()
    body = dict(copy.deepcopy(document.body), certificate=b64(attacker_der))
    forged = _platform_signed(attacker_key, body)
    with pytest.raises(AttestationError, match="not the pinned platform"):
        forged.verify(nonce="cd" * 32, platform_fingerprint=platform, expected=document.measurements)


def test_attestation_missing_debug_rejected(enclave, keys, platform):
    document = enclave.attest("cd" * 32)
    body = copy.deepcopy(document.body)
    del body["debug"]
    resigned = AttestationDocument(body=body, signature=keys.platform_sign(_DOCUMENT_CONTEXT + canonical_json(body)))
    with pytest.raises(AttestationError, match="debug enclave"):
        resigned.verify(nonce="cd" * 32, platform_fingerprint=platform, expected=document.measurements)


def test_attestation_old_document_replay_rejected(enclave, platform):
    old = enclave.attestation()
    with pytest.raises(AttestationError, match="replay"):
        old.verify(nonce="ef" * 32, platform_fingerprint=platform, expected=old.measurements)


def test_attestation_moved_pin_kept(home, enclave):
    copied = _copy_home(home, "moved-pin")
    pins = json.loads((copied / "pins.json").read_text())
    pins["measurements"]["2"] = "ab" * 32
    (copied / "pins.json").write_text(json.dumps(pins))
    before = (copied / "pins.json").read_bytes()

    with Enclave(copied) as moved:
        with pytest.raises(AttestationError, match=r"PCR 2 \(sandbox configuration\)"):
            moved.start()
    assert (copied / "pins.json").read_bytes() == before
    shutil.rmtree(copied, ignore_errors=True)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"measurements": null}'])
def test_measurements_import_invalid_file(home, enclave, workdir, text):
    path = workdir / "pins.json"
    path.write_text(text)
    before = (home / "pins.json").read_bytes()
    completed = _run_cli(home, "measurements", "import", str(path))
    _assert_one_error_line(completed)
    assert (home / "pins.json").read_bytes() == before


@pytest.mark.parametrize("field, value", [("measurements", "012"), ("measurements", {"0": 1, "1": 2, "2": 3}),
                                          ("platform_fingerprint", 5)])
def test_measurements_import_wrong_types(home, enclave, workdir, field, value):
    copied = _copy_home(home, "import")
    document = json.loads((copied / "pins.json").read_text())
    document[field] = value
    path = workdir / "pins.json"
    path.write_text(json.dumps(document))
    before = (copied / "pins.json").read_bytes()

    completed = _run_cli(copied, "measurements", "import", str(path))
    after = (copied / "pins.json").read_bytes()
    shutil.rmtree(copied, ignore_errors=True)
    _assert_one_error_line(completed)
    assert after == before


# Receipts


def test_receipt_signer_forged_platform_rejected(run, enclave):
    attacker_platform, attacker_der = _attacker_platform()
    attacker_signing = ed25519.Ed25519PrivateKey.generate()
    document_body = copy.deepcopy(run.receipt.body["attestation"]["document"])
    document_body["certificate"] = b64(attacker_der)
    document_body["public_key"]["signing_ed25519"] = b64(attacker_signing.public_key().public_bytes_raw())
    document = _platform_signed(attacker_platform, document_body)
    body = dict(copy.deepcopy(run.receipt.body), attestation=document.to_dict(), attestation_digest=document.digest,
                result_digest=hashlib.sha256(b"forged result").hexdigest())
    forged = _receipt_signed(attacker_signing, body)

    with pytest.raises(AttestationError):
        forged.verify(signer=enclave.public_key())


def test_receipt_forged_platform_rejected(run, platform):
    attacker_platform, attacker_der = _attacker_platform()
    attacker_signing = ed25519.Ed25519PrivateKey.generate()
    document_body = copy.deepcopy(run.receipt.body["attestation"]["document"])
    document_body["certificate"] = b64(attacker_der)
    document_body["public_key"]["signing_ed25519"] = b64(attacker_signing.public_key().public_bytes_raw())
    document = _platform_signed(attacker_platform, document_body)
    body = dict(copy.deepcopy(run.receipt.body), attestation=document.to_dict(), attestation_digest=document.digest)
    forged = _receipt_signed(attacker_signing, body)

    with pytest.raises(AttestationError, match="not on the expected platform"):
        forged.verify(platform_fingerprint=platform)


def test_receipt_debug_document_rejected(run, keys, platform):
    document_body = dict(copy.deepcopy(run.receipt.body["attestation"]["document"]), debug=True)
    document = AttestationDocument(body=document_body,
                                   signature=keys.platform_sign(_DOCUMENT_CONTEXT + canonical_json(document_body)))
    body = dict(copy.deepcopy(run.receipt.body), attestation=document.to_dict(), attestation_digest=document.digest)
    receipt = _receipt_signed(keys.signing_private, body)
    with pytest.raises(AttestationError, match="debug enclave"):
        receipt.verify(platform_fingerprint=platform)


def test_receipt_swapped_document_rejected(run, enclave, platform):
    fresh = enclave.attest("12" * 32)
    body = dict(copy.deepcopy(run.receipt.body), attestation=fresh.to_dict(), attestation_digest=fresh.digest)
    swapped = Receipt(body=body, signature=run.receipt.signature)
    with pytest.raises(AttestationError, match="signature does not verify"):
        swapped.verify(platform_fingerprint=platform)


def test_receipt_edited_field_rejected(run, platform):
    for field, value in [("result_digest", "00" * 32), ("function_checksum", "11" * 32), ("nonce", "22" * 32),
                         ("debug", True), ("inputs", {"x": "33" * 32})]:
        body = dict(copy.deepcopy(run.receipt.body), **{field: value})
        with pytest.raises(AttestationError):
            Receipt(body=body, signature=run.receipt.signature).verify(platform_fingerprint=platform)


def test_receipt_replay_binding_rejected(run, enclave):
    second = enclave.run("result = 41 + 1")
    assert second.receipt.result_digest == run.receipt.result_digest
    new_nonce = second.receipt.body["nonce"]
    with pytest.raises(AttestationError, match="this run's nonce"):
        run.receipt.check_binding(nonce=new_nonce, result=b"")


def _hostile_receipts(good: dict[str, Any]) -> dict[str, str]:
    receipt = good["receipt"]
    return {
        "nan": json.dumps({"receipt": dict(receipt, result_bytes=float("nan")), "signature": good["signature"]}),
        "infinity": json.dumps(good).replace('"result_bytes": ', '"result_bytes": 1e999, "x": '),
        "huge integer": json.dumps(good).replace('"result_bytes": ', '"result_bytes": ' + "9" * 5000 + ', "x": '),
        "list": "[1, 2]",
        "string signature": json.dumps({"receipt": receipt, "signature": 5}),
        "attestation string": json.dumps({"receipt": dict(receipt, attestation="x"), "signature": good["signature"]}),
        "document list": json.dumps({"receipt": dict(receipt, attestation={"document": [], "signature": ""}),
                                     "signature": good["signature"]}),
        "certificate number": json.dumps({"receipt": dict(receipt, attestation=dict(
            receipt["attestation"], document=dict(receipt["attestation"]["document"], certificate=7))),
            "signature": good["signature"]}),
        "not utf-8": "\udcff",
    }


@pytest.mark.parametrize("case", ["nan", "infinity", "huge integer", "list", "string signature", "attestation string",
                                  "document list", "certificate number", "not utf-8"])
def test_cli_verify_hostile_file_one_line(home, run, platform, workdir, case):
    text = _hostile_receipts(run.receipt.to_dict())[case]
    path = workdir / "receipt.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    completed = _run_cli(home, "verify", str(path), "--platform-fingerprint", platform)
    _assert_one_error_line(completed)


def test_cli_verify_deep_nesting_one_line(home, platform, workdir):
    path = workdir / "receipt.json"
    path.write_text('{"receipt": ' + "[" * 100_000 + "]" * 100_000 + "}")
    completed = _run_cli(home, "verify", str(path), "--platform-fingerprint", platform)
    _assert_one_error_line(completed)


# Keys


def test_keys_concurrent_seal_one_key():
    fresh = _new_home("race")
    script = "import confidential_nb; print(confidential_nb.seal(b'x').recipient)"
    environment = dict(os.environ, CONFIDENTIAL_NB_HOME=str(fresh))
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=environment)
                 for _ in range(4)]
    recipients = {process.communicate(timeout=60)[0].strip() for process in processes}
    key_directories = list((fresh / "enclave" / "keys").iterdir())
    shutil.rmtree(fresh, ignore_errors=True)
    assert len(recipients) == 1
    assert len(key_directories) == 1


def _damage_widened(copied: Path, fingerprint: str) -> Path:
    path = copied / "enclave" / "keys" / fingerprint / "private.json"
    path.chmod(0o604)
    return path


def _damage_truncated(copied: Path, fingerprint: str) -> Path:
    path = copied / "enclave" / "keys" / fingerprint / "private.json"
    path.write_bytes(path.read_bytes()[:20])
    return path


def _damage_current_missing(copied: Path, fingerprint: str) -> Path:
    path = copied / "enclave" / "current"
    path.unlink()
    return path


def _damage_current_dangling(copied: Path, fingerprint: str) -> Path:
    path = copied / "enclave" / "current"
    path.unlink()
    path.symlink_to(copied / "nowhere")
    return path


def _damage_current_unknown(copied: Path, fingerprint: str) -> Path:
    path = copied / "enclave" / "current"
    elsewhere = copied / "elsewhere"
    elsewhere.write_text("ab" * 32)
    path.unlink()
    path.symlink_to(elsewhere)
    return path


@pytest.mark.parametrize("damage", [_damage_widened, _damage_truncated, _damage_current_missing,
                                    _damage_current_dangling, _damage_current_unknown])
def test_keys_damage_named_no_new_key(home, keys, damage):
    copied = _copy_home(home, "damage")
    path = damage(copied, keys.public.fingerprint)
    before = sorted(entry.name for entry in (copied / "enclave" / "keys").iterdir())

    with Enclave(copied) as damaged:
        with pytest.raises(KeyHomeError) as caught:
            damaged.start()
    after = sorted(entry.name for entry in (copied / "enclave" / "keys").iterdir())
    shutil.rmtree(copied, ignore_errors=True)
    assert path.name in str(caught.value)
    assert after == before


def test_keys_foreign_key_directory_rejected(home, keys):
    copied = _copy_home(home, "foreign-key")
    stranger_home = _new_home("stranger")
    stranger = ensure_keys(stranger_home)
    foreign = copied / "enclave" / "keys" / stranger.public.fingerprint
    foreign.symlink_to(stranger_home / "enclave" / "keys" / stranger.public.fingerprint)
    (copied / "enclave" / "current").write_text(stranger.public.fingerprint)

    with pytest.raises(KeyHomeError, match=stranger.public.fingerprint[:16]):
        ensure_keys(copied)
    shutil.rmtree(copied, ignore_errors=True)
    shutil.rmtree(stranger_home, ignore_errors=True)


def test_keys_foreign_platform_rejected(home, keys):
    copied = _copy_home(home, "foreign-platform")
    stranger_home = _new_home("stranger")
    ensure_keys(stranger_home)
    shutil.rmtree(copied / "platform")
    (copied / "platform").symlink_to(stranger_home / "platform")

    with Enclave(copied) as swapped:
        with pytest.raises((KeyHomeError, AttestationError)):
            swapped.start()
    shutil.rmtree(copied, ignore_errors=True)
    shutil.rmtree(stranger_home, ignore_errors=True)


def test_keys_swapped_private_file_named(home, keys):
    copied = _copy_home(home, "swapped-private")
    rotate_keys(copied)
    older, newer = (copied / "enclave" / "keys" / keys.public.fingerprint / "private.json",
                    copied / "enclave" / "keys" / (copied / "enclave" / "current").read_text().strip() / "private.json")
    older.write_bytes(newer.read_bytes())
    older.chmod(0o600)

    try:
        with pytest.raises(KeyHomeError, match="private.json"):
            ensure_keys(copied)
    finally:
        shutil.rmtree(copied, ignore_errors=True)


def test_cli_key_list_damaged_public_file(home, keys):
    copied = _copy_home(home, "list")
    (copied / "enclave" / "keys" / keys.public.fingerprint / "public.json").write_text("{damaged")
    completed = _run_cli(copied, "key", "list")
    shutil.rmtree(copied, ignore_errors=True)
    _assert_one_error_line(completed)
    assert "public.json" in completed.stderr


def test_seal_foreign_key_home_checks_pin(home, keys, monkeypatch):
    copied = _copy_home(home, "foreign-seal")
    stranger_home = _new_home("stranger")
    ensure_keys(stranger_home)
    for part in ("platform", "enclave"):
        shutil.rmtree(copied / part)
        (copied / part).symlink_to(stranger_home / part)
    monkeypatch.setenv("CONFIDENTIAL_NB_HOME", str(copied))

    try:
        with pytest.raises(AttestationError):
            confidential_nb.seal(b"secret")
    finally:
        shutil.rmtree(copied, ignore_errors=True)
        shutil.rmtree(stranger_home, ignore_errors=True)


# File-backed inputs


def _loaded_file(workdir: Path, blob: bytes, name: str = "input.sealed") -> tuple[Path, Sealed]:
    path = workdir / name
    path.write_bytes(blob)
    return path, Sealed.load(path)


def _run_in_thread(enclave: Enclave, sealed: Sealed) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = enclave.run("result = len(d)", inputs={"d": sealed}, timeout=5)
        except Exception as exc:  # The test inspects whatever the run raised.
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _assert_usable(enclave: Enclave, monitor: int) -> None:
    assert enclave.status()["monitor_pid"] == monitor
    assert enclave.run("result = 2").value == 2


def _make_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _link_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _link_key_file(path: Path) -> None:
    home = Path(os.environ["CONFIDENTIAL_NB_HOME"])
    path.unlink()
    path.symlink_to(next((home / "enclave" / "keys").iterdir()) / "private.json")


def _link_sparse_garbage(path: Path) -> None:
    target = path.with_name("sparse-garbage")
    with open(target, "wb") as handle:
        handle.truncate(1024**3)
    path.unlink()
    path.symlink_to(target)


def _remove(path: Path) -> None:
    path.unlink()


def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("swap", [_make_directory, _link_dev_zero, _link_key_file, _link_sparse_garbage, _remove, _truncate_half])
def test_file_input_hostile_path_one_error(enclave, keys, workdir, swap):
    path, sealed = _loaded_file(workdir, bytes(confidential_nb.seal(b"secret payload " * 100)))
    monitor = enclave.status()["monitor_pid"]
    swap(path)

    started = time.monotonic()
    with pytest.raises(SealError, match="^input 'd': "):
        enclave.run("result = len(d)", inputs={"d": sealed}, timeout=5)
    assert time.monotonic() - started < 5
    _assert_usable(enclave, monitor)


def test_file_input_failure_leaves_no_plaintext(enclave, keys, workdir):
    source = workdir / "plain.bin"
    source.write_bytes(b"PLAINTEXT-MARKER" * 4096)
    path = workdir / "input.sealed"
    sealed = seal_file(source, path, key=keys.public, chunk_size=4096)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    zygote = enclave.status()["zygote_pid"]
    scratch_root = Path(os.readlink(f"/proc/{zygote}/cwd"))

    with pytest.raises(SealError, match="failed authentication"):
        enclave.run("result = len(d)", inputs={"d": sealed}, timeout=5)
    assert list(scratch_root.rglob("*")) == []


def test_file_input_fifo_one_error(enclave, workdir):
    path, sealed = _loaded_file(workdir, bytes(confidential_nb.seal(b"secret payload")))
    path.unlink()
    os.mkfifo(path)

    thread, outcome = _run_in_thread(enclave, sealed)
    thread.join(5)
    answered = not thread.is_alive()
    if not answered:
        # Open the FIFO as a writer, so the blocked monitor reads end of file and replies.
        descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(descriptor)
        thread.join(20)
    assert answered
    assert isinstance(outcome.get("error"), SealError)


def test_file_input_forged_length_one_error(enclave, keys, workdir):
    blob = seal_bytes(b"secret payload", keys.public, content_type="bytes", policy=Policy(), schema=None)
    path, sealed = _loaded_file(workdir, blob)
    forged = _reheadered(blob, chunk_size=1, plaintext_length=2**40)
    with open(path, "wb") as handle:
        handle.write(forged)
        # A sparse file: 1 GiB long, no disk space used.
        handle.truncate(1024**3)

    thread, outcome = _run_in_thread(enclave, sealed)
    thread.join(5)
    answered = not thread.is_alive()
    if not answered:
        # The monitor would seek to about 63 million tags first, so stop the process group this test's enclave started.
        assert enclave._process is not None
        os.killpg(enclave._process.pid, signal.SIGKILL)
        thread.join(20)
    assert answered
    assert isinstance(outcome.get("error"), SealError)
