"""The host's progress display: throttling, terminal line, and a real Jupyter kernel under nbval."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from confidential_nb.progress import (
    NotebookProgressBar,
    ProgressDisplay,
    TerminalProgressLine,
    format_progress,
    progress_display,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(epoch: int, epochs: int = 100, model: str = "LogisticRegression", loss: float | None = 0.5, accuracy: float | None = 0.75) -> dict[str, Any]:
    return {"model": model, "epoch": epoch, "epochs": epochs, "loss": loss, "accuracy": accuracy}


class RecordingDisplay(ProgressDisplay):
    """A display that stores what it would show, to test the shared logic."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(min_interval=0.1, clock=clock)
        self.updates: list[dict[str, Any]] = []
        self.erased = 0

    def _show(self, record: dict[str, Any]) -> None:
        self.updates.append(record)

    def _erase(self) -> None:
        self.erased += 1


# --- shared logic -----------------------------------------------------------


def test_format_progress_full() -> None:
    text = format_progress(record(120, 300, loss=0.1234, accuracy=0.951))
    assert text == "LogisticRegression  epoch 120/300  loss 0.1234  accuracy 0.951"


def test_format_progress_without_metrics() -> None:
    assert format_progress(record(3, 9, loss=None, accuracy=None)) == "LogisticRegression  epoch 3/9"


def test_display_throttles_within_interval() -> None:
    clock = FakeClock()
    display = RecordingDisplay(clock)
    for tick, epoch in enumerate(range(1, 11)):
        clock.now = tick * 0.04
        display(record(epoch))
    assert [update["epoch"] for update in display.updates] == [1, 4, 7, 10]


def test_display_shows_last_epoch_at_once() -> None:
    clock = FakeClock()
    display = RecordingDisplay(clock)
    display(record(1, 5))
    display(record(5, 5))
    assert [update["epoch"] for update in display.updates] == [1, 5]


@pytest.mark.parametrize(
    "next_record",
    [record(2, model="MLPClassifier"), record(2, epochs=50), record(1)],
    ids=["other_model", "other_epochs", "epoch_back"],
)
def test_display_restarts_bar_at_once(next_record: dict[str, Any]) -> None:
    clock = FakeClock()
    display = RecordingDisplay(clock)
    display(record(1))
    clock.now = 0.2
    display(record(3))
    display(next_record)
    assert display.updates[-1] == next_record
    assert display.current_record == next_record


def test_display_drops_malformed_records(caplog: pytest.LogCaptureFixture) -> None:
    display = RecordingDisplay(FakeClock())
    display(record(1, loss=float("nan")))
    display({**record(1), "secret": "x"})
    display(record(2, epochs=1))
    assert display.updates == []
    assert display.rejected == 3
    with caplog.at_level(logging.WARNING, logger="confidential_nb.progress"):
        display.close()
    assert "dropped 3 malformed progress record(s)" in caplog.text
    assert display.erased == 0


def test_display_close_once_and_ignores_later_records() -> None:
    display = RecordingDisplay(FakeClock())
    display(record(1))
    display.close()
    display.close()
    display(record(100))
    assert display.erased == 1
    assert len(display.updates) == 1


def test_display_context_manager_closes_on_error() -> None:
    display = RecordingDisplay(FakeClock())
    with pytest.raises(KeyboardInterrupt), display:
        display(record(1))
        raise KeyboardInterrupt
    assert display.erased == 1


# --- terminal ---------------------------------------------------------------


def test_terminal_line_rewrites_and_erases() -> None:
    stream = io.StringIO()
    clock = FakeClock()
    with TerminalProgressLine(stream, clock=clock) as line:
        line(record(1, 4))
        clock.now = 1.0
        line(record(2, 4, loss=0.25))
    written = stream.getvalue()
    frames = written.split("\r")[1:]
    assert len(frames) == 3
    assert frames[0] == "[#####...............] LogisticRegression  epoch 1/4  loss 0.5  accuracy 0.750\x1b[K"
    assert frames[1].startswith("[##########..........] LogisticRegression  epoch 2/4  loss 0.25")
    assert frames[2] == "\x1b[K"
    assert "\n" not in written


def test_terminal_line_fits_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    stream = io.StringIO()
    line = TerminalProgressLine(stream)
    line(record(1))
    shown = stream.getvalue().removeprefix("\r").removesuffix("\x1b[K")
    assert len(shown) == 29


