"""Attacks on the enclave's guarantees by a hostile cell, a hostile runner or a tampered input.

Every test asserts the safe behaviour, so a test fails where the library is
broken. Tests for defects that are still open carry a strict xfail mark with
a one-line description of the defect. The cells reach the runner's socket the
way any cell can: it is the only socket among the runner's open descriptors.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Enclave, Sealed
from confidential_nb.errors import (
    ConfidentialNBError,
    EgressError,
    EnclaveError,
    EnclaveResourceError,
    EnclaveTimeoutError,
    ProtocolError,
    SealError,
)
from confidential_nb.result_codec import MAX_NODES, decode_result
from processes import wait_until_no_runners

SECRET = "alice-secret"

# Cell prelude: `channel` becomes a socket on the runner's connection to the monitor.
RUNNER_SOCKET = """
import os, socket
from confidential_nb.protocol import send_message
from confidential_nb.result_codec import encode_result

def _link(name):
    try:
        return os.readlink('/proc/self/fd/' + name)
    except OSError:
        return ''

fd = [int(name) for name in os.listdir('/proc/self/fd') if _link(name).startswith('socket:')][0]
channel = socket.socket(fileno=os.dup(fd))
"""

_RESULT_PREFIX = struct.Struct("<4sHHI")
_FRAME_PREFIX = struct.Struct("<4sHHI")


@pytest.fixture(scope="module")
def breaker(unhooked_home: Path) -> Iterator[Enclave]:
    """An enclave of this module only, because several attacks stop its monitor.

    These attacks forge the runner's replies on its socket, which the audit
    hook would stop first; without it they test the monitor's own checks.
    """
    with Enclave(unhooked_home, audit_hook=False) as enclave:
        yield enclave


@pytest.fixture(scope="module")
def private() -> Sealed:
    """A frame whose first row contains SECRET, sealed with a private schema."""
    frame = pd.DataFrame({"name": [SECRET, "bob"], "x": [1.0, 2.0]})
    return confidential_nb.seal(frame, policy={"schema_public": False})


@pytest.fixture(scope="module")
def small_limit() -> Sealed:
    """The same frame, sealed with a result limit of 64 bytes."""
    frame = pd.DataFrame({"name": [SECRET, "bob"], "x": [1.0, 2.0]})
    return confidential_nb.seal(frame, policy={"max_result_bytes": 64, "schema_public": False})


def _peak_memory_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"/proc/{pid}/status has no VmHWM line")


def _result_blob(document_text: bytes, body: bytes = b"") -> bytes:
    return _RESULT_PREFIX.pack(b"CNBR", 1, 0, len(document_text)) + document_text + body


def _assert_usable(enclave: Enclave) -> None:
    assert enclave.run("6 * 7").value == 42


# Outside debug mode only the guarded result, exception type names, cell lines and counts leave a runner.


def test_reply_forged_exception_withheld(breaker, private):
    source = RUNNER_SOCKET + (
        "send_message(channel, {'ok': False, 'kind': 'exception', "
        "'exception_type': data['name'][0], 'message': data.to_csv()})\n"
        "os._exit(0)\n"
    )
    with pytest.raises(EnclaveError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert SECRET not in str(caught.value)
    assert SECRET not in str(caught.value.exception_type)
    _assert_usable(breaker)


@pytest.mark.filterwarnings("ignore::confidential_nb.errors.EnclaveWarning")
def test_reply_forged_warnings_withheld(breaker, small_limit):
    source = RUNNER_SOCKET + (
        "send_message(channel, {'ok': True, 'warnings': [data.to_csv()]}, [encode_result(1)])\n"
        "os._exit(0)\n"
    )
    try:
        run = breaker.run(source, inputs={"data": small_limit}, timeout=10)
    except ConfidentialNBError as error:
        assert SECRET not in str(error)
    else:
        assert not any(SECRET in text for text in run.warnings)


def test_withheld_count_forged(breaker, private):
    source = "import sys\nsys.stdout.lines = int.from_bytes(data['name'][0].encode() * 2, 'big')\n1"
    run = breaker.run(source, inputs={"data": private}, timeout=10)
    assert run.withheld_lines != int.from_bytes(SECRET.encode() * 2, "big")


def test_exception_type_module_forged(breaker, private):
    source = "Leak = type(data['name'][0], (Exception,), {'__module__': 'builtins'})\nraise Leak()"
    with pytest.raises(EnclaveError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert SECRET not in str(caught.value)


def test_exception_cell_class_named_builtin(breaker, private):
    source = "class ValueError(Exception):\n    pass\nraise ValueError(data['name'][0])"
    with pytest.raises(EnclaveError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert caught.value.exception_type != "ValueError"
    assert SECRET not in str(caught.value)


def test_exception_message_library_filename(breaker, private):
    source = (
        "import confidential_nb\n"
        "exec(compile('raise ValueError(s)', confidential_nb.__file__, 'exec'), {'s': data['name'][0]})"
    )
    with pytest.raises(EnclaveError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert SECRET not in str(caught.value)


def test_exception_message_grafted_traceback(breaker, private):
    source = (
        "from confidential_nb.training import train_test_split\n"
        "try:\n"
        "    train_test_split(None, target='x')\n"
        "except Exception as error:\n"
        "    library_traceback = error.__traceback__\n"
        "raise ValueError(data['name'][0]).with_traceback(library_traceback)\n"
    )
    with pytest.raises(EnclaveError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert SECRET not in str(caught.value)


def test_exception_syntax_error_forged(breaker, private):
    source = "error = SyntaxError(data['name'][0])\nerror.filename = '<cell>'\nraise error"
    with pytest.raises(EnclaveError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert SECRET not in str(caught.value)


def test_exception_from_cell_callback_withheld(breaker, private):
    # A cell method raises inside a library call: the innermost frame is the cell's.
    source = (
        "from confidential_nb.training import train_test_split\n"
        "class Rows:\n"
        "    def __len__(self):\n"
        "        raise ValueError(data['name'][0])\n"
        "    def __getattr__(self, name):\n"
        "        raise ValueError(data['name'][0])\n"
        "train_test_split(Rows(), target='x')\n"
    )
    with pytest.raises(EnclaveError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert SECRET not in str(caught.value)


def test_library_message_private_schema(breaker, private):
    source = "from confidential_nb.training import train_test_split\ntrain_test_split(data, target='nope')"
    with pytest.raises(EnclaveError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert "'name'" not in str(caught.value)


def test_warning_library_category_message(breaker, private):
    source = (
        "import warnings\n"
        "from confidential_nb.training.exceptions import ConvergenceWarning\n"
        "warnings.warn(data['name'][0], ConvergenceWarning)\n"
        "1\n"
    )
    with pytest.warns(confidential_nb.errors.EnclaveWarning) as caught:
        run = breaker.run(source, inputs={"data": private}, timeout=10)
    assert not any(SECRET in text for text in run.warnings)
    assert not any(SECRET in str(warning.message) for warning in caught)


def test_warning_cell_category_forged(breaker, private):
    source = (
        "import warnings\n"
        "Leak = type('Leak', (UserWarning,), {'__module__': 'confidential_nb.cell'})\n"
        "warnings.warn(data['name'][0], Leak)\n"
        "1\n"
    )
    # The cell's own category is not a library warning, so nothing about it leaves.
    run = breaker.run(source, inputs={"data": private}, timeout=10)
    assert run.warnings == []


@pytest.mark.parametrize(
    "source",
    [
        "result = {data['name'][0]: object()}",
        "import pandas as pd\nresult = pd.DataFrame({data['name'][0]: [object()]})",
        "import numpy as np\nresult = np.zeros(2).view(type(data['name'][0], (np.ndarray,), {}))",
        "result = type(data['name'][0], (), {'__module__': 'builtins'})()",
    ],
    ids=["dict_key", "column_name", "ndarray_subclass", "builtins_class"],
)
def test_encoding_error_names_withheld(breaker, private, source):
    with pytest.raises(ConfidentialNBError) as caught:
        breaker.run(source, inputs={"data": private}, timeout=10)
    assert SECRET not in str(caught.value)


def test_printed_output_only_counted(breaker, private, capfd):
    source = "import sys\nprint(data['name'][0])\nsys.stderr.write(data.to_csv())\nsys.stdout.write('x\\n' * 100000)\n7"
    run = breaker.run(source, inputs={"data": private}, timeout=10)
    captured = capfd.readouterr()
    assert run.value == 7
    assert run.withheld_lines == 1 + 3 + 100000
    assert SECRET not in captured.out + captured.err


# The monitor enforces the data owner's policy and rejects any changed sealed input.


def test_result_limit_enforced(breaker, small_limit):
    with pytest.raises(EgressError):
        breaker.run("data.to_csv()", inputs={"data": small_limit}, timeout=10)
    _assert_usable(breaker)


def test_reply_oversized_bounded_in_monitor(breaker, small_limit):
    monitor = breaker.status()["monitor_pid"]
    before = _peak_memory_mib(monitor)
    source = RUNNER_SOCKET + (
        "import json\n"
        "from confidential_nb.protocol import _PREFIX, _LENGTH\n"
        "header = json.dumps({'ok': True}).encode()\n"
        "channel.sendall(_PREFIX.pack(b'CNBM', len(header), 1) + header + _LENGTH.pack(128 * 1024**2))\n"
        "chunk = bytes(1024**2)\n"
        "for _ in range(128):\n"
        "    channel.sendall(chunk)\n"
        "os._exit(0)\n"
    )
    with pytest.raises(EgressError):
        breaker.run(source, inputs={"data": small_limit}, timeout=20)
    assert _peak_memory_mib(monitor) - before < 64


def _mutations(raw: bytes) -> dict[str, bytes]:
    prefix_size = struct.calcsize("!8sHHHH32sII")
    middle = len(raw) // 2
    return {
        "kem_id": raw[:11] + bytes([raw[11] ^ 1]) + raw[12:],
        "fingerprint": raw[:20] + bytes([raw[20] ^ 1]) + raw[21:],
        "wrapped_key": raw[: prefix_size + 5] + bytes([raw[prefix_size + 5] ^ 1]) + raw[prefix_size + 6 :],
        "payload": raw[:middle] + bytes([raw[middle] ^ 1]) + raw[middle + 1 :],
        "last_byte": raw[:-1] + bytes([raw[-1] ^ 1]),
        "appended": raw + bytes(16),
        "truncated": raw[:-1],
    }


@pytest.mark.parametrize("mutation", ["kem_id", "fingerprint", "wrapped_key", "payload", "last_byte", "appended", "truncated"])
def test_sealed_file_swap_runs_nothing(breaker, tmp_path, mutation):
    # The file is loaded intact, then replaced, so the monitor and not the host meets the change.
    original = bytes(confidential_nb.seal(pd.DataFrame({"x": [1.0, 2.0]}), policy={"schema_public": False}))
    path = tmp_path / "input.sealed"
    path.write_bytes(original)
    sealed = Sealed.load(path)
    path.write_bytes(_mutations(original)[mutation])
    marker = tmp_path / "ran"

    with pytest.raises(SealError):
        breaker.run(f"open({str(marker)!r}, 'w').write('ran')", inputs={"data": sealed}, timeout=10)
    assert not marker.exists()
    _assert_usable(breaker)


def _deep_metadata_blob() -> bytes:
    from confidential_nb.sealing import _PREFIX as SEAL_PREFIX

    raw = bytes(confidential_nb.seal(pd.DataFrame({"x": [1.0]})))
    fields = list(SEAL_PREFIX.unpack(raw[: SEAL_PREFIX.size]))
    wrapped_length, metadata_length = fields[6], fields[7]
    metadata = b"[" * 100_000 + b"]" * 100_000
    fields[7] = len(metadata)
    start = SEAL_PREFIX.size + wrapped_length
    return SEAL_PREFIX.pack(*fields) + raw[SEAL_PREFIX.size : start] + metadata + raw[start + metadata_length :]


def test_sealed_deep_metadata_seal_error():
    with pytest.raises(SealError):
        Sealed(_deep_metadata_blob())


def test_sealed_deep_metadata_keeps_monitor(breaker, tmp_path):
    path = tmp_path / "input.sealed"
    path.write_bytes(bytes(confidential_nb.seal(pd.DataFrame({"x": [1.0]}))))
    sealed = Sealed.load(path)
    path.write_bytes(_deep_metadata_blob())
    monitor = breaker.status()["monitor_pid"]

    with pytest.raises(SealError):
        breaker.run("1", inputs={"data": sealed}, timeout=10)
    assert breaker.status()["monitor_pid"] == monitor


# Every failure reaches the host as one error, and the next run works.


@pytest.mark.parametrize(
    "source",
    [
        "import os, signal\nos.killpg(0, signal.SIGKILL)",
        "import os\nos._exit(3)",
        RUNNER_SOCKET + "os.close(fd)\n1",
        RUNNER_SOCKET + "os.write(fd, b'garbage' * 10)\nimport time\ntime.sleep(5)",
        RUNNER_SOCKET + "channel.sendall(b'CNBM')\nos._exit(0)",
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
        "raise KeyboardInterrupt",
        "import sys\nsys.exit(0)",
        "def f():\n    return f()\nf()",
    ],
    ids=["killpg", "os_exit", "close_socket", "garbage", "partial_prefix", "segfault", "interrupt", "sys_exit", "recursion"],
)
def test_runner_failure_one_error(breaker, source):
    monitor = breaker.status()["monitor_pid"]
    started = time.monotonic()
    with pytest.raises(ConfidentialNBError):
        breaker.run(source, timeout=3)
    assert time.monotonic() - started < 3
    assert breaker.status()["monitor_pid"] == monitor
    _assert_usable(breaker)


def test_reply_without_result_keeps_monitor(breaker):
    monitor = breaker.status()["monitor_pid"]
    with pytest.raises(ConfidentialNBError):
        breaker.run(RUNNER_SOCKET + "send_message(channel, {'ok': True})\nos._exit(0)", timeout=10)
    assert breaker.status()["monitor_pid"] == monitor


@pytest.mark.parametrize(
    "header",
    ["{'ok': True, 'withheld_lines': 'many'}", "{'ok': False, 'kind': 'exception', 'line': 'first'}"],
    ids=["withheld_lines", "line"],
)
def test_reply_malformed_fields_enclave_error(breaker, header):
    # The monitor rebuilds the reply: a malformed count becomes 0, a malformed failure an EnclaveError.
    source = RUNNER_SOCKET + f"send_message(channel, {header}, [encode_result(1)])\nos._exit(0)"
    try:
        run = breaker.run(source, timeout=10)
    except ConfidentialNBError:
        pass
    else:
        assert run.withheld_lines == 0
    _assert_usable(breaker)


def test_reply_garbage_result_protocol_error(breaker):
    source = RUNNER_SOCKET + "send_message(channel, {'ok': True}, [b'CNBR' + bytes(100)])\nos._exit(0)"
    with pytest.raises(ProtocolError):
        breaker.run(source, timeout=10)
    _assert_usable(breaker)


def test_run_stopped_runner_times_out(breaker):
    started = time.monotonic()
    with pytest.raises(EnclaveTimeoutError):
        breaker.run("import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)", timeout=1)
    assert time.monotonic() - started < 3
    _assert_usable(breaker)


def test_run_thread_left_running(breaker):
    source = "import threading, time\nthreading.Thread(target=lambda: time.sleep(600)).start()\n5"
    started = time.monotonic()
    assert breaker.run(source, timeout=10).value == 5
    assert time.monotonic() - started < 3


def test_reply_trickle_times_out(breaker):
    source = RUNNER_SOCKET + (
        "import json, time\n"
        "from confidential_nb.protocol import _PREFIX, _LENGTH\n"
        "header = json.dumps({'ok': True}).encode()\n"
        "blob = encode_result('late')\n"
        "message = _PREFIX.pack(b'CNBM', len(header), 1) + header + _LENGTH.pack(len(blob)) + blob\n"
        "step = len(message) // 4 + 1\n"
        "for start in range(0, len(message), step):\n"
        "    channel.sendall(message[start:start + step])\n"
        "    time.sleep(0.7)\n"
        "os._exit(0)\n"
    )
    with pytest.raises(EnclaveTimeoutError):
        breaker.run(source, timeout=1)


def test_run_infinite_timeout_rejected(breaker):
    monitor = breaker.status()["monitor_pid"]
    with pytest.raises(ValueError, match="timeout"):
        breaker.run("1", timeout=float("inf"))
    assert breaker.status()["monitor_pid"] == monitor


def test_run_forked_child_killed(breaker):
    zygote = breaker.status()["zygote_pid"]
    source = (
        "import os, time\n"
        "try:\n"
        "    pid = os.fork()\n"
        "except PermissionError:\n"
        "    pid = -1\n"
        "if pid == 0:\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "result = pid\n"
    )
    breaker.run(source, timeout=10)
    assert wait_until_no_runners(zygote)


def test_run_setsid_child_killed(breaker):
    zygote = breaker.status()["zygote_pid"]
    source = (
        "import os, time\n"
        "ready, signal_ready = os.pipe()\n"
        "try:\n"
        "    pid = os.fork()\n"
        "except PermissionError:\n"
        "    pid = -1\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        "    os.write(signal_ready, b'1')\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "if pid > 0:\n"
        "    os.read(ready, 1)\n"
        "result = pid\n"
    )
    breaker.run(source, timeout=10)
    assert wait_until_no_runners(zygote)


# Resource limits: open files, memory.


def test_run_open_files_limit(breaker):
    with pytest.raises(EnclaveError) as caught:
        breaker.run("handles = [open('/dev/null') for _ in range(300)]", timeout=10)
    assert caught.value.exception_type == "OSError"


def test_run_memory_limit_covers_children(breaker):
    # RLIMIT_AS bounds each process, so the run's memory limit covers the run only because it cannot fork.
    seccomp = breaker.status()["layers"]["seccomp"]
    if not seccomp["active"]:
        pytest.skip(f"runners can fork without the seccomp filter ({seccomp['detail']}), so children escape the limit")
    source = (
        "import os\n"
        "try:\n"
        "    pid = os.fork()\n"
        "except PermissionError:\n"
        "    pid = None\n"
        "if pid == 0:\n"
        "    block = bytearray(250 * 1024**2)\n"
        "    os._exit(0)\n"
        "result = 'refused' if pid is None else 'forked'\n"
    )
    assert breaker.run(source, timeout=20, memory="600M").value == "refused"


def test_runner_no_key_modules(breaker):
    source = "import sys\nsorted(name for name in sys.modules if 'cryptography' in name or name.endswith(('.keys', '.monitor', '.attestation')))"
    assert breaker.run(source, timeout=10).value == []


# Hostile result bytes decode to plain values or raise ProtocolError in the host.


def test_result_html_escaped(breaker):
    source = (
        "import pandas as pd\n"
        "result = {'<script>alert(1)</script>': pd.DataFrame({'<img src=x onerror=alert(2)>': [1]}),\n"
        "          'text': '</td><script>alert(3)</script>'}\n"
    )
    html = breaker.run(source, timeout=10)._repr_html_()
    assert "<script" not in html
    assert "<img" not in html


def test_result_display_huge_int(breaker):
    run = breaker.run("10**5000", timeout=10)
    assert "RunResult" in repr(run)
    assert "RunResult" in run._repr_html_()


def _frame_parts(frame: pd.DataFrame) -> tuple[dict, bytes]:
    from confidential_nb.frame_codec import encode_frame

    blob = encode_frame(frame)
    _, _, _, length = _FRAME_PREFIX.unpack_from(blob)
    return json.loads(blob[12 : 12 + length]), blob[12 + length :]


def _frame_blob(schema: dict, body: bytes) -> bytes:
    text = json.dumps(schema).encode()
    return _FRAME_PREFIX.pack(b"CNBF", 1, 0, len(text)) + text + body


def _lying_frames() -> dict[str, bytes]:
    frame = pd.DataFrame({"s": ["ab", "cde", None], "c": pd.Categorical(["x", "y", "x"])})
    schema, body = _frame_parts(frame)
    offsets = schema["columns"][0]["buffers"]["offsets"][0]
    codes = schema["columns"][1]["buffers"]["codes"][0]

    decreasing = bytearray(body)
    struct.pack_into("<q", decreasing, offsets + 8, 6)
    past_end = bytearray(body)
    struct.pack_into("<q", past_end, offsets + 24, 999)
    bad_code = bytearray(body)
    bad_code[codes] = 77
    more_rows = json.loads(json.dumps(schema))
    more_rows["rows"] = 2**40
    overlap = json.loads(json.dumps(schema))
    overlap["columns"][0]["buffers"]["data"] = [0, len(body) + 8]
    return {
        "decreasing_offsets": _frame_blob(schema, bytes(decreasing)),
        "offset_past_data": _frame_blob(schema, bytes(past_end)),
        "category_code": _frame_blob(schema, bytes(bad_code)),
        "more_rows": _frame_blob(more_rows, body),
        "buffer_past_body": _frame_blob(overlap, body),
    }


def _hostile_results() -> dict[str, bytes]:
    deep = b'{"value":' + b"[" * 100_000 + b"]" * 100_000 + b',"buffers":[],"body_length":0}'
    cases = {
        "deep_json": _result_blob(deep),
        "huge_shape": _result_blob(json.dumps({
            "value": {"t": "ndarray", "dtype": "float64", "shape": [2**32, 2**32], "buffer": 0},
            "buffers": [[0, 0]], "body_length": 0}).encode()),
        "zero_by_huge_shape": _result_blob(json.dumps({
            "value": {"t": "ndarray", "dtype": "float64", "shape": [0, 2**62, 2**62], "buffer": 0},
            "buffers": [[0, 0]], "body_length": 0}).encode()),
        "unknown_object": _result_blob(json.dumps({
            "value": {"t": "object", "type": "os.system", "state": {"t": "dict", "items": []}},
            "buffers": [], "body_length": 0}).encode()),
        "object_dtype": _result_blob(json.dumps({
            "value": {"t": "ndarray", "dtype": "object", "shape": [1], "buffer": 0},
            "buffers": [[0, 8]], "body_length": 8}).encode(), bytes(8)),
        "huge_declared_json": _RESULT_PREFIX.pack(b"CNBR", 1, 0, 2**32 - 1) + b"{}",
        "nan_constant": _result_blob(b'{"value":NaN,"buffers":[],"body_length":0}'),
    }
    for name, frame_blob in _lying_frames().items():
        document = {"value": {"t": "frame", "buffer": 0}, "buffers": [[0, len(frame_blob)]], "body_length": len(frame_blob)}
        cases[f"frame_{name}"] = _result_blob(json.dumps(document).encode(), frame_blob)
    return cases


@pytest.mark.parametrize("name", sorted(_hostile_results()))
def test_decode_hostile_result_protocol_error(name):
    with pytest.raises(ProtocolError):
        decode_result(_hostile_results()[name])


def test_decode_result_bounds_nodes():
    document = b'{"value":[' + b",".join([b"0"] * (MAX_NODES + 1)) + b'],"buffers":[],"body_length":0}'
    with pytest.raises(ProtocolError):
        decode_result(_result_blob(document))


def test_decode_result_plain_types_only():
    # No tag makes the decoder build a class outside its table.
    blob = _result_blob(b'{"value":{"t":"object","type":"History","state":{"t":"dict","items":[]}},"buffers":[],"body_length":0}')
    with pytest.raises(ProtocolError):
        decode_result(blob)
    array = decode_result(_result_blob(json.dumps({
        "value": {"t": "ndarray", "dtype": "int8", "shape": [2], "buffer": 0},
        "buffers": [[0, 2]], "body_length": 2}).encode(), b"\x01\x02"))
    assert type(array) is np.ndarray
