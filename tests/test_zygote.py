"""The zygote's fork preconditions and its spare runners, against real processes and a real enclave."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Sealed
from confidential_nb.sandbox import SINGLE_THREAD_ENVIRONMENT, bind_run_directory
from processes import find_zygote, spare_processes, wait_until_gone

# Prints the process's thread count after importing what the code under test imports.
THREADS_AFTER = "import os\n{imports}\nfrom confidential_nb.sandbox import thread_count\nprint(thread_count())\n"

FORK_WITH_THREAD = """
import json, threading
import confidential_nb.enclave.zygote as zygote
from confidential_nb.enclave import spare
from confidential_nb.sandbox import Limits

release = threading.Event()
threading.Thread(target=release.wait).start()
limits = Limits(memory_bytes=64 * 1024**3, cpu_seconds=10, file_size_bytes=1024, open_files=64)
report = {"check": zygote._check_fork(limits), "spare": spare.fork_spare("/nonexistent", False)}
release.set()
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": np.random.default_rng(0).normal(size=50)})


@pytest.fixture(scope="module")
def sealed(frame: pd.DataFrame) -> Sealed:
    return confidential_nb.seal(frame)


def _python(source: str) -> str:
    """Run `source` in a fresh isolated interpreter without the thread variables and return its stripped output."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in SINGLE_THREAD_ENVIRONMENT and not name.startswith("ARROW_")}
    completed = subprocess.run([sys.executable, "-I", "-c", source], env=environment, capture_output=True, text=True,
                               timeout=120, check=True)
    return completed.stdout.strip()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS starts no extra thread on one CPU")
def test_numpy_alone_starts_blas_threads():
    # The control case: without the zygote's environment, importing numpy starts BLAS threads here.
    assert int(_python(THREADS_AFTER.format(imports="import numpy"))) > 1


def test_zygote_import_keeps_one_thread():
    threads = _python(THREADS_AFTER.format(imports="import confidential_nb.enclave.zygote\n"
                                                   "assert os.environ['OPENBLAS_NUM_THREADS'] == '1'"))
    assert int(threads) == 1


def test_zygote_refuses_fork_with_threads():
    report = json.loads(_python(FORK_WITH_THREAD))
    assert report["check"] == {"error": "threads", "threads": 2}
    assert report["spare"] is None


@pytest.mark.parametrize("scratch", ["/srv/scratch/../scratch/run-1", "run-1", "/srv/other/run-1", "/srv/scratch/run-1/inner",
                                     "/srv/scratch/..", "/srv/scratch/"])
def test_bind_run_directory_rejects_other_paths(scratch):
    # Checked before any descriptor or mount is used, so an invalid descriptor shows that nothing else ran.
    with pytest.raises(ValueError, match="invalid run directory"):
        bind_run_directory(-1, "/srv/scratch", scratch)


def _wait_for_spare(zygote_start_pid: int, seconds: float = 20.0) -> set[int]:
    """Return the waiting spare's processes once the zygote has one."""
    zygote = find_zygote(zygote_start_pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = spare_processes(zygote)
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"zygote {zygote} has no waiting spare runner after {seconds:g} seconds")


def _spare_cell(processes: set[int]) -> int:
    """Return the spare's cell process: the one of `processes` named cnb-spare."""
    named = [pid for pid in processes if Path(f"/proc/{pid}/comm").read_text().strip() == "cnb-spare"]
    assert len(named) == 1, f"expected one process named cnb-spare among {sorted(processes)}"
    return named[0]


def _spare_relay(processes: set[int], zygote_start_pid: int) -> int:
    """Return the spare's top process, the zygote's child, which the zygote kills to end the run."""
    zygote = find_zygote(zygote_start_pid)
    tops = [pid for pid in processes if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == zygote]
    assert len(tops) == 1, f"expected one child of zygote {zygote} among {sorted(processes)}"
    return tops[0]


def test_spare_waits_after_run(enclave):
    zygote = enclave.status()["zygote_pid"]
    assert enclave.run("1 + 1").value == 2
    spare = _wait_for_spare(zygote)
    layers = enclave.status()["layers"]
    # The relay outside the run's PID namespace, PID 1 inside it and the cell's process, or the cell's alone.
    assert len(spare) == (3 if layers["pid_namespace"]["active"] else 1)


def test_spare_holds_only_its_control_socket(enclave, key_home):
    spare = _spare_cell(_wait_for_spare(enclave.status()["zygote_pid"]))
    targets = [os.readlink(f"/proc/{spare}/fd/{fd}") for fd in os.listdir(f"/proc/{spare}/fd")]
    sockets = [target for target in targets if target.startswith("socket:")]
    assert len(sockets) == 1
    assert not [target for target in targets if target.startswith(str(key_home))]


@pytest.mark.parametrize("process", ["cell", "relay"])
def test_run_after_spare_killed(enclave, sealed, frame, process):
    zygote = enclave.status()["zygote_pid"]
    spare = _wait_for_spare(zygote)
    killed = _spare_cell(spare) if process == "cell" else _spare_relay(spare, zygote)
    os.kill(killed, signal.SIGKILL)
    assert wait_until_gone(killed)
    value = enclave.run("float(data['x'].sum())", inputs={"data": sealed}).value
    assert value == pytest.approx(float(frame["x"].sum()))


@pytest.mark.parametrize("module", ["builtins", "json", "numpy", "pandas", "confidential_nb.enclave.runner"])
def test_module_global_absent_in_next_run(enclave, module):
    enclave.run(f"import {module}\n{module}.leaked_by_earlier_run = 7")
    assert enclave.run(f"import {module}\nhasattr({module}, 'leaked_by_earlier_run')").value is False


def test_next_run_sees_only_its_directory(unhooked_enclave):
    # Without the audit hook, which would reject the listing of the parent directory before the mounts are tried.
    enclave = unhooked_enclave
    first = enclave.run("import os\nopen('left-behind.txt', 'w').write('x')\nos.getcwd()").value
    listing = enclave.run("import os\nresult = {'cwd': os.getcwd(), 'siblings': os.listdir('..'), "
                          "'files': os.listdir('.')}").value
    assert listing["cwd"] != first
    assert listing["siblings"] == [os.path.basename(listing["cwd"])]
    assert listing["files"] == []