def test_terminal_line_nothing_when_no_records() -> None:
    stream = io.StringIO()
    with TerminalProgressLine(stream):
        pass
    assert stream.getvalue() == ""


def test_progress_display_none_without_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_display() is None


def test_progress_display_none_for_closed_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    stream.close()
    monkeypatch.setattr(sys, "stderr", stream)
    assert progress_display() is None


def read_available(descriptor: int) -> str:
    chunks = []
    while select.select([descriptor], [], [], 1.0)[0]:
        chunks.append(os.read(descriptor, 4096))
        if chunks[-1].endswith(b"\r\x1b[K"):
            break
    return b"".join(chunks).decode()


def test_progress_display_terminal_on_pty(monkeypatch: pytest.MonkeyPatch) -> None:
    controller, terminal = os.openpty()
    stream = open(terminal, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    try:
        monkeypatch.setattr(sys, "stderr", stream)
        display = progress_display()
        assert isinstance(display, TerminalProgressLine)
        with display:
            display(record(1, 2))
            display(record(2, 2))
        output = read_available(controller)
    finally:
        stream.close()
        os.close(controller)
    assert "epoch 1/2" in output
    assert "epoch 2/2" in output
    assert output.endswith("\r\x1b[K")


# --- a real Jupyter kernel --------------------------------------------------

# Feeds records with delays, so that several update_display_data messages go out.
FEED_CELL = textwrap.dedent(
    """
    import time
    from confidential_nb.progress import NotebookProgressBar, progress_display
    display = progress_display(clear_cell_output={clear})
    assert isinstance(display, NotebookProgressBar), type(display)
    with display:
        for epoch in range(1, {epochs} + 1):
            display({{"model": "MLPClassifier", "epoch": epoch, "epochs": {epochs}, "loss": 1.0 / epoch, "accuracy": 0.5}})
            time.sleep({delay})
    """
)


def feed_cell(clear: bool = True, epochs: int = 6, delay: float = 0.12) -> str:
    return FEED_CELL.format(clear=clear, epochs=epochs, delay=delay)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlockingKernelClient]:
    # IPC transport keeps the kernel's sockets in a private directory instead of on TCP ports.
    connection_file = tmp_path_factory.mktemp("kernel") / "connection.json"
    manager = KernelManager(transport="ipc", connection_file=str(connection_file), kernel_name="python3")
    manager.kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]  # type: ignore[attr-defined]
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def execute(client: BlockingKernelClient, code: str) -> list[dict[str, Any]]:
    """Run code in the kernel and return its output messages on iopub, in order, without status and input echo."""
    message_id = client.execute(code)
    messages = []
    while True:
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") != message_id:
            continue
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return messages
        if message["msg_type"] in ("status", "execute_input"):
            continue
        if message["msg_type"] == "error":
            raise AssertionError("\n".join(message["content"]["traceback"]))
        messages.append(message)


def saved_outputs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply the messages to a cell's outputs as the Jupyter messaging spec defines for a frontend."""
    outputs: list[dict[str, Any]] = []
    for message in messages:
        kind, content = message["msg_type"], message["content"]
        display_id = content.get("transient", {}).get("display_id")
        if kind in ("display_data", "execute_result"):
            outputs.append({"output_type": kind, "data": content["data"], "display_id": display_id})
        elif kind == "update_display_data":
            for output in outputs:
                if output.get("display_id") == display_id:
                    output["data"] = content["data"]
        elif kind == "stream":
            outputs.append({"output_type": "stream", "text": content["text"]})
        elif kind == "clear_output":
            assert content["wait"] is False
            outputs.clear()
    return outputs


def test_kernel_bar_updates_then_leaves_nothing(kernel: BlockingKernelClient) -> None:
    messages = execute(kernel, feed_cell())
    kinds = [message["msg_type"] for message in messages]

    assert kinds[0] == "display_data"
    assert messages[0]["content"]["data"] == {}
    updates = [message["content"]["data"] for message in messages if message["msg_type"] == "update_display_data"]
    shown = [update for update in updates if update]
    assert len(shown) >= 3
    assert "<progress" in shown[0]["text/html"]
    assert shown[-1]["text/plain"] == "MLPClassifier  epoch 6/6  loss 0.1667  accuracy 0.500"
    assert kinds[-2:] == ["update_display_data", "clear_output"]
    assert updates[-1] == {}
    assert saved_outputs(messages) == []


