"""End-to-end runs through the real monitor, zygote and runner processes."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Enclave, Sealed
from confidential_nb.errors import (
    EgressError,
    EnclaveError,
    EnclaveResourceError,
    EnclaveTimeoutError,
    EncodingError,
    PolicyError,
    SealError,
)
from confidential_nb.functions import cell_checksum
from processes import descendants, is_running, runner_processes, wait_until_gone, wait_until_no_runners


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=50), "label": rng.integers(0, 2, size=50)})


@pytest.fixture(scope="module")
def sealed(frame) -> Sealed:
    return confidential_nb.seal(frame)


def test_run_value_is_last_expression(enclave, sealed, frame):
    run = enclave.run("total = data['x'].sum()\ntotal * 2", inputs={"data": sealed})
    assert run.value == pytest.approx(frame["x"].sum() * 2)


def test_run_value_prefers_result_variable(enclave, sealed):
    run = enclave.run("result = {'rows': len(data)}\n'ignored'", inputs={"data": sealed})
    assert run.value == {"rows": 50}


def test_run_without_result_or_expression_is_none(enclave):
    assert enclave.run("x = 1").value is None


def test_run_unsealed_frame_equals_original(enclave, sealed, frame):
    # The egress guard withholds the frame itself, so the runner compares it with the original.
    source = "import pandas as pd\npd.testing.assert_frame_equal(data, original)\nlen(data)"
    run = enclave.run(source, inputs={"data": sealed}, params={"original": frame})
    assert run.value == len(frame)


def test_run_params_bound_by_name(enclave):
    run = enclave.run("result = (scale * weights).tolist()", params={"scale": 2, "weights": np.array([1.0, 2.5])})
    assert run.value == [2.0, 5.0]


def test_run_receipt_verifies_and_binds_inputs(enclave, sealed):
    run = enclave.run("len(data)", inputs={"data": sealed})
    assert run.receipt.verify() is True
    assert run.receipt.body["inputs"] == {"data": sealed.digest}
    assert run.receipt.function_checksum == cell_checksum("len(data)")


def test_run_exception_reports_type_and_line(enclave, sealed):
    with pytest.raises(EnclaveError, match="ZeroDivisionError at line 3 of the cell") as caught:
        enclave.run("a = 1\nb = 0\nc = a / b\n", inputs={"data": sealed})
    assert caught.value.exception_type == "ZeroDivisionError"
    assert caught.value.line == 3
    assert enclave.run("41 + 1").value == 42


def test_run_exception_message_withheld(enclave, sealed):
    with pytest.raises(EnclaveError, match="stays inside the enclave") as caught:
        enclave.run("raise ValueError(str(data['x'].tolist()))", inputs={"data": sealed})
    assert "0." not in str(caught.value)


def test_run_user_exception_class_name_withheld(enclave):
    with pytest.raises(EnclaveError, match="defined outside Python, numpy, pandas") as caught:
        enclave.run("class Leak_42(Exception): pass\nraise Leak_42()")
    assert "Leak_42" not in str(caught.value)


def test_run_library_error_message_withheld(enclave, sealed):
    source = "from confidential_nb.training import train_test_split\ntrain_test_split(data, target='nope')"
    with pytest.raises(EnclaveError, match="--debug") as caught:
        enclave.run(source, inputs={"data": sealed})
    assert "nope" not in str(caught.value)
    assert caught.value.line == 2


def test_run_library_error_message_in_debug(debug_enclave, frame):
    sealed = confidential_nb.seal(frame, policy={"allow_debug": True})
    source = "from confidential_nb.training import train_test_split\ntrain_test_split(data, target='nope')"
    with pytest.raises(EnclaveError, match="nope") as caught:
        debug_enclave.run(source, inputs={"data": sealed})
    assert caught.value.line == 2


def test_run_syntax_error_reports_line(enclave):
    with pytest.raises(EnclaveError, match="SyntaxError at line 2"):
        enclave.run("x = 1\nx = = 2\n")


def test_run_system_exit_is_an_error(enclave):
    with pytest.raises(EnclaveError, match="SystemExit"):
        enclave.run("import sys\nsys.exit(3)")
    assert enclave.run("1").value == 1


def test_run_printed_lines_withheld_and_counted(enclave, sealed, capfd):
    run = enclave.run("print(data.head())\nprint('two')\n1", inputs={"data": sealed})
    captured = capfd.readouterr()
    # data.head() prints a header line and five rows, then one more line.
    assert run.withheld_lines == 7
    assert captured.out == ""
    assert captured.err == ""


def test_run_module_state_does_not_leak(enclave):
    enclave.run("import numpy\nnumpy.leaked_value = 7")
    assert enclave.run("import numpy\nhasattr(numpy, 'leaked_value')").value is False


def test_run_random_state_differs_between_runs(enclave):
    first = enclave.run("import numpy\nnumpy.random.random()").value
    second = enclave.run("import numpy\nnumpy.random.random()").value
    assert first != second


def test_runner_environment_is_clean(enclave, key_home):
    run = enclave.run("import os, sys\nresult = {'env': dict(os.environ), 'cwd': os.getcwd(), "
                      "'crypto': 'cryptography' in sys.modules, 'keys': 'confidential_nb.keys' in sys.modules}")
    assert "CONFIDENTIAL_NB_HOME" not in run.value["env"]
    assert run.value["env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert run.value["env"]["ARROW_DEFAULT_MEMORY_POOL"] == "system"
    assert run.value["env"]["TMPDIR"] == run.value["cwd"]
    assert not run.value["cwd"].startswith(str(key_home))
    assert run.value["crypto"] is False
    assert run.value["keys"] is False


def test_run_scratch_directory_removed(enclave):
    cwd = enclave.run("import os\nopen('scratch.txt', 'w').write('x')\nos.getcwd()").value
    assert not os.path.exists(cwd)


def test_run_timeout_kills_process_group(enclave):
    zygote = enclave.status()["zygote_pid"]
    before = runner_processes(zygote)
    source = ("import os, time\ntry:\n    if os.fork() == 0:\n        time.sleep(600)\nexcept PermissionError:\n    pass\n"
              "while True:\n    pass\n")
    with pytest.raises(EnclaveTimeoutError, match="timeout of 1.5 seconds"):
        enclave.run(source, timeout=1.5)
    assert runner_processes(zygote) == before
    assert enclave.run("'alive'").value == "alive"


def test_run_memory_limit_raises_resource_error(enclave):
    with pytest.raises(EnclaveResourceError, match="out of memory at its limit of 2.0 GiB"):
        enclave.run("import numpy\nblock = numpy.ones(4 * 1024**3 // 8)", memory="2G")
    assert enclave.run("2").value == 2


def test_run_memory_below_runner_baseline(enclave):
    with pytest.raises(EnclaveResourceError, match=r"limit of 16.0 MiB is below the .* a runner uses"):
        enclave.run("1", memory="16M")


def test_run_cpu_limit_without_wall_clock(enclave):
    # Sleeping uses no CPU, so only the wall-clock timeout stops this one.
    with pytest.raises(EnclaveTimeoutError):
        enclave.run("import time\ntime.sleep(30)", timeout=1)


def test_run_tampered_input_runs_nothing(enclave, sealed):
    runs_before = enclave.status()["runs"]
    tampered = bytearray(bytes(sealed))
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(SealError, match="input 'data'.*failed authentication"):
        enclave.run("1", inputs={"data": Sealed(bytes(tampered))})
    assert enclave.status()["runs"] == runs_before


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("result = lambda: 1", r"result is a function"),
        ("result = {'model': open(__import__('os').devnull)}", r"result\['model'\].*TextIOWrapper"),
        ("class Thing: pass\nresult = [1, Thing()]", r"result\[1\].*class defined outside confidential_nb, numpy, pandas and Python"),
        ("result = {1, 2}", r"set"),
    ],
)
def test_run_unencodable_result_names_path_and_type(debug_enclave, source, pattern):
    # The path and type may name data, so only a debug run shows them.
    with pytest.raises(EncodingError, match=pattern):
        debug_enclave.run(source)


def test_run_unencodable_result_details_withheld(enclave):
    with pytest.raises(EncodingError, match="--debug") as caught:
        enclave.run("result = {'alice': lambda: 1}")
    assert "alice" not in str(caught.value)
    assert "function" not in str(caught.value)


def test_run_policy_allowed_function(enclave, frame):
    approved = "len(data)"
    sealed = confidential_nb.seal(frame, policy={"allowed_functions": [cell_checksum(approved)]})
    assert enclave.run(approved, inputs={"data": sealed}).value == 50
    with pytest.raises(PolicyError, match="not in the sealed input's allowed functions"):
        enclave.run("data", inputs={"data": sealed})


def test_run_policy_expired(enclave, frame):
    sealed = confidential_nb.seal(frame, policy={"expires": "2020-01-01T00:00:00+00:00"})
    with pytest.raises(PolicyError, match="expired"):
        enclave.run("1", inputs={"data": sealed})


def test_run_egress_limit(enclave, frame):
    sealed = confidential_nb.seal(frame, policy={"max_result_bytes": 300})
    assert enclave.run("float(data['x'].mean())", inputs={"data": sealed}).value is not None
    with pytest.raises(EgressError, match="larger than the 300 B the inputs. policy allows"):
        enclave.run("data", inputs={"data": sealed})


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"inputs": {"data": b"raw"}}, TypeError, "must be a Sealed"),
        ({"inputs": {"not valid": None}}, ValueError, "invalid input name"),
        ({"params": {"result": 1}}, ValueError, "reserved"),
        ({"timeout": -1}, ValueError, "invalid timeout"),
        ({"memory": "lots"}, ValueError, "invalid size"),
        ({"params": {"f": print}}, EncodingError, "function"),
    ],
)
def test_run_bad_arguments_rejected_before_sending(enclave, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        enclave.run("1", **kwargs)


def test_run_interrupt_stops_run_and_keeps_enclave(key_home):
    source = (
        "import os, time\n"
        "try:\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(60)\n"
        "except PermissionError:\n"
        "    pass\n"
        "time.sleep(60)\n"
    )
    seen: set[int] = set()

    def interrupt() -> None:
        # Every process of the run, the cell and the child it detached included, as the interrupt arrives.
        seen.update(runner_processes(zygote))
        os.kill(os.getpid(), signal.SIGINT)

    with Enclave(key_home) as local:
        status = local.status()
        first_pid, zygote = status["monitor_pid"], status["zygote_pid"]
        timer = threading.Timer(1.0, interrupt)
        timer.start()
        with pytest.raises(KeyboardInterrupt, match="stays up for the next run"):
            local.run(source)
        timer.join()

        assert len(seen) >= 3
        assert all(wait_until_gone(pid) for pid in seen)
        assert wait_until_no_runners(zygote)
        assert local.running
        assert local.run("'back'").value == "back"
        assert local.status()["monitor_pid"] == first_pid


def test_enclave_close_leaves_no_process(key_home):
    local = Enclave(key_home)
    status = local.status()
    # The zygote's processes, its waiting spare runner among them.
    below = descendants(status["zygote_pid"])
    assert below
    local.close()
    assert wait_until_gone(status["monitor_pid"])
    assert wait_until_gone(status["zygote_pid"])
    assert all(wait_until_gone(pid) for pid in below)


def test_enclave_exits_when_host_process_dies(key_home, tmp_path):
    script = (
        "import confidential_nb, os, sys\n"
        "e = confidential_nb.Enclave()\n"
        "s = e.status()\n"
        "print(s['monitor_pid'], s['zygote_pid'], flush=True)\n"
        "os._exit(0)\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout
    monitor, zygote = (int(value) for value in output.split())
    assert wait_until_gone(monitor)
    assert wait_until_gone(zygote)


def test_attestation_verifies_against_pins(enclave, key_home):
    from confidential_nb.attestation import load_pins

    pins = load_pins(key_home)
    document = enclave.attest(b"\x01" * 32)
    key = document.verify(nonce="01" * 32, platform_fingerprint=pins.platform_fingerprint, expected=pins.measurements)
    assert key.fingerprint == enclave.public_key().fingerprint
    assert enclave.status()["measurements"] == pins.measurements


def test_attestation_pinned_measurement_mismatch_stops_start(tmp_path):
    from confidential_nb.attestation import Pins, load_pins, save_pins
    from confidential_nb.errors import AttestationError

    home = tmp_path / "pinned"
    with Enclave(home) as first:
        first.status()
    pins = load_pins(home)
    save_pins(home, Pins(pins.platform_fingerprint, dict(pins.measurements, **{"2": "2" * 64})))
    with Enclave(home) as second:
        with pytest.raises(AttestationError, match=r"PCR 2 \(sandbox configuration\)"):
            second.run("1")
        assert not second.running


def test_attestation_reset_pins_again(tmp_path):
    from confidential_nb.attestation import Pins, load_pins, save_pins

    home = tmp_path / "reset"
    with Enclave(home) as first:
        first.status()
    pins = load_pins(home)
    save_pins(home, Pins(pins.platform_fingerprint, None))
    with Enclave(home) as second:
        assert second.run("1").value == 1
    assert load_pins(home).measurements == pins.measurements


def test_run_library_warning_reissued_on_host(enclave):
    from confidential_nb.errors import EnclaveWarning

    source = (
        "from confidential_nb.training import LogisticRegression\n"
        "model = LogisticRegression(epochs=2).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])\n"
        "result = model.converged_\n"
    )
    with pytest.warns(EnclaveWarning, match="ConvergenceWarning"):
        run = enclave.run(source)
    assert run.value is False
    assert run.warnings[0].startswith("ConvergenceWarning:")


def test_run_busy_loop_stopped_at_timeout(enclave):
    # A busy loop uses CPU, so the CPU-time limit (timeout + 5 s) would also end it.
    # The wall-clock timeout comes first and is what the error names.
    with pytest.raises(EnclaveTimeoutError, match="timeout of 1 second and"):
        enclave.run("while True:\n    pass", timeout=1)


def test_run_file_size_limit(enclave):
    # Seeking past the limit and writing one byte trips RLIMIT_FSIZE without using disk space.
    source = "with open('big', 'wb') as handle:\n    handle.seek(1024**3)\n    handle.write(b'0')"
    with pytest.raises(EnclaveResourceError, match="file size limit of 1.0 GiB"):
        enclave.run(source)
    assert enclave.run("'ok'").value == "ok"


def test_attestation_carries_user_data(enclave):
    assert enclave.attest(user_data="session-42").body["user_data"] == "session-42"


def test_attestation_rejects_oversized_user_data(enclave):
    from confidential_nb.errors import AttestationError

    with pytest.raises(AttestationError, match="malformed attest request"):
        enclave.attest(user_data="x" * 2000)
    assert enclave.run("1").value == 1


def test_receipt_names_result_and_policies(enclave, sealed):
    from confidential_nb.keys import canonical_json
    import hashlib

    run = enclave.run("len(data)", inputs={"data": sealed})
    assert run.receipt.body["result_name"] == "last expression"
    assert run.receipt.body["policies"] == {"data": hashlib.sha256(canonical_json(sealed.policy.to_dict())).hexdigest()}
    assert run.receipt.body["started"].endswith("+00:00")
    assert enclave.run("result = 1").receipt.body["result_name"] == "result"


def test_run_file_backed_input_streams(enclave, tmp_path):
    import hashlib

    from confidential_nb.sealing import seal_file

    source_file = tmp_path / "raw.bin"
    source_file.write_bytes(os.urandom(3 * 1024**2 + 5))
    sealed = seal_file(source_file, tmp_path / "raw.sealed")
    assert sealed.path is not None

    run = enclave.run("import hashlib\nhashlib.sha256(data).hexdigest()", inputs={"data": Sealed.load(sealed.path)})
    assert run.value == hashlib.sha256(source_file.read_bytes()).hexdigest()
    assert run.receipt.body["inputs"] == {"data": sealed.digest}


def test_run_file_backed_frame(enclave, frame, tmp_path):
    path = confidential_nb.seal(frame).save(tmp_path / "frame.sealed")
    source = "import pandas as pd\npd.testing.assert_frame_equal(data, original)\nlen(data)"
    run = enclave.run(source, inputs={"data": Sealed.load(path)}, params={"original": frame})
    assert run.value == len(frame)


def test_run_file_backed_tampered_leaves_no_plaintext(enclave, tmp_path):
    from confidential_nb.sealing import seal_file

    source_file = tmp_path / "raw.bin"
    source_file.write_bytes(b"secret-payload" * 100_000)
    sealed = seal_file(source_file, tmp_path / "raw.sealed")
    blob = bytearray(sealed.path.read_bytes())
    blob[-100] ^= 1
    sealed.path.write_bytes(bytes(blob))
    scratch_root = Path(enclave.run("import os\nos.path.dirname(os.getcwd())").value)

    with pytest.raises(SealError, match="input 'data'.*failed authentication"):
        enclave.run("len(data)", inputs={"data": Sealed.load(sealed.path)})
    assert list(scratch_root.iterdir()) == []


def test_run_file_backed_missing_file(enclave, frame, tmp_path):
    path = confidential_nb.seal(frame).save(tmp_path / "gone.sealed")
    sealed = Sealed.load(path)
    path.unlink()
    with pytest.raises(SealError, match="cannot read its file"):
        enclave.run("1", inputs={"data": sealed})


def test_run_repeated_library_warning_reported_once(enclave):
    from confidential_nb.errors import EnclaveWarning

    source = (
        "from confidential_nb.training import LogisticRegression\n"
        "for _ in range(3):\n"
        "    LogisticRegression(epochs=2).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])\n"
    )
    with pytest.warns(EnclaveWarning, match=r"\(raised 3 times\)"):
        run = enclave.run(source)
    assert len(run.warnings) == 1


def _network_layer_active(enclave) -> bool:
    return bool(enclave.status()["layers"]["network_namespace"]["active"])


def test_runner_network_namespace_blocks_loopback(unhooked_enclave):
    import socket

    if not _network_layer_active(unhooked_enclave):
        pytest.skip("this machine does not let the enclave create network namespaces (needs CAP_SYS_ADMIN)")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        source = (
            "import socket\n"
            "try:\n"
            "    socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
            "    result = 'connected'\n"
            "except OSError as error:\n"
            "    result = type(error).__name__\n"
        )
        assert unhooked_enclave.run(source, params={"port": port}).value != "connected"
        assert unhooked_enclave.run("import socket\n[name for _, name in socket.if_nameindex()]").value == ["lo"]
    finally:
        listener.close()


def test_runner_network_namespace_blocks_abstract_socket(unhooked_enclave):
    import socket

    if not _network_layer_active(unhooked_enclave):
        pytest.skip("this machine does not let the enclave create network namespaces (needs CAP_SYS_ADMIN)")
    name = "\0confidential-nb-test-" + os.urandom(4).hex()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen()
    try:
        source = (
            "import socket\n"
            "client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "try:\n"
            "    client.connect(name)\n"
            "    result = 'connected'\n"
            "except OSError as error:\n"
            "    result = type(error).__name__\n"
        )
        assert unhooked_enclave.run(source, params={"name": name}).value == "ConnectionRefusedError"
    finally:
        listener.close()


def test_status_layers_have_state_and_detail(enclave):
    layers = enclave.status()["layers"]
    assert "separate_uid" in layers
    for name, layer in layers.items():
        assert set(layer) == {"active", "detail"}, name
        assert isinstance(layer["active"], bool), name
        assert layer["detail"], name


def test_status_layers_match_runner(unhooked_enclave):
    layers = unhooked_enclave.status()["layers"]
    uid, pid, root_entries = unhooked_enclave.run("import os\n(os.getuid(), os.getpid(), sorted(os.listdir('/')))").value
    if layers["separate_uid"]["active"]:
        assert uid not in (0, os.getuid())
    if layers["pid_namespace"]["active"]:
        assert pid <= 3
    if layers["filesystem_view"]["active"]:
        assert "home" not in root_entries
        assert "var" not in root_entries


def test_status_layers_all_active_as_root(enclave):
    if os.geteuid() != 0:
        pytest.skip("the enclave builds every layer only when started as root; this test runs as an ordinary user")
    layers = enclave.status()["layers"]
    inactive = {name: layer["detail"] for name, layer in layers.items() if not layer["active"]}
    assert inactive == {}


def _sandbox_cgroups(monitor_pid: int) -> list[Path]:
    return [path for pattern in ("*/confidential_nb-{}-*", "*/*/confidential_nb-{}-*", "confidential_nb-{}-*")
            for path in Path("/sys/fs/cgroup").glob(pattern.format(monitor_pid))]


def test_enclave_close_removes_cgroup(key_home):
    local = Enclave(key_home)
    status = local.status()
    if not status["layers"]["cgroup_pids"]["active"]:
        pytest.skip(f"no pids cgroup on this machine: {status['layers']['cgroup_pids']['detail']}")
    cgroups = _sandbox_cgroups(status["monitor_pid"])
    assert len(cgroups) == 1
    assert int((cgroups[0] / "pids.max").read_text()) > 0
    local.close()
    assert wait_until_gone(status["monitor_pid"])
    assert _sandbox_cgroups(status["monitor_pid"]) == []


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
def test_interrupted_start_leaves_nothing(key_home, delay):
    # Whether the interrupt lands before, during or after the zygote's start depends on the machine.
    # None may leave a scratch root or a cgroup.
    Enclave(key_home).close()
    before = _orphaned_scratch_roots()
    cgroups_before = _orphaned_cgroups()
    local = Enclave(key_home)
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        local.status()
        timer.join()
    except KeyboardInterrupt:
        timer.join()
    local.close()
    assert _orphaned_scratch_roots() <= before
    assert _orphaned_cgroups() <= cgroups_before


def _orphaned_cgroups() -> set[Path]:
    """Return the enclave cgroups whose monitor, named by the pid in the cgroup's name, has gone."""
    found = set()
    for pattern in ("*/confidential_nb-*", "*/*/confidential_nb-*", "confidential_nb-*"):
        for path in Path("/sys/fs/cgroup").glob(pattern):
            owner = path.name.split("-")[1]
            if owner.isdigit() and not is_running(int(owner)):
                found.add(path)
    return found


