"""File attacks: read the home directory, the key home and another runner's scratch directory or memory.

The key home is reached by its path, through the monitor's working directory
and root in /proc, by globbing, through the monitor's command line and through
its open descriptors. The concurrent attacks hold one run open until the
host has seen its marker and the other run has finished, so they cannot pass
because the runs did not overlap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from confidential_nb import Enclave
from processes import descendants

from .conftest import require_layer
from .support import ANCESTORS, ATTEMPT, assert_usable

# Cell prelude: `readable_keys(root)` returns the private key files under `root` that the cell could read.
READABLE_KEYS = """
import glob, os

def readable_keys(root):
    found = []
    for pattern in ('enclave/keys/*/private.json', 'platform/root.key'):
        for path in glob.glob(os.path.join(root, pattern)):
            try:
                with open(path, 'rb') as handle:
                    handle.read(1)
                found.append(path)
            except OSError:
                pass
    return found
"""

MARKER_NAME = "adversarial-marker"
RELEASE_NAME = "adversarial-release"
MARKER_PREFIX = "ADVMARK-"

# The holding run writes its marker, keeps it in memory and waits for the host to release it.
HOLDER_CELL = f"""
import os, time
marker_text = {MARKER_PREFIX!r} + token
with open({MARKER_NAME!r}, 'w') as handle:
    handle.write(marker_text)
