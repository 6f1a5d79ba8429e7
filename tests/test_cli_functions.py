"""The Cape-style commands (key, encrypt, checksum, function create, deploy, list, delete), run as subprocesses."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from confidential_nb.functions import cell_checksum
from confidential_nb.sealing import MAGIC, Sealed

FINGERPRINT_LINE = re.compile(r"^fingerprint: ([0-9a-f]{64})$", re.MULTILINE)


def _cli(*arguments: str, home: Path | None = None, cwd: Path | None = None, stdin: bytes | None = None,
         ) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI on the session key home, or on `home`; output stays bytes because encrypt may write binary."""
    env = dict(os.environ)
    if home is not None:
        env["CONFIDENTIAL_NB_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "confidential_nb.cli", *arguments], capture_output=True, timeout=300, cwd=cwd,
        env=env, input=stdin if stdin is not None else b"", check=False,
    )


def _text(stream: bytes) -> str:
    return stream.decode("utf-8")


def _registry_snapshot(home: Path) -> dict[str, bytes]:
    root = home / "functions"
    if not root.exists():
        return {}
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _breast_cancer_csv(path: Path) -> Path:
    from confidential_nb.datasets import load_breast_cancer

    load_breast_cancer().to_csv(path)
    return path


def _write_app(folder: Path, source: str, requirements: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "app.py").write_text(source)
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


# key ----------------------------------------------------------------------------------------------


def test_key_json_and_out(tmp_path, key_home):
    completed = _cli("key", "--json", "--out", str(tmp_path / "key.json"))

    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["key"]["fingerprint"] == (key_home / "enclave" / "current").read_text()
    assert document["platform_fingerprint"] == json.loads((key_home / "pins.json").read_text())["platform_fingerprint"]
    assert sorted(document["measurements"]) == ["0", "1", "2"]
    assert json.loads((tmp_path / "key.json").read_text()) == document["key"]


def test_key_text_shows_platform(key_home):
    completed = _cli("key")

    assert completed.returncode == 0, completed.stderr
    assert FINGERPRINT_LINE.search(_text(completed.stdout)).group(1) == (key_home / "enclave" / "current").read_text()
    assert re.search(r"^platform fingerprint: [0-9a-f]{64}$", _text(completed.stdout), re.MULTILINE)


# encrypt ------------------------------------------------------------------------------------------


def test_encrypt_bytes_opens_in_enclave(tmp_path, key_home, enclave):
    source = tmp_path / "notes.bin"
    source.write_bytes(bytes(range(256)) * 40)

    completed = _cli("encrypt", str(source))

    assert completed.returncode == 0, completed.stderr
    assert "sealed 10240 bytes" in _text(completed.stdout)
    sealed = Sealed.load(tmp_path / "notes.bin.sealed")
    assert sealed.kind == "bytes"
    assert sealed.recipient == (key_home / "enclave" / "current").read_text()
    assert enclave.run("len(data)", inputs={"data": sealed}).value == 10240


def test_encrypt_frame_guesses_and_opens(tmp_path, enclave):
    source = _breast_cancer_csv(tmp_path / "cancer.csv")

    completed = _cli("encrypt", str(source), "--frame", "--out", str(tmp_path / "cancer.sealed"))

    assert completed.returncode == 0, completed.stderr
    assert "guess: dropped the unnamed first column" in _text(completed.stderr)
    assert "569 rows x 31 columns" in _text(completed.stdout)
    sealed = Sealed.load(tmp_path / "cancer.sealed")
    assert sealed.kind == "dataframe"
    assert sealed.schema is not None
    assert sealed.schema["rows"] == 569
    assert enclave.run("len(data)", inputs={"data": sealed}).value == 569


def test_encrypt_stdin_to_stdout(enclave):
    completed = _cli("encrypt", "-", stdin=b"a,b\n1,2\n")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(MAGIC)
    assert "from standard input" in _text(completed.stderr)
    sealed = Sealed(completed.stdout)
    assert enclave.run("data", inputs={"data": sealed}).value == b"a,b\n1,2\n"


def test_encrypt_terminal_output_rejected(tmp_path):
    main, terminal = pty.openpty()
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "confidential_nb.cli", "encrypt", "-"], input=b"secret", stdout=terminal,
            stderr=subprocess.PIPE, timeout=120, check=False,
        )
    finally:
        os.close(terminal)
        os.close(main)

    assert completed.returncode == 2
    assert b"not written to a terminal" in completed.stderr