def test_monitor_raises_open_file_limit(key_home):
    # Soft limits of 1024 are common, and cached inputs and waiting run channels each keep descriptors open.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        local = Enclave(key_home)
        local.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert local._process is not None
    limits = Path(f"/proc/{local._process.pid}/limits").read_text().splitlines()
    fields = next(line for line in limits if line.startswith("Max open files")).split()
    local.close()
    assert fields[3] == fields[4]


def test_start_removes_stale_scratch_roots(key_home):
    # A monitor killed with SIGKILL leaves its scratch root, with any file-backed input decrypted in it.
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = Path(tempfile.gettempdir()) / f"confidential_nb-{ended.pid}-left"
    (stale / "run-x").mkdir(parents=True)
    (stale / "run-x" / "input").write_bytes(b"plaintext")
    with Enclave(key_home) as local:
        local.start()
    assert not stale.exists()


def test_interrupt_during_channel_request_keeps_enclave(key_home, monkeypatch):
    # Ctrl-C in the middle of the request for a run channel would leave the control channel out of step.
    local = Enclave(key_home)
    local.start()
    monitor = local.status()["monitor_pid"]
    original_request, original_receive = Enclave._request, confidential_nb.client.recv_message
    asking: list[bool] = []

    def request(self, header, timeout, descriptor=None):
        asking.append(header.get("op") == "channel")
        return original_request(self, header, timeout, descriptor)

    def receive(channel, *arguments, **options):
        # The interrupt arrives while the host waits for the monitor's reply to the channel request.
        if asking and asking.pop():
            os.kill(os.getpid(), signal.SIGINT)
        return original_receive(channel, *arguments, **options)

    monkeypatch.setattr(Enclave, "_request", request)
    monkeypatch.setattr(confidential_nb.client, "recv_message", receive)
    with pytest.raises(KeyboardInterrupt):
        local.run("1")
    monkeypatch.undo()
    assert local.run("'after'").value == "after"
    assert local.status()["monitor_pid"] == monitor
    local.close()


def _orphaned_scratch_roots() -> set[Path]:
    """Return the scratch roots in the temporary directory whose monitor, named by the pid in the root's name, has gone.

    Other enclaves on the machine may create roots at any time, so only roots left without their monitor count.
    """
    found = set()
    for path in Path(tempfile.gettempdir()).glob("confidential_nb-*"):
        owner = path.name.split("-")[1]
        if owner.isdigit() and not is_running(int(owner)):
            found.add(path)
    return found


def test_enclave_start_removes_stale_cgroups(key_home):
    from confidential_nb.cgroup import CGROUP_PREFIX, _pids_parent

    parent, reason = _pids_parent()
    if parent is None:
        pytest.skip(f"no pids cgroup on this machine: {reason}")
    # A pid above the kernel's largest possible pid (2**22) names a monitor that cannot be running.
    stale = parent / f"{CGROUP_PREFIX}{2**22 + 1}-0000"
    stale.mkdir()
    with Enclave(key_home) as local:
        local.status()
    assert not stale.exists()
