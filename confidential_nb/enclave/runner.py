"""A runner: executes one cell on plaintext inputs and returns the encoded result.

Runs in a process forked from the zygote, after `sandbox.isolate_runner`.
What it sends back is the encoded result, or an error that carries only the
exception's type name, its line in the cell and, for exceptions raised by the
library's own code, the library's fixed-template message.
"""

from __future__ import annotations

import ast
import errno
import io
import os
import random
import socket
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from ..protocol import recv_message, send_message

CELL_FILENAME = "<cell>"
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_TRUSTED_MODULE_PREFIXES = ("numpy", "pandas", "confidential_nb")
_MAX_MESSAGE_CHARS = 500


class LineCounter(io.TextIOBase):
    """A text stream that discards what is written and counts the lines."""

    def __init__(self) -> None:
        self.lines = 0
        self._open_line = False

    def write(self, text: str) -> int:
        if text:
            self.lines += text.count("\n")
            self._open_line = not text.endswith("\n")
        return len(text)

    def total(self) -> int:
        return self.lines + (1 if self._open_line else 0)


def reseed() -> None:
    """Give this runner fresh random state, so no two runs share the zygote's."""
    import numpy as np

    seed = int.from_bytes(os.urandom(8), "big")
    random.seed(seed)
    np.random.seed(seed % 2**32)


def serve(channel: socket.socket) -> None:
    """Receive one run request, execute it, send the reply."""
    header, attachments = recv_message(channel)
    try:
        namespace = _bind_inputs(header, attachments)
    except Exception as exc:
        send_message(channel, {"ok": False, "kind": "input", "message": f"failed to decode the inputs ({type(exc).__name__})"})
        return
    reply, blob = execute(str(header["source"]), namespace, library_messages=bool(header.get("library_messages", False)))
    send_message(channel, reply, [blob] if blob is not None else [])


def _bind_inputs(header: dict[str, Any], attachments: list[bytes]) -> dict[str, Any]:
    from ..frame_codec import decode_frame
    from ..result_codec import decode_result

    namespace: dict[str, Any] = {"__name__": "__cell__", "__builtins__": __builtins__}
    in_memory = iter(attachments)
    for spec in header.get("inputs", []):
        # A file input was decrypted by the monitor into this run's scratch directory, the working directory.
        payload = Path(spec["file"]).read_bytes() if spec.get("file") else next(in_memory)
        namespace[spec["name"]] = decode_frame(payload) if spec["kind"] == "dataframe" else payload
    if header.get("has_params"):
        params = decode_result(next(in_memory))
        if not isinstance(params, dict):
            raise TypeError("parameters must decode to a dict")
        namespace.update(params)
    return namespace


def execute(source: str, namespace: dict[str, Any], *, library_messages: bool = True) -> tuple[dict[str, Any], bytes | None]:
    """Run `source` in `namespace`; return the reply header and the encoded result.

    With ``library_messages=False`` even the library's own exception
    messages are withheld, because they may name columns of an input whose
    schema the data owner kept private.
    """
    from ..errors import EncodingError
    from ..result_codec import encode_result

    counter = LineCounter()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = counter
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Every warning is caught, so repeats can be counted instead of silently merged.
            warnings.simplefilter("always")
            value, result_name = _run_cell(source, namespace)
    except MemoryError:
        return {"ok": False, "kind": "resource", "resource": "memory"}, None
    except OSError as exc:
        # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG instead.
        if exc.errno == errno.EFBIG:
            return {"ok": False, "kind": "resource", "resource": "file size"}, None
        return _describe_exception(exc, library_messages), None
    except BaseException as exc:  # Anything the cell raises, SystemExit included, is reported.
        return _describe_exception(exc, library_messages), None
    finally:
        sys.stdout, sys.stderr = saved

    passed, withheld_warnings = _filter_warnings(caught)
    try:
        blob = encode_result(value)
    except EncodingError as exc:
        return {"ok": False, "kind": "encoding", "message": str(exc)[:_MAX_MESSAGE_CHARS]}, None
    except MemoryError:
        return {"ok": False, "kind": "resource", "resource": "memory"}, None
    return {"ok": True, "withheld_lines": counter.total() + withheld_warnings, "warnings": passed,
            "result_name": result_name}, blob


def _run_cell(source: str, namespace: dict[str, Any]) -> tuple[Any, str]:
    """Execute the cell; return `result` if it sets it, else its last expression, and which one it was."""
    tree = ast.parse(source, CELL_FILENAME)
    last_expression = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
        assert isinstance(last, ast.Expr)
        last_expression = ast.Expression(last.value)

    exec(compile(tree, CELL_FILENAME, "exec"), namespace)
    value = eval(compile(last_expression, CELL_FILENAME, "eval"), namespace) if last_expression else None
    if "result" in namespace:
        return namespace["result"], "result"
    return value, "last expression" if last_expression else "none"


def _describe_exception(exc: BaseException, library_messages: bool) -> dict[str, Any]:
    cell_line = None
    innermost_file = ""
    for frame, line in traceback.walk_tb(exc.__traceback__):
        innermost_file = frame.f_code.co_filename
        if innermost_file == CELL_FILENAME:
            cell_line = line
    return {
        "ok": False,
        "kind": "exception",
        "exception_type": public_type_name(type(exc)),
        "line": cell_line,
        "message": _public_message(exc, innermost_file) if library_messages else None,
    }


def public_type_name(kind: type) -> str:
    """Name an exception class when it comes from Python, numpy, pandas or this library.

    A class can claim any ``__module__``, so the name counts only when that
    module really exports this very class. The monitor checks the name again.
    """
    module = kind.__module__
    trusted = module == "builtins" or module.split(".")[0] in _TRUSTED_MODULE_PREFIXES
    if trusted and getattr(sys.modules.get(module), kind.__qualname__, None) is kind:
        return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    return "an exception class defined outside Python, numpy, pandas and confidential_nb"


def _public_message(exc: BaseException, innermost_file: str) -> str | None:
    """Return the message only when the library's own code raised the exception.

    The library's messages are fixed templates that name shapes, columns and
    parameters, never data values; any other message may contain data.
    """
    if innermost_file.startswith(_PACKAGE_ROOT) and "enclave" not in Path(innermost_file).parts:
        return str(exc)[:_MAX_MESSAGE_CHARS]
    return None


def _filter_warnings(caught: list[warnings.WarningMessage]) -> tuple[list[str], int]:
    """Keep library warnings, once each with a repeat count (cross-validation repeats them per fold)."""
    from ..training import ConvergenceWarning
    from ..training.metrics import UndefinedMetricWarning

    counts: dict[str, int] = {}
    withheld = 0
    for warning in caught:
        text = f"{warning.category.__name__}: {str(warning.message)[:_MAX_MESSAGE_CHARS]}"
        if warning.category in (ConvergenceWarning, UndefinedMetricWarning) and (text in counts or len(counts) < 20):
            counts[text] = counts.get(text, 0) + 1
        else:
            withheld += 1
    passed = [text if count == 1 else f"{text} (raised {count} times)" for text, count in counts.items()]
    return passed, withheld


