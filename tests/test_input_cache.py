"""The monitor's input cache, through real enclaves: reruns by handle, eviction, resends, policy and release."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Enclave, Sealed, client
from confidential_nb.errors import EnclaveError, InputHandleError, PolicyError, RunCancelledError, SealError
from confidential_nb.functions import cell_checksum
from confidential_nb.protocol import DescriptorAttachment
from confidential_nb.enclave.input_cache import MAX_ENTRIES, CachedInput, InputCache
from confidential_nb.policy import Policy
from confidential_nb.shared_buffers import BufferPool, capacity_for

SUM_CELL = "float(data['a'].sum())"
SLEEP_CELL = "import time\ntime.sleep(30)\nlen(data)"


class Wire:
    """Records the input specs and input bytes of every run request the host sends."""

    def __init__(self) -> None:
        self.requests: list[tuple[list[dict[str, Any]], int]] = []

    def record(self, header: dict[str, Any], attachments: list[Any]) -> None:
        if header.get("op") not in ("run", "invoke"):
            return
        specs = list(header["inputs"])
        sent = sum(item.length if isinstance(item, DescriptorAttachment) else len(item)
                   for item in attachments[: sum(1 for spec in specs if "path" not in spec and "handle" not in spec)])
        self.requests.append((specs, sent))

    def specs(self, index: int) -> list[dict[str, Any]]:
        return self.requests[index][0]

    def input_bytes(self, index: int) -> int:
        return self.requests[index][1]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    recorder = Wire()
    original = client.send_message

    def recording_send(sock: Any, header: dict[str, Any], attachments: Any = ()) -> None:
        recorder.record(header, list(attachments))
        original(sock, header, attachments)

    monkeypatch.setattr(client, "send_message", recording_send)
    return recorder


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})


@pytest.fixture
def fresh_enclave(key_home: Path) -> Iterator[Enclave]:
    with Enclave(key_home) as started:
        yield started


def _small_frames(count: int) -> list[pd.DataFrame]:
    return [pd.DataFrame({"a": np.arange(10, dtype=float) + 100 * index}) for index in range(count)]


def test_rerun_sends_no_ciphertext(fresh_enclave, frame, wire):
    sealed = confidential_nb.seal(frame)
    first = fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    second = fresh_enclave.run(SUM_CELL, inputs={"data": sealed})

    assert wire.input_bytes(0) == sealed.nbytes
    assert wire.input_bytes(1) == 0
    assert set(wire.specs(1)[0]) == {"name", "handle"}
    assert second.value == pytest.approx(frame["a"].sum())
    assert first.value == second.value


def test_cached_run_receipt_names_input_digest(fresh_enclave, frame):
    sealed = confidential_nb.seal(frame)
    first = fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    second = fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    assert first.receipt.body["inputs"] == {"data": sealed.digest}
    assert second.receipt.body["inputs"] == {"data": sealed.digest}


def test_cached_input_under_another_name(fresh_enclave, frame, wire):
    sealed = confidential_nb.seal(frame)
    fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    run = fresh_enclave.run("float(other['a'].sum())", inputs={"other": sealed})
    assert run.value == pytest.approx(frame["a"].sum())
    # The handle belongs to the Sealed object, not to the name it was bound to.
    assert wire.input_bytes(1) == 0


def test_cache_evicts_least_recently_used(key_home, wire):
    first, second, third = [confidential_nb.seal(item) for item in _small_frames(3)]
    size = capacity_for(first.plaintext_nbytes)
    with Enclave(key_home, input_cache_bytes=2 * size) as enclave:
        enclave.run(SUM_CELL, inputs={"data": first})
        enclave.run(SUM_CELL, inputs={"data": second})
        enclave.run(SUM_CELL, inputs={"data": first})
        enclave.run(SUM_CELL, inputs={"data": third})
        assert enclave.status()["input_cache"]["entries"] == 2
        marker = len(wire.requests)
        enclave.run(SUM_CELL, inputs={"data": first})
        enclave.run(SUM_CELL, inputs={"data": second})

    # `first` was used more recently than `second`, so the third input evicted `second`.
    assert wire.input_bytes(2) == 0
    assert wire.input_bytes(marker) == 0
    assert "handle" in wire.specs(marker + 1)[0]
    assert wire.input_bytes(marker + 2) == second.nbytes


def test_cache_entry_count_bounded():
    # Each entry keeps descriptors open in the monitor, so small inputs are bounded by count as well as by bytes.
    header = confidential_nb.seal(_small_frames(1)[0]).header
    pool = BufferPool(1024**3, sealed=False)
    cache = InputCache(1024**3, pool)
    handles = []
    for index in range(MAX_ENTRIES + 3):
        entry = CachedInput(header=header, kind="dataframe", policy=Policy(), digest=f"{index:064x}",
                            plaintext_length=10, buffer=pool.acquire(10))
        handles.append(cache.add(entry))
        pool.release(entry.buffer)
    assert len(cache) == MAX_ENTRIES
    assert handles[0] not in cache
    assert handles[2] not in cache
    assert handles[3] in cache
    assert handles[-1] in cache
    cache.release(list(handles))
    pool.clear()


def test_input_larger_than_cache_not_cached(key_home, frame, wire):
    sealed = confidential_nb.seal(pd.DataFrame({"a": np.arange(5000, dtype=float)}))
    with Enclave(key_home, input_cache_bytes=4096) as enclave:
        enclave.run(SUM_CELL, inputs={"data": sealed})
        enclave.run(SUM_CELL, inputs={"data": sealed})
        assert enclave.status()["input_cache"]["entries"] == 0
    assert wire.input_bytes(1) == sealed.nbytes


def test_cache_turned_off_with_zero(key_home, frame, wire):
    sealed = confidential_nb.seal(frame)
    with Enclave(key_home, input_cache_bytes=0) as enclave:
        enclave.run(SUM_CELL, inputs={"data": sealed})
        enclave.run(SUM_CELL, inputs={"data": sealed})
    assert wire.input_bytes(1) == sealed.nbytes


def test_restarted_monitor_gets_input_again(fresh_enclave, frame, wire):
    sealed = confidential_nb.seal(frame)
    fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    fresh_enclave.close()
    run = fresh_enclave.run(SUM_CELL, inputs={"data": sealed})

    assert run.value == pytest.approx(frame["a"].sum())
    assert "handle" in wire.specs(1)[0]
    assert wire.input_bytes(2) == sealed.nbytes
    # The resend was cached again, so the next run goes by handle.
    fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    assert wire.input_bytes(3) == 0


def test_handle_useless_to_other_enclave(fresh_enclave, key_home, frame):
    sealed = confidential_nb.seal(frame)
    fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    handles = fresh_enclave._input_handles.handles_for({"data": sealed})
    assert set(handles) == {"data"}

    with Enclave(key_home) as other:
        request, attachments = client._build_request(SUM_CELL, {"data": sealed}, {}, False, handles=handles)
        assert attachments == []
        with pytest.raises(InputHandleError, match="cached input handle not found"):
            other._send_run(request, attachments, None, None)


def test_made_up_handle_rejected(fresh_enclave):
    request, attachments = client._build_request(SUM_CELL, {}, {}, False)
    request["inputs"] = [{"name": "data", "handle": "A" * 32}]
    with pytest.raises(InputHandleError):
        fresh_enclave._send_run(request, attachments, None, None)


def test_tampered_input_rejected_and_not_cached(fresh_enclave, frame):
    blob = bytearray(bytes(confidential_nb.seal(frame)))
    blob[-5] ^= 0x01
    tampered = Sealed(bytes(blob))
    with pytest.raises(SealError):
        fresh_enclave.run(SUM_CELL, inputs={"data": tampered})
    assert fresh_enclave._input_handles.handles_for({"data": tampered}) == {}
    assert fresh_enclave.status()["input_cache"]["entries"] == 0


def test_policy_enforced_on_cached_input(fresh_enclave, frame, wire):
    sealed = confidential_nb.seal(frame, policy={"allowed_functions": [cell_checksum(SUM_CELL)]})
    fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    with pytest.raises(PolicyError):
        fresh_enclave.run("float(data['b'].sum())", inputs={"data": sealed})
    assert "handle" in wire.specs(1)[0]
    assert wire.input_bytes(1) == 0


def test_failed_run_leaves_cache_usable(fresh_enclave, frame, wire):
    sealed = confidential_nb.seal(frame)
    with pytest.raises(EnclaveError):
        fresh_enclave.run("raise ValueError(len(data))", inputs={"data": sealed})
    run = fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    assert run.value == pytest.approx(frame["a"].sum())
    assert wire.input_bytes(1) == 0


def _poll(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("stop", ["cancel", "interrupt"])
def test_stopped_run_leaves_no_entry(fresh_enclave, frame, stop):
    # The host drops a stopped run's channel without reading the reply, so it never learns the handle to release.
    sealed = confidential_nb.seal(frame)
    fresh_enclave.start()
    if stop == "cancel":
        run = fresh_enclave.submit(SLEEP_CELL, inputs={"data": sealed})
        assert _poll(lambda: fresh_enclave.status()["active_runs"] == 1)
        run.cancel()
        with pytest.raises(RunCancelledError):
            run.result(timeout=30)
    else:
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            fresh_enclave.run(SLEEP_CELL, inputs={"data": sealed})
        timer.join()
    assert _poll(lambda: fresh_enclave.status()["input_cache"]["entries"] == 0)
    assert fresh_enclave.run(SUM_CELL, inputs={"data": sealed}).value == pytest.approx(frame["a"].sum())
    assert fresh_enclave.status()["input_cache"]["entries"] == 1


def test_file_backed_input_not_cached(fresh_enclave, frame, tmp_path, wire):
    path = confidential_nb.seal(frame).save(tmp_path / "frame.sealed")
    sealed = Sealed.load(path)
    fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    assert "path" in wire.specs(1)[0]
    assert fresh_enclave.status()["input_cache"]["entries"] == 0


def test_collected_input_released(fresh_enclave, wire):
    sealed = confidential_nb.seal(_small_frames(1)[0])
    fresh_enclave.run(SUM_CELL, inputs={"data": sealed})
    assert fresh_enclave.status()["input_cache"]["entries"] == 1
    del sealed
    gc.collect()
    fresh_enclave.run("1")
    assert fresh_enclave.status()["input_cache"]["entries"] == 0
    assert len(wire.requests) == 2


def _monitor_rss(enclave: Enclave) -> int:
    assert enclave._process is not None
    for line in Path(f"/proc/{enclave._process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("VmRSS missing from the monitor's status")


def test_released_memory_reused_not_accumulated(fresh_enclave):
    # 16 MiB of plaintext per cycle: without releases the cache would keep all five.
    rows, columns = 2 * 1024**2 // 8, 8
    frame_bytes = rows * columns * 8
    fresh_enclave.run("1")
    baseline = _monitor_rss(fresh_enclave)
    for cycle in range(5):
        sealed = confidential_nb.seal(pd.DataFrame(np.full((rows, columns), float(cycle))))
        fresh_enclave.run("data.shape[0]", inputs={"data": sealed})
        del sealed
        gc.collect()
    fresh_enclave.run("1")
    status = fresh_enclave.status()["input_cache"]
    assert status["entries"] == 0
    assert status["bytes"] == 0
    # The pool keeps one idle plaintext buffer and the monitor keeps the host's last sealing buffer mapped.
    assert _monitor_rss(fresh_enclave) - baseline < 3 * frame_bytes