def test_encrypt_rejects_output_equal_to_input(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"plaintext")

    completed = _cli("encrypt", str(source), "--out", str(source))

    assert completed.returncode == 2
    assert source.read_bytes() == b"plaintext"


def test_encrypt_with_key_file_offline(tmp_path, enclave):
    key_file = tmp_path / "enclave-key.json"
    fingerprint = json.loads(_cli("key", "--json", "--out", str(key_file)).stdout)["key"]["fingerprint"]
    owner_home = tmp_path / "owner-has-no-enclave"
    source = tmp_path / "owned.bin"
    source.write_bytes(b"owner data")

    sealed_ok = _cli("encrypt", str(source), "--key", str(key_file), "--expect-fingerprint", fingerprint.upper(),
                     home=owner_home)

    assert sealed_ok.returncode == 0, sealed_ok.stderr
    assert not owner_home.exists()
    assert enclave.run("data", inputs={"data": Sealed.load(tmp_path / "owned.bin.sealed")}).value == b"owner data"


def test_encrypt_key_file_mismatch(tmp_path):
    key_file = tmp_path / "enclave-key.json"
    assert _cli("key", "--out", str(key_file)).returncode == 0
    source = tmp_path / "owned.bin"
    source.write_bytes(b"owner data")

    rejected = _cli("encrypt", str(source), "--key", str(key_file), "--expect-fingerprint", "ab" * 32,
                    home=tmp_path / "elsewhere")

    assert rejected.returncode == 1
    assert "not the expected " + "ab" * 32 in _text(rejected.stderr)
    assert len(_text(rejected.stderr).splitlines()) == 1
    assert not (tmp_path / "owned.bin.sealed").exists()


def test_encrypt_with_attestation_document(tmp_path, enclave):
    document = tmp_path / "attestation.json"
    assert _cli("attest", "--out", str(document)).returncode == 0
    platform = json.loads(_cli("key", "--json").stdout)["platform_fingerprint"]
    source = tmp_path / "owned.bin"
    source.write_bytes(b"attested")
    elsewhere = tmp_path / "elsewhere"

    accepted = _cli("encrypt", str(source), "--key", str(document), "--expect-fingerprint", platform, home=elsewhere)
    wrong = _cli("encrypt", str(source), "--key", str(document), "--expect-fingerprint", "cd" * 32,
                 "--out", str(tmp_path / "wrong.sealed"), home=elsewhere)

    assert accepted.returncode == 0, accepted.stderr
    assert enclave.run("data", inputs={"data": Sealed.load(tmp_path / "owned.bin.sealed")}).value == b"attested"
    assert wrong.returncode == 1
    assert "neither is the expected" in _text(wrong.stderr)
    assert not (tmp_path / "wrong.sealed").exists()


def test_encrypt_tampered_attestation_document(tmp_path):
    document = tmp_path / "attestation.json"
    assert _cli("attest", "--out", str(document)).returncode == 0
    platform = json.loads(_cli("key", "--json").stdout)["platform_fingerprint"]
    content = json.loads(document.read_text())
    content["document"]["pcrs"]["0"] = "1" * 64
    document.write_text(json.dumps(content))
    source = tmp_path / "owned.bin"
    source.write_bytes(b"attested")

    rejected = _cli("encrypt", str(source), "--key", str(document), "--expect-fingerprint", platform,
                    home=tmp_path / "elsewhere")

    assert rejected.returncode == 1
    assert "not signed by the platform key" in _text(rejected.stderr)


@pytest.mark.parametrize("fingerprint", [None, "abc", "zz" * 32])
def test_encrypt_key_fingerprint_usage(tmp_path, fingerprint):
    key_file = tmp_path / "key.json"
    key_file.write_text("{}")
    source = tmp_path / "data.bin"
    source.write_bytes(b"x")
    expectation = [] if fingerprint is None else ["--expect-fingerprint", fingerprint]

    completed = _cli("encrypt", str(source), "--key", str(key_file), *expectation)

    assert completed.returncode == 2
    assert "--expect-fingerprint" in _text(completed.stderr)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ('{"colour": "red"}', "colour"),
        ('{"max_items": 0}', "max_items"),
        ('{"expires": "tomorrow"}', "tomorrow"),
        ('{"allowed_functions": ["not-a-checksum"]}', "not-a-checksum"),
        ("[1, 2]", "policy must be a dict"),
        ("{not json", "not valid JSON"),
    ],
)
def test_encrypt_bad_policy(tmp_path, policy, message):
    (tmp_path / "policy.json").write_text(policy)
    source = tmp_path / "data.bin"
    source.write_bytes(b"x")

    completed = _cli("encrypt", str(source), "--policy", str(tmp_path / "policy.json"))

    assert completed.returncode == 1
    assert message in _text(completed.stderr)
    assert "policy.json" in _text(completed.stderr)
    assert not (tmp_path / "data.bin.sealed").exists()


