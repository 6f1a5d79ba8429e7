"""Measure how fast an interrupted or cancelled run stops, and what the next run costs after it.

Usage: python benchmarks/bench_interrupt.py [--repeats N]

For each repeat a busy cell (a pure-Python loop that never ends) runs in a
warm enclave. SIGINT then reaches this process, as the notebook's stop
button reaches the kernel. The script records when `Enclave.run` raises
KeyboardInterrupt and when the monitor reports no active run. The monitor
counts a run as active until the zygote has killed the runner's processes. The same is measured for `BackgroundRun.cancel`. The next run's time
is printed beside an ordinary warm run, measured in the same loop.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time

BUSY = "while True:\n    pass\n"
TRIVIAL = "1 + 1"


def wait_until_idle(enclave: object) -> float:
    """Poll the monitor until no run is active; return the moment that was first seen."""
    while enclave.status()["active_runs"]:  # type: ignore[attr-defined]
        time.sleep(0.002)
    return time.perf_counter()


def interrupted_run(enclave: object) -> tuple[float, float]:
    """Interrupt a busy run with SIGINT; return the seconds until KeyboardInterrupt and until the runner is gone."""
    sent = 0.0

    def interrupt() -> None:
        nonlocal sent
        sent = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.5, interrupt)
    timer.start()
    try:
        enclave.run(BUSY)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        raised = time.perf_counter()
    else:
        raise RuntimeError("the busy run ended without the interrupt")
    timer.join()
    return raised - sent, wait_until_idle(enclave) - sent


def cancelled_run(enclave: object) -> tuple[float, float]:
    """Cancel a busy background run; return the seconds until result() raises and until the runner is gone."""
    from confidential_nb.errors import RunCancelledError

    run = enclave.submit(BUSY)  # type: ignore[attr-defined]
    while not enclave.status()["active_runs"]:  # type: ignore[attr-defined]
        time.sleep(0.01)
    time.sleep(0.2)
    sent = time.perf_counter()
    run.cancel()
    try:
        run.result(timeout=30)
    except RunCancelledError:
        raised = time.perf_counter()
    return raised - sent, wait_until_idle(enclave) - sent


def timed_run(enclave: object) -> float:
    started = time.perf_counter()
    enclave.run(TRIVIAL)  # type: ignore[attr-defined]
    return time.perf_counter() - started


def main() -> None:
    import confidential_nb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats

    rows: dict[str, list[float]] = {name: [] for name in (
        "interrupt: KeyboardInterrupt raised", "interrupt: runner gone", "cancel: RunCancelledError raised",
        "cancel: runner gone", "next run after a stop", "ordinary warm run")}
    with tempfile.TemporaryDirectory() as home, confidential_nb.Enclave(home) as enclave:
        enclave.run(TRIVIAL)
        for _ in range(repeats):
            raised, stopped = interrupted_run(enclave)
            rows["interrupt: KeyboardInterrupt raised"].append(raised)
            rows["interrupt: runner gone"].append(stopped)
            rows["next run after a stop"].append(timed_run(enclave))
            rows["ordinary warm run"].append(timed_run(enclave))
            raised, stopped = cancelled_run(enclave)
            rows["cancel: RunCancelledError raised"].append(raised)
            rows["cancel: runner gone"].append(stopped)

    print(f"{repeats} repeats on {os.cpu_count()} cores; times in ms after the interrupt or cancel")
    print(f"{'measure':<38} {'median':>9} {'max':>9}")
    for name, values in rows.items():
        print(f"{name:<38} {statistics.median(values) * 1e3:9.1f} {max(values) * 1e3:9.1f}")
    ratio = statistics.median(rows["next run after a stop"]) / statistics.median(rows["ordinary warm run"])
    print(f"next run after a stop / ordinary warm run: ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
