"""Default run limits and the parsing of sizes such as ``4G`` or ``512MiB``."""

from __future__ import annotations

import logging
import re
import resource

log = logging.getLogger("confidential_nb.limits")

DEFAULT_TIMEOUT_SECONDS = 600.0
"""Wall-clock limit of one run; the runner's process group is killed after it."""

MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
"""Largest timeout a run accepts: one week."""

DEFAULT_MEMORY_BYTES = 4 * 1024**3
"""Address-space limit of one runner, including what the zygote already mapped."""

MAX_MEMORY_BYTES = 1024**4
"""Largest memory limit a run accepts: 1 TiB."""

MEMORY_PER_INPUT_BYTE = 4
"""The memory limit is at least this many times the total size of the sealed inputs."""

DEFAULT_FILE_SIZE_BYTES = 1024**3
"""Largest file a runner may write in its scratch directory."""

DEFAULT_OPEN_FILES = 256
"""Maximum number of open file descriptors in a runner."""

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse a byte count such as ``4G``, ``512MiB`` or ``1000000`` into bytes.

    A bare ``K``, ``M``, ``G`` or ``T`` means the binary unit (``4G`` is 4 GiB),
    as in ``ulimit`` and Docker; ``KB``/``MB``/``GB`` are decimal.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError(f"invalid size {text!r}: it must be a positive number of bytes")
        return text

    match = _SIZE_PATTERN.match(str(text))
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"invalid size {text!r}: write a number with an optional unit, such as 4G, 512MiB or 2GB")

    unit = match.group(2).lower()
    if unit in ("k", "m", "g", "t"):
        unit += "ib"
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"invalid size {text!r}: it must be a positive number of bytes")
    return size


def format_size(size: int) -> str:
    """Format a byte count with a binary unit, such as ``4.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def memory_limit_for(input_bytes: int, requested: int | None = None) -> int:
    """Return the memory limit of a run: the request, else the default or 4x the inputs."""
    if requested is not None:
        return requested
    return max(DEFAULT_MEMORY_BYTES, MEMORY_PER_INPUT_BYTE * input_bytes)


# The open-file limit set when the hard limit is unlimited (Linux's default nr_open).
MAX_OPEN_FILES = 1024 * 1024


def raise_open_file_limit() -> bool:
    """Raise this process's soft limit on open descriptors to its hard limit, as servers commonly do; return whether it rose.

    The monitor calls this as it starts: each run going on, each cached
    input and each waiting run channel keep a few descriptors open in it,
    and soft limits of 1024 are common. Runners get their own limit when
    they start. A host process calls it when a `Sealed`'s buffer finds no
    descriptor free.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else MAX_OPEN_FILES
    if soft == resource.RLIM_INFINITY or soft >= target:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.info("kept the open-file limit of %d: %s", soft, exc)
        return False
    log.info("raised the open-file limit from %d to %d", soft, target)
    return True
