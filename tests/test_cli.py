"""The confidential-nb command, run as a real subprocess."""

from __future__ import annotations

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
    import json

    completed = _run_cli("key", "--json")
    assert completed.returncode == 0, completed.stderr
    fingerprint = json.loads(completed.stdout)["fingerprint"]
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
