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
from confidential_nb.enclave.spare import BACK_TO_BACK_SECONDS, CELL_PID_IN_NAMESPACE, DEFAULT_POOL_SIZE, runs_back_to_back
from confidential_nb.sandbox import SINGLE_THREAD_ENVIRONMENT, bind_run_directory
from processes import descendants, find_zygote, is_running, spare_processes, wait_until_gone

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


def _wait_for_spares(enclave, seconds: float = 20.0) -> set[int]:
    """Return the processes of the zygote's spares once its pool is full."""
    zygote = find_zygote(enclave.status()["zygote_pid"])
    # A relay outside the run's PID namespace, PID 1 inside it and the cell's process, or the cell's alone.
    expected = DEFAULT_POOL_SIZE * (3 if enclave.status()["layers"]["pid_namespace"]["active"] else 1)
    deadline = time.monotonic() + seconds
    found = spare_processes(zygote)
    while len(found) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        found = spare_processes(zygote)
    assert len(found) == expected, f"zygote {zygote} has spare processes {sorted(found)}, expected {expected} of them"
    return found


def _process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_spare_pool_full_after_run(enclave):
    assert enclave.run("1 + 1").value == 2
    spares = _wait_for_spares(enclave)
    cells = [pid for pid in spares if _process_name(pid) == "cnb-spare"]
    assert len(cells) == DEFAULT_POOL_SIZE


def test_spare_pool_full_after_failed_run(enclave):
    with pytest.raises(confidential_nb.errors.EnclaveError, match="ZeroDivisionError"):
        enclave.run("1 / 0")
    spares = _wait_for_spares(enclave)
    cells = [pid for pid in spares if _process_name(pid) == "cnb-spare"]
    assert len(cells) == DEFAULT_POOL_SIZE


SIGNAL_CHECK = """\
import os, signal
seen = []
signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
os.kill(os.getpid(), signal.SIGUSR1)
try:
    os.kill(1, 0)
    other = "allowed"
except PermissionError:
    other = "denied"
result = {"pid": os.getpid(), "seen": seen, "other": other}
"""


def test_filter_from_zygote_fits_cell(unhooked_enclave):
    # The zygote builds one seccomp filter for the cell's pid in its namespace, and every spare inherits it.
    # Its signal rule names that pid, so a wrong one would deny the cell its own signal.
    layers = unhooked_enclave.status()["layers"]
    report = unhooked_enclave.run(SIGNAL_CHECK).value
    assert report["seen"] == [1]
    if layers["pid_namespace"]["active"]:
        assert report["pid"] == CELL_PID_IN_NAMESPACE
    if layers["seccomp"]["active"]:
        assert report["other"] == "denied"


def test_no_zombies_after_many_runs(enclave):
    # Each run's PID 1 comes back to the zygote when its relay dies first; unreaped, such zombies filled pids.max.
    for index in range(30):
        assert enclave.run(f"{index} + 1").value == index + 1
    zygote = find_zygote(enclave.status()["zygote_pid"])
    zombies = [pid for pid in descendants(zygote) if _parent(pid) == zygote and not is_running(pid)]
    # The last run's processes may still be dying; the earlier runs' ones must all be reaped.
    assert len(zombies) <= 3, f"zygote {zygote} has {len(zombies)} zombie children"


@pytest.mark.parametrize(("starts", "expected"), [
    ([], False),
    ([5.0], False),
    ([5.0, 5.02], True),
    ([1.0, 5.0, 5.02], True),
    ([5.0, 5.02, 5.5], False),
    ([5.0, 5.0 + 2 * BACK_TO_BACK_SECONDS], False),
])
def test_runs_back_to_back(starts, expected):
    assert runs_back_to_back(starts) is expected


def test_warm_up_without_training():
    # Spares prepared while runs come back to back leave the training cell out; the rest must still work.
    from confidential_nb.enclave import runner

    runner.warm_up(training=False)
    runner.warm_up(lambda: True, training=False)


def test_spare_holds_only_its_control_socket(enclave, key_home):
    for cell in [pid for pid in _wait_for_spares(enclave) if _process_name(pid) == "cnb-spare"]:
        targets = [os.readlink(f"/proc/{cell}/fd/{fd}") for fd in os.listdir(f"/proc/{cell}/fd")]
        sockets = [target for target in targets if target.startswith("socket:")]
        assert len(sockets) == 1
        assert not [target for target in targets if target.startswith(str(key_home))]


@pytest.mark.parametrize("process", ["cell", "relay"])
def test_run_after_spares_killed(enclave, sealed, frame, process):
    spares = _wait_for_spares(enclave)
    zygote = find_zygote(enclave.status()["zygote_pid"])
    if process == "cell":
        killed = [pid for pid in spares if _process_name(pid) == "cnb-spare"]
    else:
        killed = [pid for pid in spares if _parent(pid) == zygote]
    assert len(killed) == DEFAULT_POOL_SIZE
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert all(wait_until_gone(pid) for pid in killed)

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
