"""How the zygote stops a runner: escalation from SIGINT to SIGTERM to SIGKILL, and signal relaying.

Each test forks a helper process that plays the zygote, because ending a
runner also reaps every other child of the calling process, which in the
test process would include the enclaves of other tests.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

IGNORE_BOTH = (signal.SIGINT, signal.SIGTERM)


def _in_helper(body: Callable[[], int]) -> int:
    """Run `body` in a forked helper process and return the number it computed."""
    reader, writer = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(reader)
        value = 255
        try:
            value = body()
        finally:
            os.write(writer, str(value).encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    os.waitpid(helper, 0)
    return int(text)


def _runner(on_interrupt: int | None, ignored: tuple[signal.Signals, ...] = ()) -> int:
    """Fork a stand-in runner that exits with `on_interrupt` on SIGINT, ignores `ignored`, and otherwise sleeps."""
    ready_reader, ready_writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        for number in ignored:
            signal.signal(number, signal.SIG_IGN)
        if on_interrupt is not None:
            code = on_interrupt
            signal.signal(signal.SIGINT, lambda *_: os._exit(code))
        os.write(ready_writer, b"1")
        while True:
            time.sleep(1)
    os.read(ready_reader, 1)
    return pid


def _catches(pid: int, number: signal.Signals) -> bool:
    """Return whether process `pid` has a handler for signal `number`, from SigCgt in /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (number - 1)))
    return False


def _end_with_escalation(on_interrupt: int | None, ignored: tuple[signal.Signals, ...] = ()) -> int:
    from confidential_nb.enclave.zygote import _end

    return _end(_runner(on_interrupt, ignored), grace=False, escalate=True)


def test_end_interrupts_first() -> None:
    assert _in_helper(lambda: _end_with_escalation(on_interrupt=7)) == 7


def test_end_terminates_second() -> None:
    status = _in_helper(lambda: _end_with_escalation(on_interrupt=None, ignored=(signal.SIGINT,)))
    assert status == -signal.SIGTERM


def test_end_kills_last() -> None:
    assert _in_helper(lambda: _end_with_escalation(on_interrupt=None, ignored=IGNORE_BOTH)) == -signal.SIGKILL


def test_end_without_escalation_kills() -> None:
    def body() -> int:
        from confidential_nb.enclave.zygote import _end

        return _end(_runner(on_interrupt=7), grace=False)

    assert _in_helper(body) == -signal.SIGKILL


def test_relay_exit_forwards_interrupt() -> None:
    def body() -> int:
        from confidential_nb.sandbox import relay_exit

        # Ignored in the relay until relay_exit installs its handlers; it installs SIGTERM's last, so the wait is for that.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        relay = os.fork()
        if relay == 0:
            relay_exit(_runner(on_interrupt=5), init=False)
        while not _catches(relay, signal.SIGTERM):
            time.sleep(0.01)
        os.kill(relay, signal.SIGINT)
        _, status = os.waitpid(relay, 0)
        return os.WEXITSTATUS(status)

    assert _in_helper(body) == 5
