"""The runner audit hook, tried in forked children so pytest itself never runs under it.

Each child installs the hook with a read root and a write root under the
test's tmp_path, makes one attempt, sends a JSON report through a pipe and
leaves with os._exit. Control runs skip the hook to show that the attempt
works without it.
"""

from __future__ import annotations

import ctypes
import json
import os
import pty
import resource
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confidential_nb.audit import default_read_roots, install_audit_hook

SECRET = "planted secret"


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    """Create a read root, a write root and an outside directory with a planted file in each."""
    layout = {name: tmp_path / name for name in ("read", "write", "outside")}
    for directory in layout.values():
        directory.mkdir()
        (directory / "file.txt").write_text(SECRET)
    return layout


def run_in_child(attempt: Callable[[], Any], roots: dict[str, Path], *, install: bool = True) -> Any:
    """Fork, install the hook unless `install` is False, run `attempt`, and return its JSON report."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(attempt, roots, install, read_end, write_end)

    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"child ended with wait status {status}"
    assert raw, "child sent no report"
    return json.loads(raw)


def _child(attempt: Callable[[], Any], roots: dict[str, Path], install: bool, read_end: int, write_end: int) -> None:
    try:
        os.close(read_end)
        if install:
            install_audit_hook([str(roots["read"])], [str(roots["write"])])
        try:
            report: Any = {"value": attempt()}
        except Exception as exc:
            report = {"error": type(exc).__name__, "message": str(exc)}
        os.write(write_end, json.dumps(report).encode())
    finally:
        os._exit(0)


def denied(report: Any) -> bool:
    return isinstance(report, dict) and report.get("error") == "PermissionError"


def fork_and_reap() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def spawn_true() -> None:
    os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0)


def exec_true() -> None:
    # Never returns when the exec succeeds, so the child sends no report and the test fails.
    os.execv("/bin/true", ["true"])


PROCESS_ATTEMPTS: dict[str, Callable[[], Any]] = {
    "subprocess.run": lambda: subprocess.run(["/bin/true"]).returncode,
    "os.system": lambda: os.system("true"),
    "os.posix_spawn": spawn_true,
    "os.spawnv": lambda: os.spawnv(os.P_WAIT, "/bin/true", ["true"]),
    "os.fork": fork_and_reap,
    "os.execv": exec_true,
    "pty.spawn": lambda: pty.spawn(["/bin/true"]),
}

NETWORK_ATTEMPTS: dict[str, Callable[[], Any]] = {
    "socket.socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
    "socket.socketpair": lambda: [end.close() for end in socket.socketpair()],
    "socket.getaddrinfo": lambda: socket.getaddrinfo("localhost", 80),
    "socket.gethostbyname": lambda: socket.gethostbyname("localhost"),
}

CTYPES_ATTEMPTS: dict[str, Callable[[], Any]] = {
    "ctypes.CDLL": lambda: ctypes.CDLL(None).getpid(),
    "ctypes.pythonapi": lambda: ctypes.pythonapi.Py_GetVersion(),
    "ctypes.string_at": lambda: ctypes.string_at(id(SECRET), 8).hex(),
    "ctypes.addressof": lambda: ctypes.addressof(ctypes.c_int(1)),
    "ctypes.from_address": lambda: ctypes.c_int.from_address(id(SECRET)).value,
}


@pytest.mark.parametrize("name", PROCESS_ATTEMPTS)
def test_process_creation_denied(name: str, roots: dict[str, Path]) -> None:
    report = run_in_child(PROCESS_ATTEMPTS[name], roots)
    assert denied(report), report


@pytest.mark.parametrize("name", NETWORK_ATTEMPTS)
def test_socket_use_denied(name: str, roots: dict[str, Path]) -> None:
    report = run_in_child(NETWORK_ATTEMPTS[name], roots)
    assert denied(report), report


@pytest.mark.parametrize("name", CTYPES_ATTEMPTS)
def test_ctypes_use_denied(name: str, roots: dict[str, Path]) -> None:
    report = run_in_child(CTYPES_ATTEMPTS[name], roots)
    assert denied(report), report


def test_attempts_work_without_hook(roots: dict[str, Path]) -> None:
    for name, attempt in {**PROCESS_ATTEMPTS, **CTYPES_ATTEMPTS}.items():
        if name in ("os.execv", "pty.spawn"):
            continue
        report = run_in_child(attempt, roots, install=False)
        assert "value" in report, (name, report)


def test_signal_to_other_process_denied(roots: dict[str, Path]) -> None:
    parent = os.getpid()
    assert denied(run_in_child(lambda: os.kill(parent, 0), roots))
    assert denied(run_in_child(lambda: os.killpg(os.getpgid(parent), 0), roots))
    assert run_in_child(lambda: os.kill(os.getpid(), 0), roots) == {"value": None}


def test_setrlimit_denied(roots: dict[str, Path]) -> None:
    def lower_core_limit() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    assert denied(run_in_child(lower_core_limit, roots))


def test_read_outside_roots_denied(roots: dict[str, Path]) -> None:
    outside = roots["outside"] / "file.txt"
    report = run_in_child(outside.read_text, roots)
    assert denied(report)
    assert SECRET not in report["message"]
    # The path is text the cell chose, possibly from data, so the message leaves it out.
    assert str(outside) not in report["message"]
    assert run_in_child(outside.read_text, roots, install=False) == {"value": SECRET}


def test_read_inside_roots_allowed(roots: dict[str, Path]) -> None:
    assert run_in_child((roots["read"] / "file.txt").read_text, roots) == {"value": SECRET}
    assert run_in_child((roots["write"] / "file.txt").read_text, roots) == {"value": SECRET}


def test_read_through_tricks_denied(roots: dict[str, Path]) -> None:
    outside = roots["outside"] / "file.txt"
    link = roots["write"] / "link"
    link.symlink_to(outside)
    dotdot = f"{roots['read']}/../outside/file.txt"
    fd_path = os.open(roots["outside"], os.O_RDONLY)

    attempts: dict[str, Callable[[], Any]] = {
        "symlink": link.read_text,
        "dotdot": lambda: Path(dotdot).read_text(),
        "bytes path": lambda: open(os.fsencode(outside)).read(),
        "os.open": lambda: os.open(outside, os.O_RDONLY),
        "relative os.open": lambda: os.open("file.txt", os.O_RDONLY, dir_fd=fd_path),
        "listdir": lambda: os.listdir(roots["outside"]),
        "scandir": lambda: [entry.name for entry in os.scandir(roots["outside"])],
        "shutil.copy": lambda: shutil.copy(outside, roots["write"] / "copy.txt"),
        "hard link": lambda: os.link(outside, roots["write"] / "hard.txt"),
        "proc root": lambda: Path(f"/proc/self/root{outside}").read_text(),
    }
    for name, attempt in attempts.items():
        report = run_in_child(attempt, roots)
        assert denied(report), (name, report)
    os.close(fd_path)


def test_proc_self_readable_mem_denied(roots: dict[str, Path]) -> None:
    def read_status() -> bool:
        return Path("/proc/self/status").read_text().startswith("Name:")

    assert run_in_child(read_status, roots) == {"value": True}
    assert run_in_child(lambda: os.listdir("/proc/self/fd") != [], roots) == {"value": True}
    for path in ("/proc/self/mem", "/proc/thread-self/mem", "/proc/{pid}/mem"):
        report = run_in_child(lambda: open(path.format(pid=os.getpid()), "rb").read(1).hex(), roots)
        assert denied(report), (path, report)
    assert denied(run_in_child(lambda: Path("/proc/1/status").read_text(), roots))


def test_write_in_write_root_allowed(roots: dict[str, Path]) -> None:
    target = roots["write"] / "out.csv"

    def write_and_tidy() -> list[str]:
        target.write_text("a,b\n1,2\n")
        (roots["write"] / "sub").mkdir()
        os.rename(target, roots["write"] / "sub" / "moved.csv")
        os.remove(roots["write"] / "sub" / "moved.csv")
        shutil.rmtree(roots["write"] / "sub")
        return sorted(os.listdir(roots["write"]))

    assert run_in_child(write_and_tidy, roots) == {"value": ["file.txt"]}


def test_write_outside_write_root_denied(roots: dict[str, Path]) -> None:
    attempts: dict[str, Callable[[], Any]] = {
        "outside": lambda: (roots["outside"] / "new.txt").write_text("x"),
        "read root": lambda: (roots["read"] / "new.txt").write_text("x"),
        "append": lambda: open(roots["read"] / "file.txt", "a").close(),
        "os.open": lambda: os.open(roots["outside"] / "new.txt", os.O_WRONLY | os.O_CREAT),
        "remove": lambda: os.remove(roots["outside"] / "file.txt"),
        "rename in": lambda: os.rename(roots["outside"] / "file.txt", roots["write"] / "stolen.txt"),
        "mkdir": lambda: os.mkdir(roots["outside"] / "sub"),
        "chmod": lambda: os.chmod(roots["outside"] / "file.txt", 0o777),
    }
    for name, attempt in attempts.items():
        report = run_in_child(attempt, roots)
        assert denied(report), (name, report)
    assert not (roots["outside"] / "new.txt").exists()
    assert not (roots["read"] / "new.txt").exists()
    assert (roots["outside"] / "file.txt").read_text() == SECRET


def test_root_slash_rejected() -> None:
    with pytest.raises(ValueError, match="resolves to '/'"):
        install_audit_hook(["/"], [])


def test_default_roots_cover_stdlib_and_package() -> None:
    defaults = default_read_roots()
    assert os.path.dirname(os.__file__) in defaults
    assert str(Path(__file__).resolve().parent.parent / "confidential_nb") in defaults
    assert "" not in defaults


def test_pandas_numpy_work_under_hook(roots: dict[str, Path]) -> None:
    import numpy as np
    import pandas as pd

    source = roots["read"] / "data.csv"
    pd.DataFrame({"key": ["a", "b", "a"], "value": [1.0, 2.0, 3.0]}).to_csv(source, index=False)

    def analyse() -> list[Any]:
        frame = pd.read_csv(source)
        grouped = frame.groupby("key")["value"].sum()
        grouped.to_csv(roots["write"] / "grouped.csv")
        frame.to_json(roots["write"] / "frame.json")
        spectrum = np.fft.rfft(np.arange(8.0))
        return [grouped.to_dict(), round(float(np.abs(spectrum).sum()), 2), frame.describe().shape[0],
                pd.read_json(roots["write"] / "frame.json").shape[0]]

    spectrum_sum = round(float(np.abs(np.fft.rfft(np.arange(8.0))).sum()), 2)
    assert run_in_child(analyse, roots) == {"value": [{"a": 4.0, "b": 2.0}, spectrum_sum, 8, 3]}


def test_training_and_encoding_under_hook(roots: dict[str, Path]) -> None:
    def train() -> list[Any]:
        import warnings

        import numpy as np

        from confidential_nb.result_codec import decode_result, encode_result
        from confidential_nb.training import LinearSVC, LogisticRegression, MLPClassifier, train_test_split
        from confidential_nb.datasets import load_breast_cancer

        data = load_breast_cancer()
        X_train, X_test, y_train, y_test = train_test_split(data, target="target", test_size=0.3, random_state=0)
        # pytest turns ConvergenceWarning into an error, and these short fits need not converge.
        warnings.simplefilter("ignore")
        scores = []
        for model in (LogisticRegression(epochs=50), LinearSVC(epochs=50), MLPClassifier(epochs=20, random_state=0)):
            model.fit(X_train, y_train, validation_data=(X_test, y_test))
            scores.append(model.score(X_test, y_test) > 0.8)
            encoded = encode_result({"model": model, "history": model.history_})
            assert isinstance(decode_result(encoded), dict)
        return scores + [bool(np.isfinite(model.history_["loss"]).all())]

    assert run_in_child(train, roots) == {"value": [True, True, True, True]}

