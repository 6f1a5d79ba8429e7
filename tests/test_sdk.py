"""The Cape-style SDK: Client on a real key home and enclave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confidential_nb import Client
from confidential_nb.bundles import bundle_checksum, read_directory
from confidential_nb.errors import AttestationError, BundleError, PolicyError
from confidential_nb.sdk import load_sealing_key

APP = "def cape_handler(input_bytes):\n    return input_bytes[::-1]\n"


def _app(folder: Path) -> Path:
    folder.mkdir()
    (folder / "app.py").write_text(APP)
    return folder


def test_client_key_is_attested_current_key(key_home):
    key = Client(key_home).key()

    assert key.fingerprint == (key_home / "enclave" / "current").read_text()


def test_encrypt_bytes_and_frame(key_home, enclave):
    import pandas as pd

    client = Client(key_home)
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5]})

    sealed_bytes = client.encrypt(b"abc", policy={"max_items": 10})
    sealed_frame = client.encrypt(frame)

    assert sealed_bytes.kind == "bytes"
    assert sealed_bytes.policy.max_items == 10
    assert sealed_frame.kind == "dataframe"
    assert enclave.run("data", inputs={"data": sealed_bytes}).value == b"abc"
    assert enclave.run("float(data['x'].sum())", inputs={"data": sealed_frame}).value == 7.5


def test_encrypt_path_streams_to_file(tmp_path, key_home, enclave):
    source = tmp_path / "blob.bin"
    source.write_bytes(b"\x00\x01" * 5000)

    sealed = Client(key_home).encrypt(source)

    assert sealed.path == tmp_path / "blob.bin.sealed"
    assert enclave.run("len(data)", inputs={"data": sealed}).value == 10000


def test_encrypt_with_key_file(tmp_path, key_home, enclave):
    client = Client(key_home)
    key = client.key()
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(key.to_dict()))
    owner = Client(tmp_path / "owner-has-no-enclave")

    sealed = owner.encrypt(b"owned", key=key_file, expect_fingerprint=key.fingerprint)

    assert sealed.recipient == key.fingerprint
    assert not (tmp_path / "owner-has-no-enclave").exists()
    assert enclave.run("data", inputs={"data": sealed}).value == b"owned"


def test_encrypt_key_file_needs_fingerprint(tmp_path, key_home):
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(Client(key_home).key().to_dict()))

    with pytest.raises(ValueError, match="expect_fingerprint"):
        Client(tmp_path).encrypt(b"x", key=key_file)
    with pytest.raises(AttestationError, match="not the expected"):
        Client(tmp_path).encrypt(b"x", key=key_file, expect_fingerprint="ef" * 32)


def test_encrypt_public_key_mismatch(key_home):
    client = Client(key_home)

    with pytest.raises(AttestationError, match="not the expected"):
        client.encrypt(b"x", key=client.key(), expect_fingerprint="01" * 32)


def test_encrypt_bad_policy(key_home):
    with pytest.raises(PolicyError, match="rare_k"):
        Client(key_home).encrypt(b"x", policy={"rare_k": 0})


@pytest.mark.parametrize("content", ['{"unrelated": 1}', "[]", "not json"])
def test_load_sealing_key_rejects_other_files(tmp_path, content):
    path = tmp_path / "other.json"
    path.write_text(content)

    with pytest.raises(AttestationError, match="other.json"):
        load_sealing_key(path, "ab" * 32)


def test_load_sealing_key_invalid_fingerprint(tmp_path):
    with pytest.raises(ValueError, match="64 hex digits"):
        load_sealing_key(tmp_path / "absent.json", "abc")


def test_deploy_functions_delete(tmp_path):
    client = Client(tmp_path / "home")
    folder = _app(tmp_path / "reverse")

    ref = client.deploy(folder)

    assert ref.name == "reverse"
    assert ref.checksum == bundle_checksum(read_directory(folder)) == client.checksum(folder)
    assert client.functions() == [ref]
    assert client.delete("reverse") == ref
    assert client.functions() == []


def test_deploy_invalid_leaves_registry_empty(tmp_path):
    client = Client(tmp_path / "home")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "app.py").write_text("def cape_handler():\n    return 1\n")

    with pytest.raises(BundleError, match="takes no positional argument"):
        client.deploy(folder)
    assert client.functions() == []
