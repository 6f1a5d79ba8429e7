"""The monitor's run slots: first come, first served, notices while waiting, and cancelling."""

from __future__ import annotations

import threading
import time

import pytest

from confidential_nb.enclave import run_slots
from confidential_nb.enclave.run_slots import RunSlots


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_waiting_runs_start_in_arrival_order():
    slots = RunSlots(1)
    assert slots.acquire(threading.Event(), lambda place: None)
    started: list[int] = []
    places: dict[int, list[int]] = {index: [] for index in range(4)}

    def wait_for_slot(index: int) -> None:
        assert slots.acquire(threading.Event(), places[index].append)
        started.append(index)
        slots.release()

    threads = []
    for index in range(4):
        threads.append(threading.Thread(target=wait_for_slot, args=(index,)))
        threads[-1].start()
        # Each thread joins the queue before the next one starts.
        assert _wait_for(lambda: slots.waiting == index + 1)
    slots.release()
    for thread in threads:
        thread.join(timeout=10)
    assert started == [0, 1, 2, 3]
    assert [places[index][0] for index in range(4)] == [1, 2, 3, 4]


def test_cancelled_run_leaves_queue():
    slots = RunSlots(1)
    assert slots.acquire(threading.Event(), lambda place: None)
    cancelled = threading.Event()
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(slots.acquire(cancelled, lambda place: None)))
    thread.start()
    assert _wait_for(lambda: slots.waiting == 1)
    cancelled.set()
    thread.join(timeout=10)
    assert outcome == [False]
    assert slots.waiting == 0
    slots.release()
    assert slots.acquire(threading.Event(), lambda place: None)


def test_notices_repeat_while_waiting(monkeypatch):
    monkeypatch.setattr(run_slots, "NOTICE_INTERVAL_SECONDS", 0.05)
    slots = RunSlots(1)
    assert slots.acquire(threading.Event(), lambda place: None)
    notices: list[int] = []
    thread = threading.Thread(target=lambda: slots.acquire(threading.Event(), notices.append))
    thread.start()
    assert _wait_for(lambda: len(notices) >= 3)
    slots.release()
    thread.join(timeout=10)
    assert set(notices) == {1}


def test_free_slot_taken_without_notice():
    slots = RunSlots(2)
    notices: list[int] = []
    assert slots.acquire(threading.Event(), notices.append)
    assert slots.acquire(threading.Event(), notices.append)
    assert notices == []


def test_slot_count_invalid():
    with pytest.raises(ValueError, match="invalid run slot count 0"):
        RunSlots(0)