def test_encrypt_policy_recorded(tmp_path):
    approved = cell_checksum("len(data)")
    (tmp_path / "policy.json").write_text(json.dumps({"allowed_functions": [approved], "schema_public": False}))
    source = _breast_cancer_csv(tmp_path / "cancer.csv")

    completed = _cli("encrypt", str(source), "--frame", "--policy", str(tmp_path / "policy.json"))

    assert completed.returncode == 0, completed.stderr
    sealed = Sealed.load(tmp_path / "cancer.csv.sealed")
    assert sealed.policy.allowed_functions == (approved,)
    assert sealed.schema is None


def test_encrypt_missing_file(tmp_path):
    completed = _cli("encrypt", str(tmp_path / "absent.csv"))

    assert completed.returncode == 1
    assert _text(completed.stderr).startswith("error: ")
    assert "absent.csv" in _text(completed.stderr)


# checksum, function create, deploy, list, delete --------------------------------------------------


def _zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return target


def test_create_checksum_deploy_list_delete(tmp_path):
    home = tmp_path / "home"
    created = _cli("function", "create", "word-count", cwd=tmp_path, home=home)
    assert created.returncode == 0, created.stderr
    folder = tmp_path / "word-count"

    from_folder = _cli("checksum", str(folder), home=home)
    from_zip = _cli("checksum", str(_zip_folder(folder, tmp_path / "wc.zip")), home=home)
    deployed = _cli("deploy", str(folder), home=home)

    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stderr == b""
    checksum = _text(from_folder.stdout).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    assert _text(from_zip.stdout).strip() == checksum
    lines = _text(deployed.stdout).splitlines()
    assert len(lines) == 3
    function_id = re.fullmatch(r"Function ID: ([A-Za-z0-9_-]{16})", lines[0]).group(1)
    assert lines[1] == f"Function Checksum: {checksum}"
    assert lines[2] == "Function Name: word-count"

    listed = _text(_cli("list", home=home).stdout).splitlines()
    assert listed[0].split() == ["ID", "NAME", "CHECKSUM", "CREATED"]
    assert listed[1].split()[:3] == [function_id, "word-count", checksum[:16]]

    deleted = _cli("delete", function_id, home=home)
    assert deleted.returncode == 0, deleted.stderr
    assert function_id not in _text(_cli("list", home=home).stdout)


def test_deploy_zip_with_name(tmp_path):
    home = tmp_path / "home"
    assert _cli("function", "create", "app", cwd=tmp_path, home=home).returncode == 0
    archive = _zip_folder(tmp_path / "app", tmp_path / "app.zip")

    deployed = _cli("deploy", str(archive), "--name", "zipped", home=home)
    deleted = _cli("delete", "zipped", home=home)

    assert deployed.returncode == 0, deployed.stderr
    assert _text(deployed.stdout).splitlines()[2] == "Function Name: zipped"
    assert deleted.returncode == 0, deleted.stderr
    assert _registry_snapshot(home).keys() <= {"names.json", ".lock"}


def test_function_template_handler_runs(tmp_path):
    import runpy

    assert _cli("function", "create", "shape", cwd=tmp_path).returncode == 0

    namespace = runpy.run_path(str(tmp_path / "shape" / "app.py"))

    assert namespace["cape_handler"](b"a,b\n1,2\n3,4\n") == {"rows": 2, "columns": ["a", "b"]}
    assert (tmp_path / "shape" / "requirements.txt").read_text().splitlines()[-1] == "pandas"


