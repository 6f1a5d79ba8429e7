"""Process inspection through /proc, shared by the tests that check nothing outlives a run."""

from __future__ import annotations

import time
from pathlib import Path


def _stat_fields(pid: int | str) -> list[str]:
    """Return the fields of /proc/PID/stat after the command name, which may contain spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(root: int) -> set[int]:
    """Return the ids of the processes whose parent chain reaches `root`."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(entry.name)[1])
            except OSError:
                continue

    found: set[int] = set()
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if pid not in found and (parent == root or parent in found):
                found.add(pid)
                changed = True
    return found


def is_running(pid: int) -> bool:
    """Return True when `pid` exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def wait_until_gone(pid: int, seconds: float = 5.0) -> bool:
    """Return True once `pid` no longer runs; a zombie awaiting its reaper counts as gone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.05)
    return not is_running(pid)


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def runner_processes(zygote_start_pid: int) -> set[int]:
    """Return the live processes of runs: everything below the zygote except its waiting spare runner.

    `zygote_start_pid` is the ``zygote_pid`` of the enclave's status: the
    zygote itself, or the sandbox's starter process whose descendant it is.
    """
    zygote = find_zygote(zygote_start_pid)
    return {pid for pid in descendants(zygote) - spare_processes(zygote) if is_running(pid)}


def find_zygote(zygote_start_pid: int) -> int:
    """Return the zygote's pid, below the sandbox's starter process `zygote_start_pid` or equal to it."""
    tree = {zygote_start_pid} | descendants(zygote_start_pid)
    zygotes = [pid for pid in tree
               if "confidential_nb.enclave.zygote" in _command_line(pid) and "confidential_nb.enclave.jail" not in _command_line(pid)]
    # Runners are forks of the zygote and share its command line; the zygote is their ancestor, with the most descendants.
    return max(zygotes, key=lambda pid: len(descendants(pid))) if zygotes else zygote_start_pid


def spare_processes(zygote: int) -> set[int]:
    """Return the processes of the zygote's waiting spare runners: each cell process named cnb-spare and its relays.

    A spare's cell process renames itself to cnb-run when its run arrives, so
    a run's processes are never in this set unless a cell renamed itself.
    """
    found: set[int] = set()
    for pid in descendants(zygote):
        if _process_name(pid) != "cnb-spare":
            continue
        found.add(pid)
        parent = _parent(pid)
        while parent not in (None, zygote, 0, 1):
            found.add(parent)
            parent = _parent(parent)
    return found


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_until_no_runners(zygote_start_pid: int, seconds: float = 5.0) -> bool:
    """Return True once no process of a run is left below the zygote."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not runner_processes(zygote_start_pid):
            return True
        time.sleep(0.05)
    return not runner_processes(zygote_start_pid)
