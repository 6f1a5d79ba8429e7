"""The confidential-nb command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest


def _run_cli(*arguments: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confidential_nb.cli", *arguments],
        capture_output=True, text=True, timeout=300, cwd=cwd, env=dict(os.environ), check=False,
    )


def test_cli_demo_trains_and_writes_curves(tmp_path):
    completed = _run_cli("demo", cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr
    accuracy = re.search(r"^test accuracy: (0\.\d{4})$", completed.stdout, re.MULTILINE)
    epochs = re.search(r"^epochs: (\d+)$", completed.stdout, re.MULTILINE)
    assert accuracy is not None
    assert float(accuracy.group(1)) >= 0.95
    assert epochs is not None
    assert 1 <= int(epochs.group(1)) <= 300
    assert "receipt verified: True" in completed.stdout
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert completed.stderr == ""


def test_cli_demo_out_path(tmp_path):
    target = tmp_path / "figures" / "run.png"
    target.parent.mkdir()
    completed = _run_cli("demo", "--out", str(target), "--epochs", "20", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "epochs: 20" in completed.stdout
    assert target.read_bytes().startswith(b"\x89PNG")


def test_cli_demo_missing_out_directory(tmp_path):
    completed = _run_cli("demo", "--out", str(tmp_path / "absent" / "c.png"))
    assert completed.returncode == 2
    assert "does not exist" in completed.stderr


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_cli_demo_invalid_epochs(epochs):
    completed = _run_cli("demo", "--epochs", epochs)
    assert completed.returncode == 2
    assert f"invalid --epochs {epochs}" in completed.stderr


def test_cli_status_lists_layers():
    completed = _run_cli("status")
    assert completed.returncode == 0, completed.stderr
    assert "key_fingerprint:" in completed.stdout
    assert "sandbox layers:" in completed.stdout


def test_cli_key_matches_key_home(key_home):
    completed = _run_cli("key", "--json")
    assert completed.returncode == 0, completed.stderr
    fingerprint = json.loads(completed.stdout)["key"]["fingerprint"]
    assert fingerprint == (key_home / "enclave" / "current").read_text()


def test_cli_without_command_prints_help():
    completed = _run_cli()
    assert completed.returncode == 2
    assert "demo" in completed.stdout


@pytest.mark.parametrize(
    ("target", "message"),
    [(".", "is a directory"), ("curves", "no supported image extension"), ("curves.txt", "no supported image extension")],
)
def test_cli_demo_bad_out_rejected_before_training(tmp_path, target, message):
    completed = _run_cli("demo", "--out", target, cwd=tmp_path)
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "sealed" not in completed.stdout


def test_cli_key_home_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    completed = subprocess.run(
        [sys.executable, "-m", "confidential_nb.cli", "key"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "CONFIDENTIAL_NB_HOME": str(blocker)}, check=False,
    )
    assert completed.returncode == 1
    assert completed.stderr.startswith("error: ")
    assert "Traceback" not in completed.stderr


def _cli_in(home, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confidential_nb.cli", *arguments], capture_output=True, text=True, timeout=300,
        env={**os.environ, "CONFIDENTIAL_NB_HOME": str(home)}, check=False,
    )


def test_cli_key_shows_measurements_and_writes_file(tmp_path):
    completed = _cli_in(tmp_path / "home", "key", "--out", str(tmp_path / "key.json"))
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"^PCR 0: [0-9a-f]{64}$", completed.stdout, re.MULTILINE)
    assert re.search(r"^PCR 2: [0-9a-f]{64}$", completed.stdout, re.MULTILINE)
    fingerprint = re.search(r"^fingerprint: ([0-9a-f]{64})$", completed.stdout, re.MULTILINE).group(1)
    assert json.loads((tmp_path / "key.json").read_text())["fingerprint"] == fingerprint


def test_cli_key_rotate_and_list(tmp_path):
    home = tmp_path / "home"
    first = _cli_in(home, "key", "--json")
    original = json.loads(first.stdout)["key"]["fingerprint"]
    rotated = _cli_in(home, "key", "rotate", "--kem", "X25519")
    assert rotated.returncode == 0, rotated.stderr
    listing = _cli_in(home, "key", "list").stdout.splitlines()
    assert len(listing) == 2
    assert listing[0].startswith(f"  {original}")
    assert listing[1].startswith("* ")
    assert "X25519" in listing[1]


def test_cli_attest_verifies(tmp_path):
    completed = _cli_in(tmp_path / "home", "attest", "--out", str(tmp_path / "doc.json"))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.rstrip().endswith("match the pins")
    assert json.loads((tmp_path / "doc.json").read_text())["document"]["module_id"] == "confidential_nb-process-enclave"


def test_cli_verify_receipt_offline(tmp_path):
    home = tmp_path / "home"
    script = (
        "import confidential_nb, sys\n"
        "with confidential_nb.Enclave() as enclave:\n"
        "    enclave.run('6 * 7').receipt.save(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "receipt.json")], check=True, timeout=120,
                   env={**os.environ, "CONFIDENTIAL_NB_HOME": str(home)})
    verified = _cli_in(home, "verify", str(tmp_path / "receipt.json"))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("receipt verified: run ")

    # A data owner elsewhere passes the platform fingerprint explicitly; a wrong one fails.
    wrong = _cli_in(tmp_path / "elsewhere", "verify", str(tmp_path / "receipt.json"), "--platform-fingerprint", "ab" * 32)
    assert wrong.returncode == 1
    assert "not on the expected platform" in wrong.stderr

    document = json.loads((tmp_path / "receipt.json").read_text())
    document["receipt"]["result_digest"] = "0" * 64
    (tmp_path / "receipt.json").write_text(json.dumps(document))
    tampered = _cli_in(home, "verify", str(tmp_path / "receipt.json"))
    assert tampered.returncode == 1
    assert "does not verify" in tampered.stderr


def test_cli_measurements_export_reset_import(tmp_path):
    home = tmp_path / "home"
    _cli_in(home, "status")
    exported = _cli_in(home, "measurements", "export", str(tmp_path / "pins.json"))
    assert exported.returncode == 0, exported.stderr
    pins = json.loads((tmp_path / "pins.json").read_text())
    assert sorted(pins["measurements"]) == ["0", "1", "2"]

    assert _cli_in(home, "measurements", "reset").returncode == 0
    assert json.loads((home / "pins.json").read_text())["measurements"] is None

    pins["measurements"]["1"] = "1" * 64
    (tmp_path / "moved.json").write_text(json.dumps(pins))
    assert _cli_in(home, "measurements", "import", str(tmp_path / "moved.json")).returncode == 0
    moved = _cli_in(home, "status")
    assert moved.returncode == 1
    assert "PCR 1 (installed dependencies)" in moved.stderr


def test_cli_measurements_export_needs_file(tmp_path):
    completed = _cli_in(tmp_path / "home", "measurements", "export")
    assert completed.returncode == 2
    assert "needs a FILE" in completed.stdout
