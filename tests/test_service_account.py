"""Service-account mode: the monitor loads the keys as root, then runs as its own account.

These tests need root, because only root can switch accounts; they use a
numeric uid that no file on the machine belongs to, so no user account has
to be created.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Enclave
from confidential_nb.errors import EgressError, EnclaveError, KeyHomeError, SealError
from confidential_nb.keys import SERVICE_USER_VARIABLE
from confidential_nb.sealing import seal_file

SERVICE_UID = 64000

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root can start the monitor as another account")


@pytest.fixture(scope="module")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service") / "home"


@pytest.fixture(scope="module")
def service_enclave(service_home: Path) -> Iterator[Enclave]:
    with Enclave(service_home, service_user=str(SERVICE_UID)) as enclave:
        enclave.status()
        yield enclave


@pytest.fixture
def readable_directory() -> Iterator[Path]:
    """A directory the service account can read, unlike pytest's temporary directories (mode 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="confidential_nb-service-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def _private_files(home: Path) -> list[Path]:
    return [home / "platform" / "root.key", *(home / "enclave" / "keys").glob("*/private.json")]


def _process_uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(field) for field in line.split()[1:]]
    raise AssertionError(f"/proc/{pid}/status has no Uid line")


def test_monitor_runs_as_service_account(service_enclave: Enclave) -> None:
    status = service_enclave.status()
    assert _process_uids(status["monitor_pid"]) == [SERVICE_UID] * 4
    assert status["service_account"] == f"uid {SERVICE_UID} (uid {SERVICE_UID})"


def test_monitor_not_dumpable(service_enclave: Enclave) -> None:
    # /proc gives a non-dumpable process's files to root, whatever the process's uid.
    pid = service_enclave.status()["monitor_pid"]
    assert os.stat(f"/proc/{pid}/environ").st_uid == 0


def test_private_keys_owned_by_service_account(service_enclave: Enclave, service_home: Path) -> None:
    files = _private_files(service_home)
    assert len(files) == 2
    for path in files:
        assert path.stat().st_uid == SERVICE_UID, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_public_key_stays_with_notebook_user(service_enclave: Enclave, service_home: Path) -> None:
    public = next((service_home / "enclave" / "keys").glob("*/public.json"))
    assert public.stat().st_uid == os.geteuid()
    assert confidential_nb.keys.load_public_key(service_home).fingerprint == service_enclave.public_key().fingerprint


def test_run_with_sealed_frame(service_enclave: Enclave) -> None:
    sealed = confidential_nb.seal(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), key=service_enclave.public_key())
    run = service_enclave.run("float(data.x.mean())", inputs={"data": sealed})
    assert run.value == 2.0


def test_run_library_paths_after_switch(service_enclave: Enclave) -> None:
    # Exceptions, library warnings and the result guard load code lazily in the monitor.
    key = service_enclave.public_key()
    rows = pd.DataFrame({"patient": [f"p{index}" for index in range(20)], "x": range(20)})
    sealed = confidential_nb.seal(rows, key=key)
    with pytest.raises(EnclaveError) as caught:
        service_enclave.run("import numpy\nnumpy.linalg.inv(numpy.zeros((2, 2)))")
    assert caught.value.exception_type == "numpy.linalg.LinAlgError"
    with pytest.raises(EgressError):
        service_enclave.run("list(data.patient)", inputs={"data": sealed})
    source = ("from confidential_nb.training import LogisticRegression\n"
              "LogisticRegression(epochs=2).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])\n"
              "result = 1\n")
    with pytest.warns(confidential_nb.errors.EnclaveWarning, match="ConvergenceWarning"):
        assert service_enclave.run(source).value == 1


def test_run_file_input_readable(service_enclave: Enclave, readable_directory: Path) -> None:
    source = readable_directory / "data.bin"
    source.write_bytes(b"hello")
    sealed = seal_file(source, readable_directory / "data.sealed", key=service_enclave.public_key())
    (readable_directory / "data.sealed").chmod(0o644)
    assert service_enclave.run("len(d)", inputs={"d": sealed}).value == 5


def test_run_file_input_unreadable(service_enclave: Enclave, readable_directory: Path) -> None:
    source = readable_directory / "data.bin"
    source.write_bytes(b"hello")
    sealed = seal_file(source, readable_directory / "data.sealed", key=service_enclave.public_key())
    (readable_directory / "data.sealed").chmod(0o600)
    with pytest.raises(SealError, match=f"permission denied for the enclave's uid {SERVICE_UID}"):
        service_enclave.run("len(d)", inputs={"d": sealed})
    assert service_enclave.run("'alive'").value == "alive"


def test_private_scratch_files_removed(service_enclave: Enclave) -> None:
    source = (
        "import os\n"
        "os.makedirs('a/b')\n"
        "open('a/b/f', 'w').write('x')\n"
        "os.chmod('a/b', 0)\n"
        "os.chmod('a', 0)\n"
        "result = 1\n"
    )
    assert service_enclave.run(source).value == 1
    scratch_root = Path(os.readlink(f"/proc/{service_enclave.status()['zygote_pid']}/cwd"))
    assert list(scratch_root.iterdir()) == []


def test_restart_on_handed_over_home(service_enclave: Enclave, service_home: Path) -> None:
    with Enclave(service_home, service_user=str(SERVICE_UID)) as second:
        assert second.run("'again'").value == "again"
        assert second.public_key().fingerprint == service_enclave.public_key().fingerprint


def test_plain_start_on_handed_over_home(service_enclave: Enclave, service_home: Path) -> None:
    with pytest.raises(KeyHomeError, match=SERVICE_USER_VARIABLE):
        with Enclave(service_home, service_user="") as plain:
            plain.status()


def test_service_user_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(KeyHomeError, match="'no-such-account-x' .* is not a user on this machine"):
        with Enclave(tmp_path / "home", service_user="no-such-account-x") as enclave:
            enclave.status()


def test_service_user_root_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyHomeError, match="is root"):
        with Enclave(tmp_path / "home", service_user="0") as enclave:
            enclave.status()


def test_service_user_from_environment(service_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVICE_USER_VARIABLE, str(SERVICE_UID))
    with Enclave(service_home) as enclave:
        assert _process_uids(enclave.status()["monitor_pid"]) == [SERVICE_UID] * 4


def test_key_rotate_cli_service_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Enclave(home, service_user=str(SERVICE_UID)) as enclave:
        old = enclave.public_key().fingerprint
    environment = dict(os.environ, CONFIDENTIAL_NB_HOME=str(home), **{SERVICE_USER_VARIABLE: str(SERVICE_UID)})

    completed = subprocess.run([sys.executable, "-m", "confidential_nb.cli", "key", "rotate"], capture_output=True,
                               text=True, timeout=120, env=environment, check=False)

    assert completed.returncode == 0, completed.stderr
    files = _private_files(home)
    assert len(files) == 3
    assert all(path.stat().st_uid == SERVICE_UID for path in files)
    with Enclave(home, service_user=str(SERVICE_UID)) as enclave:
        assert enclave.public_key().fingerprint != old
        assert enclave.run("'rotated'").value == "rotated"