def test_kernel_without_clear_leaves_empty_output(kernel: BlockingKernelClient) -> None:
    messages = execute(kernel, feed_cell(clear=False, epochs=2, delay=0.0))
    assert "clear_output" not in [message["msg_type"] for message in messages]
    outputs = saved_outputs(messages)
    assert [output["data"] for output in outputs] == [{}]


def test_kernel_output_after_close_is_kept(kernel: BlockingKernelClient) -> None:
    messages = execute(kernel, feed_cell(epochs=2, delay=0.0) + "\nprint('result shown after the run')\n")
    assert saved_outputs(messages) == [{"output_type": "stream", "text": "result shown after the run\n"}]


def test_kernel_no_records_no_messages(kernel: BlockingKernelClient) -> None:
    messages = execute(kernel, feed_cell(epochs=0, delay=0.0))
    assert messages == []


# --- nbval ------------------------------------------------------------------


def run_nbval(tmp_path: Path, cells: list[tuple[str, list[dict[str, Any]]]]) -> subprocess.CompletedProcess[str]:
    """Write a notebook whose cells have the given saved outputs and run nbval on it in this environment."""
    notebook = nbformat.v4.new_notebook()
    for number, (source, outputs) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=number)
        cell.outputs = [nbformat.from_dict(output) for output in outputs]
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    path = tmp_path / "progress.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


EMPTY_DISPLAY = {"output_type": "display_data", "data": {}, "metadata": {}}


@pytest.mark.parametrize(
    ("source", "outputs"),
    [
        (feed_cell(), []),
        (feed_cell(delay=0.0, epochs=2), []),
        (feed_cell(epochs=0), []),
        (feed_cell(clear=False), [EMPTY_DISPLAY]),
        (feed_cell(clear=False), []),
    ],
    ids=["updates", "few_updates", "no_records", "unclear_saved_empty_display", "unclear_saved_nothing"],
)
def test_nbval_passes_progress_cell(tmp_path: Path, source: str, outputs: list[dict[str, Any]]) -> None:
    completed = run_nbval(tmp_path, [(source, outputs), ("print(1 + 1)", [{"output_type": "stream", "name": "stdout", "text": "2\n"}])])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "2 passed" in completed.stdout


def test_nbval_fails_on_visible_display(tmp_path: Path) -> None:
    # The control: a display whose first message carries data is compared by
    # nbval even after clear_output, so an empty saved output then fails.
    source = textwrap.dedent(
        """
        from IPython.display import clear_output, display
        handle = display({"text/plain": "epoch 1/2"}, raw=True, display_id=True)
        clear_output()
        """
    )
    completed = run_nbval(tmp_path, [(source, [])])
    assert completed.returncode != 0
    assert "1 failed" in completed.stdout
    assert "Unexpected output fields from running code: {'text/plain'}" in completed.stdout


def test_notebook_bar_class_outside_kernel_never_displays() -> None:
    # Creating the bar displays nothing until a record arrives.
    bar = NotebookProgressBar()
    bar.close()
    assert bar.current_record is None


# --- the %%cape magic in a real kernel, with a real enclave --------------------

CAPE_SETUP = """\
%load_ext confidential_nb
import confidential_nb
from confidential_nb.datasets import load_breast_cancer
sealed = confidential_nb.seal(load_breast_cancer())
"""
CAPE_TRAINING = """\
%%cape --input sealed --out run
from confidential_nb.training import LogisticRegression
model = LogisticRegression(epochs=300).fit(data.drop(columns="target"), data["target"])
result = model.score(data.drop(columns="target"), data["target"])
"""


def test_cape_magic_shows_bar_then_only_its_result(kernel: BlockingKernelClient) -> None:
    # The kernel inherits the test session's key home, so it uses the session's enclave keys.
    execute(kernel, CAPE_SETUP)
    messages = execute(kernel, CAPE_TRAINING)
    kinds = [message["msg_type"] for message in messages]

    assert kinds[0] == "display_data"
    shown = [message["content"]["data"] for message in messages
             if message["msg_type"] == "update_display_data" and message["content"]["data"]]
    assert shown, "the bar never showed a record"
    assert shown[-1]["text/plain"].startswith("LogisticRegression  epoch ")
    assert "clear_output" in kinds
    outputs = saved_outputs(messages)
    assert [output["output_type"] for output in outputs] == ["stream"]
    assert outputs[0]["text"].startswith("receipt verified")
