"""The egress guard: what a runner's reply may carry out of the enclave.

A runner executes hostile code, so the monitor treats its reply header as
untrusted. It rebuilds every reply from a fixed schema. A reply has a known
kind and an exception type name that resolves to a real class of Python,
numpy, pandas or confidential_nb. It may also carry a line number within the
cell, a bounded count of withheld lines and library warnings. Free text (library exception messages,
warning texts, encoding error details) passes only when every input's schema
is public, and counts against the result budget like the result itself.

NOTE: a hostile cell can forge a library message or warning text. The guard
bounds such text by the policy's result budget; it cannot tell it apart from
the library's own wording.
"""

from __future__ import annotations

import builtins
import importlib
import re
from typing import Any

MAX_WITHHELD_LINES = 1_000_000
MAX_TEXT_CHARS = 500
MAX_WARNINGS = 20
GENERIC_EXCEPTION = "an exception class defined outside Python, numpy, pandas and confidential_nb"

# The library's warning classes; a warning text must start with one of these names.
LIBRARY_WARNINGS = frozenset({"ConvergenceWarning", "UndefinedMetricWarning"})
_TRUSTED_PACKAGES = ("numpy", "pandas", "confidential_nb")
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RESOURCES = frozenset({"memory", "file size"})


def verified_exception_name(name: object) -> str:
    """Return `name` if it names a real exception class of a trusted package, else a generic label."""
    if not isinstance(name, str) or len(name) > 200 or not _DOTTED_NAME.match(name):
        return GENERIC_EXCEPTION
    if "." not in name:
        candidate = getattr(builtins, name, None)
    else:
        module_name, _, attribute = name.rpartition(".")
        if module_name.split(".")[0] not in _TRUSTED_PACKAGES:
            return GENERIC_EXCEPTION
        try:
            candidate = getattr(importlib.import_module(module_name), attribute, None)
        except Exception:  # Any import failure means the name is not a real class.
            return GENERIC_EXCEPTION
    if isinstance(candidate, type) and issubclass(candidate, BaseException):
        return name
    return GENERIC_EXCEPTION


def bounded_count(value: object) -> int:
    """Clamp a count reported by a runner to ``0 .. MAX_WITHHELD_LINES``."""
    if type(value) is not int:
        return 0
    return max(0, min(value, MAX_WITHHELD_LINES))


def cell_line(value: object, source: str) -> int | None:
    """Return a line number only when it lies within the cell."""
    if type(value) is not int:
        return None
    return value if 1 <= value <= source.count("\n") + 1 else None


def guarded_text(value: object, allowed: bool) -> str | None:
    """Return a bounded text when text may leave, else None."""
    if not allowed or not isinstance(value, str):
        return None
    return value[:MAX_TEXT_CHARS]


def guarded_warnings(value: object, text_allowed: bool) -> list[str]:
    """Keep library warnings only, with their text when text may leave, else their class name."""
    if not isinstance(value, list):
        return []
    kept: list[str] = []
    for item in value[:MAX_WARNINGS]:
        if not isinstance(item, str):
            continue
        name, separator, _ = item.partition(": ")
        if name not in LIBRARY_WARNINGS or not separator:
            continue
        if text_allowed:
            kept.append(item[:MAX_TEXT_CHARS])
        else:
            kept.append(f"{name}: its message is withheld because an input's schema is private")
    return kept


def guard_failure(header: dict[str, Any], source: str, text_allowed: bool) -> dict[str, Any]:
    """Rebuild a runner's failure reply from the fields that may leave."""
    kind = header.get("kind")
    if kind == "exception":
        return {
            "ok": False,
            "kind": "exception",
            "exception_type": verified_exception_name(header.get("exception_type")),
            "line": cell_line(header.get("line"), source),
            "message": guarded_text(header.get("message"), text_allowed),
        }
    if kind == "resource" and header.get("resource") in _RESOURCES:
        return {"ok": False, "kind": "resource", "resource": header["resource"]}
    if kind == "encoding":
        message = guarded_text(header.get("message"), text_allowed)
        if message is None:
            message = ("the result contains a value that cannot cross the enclave boundary; its path and type "
                       "are withheld because an input's schema is private, so return only numbers, strings, "
                       "lists, dicts, arrays, DataFrames and library models")
        return {"ok": False, "kind": "encoding", "message": message}
    if kind == "input":
        return {"ok": False, "kind": "internal", "message": "the runner failed to decode its inputs; seal the data again"}
    return {"ok": False, "kind": "internal", "message": "the runner sent a malformed reply and was stopped"}


def text_size(header: dict[str, Any]) -> int:
    """Return the number of characters of free text in a guarded reply."""
    texts = [header.get("message")] + list(header.get("warnings", []))
    return sum(len(text) for text in texts if isinstance(text, str))