deadline = time.monotonic() + 30
while not os.path.exists({RELEASE_NAME!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
result = 'released' if os.path.exists({RELEASE_NAME!r}) else 'not released'
"""


def _private_key_files(home: Path) -> list[Path]:
    return sorted(home.glob("enclave/keys/*/private.json")) + sorted(home.glob("platform/root.key"))


@pytest.fixture
def planted_home_file() -> Iterator[tuple[Path, str]]:
    """A file holding a random secret in the real home directory of the test process, removed afterwards."""
    token = os.urandom(16).hex()
    path = Path.home() / f".confidential-nb-adversarial-{token}"
    path.write_text(token)
    path.chmod(0o644)
    try:
        yield path, token
    finally:
        path.unlink(missing_ok=True)


def test_home_file_unreadable(enclave: Enclave, planted_home_file: tuple[Path, str]) -> None:
    require_layer(enclave, "mount_namespace")
    path, token = planted_home_file
    source = ATTEMPT + f"result = attempt(lambda: open({str(path)!r}).read())"

    outcome = enclave.run(source, timeout=10).value

    assert token not in str(outcome)
    assert str(outcome).startswith("refused:")
    assert_usable(enclave)


def test_key_home_by_path(enclave: Enclave) -> None:
    require_layer(enclave, "mount_namespace")
    assert _private_key_files(enclave.home), "the key home has no private key files to attack"
    source = READABLE_KEYS + f"result = readable_keys({str(enclave.home)!r})"

    assert enclave.run(source, timeout=10).value == []
    assert_usable(enclave)


def test_key_home_by_glob(enclave: Enclave) -> None:
    # The glob starts one level above the key home, in this session's pytest directory,
    # so it finds the key home without touching key homes of other sessions on this machine.
    require_layer(enclave, "mount_namespace")
    assert _private_key_files(enclave.home), "the key home has no private key files to attack"
    search_root = str(enclave.home.parent)
    source = READABLE_KEYS + (
        f"result = [path for home in glob.glob(os.path.join({search_root!r}, '*')) for path in readable_keys(home)]"
    )

    assert enclave.run(source, timeout=10).value == []
    assert_usable(enclave)


def test_key_home_via_monitor_cwd(
    enclave: Enclave, start_enclave: Callable[[], Enclave], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The monitor inherits the working directory of the process that starts it, here the key home.
    require_layer(enclave, "pid_namespace")
    monkeypatch.chdir(enclave.home)
    fresh = start_enclave()
    monitor = int(fresh.status()["monitor_pid"])
    assert Path(os.readlink(f"/proc/{monitor}/cwd")) == fresh.home
    source = ANCESTORS + READABLE_KEYS + "result = [path for pid in ancestors() for path in readable_keys(f'/proc/{pid}/cwd')]"

    assert fresh.run(source, timeout=10).value == []
    assert_usable(fresh)


def test_key_home_via_parent_root(enclave: Enclave) -> None:
    # /proc/PID/root of a process outside the runner's mount namespace shows that process's whole filesystem.
    require_layer(enclave, "pid_namespace")
    assert _private_key_files(enclave.home), "the key home has no private key files to attack"
    home = str(enclave.home)
    source = ANCESTORS + READABLE_KEYS + (
        f"result = [path for pid in ancestors() for path in readable_keys(f'/proc/{{pid}}/root' + {home!r})]"
    )

    assert enclave.run(source, timeout=10).value == []
    assert_usable(enclave)


def test_key_home_via_monitor_cmdline(enclave: Enclave) -> None:
    # The monitor runs as `python -m confidential_nb.enclave --home PATH`.
    require_layer(enclave, "pid_namespace")
    source = ANCESTORS + READABLE_KEYS + """
homes = []
for pid in ancestors():
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            words = handle.read().decode().split('\\0')
    except OSError:
        continue
    homes += [words[index + 1] for index, word in enumerate(words[:-1]) if word == '--home']
result = {'homes': homes, 'keys': [path for home in homes for path in readable_keys(home)]}
"""

    outcome = enclave.run(source, timeout=10).value

    assert outcome["keys"] == []
    assert str(enclave.home) not in outcome["homes"]
    assert_usable(enclave)


def test_key_home_via_monitor_descriptors(enclave: Enclave) -> None:
    # The monitor keeps enclave.log in the key home open, so its descriptor links name the key home.
    # The cell only reads the links and never opens the monitor's descriptors, which include its sockets.
    require_layer(enclave, "pid_namespace")
    source = ANCESTORS + READABLE_KEYS + """
links = []
for pid in ancestors():
    try:
        names = os.listdir(f'/proc/{pid}/fd')
    except OSError:
        continue
    for name in names:
        try:
            links.append(os.readlink(f'/proc/{pid}/fd/{name}'))
        except OSError:
            pass
homes = {os.path.dirname(link) for link in links if link.endswith('/enclave.log')}
result = {'links': links, 'keys': [path for home in sorted(homes) for path in readable_keys(home)]}
"""

    outcome = enclave.run(source, timeout=10).value

    assert outcome["keys"] == []
    assert str(enclave.home / "enclave.log") not in outcome["links"]
    assert_usable(enclave)


# Two runs at once: the holder in the module's enclave, the probe in a second enclave of the same variant.


def _find_holder(zygote: int, seconds: float = 20.0) -> int:
    """Return the pid of the runner under `zygote` whose working directory contains the marker."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid in descendants(zygote):
            if Path(f"/proc/{pid}/cwd/{MARKER_NAME}").exists():
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no runner under zygote {zygote} wrote {MARKER_NAME} within {seconds:g} seconds")


def _run_during_holder(holder: Enclave, probe: Callable[[int], Any]) -> tuple[object, Any, str]:
    """Run `probe(holder_pid)` while a run of `holder` waits after writing its marker.

    Returns the holder's outcome, the probe's outcome and the marker's token.
    """
    token = os.urandom(16).hex()
    zygote = int(holder.status()["zygote_pid"])
    outcomes: dict[str, object] = {}

    def hold() -> None:
        try:
            outcomes["holder"] = holder.run(HOLDER_CELL, params={"token": token}, timeout=40).value
        except BaseException as error:  # Reported to the test thread below.
            outcomes["holder"] = error

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        holder_pid = _find_holder(zygote)
        outcomes["probe"] = probe(holder_pid)
        # The host reaches the holder's scratch directory through /proc, whatever its mount namespace shows.
        Path(f"/proc/{holder_pid}/cwd/{RELEASE_NAME}").write_text("go")
    finally:
        thread.join(60)
    holder_outcome = outcomes.get("holder")
    if isinstance(holder_outcome, BaseException):
        raise AssertionError("the holding run failed") from holder_outcome
    return holder_outcome, outcomes.get("probe"), token


def test_concurrent_scratch_by_glob(enclave: Enclave, start_enclave: Callable[[], Enclave]) -> None:
    require_layer(enclave, "mount_namespace")
    other = start_enclave()
    source = f"""
import glob, os
found = []
for path in glob.glob('/tmp/confidential_nb-*/run-*/{MARKER_NAME}') + glob.glob(os.path.join(os.path.dirname(os.getcwd()), '*', {MARKER_NAME!r})):
    try:
        found.append(open(path).read())
    except OSError:
        pass
result = found
"""

    holder_outcome, probe_outcome, token = _run_during_holder(enclave, lambda pid: other.run(source, timeout=10).value)

    assert holder_outcome == "released"
    assert not any(token in text for text in probe_outcome)
    assert_usable(other)
    assert_usable(enclave)


def test_concurrent_scratch_via_proc(enclave: Enclave, start_enclave: Callable[[], Enclave]) -> None:
    require_layer(enclave, "pid_namespace")
    other = start_enclave()
    source = ATTEMPT + f"result = attempt(lambda: open(f'/proc/{{holder_pid}}/cwd/{MARKER_NAME}').read())"

    holder_outcome, probe_outcome, token = _run_during_holder(
        enclave, lambda pid: other.run(source, params={"holder_pid": pid}, timeout=10).value
    )

    assert holder_outcome == "released"
    assert token not in str(probe_outcome)
    assert str(probe_outcome).startswith("refused:")
    assert_usable(other)


def test_concurrent_memory_unreadable(enclave: Enclave, start_enclave: Callable[[], Enclave]) -> None:
    # The probe reads only the holder's memory, found by the pid the host passes in.
    require_layer(enclave, "pid_namespace")
    other = start_enclave()
    source = f"""
import re
found = []
try:
    with open(f'/proc/{{holder_pid}}/maps') as handle:
        regions = handle.read().splitlines()
    with open(f'/proc/{{holder_pid}}/mem', 'rb', buffering=0) as memory:
        for region in regions:
            fields = region.split()
            start, end = (int(bound, 16) for bound in fields[0].split('-'))
            if not fields[1].startswith('r') or end - start > 256 * 1024**2:
                continue
            try:
                memory.seek(start)
                chunk = memory.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            found += [match.decode() for match in re.findall(rb'{MARKER_PREFIX}[0-9a-f]{{32}}', chunk)]
    result = sorted(set(found))
except OSError as error:
    result = 'refused:' + type(error).__name__
"""

    holder_outcome, probe_outcome, token = _run_during_holder(
        enclave, lambda pid: other.run(source, params={"holder_pid": pid}, timeout=30).value
    )

    assert holder_outcome == "released"
    assert token not in str(probe_outcome)
    assert str(probe_outcome).startswith("refused:")
    assert_usable(other)
