from __future__ import annotations

import json
import subprocess
import sys

import pytest

import confidential_nb
from confidential_nb.errors import AttestationError, KeyHomeError, WrongKeyError
from confidential_nb.keys import KEM_X25519, ensure_keys, list_keys, load_public_key, rotate_keys
from confidential_nb.sealing import seal_bytes, unseal_bytes
from confidential_nb.policy import Policy


def _seal(public, payload: bytes) -> bytes:
    return seal_bytes(payload, public, content_type="bytes", policy=Policy(), schema=None)


def test_keys_created_owner_only(tmp_path):
    home = tmp_path / "home"
    keys = ensure_keys(home)
    private = home / "enclave" / "keys" / keys.public.fingerprint / "private.json"
    assert private.stat().st_mode & 0o777 == 0o600
    assert (home / "platform" / "root.key").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    assert load_public_key(home) == keys.public


def test_keys_load_twice_same_key(tmp_path):
    assert ensure_keys(tmp_path).public == ensure_keys(tmp_path).public


def test_keys_rotation_keeps_old_keys_working(tmp_path):
    keys = ensure_keys(tmp_path)
    old_blob = _seal(keys.public, b"sealed before rotation")
    new_public = rotate_keys(tmp_path)
    rotated = ensure_keys(tmp_path)

    assert rotated.public == new_public
    assert new_public.fingerprint != keys.public.fingerprint
    old_public, old_private = rotated.for_recipient(keys.public.fingerprint)
    assert unseal_bytes(old_blob, old_private, old_public)[1] == b"sealed before rotation"
    listed = list_keys(tmp_path)
    assert [info.fingerprint for info in listed if info.current] == [new_public.fingerprint]
    assert {info.fingerprint for info in listed} == {keys.public.fingerprint, new_public.fingerprint}


def test_keys_rotation_to_x25519(tmp_path):
    ensure_keys(tmp_path)
    public = rotate_keys(tmp_path, kem=KEM_X25519)
    assert public.kem == "X25519"
    assert ensure_keys(tmp_path).public.kem == "X25519"


def test_keys_widened_private_file_rejected(tmp_path):
    keys = ensure_keys(tmp_path)
    private = tmp_path / "enclave" / "keys" / keys.public.fingerprint / "private.json"
    private.chmod(0o644)
    with pytest.raises(KeyHomeError, match=r"accessible by other users \(mode 644\); run: chmod 600"):
        ensure_keys(tmp_path)


def test_keys_damaged_private_file_named_never_replaced(tmp_path):
    keys = ensure_keys(tmp_path)
    private = tmp_path / "enclave" / "keys" / keys.public.fingerprint / "private.json"
    private.write_text("{damaged")
    with pytest.raises(KeyHomeError, match=r"private.json is damaged .*restore the key home from a backup"):
        ensure_keys(tmp_path)
    assert [info.fingerprint for info in list_keys(tmp_path)] == [keys.public.fingerprint]


def test_keys_missing_current_pointer_never_replaced(tmp_path):
    ensure_keys(tmp_path)
    (tmp_path / "enclave" / "current").unlink()
    with pytest.raises(KeyHomeError, match="is missing while keys exist"):
        ensure_keys(tmp_path)
    assert len(list((tmp_path / "enclave" / "keys").iterdir())) == 1


def test_keys_corrupt_public_file_named(tmp_path):
    keys = ensure_keys(tmp_path)
    public = tmp_path / "enclave" / "keys" / keys.public.fingerprint / "public.json"
    public.write_text('{"key": 5}')
    with pytest.raises(AttestationError, match=r"public.json is invalid .*restore the key home"):
        load_public_key(tmp_path)


def test_keys_forged_public_file_rejected(tmp_path):
    keys = ensure_keys(tmp_path / "real")
    other = ensure_keys(tmp_path / "other")
    path = tmp_path / "real" / "enclave" / "keys" / keys.public.fingerprint / "public.json"
    document = json.loads(path.read_text())
    document["key"] = other.public.to_dict()
    path.write_text(json.dumps(document))
    with pytest.raises(AttestationError, match="not signed by the platform key"):
        load_public_key(tmp_path / "real")


def test_keys_concurrent_creation_makes_one_key(tmp_path):
    home = tmp_path / "race"
    script = "import sys; from pathlib import Path; from confidential_nb.keys import ensure_keys; print(ensure_keys(Path(sys.argv[1])).public.fingerprint)"
    processes = [subprocess.Popen([sys.executable, "-c", script, str(home)], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    fingerprints = {process.communicate(timeout=120)[0].strip() for process in processes}
    assert len(fingerprints) == 1
    assert len(list_keys(home)) == 1


def test_enclave_opens_data_sealed_before_rotation(tmp_path, monkeypatch):
    home = tmp_path / "rotating"
    monkeypatch.setenv("CONFIDENTIAL_NB_HOME", str(home))
    before = confidential_nb.seal(b"old")
    rotate_keys(home)
    after = confidential_nb.seal(b"new")
    assert before.recipient != after.recipient
    with confidential_nb.Enclave(home) as enclave:
        assert enclave.run("a + b", inputs={"a": before, "b": after}).value == b"oldnew"


def test_enclave_start_reports_damaged_key_home(tmp_path):
    home = tmp_path / "damaged"
    keys = ensure_keys(home)
    (home / "enclave" / "keys" / keys.public.fingerprint / "private.json").chmod(0o640)
    with confidential_nb.Enclave(home) as enclave:
        with pytest.raises(KeyHomeError, match="chmod 600"):
            enclave.run("1")


def test_enclave_rejects_data_for_unknown_key(tmp_path):
    stranger = ensure_keys(tmp_path / "stranger")
    blob = confidential_nb.Sealed(_seal(stranger.public, b"x"))
    with confidential_nb.Enclave(tmp_path / "mine") as enclave:
        with pytest.raises(WrongKeyError, match="does not hold"):
            enclave.run("1", inputs={"data": blob})


def test_keys_early_layout_rejected(tmp_path):
    (tmp_path / "enclave").mkdir()
    (tmp_path / "enclave" / "private.json").write_text("{}")
    with pytest.raises(KeyHomeError, match="earlier development version"):
        ensure_keys(tmp_path)


def test_keys_damaged_platform_key_named(tmp_path):
    ensure_keys(tmp_path)
    (tmp_path / "platform" / "root.key").write_text("not a key")
    with pytest.raises(KeyHomeError, match=r"root.key is damaged"):
        ensure_keys(tmp_path)


def test_seal_reports_unusable_key_home_in_one_line(tmp_path, monkeypatch):
    home = tmp_path / "early"
    (home / "platform").mkdir(parents=True)
    (home / "platform" / "root.pub").write_text("00")
    monkeypatch.setenv("CONFIDENTIAL_NB_HOME", str(home))
    with pytest.raises(KeyHomeError, match="earlier development version") as caught:
        confidential_nb.seal(b"x")
    assert "Traceback" not in str(caught.value)


def test_keys_listed_in_creation_order(tmp_path):
    created = [ensure_keys(tmp_path).public.fingerprint]
    created += [rotate_keys(tmp_path).fingerprint for _ in range(3)]
    assert [info.fingerprint for info in list_keys(tmp_path)] == created
