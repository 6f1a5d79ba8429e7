"""The egress guard: what a runner's reply may carry out of the enclave.

A runner executes hostile code, so the monitor treats its reply header as
untrusted. It rebuilds every reply from a fixed schema. A reply has a known
kind and an exception type name that one of `EXCEPTION_MODULES` exports. It
may also carry a line number within the cell, a bounded count of withheld
lines, and library warnings, which the monitor renders from the fixed
templates of `confidential_nb.library_warnings` with numeric arguments.

Outside debug runs that is all: no printed output, exception message or
encoding error detail leaves, because any of them may contain data. Debug
runs, which only a debug enclave serves and only on inputs whose policy
allows them, also return the printed output and those messages, bounded in
size and counted against the result budget like the result itself.

NOTE: a cell chooses the numbers in the warnings it raises, the exception
class among those named, and the cell line, so it can still leak a few bits
per run through them. The guard bounds them but cannot tell them from the
library's own.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from ..library_warnings import TEMPLATES, render_warning

MAX_WITHHELD_LINES = 1_000_000
MAX_DEBUG_MESSAGE_CHARS = 2000
MAX_DEBUG_OUTPUT_CHARS = 64 * 1024
MAX_WARNINGS = 20
GENERIC_EXCEPTION = "an exception class defined outside Python, numpy, pandas and confidential_nb"

# The modules whose exception classes are named outside debug runs, because their names carry no data.
EXCEPTION_MODULES = frozenset({
    "builtins", "numpy.exceptions", "numpy.linalg", "pandas.errors",
    "confidential_nb.errors", "confidential_nb.training.exceptions",
})
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RESOURCES = frozenset({"memory", "file size"})


def verified_exception_name(name: object) -> str:
    """Return `name` if a module in `EXCEPTION_MODULES` exports an exception class by that name, else a generic label.

    Only those fixed modules are imported here, never one a runner names.
    """
    if not isinstance(name, str) or len(name) > 200 or not _DOTTED_NAME.match(name):
        return GENERIC_EXCEPTION
    module_name, _, attribute = name.rpartition(".")
    module_name = module_name or "builtins"
    if module_name not in EXCEPTION_MODULES:
        return GENERIC_EXCEPTION
    candidate = getattr(importlib.import_module(module_name), attribute, None)
    if isinstance(candidate, type) and issubclass(candidate, BaseException) and candidate.__module__ == module_name:
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


def guarded_text(value: object, debug: bool, limit: int) -> str | None:
    """Return a bounded text in a debug run, else None."""
    if not debug or not isinstance(value, str):
        return None
    return value[:limit]


def guarded_warnings(value: object) -> list[str]:
    """Render the library warnings of a runner's reply from their templates, with repeat counts.

    An entry names a template id and its numeric arguments. An unknown id is
    dropped, and invalid arguments leave only the warning's class name.
    """
    if not isinstance(value, list):
        return []
    kept: list[str] = []
    for entry in value[:MAX_WARNINGS]:
        text = _render_warning_entry(entry)
        if text is not None:
            kept.append(text)
    return kept


def _render_warning_entry(entry: object) -> str | None:
    if not isinstance(entry, dict) or entry.get("template") not in TEMPLATES:
        return None
    template = str(entry["template"])
    arguments = entry.get("args")
    try:
        text = render_warning(template, arguments if isinstance(arguments, dict) else {})
    except ValueError:
        category, _ = TEMPLATES[template]
        text = render_warning(f"{category}.untemplated", {})
    count = bounded_count(entry.get("count"))
    return text if count <= 1 else f"{text} (raised {count} times)"


def guard_failure(header: dict[str, Any], source: str, debug: bool) -> dict[str, Any]:
    """Rebuild a runner's failure reply from the fields that may leave."""
    kind = header.get("kind")
    if kind == "exception":
        return {
            "ok": False,
            "kind": "exception",
            "exception_type": verified_exception_name(header.get("exception_type")),
            "line": cell_line(header.get("line"), source),
            "message": guarded_text(header.get("message"), debug, MAX_DEBUG_MESSAGE_CHARS),
            **guarded_output(header, debug),
        }
    if kind == "resource" and header.get("resource") in _RESOURCES:
        return {"ok": False, "kind": "resource", "resource": header["resource"]}
    if kind == "encoding":
        message = guarded_text(header.get("message"), debug, MAX_DEBUG_MESSAGE_CHARS)
        if message is None:
            message = ("the result contains a value that cannot cross the enclave boundary; its path and type "
                       "stay in the enclave because they may name data, so return only numbers, strings, "
                       "lists, dicts, arrays, DataFrames and library models, or rerun with %%cape --debug "
                       "on inputs whose policy allows debug to see them")
        return {"ok": False, "kind": "encoding", "message": message, **guarded_output(header, debug)}
    if kind == "input":
        return {"ok": False, "kind": "internal", "message": "the runner failed to decode its inputs; seal the data again"}
    return {"ok": False, "kind": "internal", "message": "the runner sent a malformed reply and was stopped"}


def guarded_output(header: dict[str, Any], debug: bool) -> dict[str, Any]:
    """Return the printed-output fields that may leave: a count of withheld lines, and in debug runs the text."""
    fields: dict[str, Any] = {"withheld_lines": bounded_count(header.get("withheld_lines"))}
    output = guarded_text(header.get("output"), debug, MAX_DEBUG_OUTPUT_CHARS)
    if output is not None:
        fields["output"] = output
    return fields


def text_size(header: dict[str, Any]) -> int:
    """Return the UTF-8 size in bytes of the free text in a guarded reply."""
    texts = [header.get("message"), header.get("output"), *header.get("warnings", [])]
    return sum(len(text.encode(errors="replace")) for text in texts if isinstance(text, str))


def fit_text_to_budget(header: dict[str, Any], budget: int) -> dict[str, Any]:
    """Shorten a failure reply's debug output so that its text stays within `budget` bytes."""
    output = header.get("output")
    excess = text_size(header) - budget
    if excess <= 0 or not isinstance(output, str):
        return header
    kept = output.encode(errors="replace")[: max(0, len(output.encode(errors="replace")) - excess)]
    return dict(header, output=kept.decode(errors="ignore"), output_truncated=True)