def test_function_create_existing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")

    into_empty = _cli("function", "create", "empty", cwd=tmp_path)
    into_busy = _cli("function", "create", "busy", cwd=tmp_path)

    assert into_empty.returncode == 0, into_empty.stderr
    assert (tmp_path / "empty" / "app.py").is_file()
    assert into_busy.returncode == 1
    assert "is not empty" in _text(into_busy.stderr)
    assert sorted(path.name for path in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def test_function_create_invalid_name(tmp_path):
    completed = _cli("function", "create", "bad name", cwd=tmp_path)

    assert completed.returncode == 1
    assert "invalid function name 'bad name'" in _text(completed.stderr)
    assert not (tmp_path / "bad name").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, "has no app.py"),
        ("def handler(input_bytes):\n    return input_bytes\n", "does not define a top-level function cape_handler"),
        ("def cape_handler(first, second):\n    return first\n", "requires 2 positional arguments"),
        ("async def cape_handler(input_bytes):\n    return input_bytes\n", "is async"),
        ("def cape_handler(input_bytes)\n    return input_bytes\n", "syntax error at line 1"),
    ],
)
def test_deploy_invalid_app(tmp_path, source, message):
    home = tmp_path / "home"
    assert _cli("function", "create", "kept", cwd=tmp_path, home=home).returncode == 0
    assert _cli("deploy", str(tmp_path / "kept"), home=home).returncode == 0
    before = _registry_snapshot(home)
    folder = tmp_path / "broken"
    if source is None:
        folder.mkdir()
        (folder / "main.py").write_text("print('no handler')\n")
    else:
        _write_app(folder, source)

    completed = _cli("deploy", str(folder), home=home)

    assert completed.returncode == 1
    assert message in _text(completed.stderr)
    assert len(_text(completed.stderr).splitlines()) == 1
    assert completed.stdout == b""
    assert _registry_snapshot(home) == before


def test_deploy_missing_requirement(tmp_path):
    home = tmp_path / "home"
    folder = _write_app(tmp_path / "needs", "def cape_handler(input_bytes):\n    return 1\n",
                        requirements="surely-not-installed-package-xyz\n")

    completed = _cli("deploy", str(folder), home=home)

    assert completed.returncode == 1
    assert "pip install --target" in _text(completed.stderr)
    assert _registry_snapshot(home) == {}


def test_deploy_requirement_warning(tmp_path):
    home = tmp_path / "home"
    folder = _write_app(tmp_path / "pinned", "def cape_handler(input_bytes):\n    return 1\n",
                        requirements="pandas==0.0.1\n")

    completed = _cli("deploy", str(folder), home=home)

    assert completed.returncode == 0, completed.stderr
    assert _text(completed.stderr).startswith("warning: ")
    assert "0.0.1" in _text(completed.stderr)
    assert _text(completed.stdout).startswith("Function ID: ")


def test_deploy_missing_folder(tmp_path):
    completed = _cli("deploy", str(tmp_path / "absent"), home=tmp_path / "home")

    assert completed.returncode == 1
    assert "not found" in _text(completed.stderr)


def test_delete_unknown_function(tmp_path):
    home = tmp_path / "home"
    assert _cli("function", "create", "kept", cwd=tmp_path, home=home).returncode == 0
    assert _cli("deploy", str(tmp_path / "kept"), home=home).returncode == 0
    before = _registry_snapshot(home)

    completed = _cli("delete", "no-such-function", home=home)

    assert completed.returncode == 1
    assert "'no-such-function'" in _text(completed.stderr)
    assert "confidential-nb list" in _text(completed.stderr)
    assert _registry_snapshot(home) == before


def test_list_empty_registry(tmp_path):
    completed = _cli("list", home=tmp_path / "home")

    assert completed.returncode == 0
    assert completed.stdout == b""
    assert "no deployed functions" in _text(completed.stderr)


def test_checksum_of_cell(tmp_path):
    cell = tmp_path / "train.py"
    cell.write_bytes(b"total = len(data)\r\ntotal\r\n")

    completed = _cli("checksum", "--cell", str(cell))

    assert completed.returncode == 0, completed.stderr
    assert _text(completed.stdout).strip() == cell_checksum("total = len(data)\ntotal\n")


@pytest.mark.parametrize(
    "arguments",
    [
        ["encrypt"],
        ["encrypt", "a.csv", "--colour"],
        ["checksum"],
        ["checksum", "app", "--cell", "cell.py"],
        ["function"],
        ["function", "remove", "x"],
        ["deploy"],
        ["delete"],
        ["list", "extra"],
        ["key", "explode"],
    ],
)
def test_usage_errors_exit_2(tmp_path, arguments):
    completed = _cli(*arguments, cwd=tmp_path, home=tmp_path / "home")

    assert completed.returncode == 2
    assert b"usage:" in completed.stderr


@pytest.mark.parametrize(
    "command",
    [["demo"], ["status"], ["key"], ["attest"], ["verify"], ["measurements"], ["encrypt"], ["checksum"],
     ["function"], ["function", "create"], ["deploy"], ["list"], ["delete"]],
)
def test_help_has_example(command):
    completed = _cli(*command, "--help")

    assert completed.returncode == 0
    assert b"Example" in completed.stdout
