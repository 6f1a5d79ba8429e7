"""Deployed Cape functions run from the command line, the SDK and %cape_run, on a real enclave.

The compatibility case replays a Cape tutorial unchanged: its handler
decodes the CSV bytes, writes them to a file in its working directory,
reads the file with pandas and trains a numpy logistic regression.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import confidential_nb
from confidential_nb import registry
from confidential_nb.datasets import load_breast_cancer
from confidential_nb.errors import BundleError
from confidential_nb.keys import ensure_keys
from confidential_nb.magics import register_magics
from confidential_nb.registry import FunctionRef
from confidential_nb.sdk import Client

TUTORIAL_APP = '''\
import numpy as np
import pandas as pd


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def cape_handler(input_bytes):
    with open("data.csv", "wb") as handle:
        handle.write(input_bytes)
    df = pd.read_csv("data.csv")
    df = df.drop(columns=[df.columns[0]])
    y = df["target"].to_numpy()
    X = df.drop(columns=["target"]).to_numpy()
    X = (X - X.mean(axis=0)) / X.std(axis=0)

    # The tutorial shuffles without a seed; this copy seeds it so the test is deterministic.
    order = np.random.default_rng(0).permutation(len(y))
    split = int(0.8 * len(y))
    train, test = order[:split], order[split:]
    weights, bias = np.zeros(X.shape[1]), 0.0
    for _ in range(300):
        error = sigmoid(X[train] @ weights + bias) - y[train]
        weights -= 0.1 * X[train].T @ error / len(train)
        bias -= 0.1 * error.mean()
    accuracy = ((sigmoid(X[test] @ weights + bias) > 0.5) == y[test]).mean()
    return {"accuracy": accuracy, "weights": weights.tolist(), "bias": bias}
'''


def _cli(*arguments: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "confidential_nb.cli", *arguments], input=stdin, capture_output=True,
                          timeout=300, cwd=cwd, env=dict(os.environ), check=False)


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tutorial app folder and the breast-cancer CSV written with its index, as DataFrame.to_csv does."""
    root = tmp_path_factory.mktemp("tutorial")
    app = root / "breast_cancer_app"
    app.mkdir()
    (app / "app.py").write_text(TUTORIAL_APP)
    (app / "requirements.txt").write_text("numpy\npandas\n")
    data = root / "breast_cancer.csv"
    load_breast_cancer().to_csv(data)
    return app, data


@pytest.fixture(scope="module")
def deployed(tutorial: tuple[Path, Path]) -> FunctionRef:
    return registry.deploy(confidential_nb.bundles.read_bundle(tutorial[0]), "breast-cancer-tutorial")


def _check_tutorial_result(value: object) -> None:
    assert isinstance(value, dict)
    assert 0 < value["accuracy"] < 1
    assert len(value["weights"]) == 30
    assert isinstance(value["bias"], float)


def test_tutorial_deploy_then_run(tutorial: tuple[Path, Path]) -> None:
    app, data = tutorial
    deploy = _cli("deploy", str(app))
    assert deploy.returncode == 0, deploy.stderr
    lines = deploy.stdout.decode().splitlines()
    assert [line.split(":")[0] for line in lines] == ["Function ID", "Function Checksum", "Function Name"]
    function_id = lines[0].split(": ")[1]

    run = _cli("run", function_id, "-f", str(data))

    assert run.returncode == 0, run.stderr
    _check_tutorial_result(ast.literal_eval(run.stdout.decode().splitlines()[-1]))
    assert b"receipt verified" in run.stderr


def test_run_json_output(deployed: FunctionRef, tutorial: tuple[Path, Path]) -> None:
    run = _cli("run", deployed.name, "-f", str(tutorial[1]), "-o", "json")
    assert run.returncode == 0, run.stderr
    _check_tutorial_result(json.loads(run.stdout.decode().splitlines()[-1]))


def test_run_sealed_file_passes_through(deployed: FunctionRef, tutorial: tuple[Path, Path], tmp_path: Path) -> None:
    sealed = tmp_path / "data.csv.sealed"
    encrypt = _cli("encrypt", str(tutorial[1]), "--out", str(sealed))
    assert encrypt.returncode == 0, encrypt.stderr
    run = _cli("run", deployed.id, "-f", str(sealed))
    assert run.returncode == 0, run.stderr
    _check_tutorial_result(ast.literal_eval(run.stdout.decode().splitlines()[-1]))


def test_run_standard_input(deployed: FunctionRef, tutorial: tuple[Path, Path]) -> None:
    run = _cli("run", deployed.id, "-f", "-", stdin=tutorial[1].read_bytes())
    assert run.returncode == 0, run.stderr
    _check_tutorial_result(ast.literal_eval(run.stdout.decode().splitlines()[-1]))


def test_run_checksum_matches(deployed: FunctionRef, tutorial: tuple[Path, Path]) -> None:
    run = _cli("run", deployed.id, "-f", str(tutorial[1]), "--function-checksum", deployed.checksum)
    assert run.returncode == 0, run.stderr


def test_run_checksum_mismatch(deployed: FunctionRef, tutorial: tuple[Path, Path]) -> None:
    before = sorted(ref.id for ref in registry.list_functions())
    run = _cli("run", deployed.id, "-f", str(tutorial[1]), "--function-checksum", "0" * 64)
    assert run.returncode == 1
    assert b"not the expected" in run.stderr
    assert len(run.stderr.decode().strip().splitlines()) == 1
    assert sorted(ref.id for ref in registry.list_functions()) == before


def test_run_unknown_function(tutorial: tuple[Path, Path]) -> None:
    run = _cli("run", "no-such-function", "-f", str(tutorial[1]))
    assert run.returncode == 1
    assert b"'no-such-function'" in run.stderr
    assert b"confidential-nb list" in run.stderr


def test_run_empty_input_file(deployed: FunctionRef, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    run = _cli("run", deployed.id, "-f", str(empty))
    assert run.returncode == 1
    assert b"is empty" in run.stderr


def test_run_input_for_another_key(deployed: FunctionRef, tutorial: tuple[Path, Path], tmp_path: Path) -> None:
    other = ensure_keys(tmp_path / "other-home")
    sealed = tmp_path / "other.sealed"
    confidential_nb.seal(tutorial[1].read_bytes(), key=other.public).save(sealed)
    run = _cli("run", deployed.id, "-f", str(sealed))
    assert run.returncode == 1
    assert b"error:" in run.stderr
    assert b"key" in run.stderr


def _deploy_source(tmp_path: Path, name: str, source: str) -> FunctionRef:
    app = tmp_path / name
    app.mkdir()
    (app / "app.py").write_text(source)
    return registry.deploy(confidential_nb.bundles.read_bundle(app), name)


def test_run_timeout(tmp_path: Path) -> None:
    ref = _deploy_source(tmp_path, "sleeper", "import time\n\ndef cape_handler(data):\n    time.sleep(60)\n")
    run = _cli("run", ref.id, "text", "--timeout", "1")
    assert run.returncode == 1
    assert b"timeout of 1 second" in run.stderr


def test_run_unsupported_return_type(tmp_path: Path) -> None:
    ref = _deploy_source(tmp_path, "returns-object", "def cape_handler(data):\n    return object()\n")
    run = _cli("run", ref.id, "text")
    assert run.returncode == 1
    assert b"error:" in run.stderr


def test_run_text_input(tmp_path: Path) -> None:
    ref = _deploy_source(tmp_path, "echo-length", "def cape_handler(data):\n    return len(data)\n")
    run = _cli("run", ref.id, "hello")
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().splitlines()[-1] == "5"


def test_test_command_without_deploy(tutorial: tuple[Path, Path]) -> None:
    before = sorted(ref.id for ref in registry.list_functions())
    run = _cli("test", str(tutorial[0]), "-f", str(tutorial[1]))
    assert run.returncode == 0, run.stderr
    _check_tutorial_result(ast.literal_eval(run.stdout.decode().splitlines()[-1]))
    assert sorted(ref.id for ref in registry.list_functions()) == before


def test_run_input_twice_usage_error(deployed: FunctionRef, tutorial: tuple[Path, Path]) -> None:
    run = _cli("run", deployed.id, "text", "-f", str(tutorial[1]))
    assert run.returncode == 2


def test_sdk_run_function_ref(deployed: FunctionRef, tutorial: tuple[Path, Path], tmp_path: Path) -> None:
    saved = tmp_path / "function.json"
    deployed.save(saved)
    result = Client().run(FunctionRef.load(saved), tutorial[1].read_bytes())
    _check_tutorial_result(result.value)
    assert result.receipt is not None
    assert result.receipt.function_checksum == deployed.checksum


def test_sdk_session_reuses_enclave(deployed: FunctionRef, tutorial: tuple[Path, Path]) -> None:
    with Client().connect(deployed.name) as session:
        first = session.invoke(str(tutorial[1]))
        monitor = session.enclave.status()["monitor_pid"]
        second = session.invoke(str(tutorial[1]))
        assert session.enclave.status()["monitor_pid"] == monitor
    assert first.value == second.value
    assert not session.enclave.running


def test_sdk_checksum_mismatch(deployed: FunctionRef) -> None:
    with pytest.raises(BundleError, match="not the expected"):
        Client().run(deployed, b"", function_checksum="1" * 64)


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    from confidential_nb import client

    ipython = InteractiveShell.instance()
    register_magics(ipython)
    # The shell is a process-wide instance that other test modules use too, so its namespace is restored.
    before = set(ipython.user_ns)
    yield ipython
    for name in set(ipython.user_ns) - before:
        del ipython.user_ns[name]
    client.close_default_enclaves()


def test_cape_run_magic(shell: InteractiveShell, deployed: FunctionRef, tutorial: tuple[Path, Path]) -> None:
    shell.user_ns["sealed"] = confidential_nb.seal(tutorial[1].read_bytes())
    shell.run_line_magic("cape_run", f"{deployed.name} --input sealed --out counts")
    _check_tutorial_result(shell.user_ns["counts"].value)
