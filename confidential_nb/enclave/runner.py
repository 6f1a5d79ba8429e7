"""A runner: executes one cell, or calls one Cape function, on plaintext inputs and returns the encoded result.

Runs in a process forked from the zygote, after `sandbox.isolate_runner`.
What it sends back is the encoded result, or an error that carries only the
exception's type name and its line in the cell (or in the Cape function's
app.py), with counts of the lines it printed and the library warnings as
template ids. A debug run also sends its printed output and exception
message.
"""

from __future__ import annotations

import ast
import errno
import functools
import importlib
import importlib.util
import io
import json
import mmap
import os
import random
import socket
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..protocol import Attachment, ReceivedDescriptor, recv_message, send_message
from .egress import EXCEPTION_MODULES, GENERIC_EXCEPTION, MAX_DEBUG_OUTPUT_CHARS

CELL_FILENAME = "<cell>"
# A Cape function's bundle is written to this folder of the run's scratch directory, and it runs there.
APP_FOLDER = "app"
APP_MODULE = "app"
HANDLER_NAME = "cape_handler"
_LIBRARY_PACKAGES = ("numpy", "pandas", "confidential_nb")
_MAX_MESSAGE_CHARS = 2000
# Smaller encoded frames decode faster as copies than as views of their mapping (0.8 ms against 1.1 ms for
# the 569 x 31 breast-cancer frame, measured here).
IN_PLACE_DECODE_MIN_BYTES = 1024**2
_MAX_WARNING_ENTRIES = 20
# The warm-up cells: an aggregate, then a small version of the training that the demo and the first notebook run.
_WARM_UP_AGGREGATE = "result = {'mean': float(data['number'].mean()), 'columns': list(data.columns)}\n"
_WARM_UP_TRAINING = """\
from confidential_nb.training import LogisticRegression, train_test_split
numbers = data[["number", "count", "target"]]
X_train, X_test, y_train, y_test = train_test_split(numbers, target="target", test_size=0.5, random_state=0)
model = LogisticRegression(epochs=2).fit(X_train, y_train, validation_data=(X_test, y_test))
result = {"accuracy": model.score(X_test, y_test), "model": model}
"""


class LineCounter(io.TextIOBase):
    """A text stream that counts the lines written and keeps the first `keep_chars` characters.

    Outside debug runs `keep_chars` is 0, so the text is discarded and only
    the count leaves the runner.
    """

    def __init__(self, keep_chars: int = 0) -> None:
        self.lines = 0
        self._open_line = False
        self._keep_chars = keep_chars
        self._kept: list[str] = []
        self._kept_chars = 0

    def write(self, text: str) -> int:
        if text:
            self.lines += text.count("\n")
            self._open_line = not text.endswith("\n")
            self._keep(text)
        return len(text)

    def _keep(self, text: str) -> None:
        room = self._keep_chars - self._kept_chars
        if room > 0:
            self._kept.append(text[:room])
            self._kept_chars += min(room, len(text))

    def total(self) -> int:
        return self.lines + (1 if self._open_line else 0)

    def kept_text(self) -> str:
        return "".join(self._kept)


def reseed() -> None:
    """Give this runner fresh random state, so no two runs share the zygote's."""
    import numpy as np

    seed = int.from_bytes(os.urandom(8), "big")
    random.seed(seed)
    np.random.seed(seed % 2**32)


@functools.cache
def _warm_up_frame() -> bytes:
    """Return the encoded synthetic frame of the warm-up, built once in the zygote and inherited by its spares.

    Building and encoding it costs a fresh process several milliseconds of
    first-touch page copies, which a spare need not pay again.
    """
    import numpy as np
    import pandas as pd

    from ..frame_codec import encode_frame

    rows = 16
    frame = pd.DataFrame({
        "number": np.linspace(0.0, 1.0, rows),
        "count": np.arange(rows, dtype=np.int64),
        "flag": np.arange(rows) % 3 == 0,
        "label": pd.Series([f"row {index}" for index in range(rows)], dtype=object),
        "group": pd.Categorical(["a", "b"] * (rows // 2)),
        "target": np.arange(rows) % 2,
    })
    return encode_frame(frame)


def warm_up(run_waiting: Callable[[], bool] = lambda: False, *, training: bool = True) -> None:
    """Run cells on a small synthetic frame, the way a run does, and drop the outcome.

    The first decode and cell run in a fresh process cost several times
    the later ones: pandas finishes setting itself up, and a forked runner
    copies every page it touches for the first time. The zygote calls this
    before it forks, and a spare runner again while it waits, so a run pays
    for neither. The data belongs to no run. Between its steps the warm-up
    stops as soon as `run_waiting` returns True, because a waiting run
    would only be delayed. Without `training`, the cell that trains a
    model is left out.
    """
    from ..frame_codec import decode_frame
    from ..result_codec import decode_result

    encoded = _warm_up_frame()
    decode_frame(encoded, copy=False)
    data = decode_frame(encoded)
    for source in (_WARM_UP_AGGREGATE, _WARM_UP_TRAINING) if training else (_WARM_UP_AGGREGATE,):
        if run_waiting():
            return
        namespace: dict[str, Any] = {"__name__": "__cell__", "__builtins__": __builtins__, "data": data}
        reply, blob = execute(source, namespace)
        if blob is None:
            raise RuntimeError(f"the runner warm-up cell failed: {reply}")
        decode_result(blob)


def serve(channel: socket.socket) -> None:
    """Receive one run request (a cell or a Cape function), execute it, send the reply."""
    header, attachments = recv_message(channel, accept_descriptors=True)
    debug = header.get("debug") is True
    _send_progress_to(channel)
    try:
        if header.get("op") == "invoke":
            # The bundle's zip file follows the input's payload.
            payload, kind = _invoke_input(header, attachments[:-1])
            bundle_zip = _as_bytes(attachments[-1])
        else:
            namespace = _bind_inputs(header, attachments)
    except Exception as exc:
        send_message(channel, {"ok": False, "kind": "input", "message": f"failed to decode the inputs ({type(exc).__name__})"})
        return
    finally:
        # The received descriptors close before the code runs. NOTE: Python's mmap keeps a duplicate of each
        # mapped one (Python 3.11 has no trackfd=False), which the monitor's seals keep from writing.
        for attachment in attachments:
            if isinstance(attachment, ReceivedDescriptor):
                attachment.close()

    if header.get("op") == "invoke":
        reply, blob = invoke(bundle_zip, payload, kind, debug=debug)
    else:
        reply, blob = execute(str(header["source"]), namespace, debug=debug)
    send_message(channel, reply, [blob] if blob is not None else [])


def _send_progress_to(channel: socket.socket) -> None:
    """Have the library's training loops send their progress records to the monitor on `channel`.

    The cell shares this process, so it could send records too. The
    monitor accepts only well-formed records, within a rate limit and a
    share of the result budget, so a forged one carries no more than the
    result could.
    """
    from ..training import progress

    def send(record: dict[str, Any]) -> None:
        try:
            send_message(channel, {"op": "progress", "record": record})
        except (OSError, ValueError):
            # A channel the cell closed, or a record JSON cannot carry: training goes on without progress.
            progress.set_sink(None)

    progress.set_sink(send)


def _bind_inputs(header: dict[str, Any], attachments: list[Attachment]) -> dict[str, Any]:
    """Build the cell's namespace: each input by name, a large DataFrame decoded in place from its private mapping."""
    from ..frame_codec import decode_frame
    from ..result_codec import decode_result

    namespace: dict[str, Any] = {"__name__": "__cell__", "__builtins__": __builtins__}
    in_memory = iter(attachments)
    for spec in header.get("inputs", []):
        # A file input was decrypted by the monitor into this run's scratch directory, the working directory.
        payload = Path(spec["file"]).read_bytes() if spec.get("file") else _plaintext(next(in_memory))
        if spec["kind"] == "dataframe":
            # Decoding in place saves copying a large frame, but costs more than a copy for a small one.
            namespace[spec["name"]] = decode_frame(payload, copy=len(payload) < IN_PLACE_DECODE_MIN_BYTES)
        else:
            namespace[spec["name"]] = bytes(payload)
    if header.get("has_params"):
        params = decode_result(_as_bytes(next(in_memory)))
        if not isinstance(params, dict):
            raise TypeError("parameters must decode to a dict")
        namespace.update(params)
    return namespace


def _invoke_input(header: dict[str, Any], attachments: list[Attachment]) -> tuple[bytes, str]:
    """Return the plaintext of a Cape function's one input and its kind, or b"" and "bytes" without an input."""
    specs = header.get("inputs", [])
    if not specs:
        return b"", "bytes"
    spec = specs[0]
    # A file input was decrypted by the monitor into this run's scratch directory, the working directory.
    payload = Path(spec["file"]).read_bytes() if spec.get("file") else bytes(_plaintext(attachments[0]))
    return payload, str(spec["kind"])


def _plaintext(attachment: Attachment) -> bytes | mmap.mmap:
    """Return an input's plaintext: a descriptor's file mapped privately, so writes stay in this process, or the bytes sent.

    The monitor seals its memory files against writes, so even this
    process's descriptor cannot change what a later run receives.
    """
    if not isinstance(attachment, ReceivedDescriptor):
        return attachment
    if attachment.length == 0:
        return b""
    return mmap.mmap(attachment.fd, attachment.length, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def _as_bytes(attachment: Attachment) -> bytes:
    if isinstance(attachment, ReceivedDescriptor):
        raise TypeError("expected the attachment as bytes, not as a file descriptor")
    return attachment


def handler_bytes(payload: bytes, kind: str) -> bytes:
    """Return the bytes a Cape function's handler receives for an input's plaintext.

    A handler takes bytes, so a sealed DataFrame arrives as CSV without the
    index, ``frame.to_csv(index=False).encode()``. Bytes arrive unchanged,
    which is how Cape's tutorials seal their CSV files.
    """
    from ..frame_codec import decode_frame

    if kind != "dataframe":
        return payload
    return decode_frame(payload).to_csv(index=False).encode()


def execute(source: str, namespace: dict[str, Any], *, debug: bool = False) -> tuple[dict[str, Any], bytes | None]:
    """Run `source` in `namespace`; return the reply header and the encoded result (see `run_guarded`)."""
    return run_guarded(lambda: _run_cell(source, namespace), CELL_FILENAME, debug=debug)


def invoke(bundle_zip: bytes, payload: bytes, kind: str, *, debug: bool = False) -> tuple[dict[str, Any], bytes | None]:
    """Write the bundle to a fresh folder, call its ``cape_handler(input_bytes)`` there; return the reply and result.

    The folder is ``app`` in the run's scratch directory, so the handler
    works on a private copy: it may open its own files by relative path and
    write new ones, and nothing it writes outlives the run. Exceptions are
    reported with their line in that copy's app.py.
    """
    app_folder = Path(os.getcwd()) / APP_FOLDER
    # The CSV of a DataFrame input is made inside the guarded call, so running out of memory there is reported as such.
    return run_guarded(lambda: _call_handler(app_folder, bundle_zip, handler_bytes(payload, kind)),
                       str(app_folder / "app.py"), debug=debug)


def run_guarded(body: Callable[[], tuple[Any, str]], filename: str, *,
                debug: bool = False) -> tuple[dict[str, Any], bytes | None]:
    """Call `body`, which returns the value and how it was found; return the reply header and the encoded result.

    Outside debug runs the reply carries no text written by the code or
    raised by it: printed output is only counted, exceptions leave as type
    names with their line in `filename`, and library warnings as template
    ids with numeric arguments. A debug run also returns its printed output,
    up to `MAX_DEBUG_OUTPUT_CHARS`, its other warnings and its exception
    message. The monitor checks all of this again, because the code
    controls this process.
    """
    from ..errors import EncodingError
    from ..result_codec import encode_result

    counter = LineCounter(MAX_DEBUG_OUTPUT_CHARS if debug else 0)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = counter
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Every warning is caught, so repeats can be counted instead of silently merged.
            warnings.simplefilter("always")
            value, result_name = body()
    except MemoryError:
        return {"ok": False, "kind": "resource", "resource": "memory"}, None
    except OSError as exc:
        # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG instead.
        if exc.errno == errno.EFBIG:
            return {"ok": False, "kind": "resource", "resource": "file size"}, None
        return _describe_exception(exc, counter, debug, filename), None
    except BaseException as exc:  # Anything the code raises, SystemExit included, is reported.
        return _describe_exception(exc, counter, debug, filename), None
    finally:
        sys.stdout, sys.stderr = saved

    library, other = _filter_warnings(caught)
    if debug:
        for warning in other:
            counter.write(warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno))
    else:
        counter.lines += len(other)
    output = _output_fields(counter, debug)
    try:
        blob = encode_result(value)
    except EncodingError as exc:
        # The path and type may name data, such as a dict key, so they leave only in debug runs.
        message = str(exc)[:_MAX_MESSAGE_CHARS] if debug else None
        return {"ok": False, "kind": "encoding", "message": message, **output}, None
    except MemoryError:
        return {"ok": False, "kind": "resource", "resource": "memory"}, None
    return {"ok": True, "warnings": library, "result_name": result_name, **output}, blob


def _output_fields(counter: LineCounter, debug: bool) -> dict[str, Any]:
    """Return the reply fields about printed output: the kept text in debug runs, and the count of lines withheld."""
    if not debug:
        return {"withheld_lines": counter.total()}
    text = counter.kept_text()
    shown = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    return {"output": text, "withheld_lines": max(0, counter.total() - shown)}


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


def _call_handler(app_folder: Path, bundle_zip: bytes, input_bytes: bytes) -> tuple[Any, str]:
    """Write the bundle to `app_folder`, import its app.py from there and return what its handler returns."""
    from ..bundles import read_zip, write_bundle

    write_bundle(read_zip(bundle_zip), app_folder)
    os.chdir(app_folder)
    # First on sys.path, so that the bundle's vendored packages import before installed ones.
    sys.path.insert(0, str(app_folder))
    module = _import_app(app_folder / "app.py")

    value = getattr(module, HANDLER_NAME)(input_bytes)
    return plain_numbers(value), "return value"


def _import_app(path: Path) -> Any:
    """Import `path` as the module ``app``, after dropping any ``app`` module already cached.

    The file is loaded by its path, because an ``app`` package folder in
    the bundle, or one installed, would otherwise be found before app.py.
    """
    for name in [name for name in sys.modules if name == APP_MODULE or name.startswith(APP_MODULE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()

    spec = importlib.util.spec_from_file_location(APP_MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[APP_MODULE] = module
    spec.loader.exec_module(module)
    return module


def plain_numbers(value: Any) -> Any:
    """Return `value` with numpy bool, integer, float and complex scalars replaced by Python numbers.

    The walk enters only plain dicts (keys too), lists and tuples, visits
    each container once and leaves cycles, and containers nested deeper than
    the result format allows, as they are, so the encoder reports them. A
    Cape handler's result then prints as ``{'accuracy': 0.92}`` instead of
    ``{'accuracy': np.float64(0.92)}``.
    """
    import numpy as np

    from ..result_codec import MAX_DEPTH

    converted: dict[int, Any] = {}

    def convert(item: Any, depth: int) -> Any:
        if isinstance(item, (np.bool_, np.number)) and type(item) is item.dtype.type:
            return item.item()
        kind = type(item)
        if kind not in (dict, list, tuple) or depth > MAX_DEPTH:
            return item
        if id(item) in converted:
            return converted[id(item)]

        # Until it is finished, a container stands for itself, so a cycle ends at its start.
        converted[id(item)] = item
        if kind is dict:
            result: Any = {convert(key, depth + 1): convert(entry, depth + 1) for key, entry in item.items()}
        else:
            result = kind(convert(entry, depth + 1) for entry in item)
        converted[id(item)] = result
        return result

    return convert(value, 0)


def _describe_exception(exc: BaseException, counter: LineCounter, debug: bool, filename: str) -> dict[str, Any]:
    cell_line = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            cell_line = line
    return {
        "ok": False,
        "kind": "exception",
        "exception_type": public_type_name(type(exc)),
        "line": cell_line,
        "message": _exception_message(exc) if debug else None,
        **_output_fields(counter, debug),
    }


def _exception_message(exc: BaseException) -> str:
    try:
        return str(exc)[:_MAX_MESSAGE_CHARS]
    except Exception:  # The cell's own __str__ may raise, and a debug run then shows no message.
        return ""


def public_type_name(kind: type) -> str:
    """Name an exception class of Python, numpy, pandas or this library, or return the generic label.

    Only classes that a module in `EXCEPTION_MODULES` really exports count,
    because a class can claim any ``__module__``. A class from elsewhere in
    numpy, pandas or this library is named by its nearest such base class,
    such as TypeError for numpy's internal UFuncTypeError. A class defined
    anywhere else, the cell included, gets the generic label, even when it
    subclasses or is named like a built-in. The monitor checks the name again.
    """
    candidates = kind.__mro__ if kind.__module__.split(".")[0] in _LIBRARY_PACKAGES else (kind,)
    for candidate in candidates:
        name = _exported_name(candidate)
        if name is not None:
            return name
    return GENERIC_EXCEPTION


def _exported_name(kind: type) -> str | None:
    module = kind.__module__
    if module not in EXCEPTION_MODULES or getattr(sys.modules.get(module), kind.__qualname__, None) is not kind:
        return None
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _filter_warnings(caught: list[warnings.WarningMessage]) -> tuple[list[dict[str, Any]], list[warnings.WarningMessage]]:
    """Split the caught warnings into library warnings, as template entries with repeat counts, and all others.

    A warning of a library class made from plain text, or with arguments
    the template does not take, leaves only as its class name. At most
    `_MAX_WARNING_ENTRIES` distinct entries are kept; later ones count as
    other warnings.
    """
    from ..library_warnings import TemplatedWarning, render_message
    from ..training import ConvergenceWarning
    from ..training.metrics import UndefinedMetricWarning

    counts: dict[str, int] = {}
    entries: dict[str, dict[str, Any]] = {}
    other: list[warnings.WarningMessage] = []
    for warning in caught:
        message = warning.message
        if warning.category not in (ConvergenceWarning, UndefinedMetricWarning) or not isinstance(message, TemplatedWarning):
            other.append(warning)
            continue
        template, arguments = message.template_id, message.template_args or {}
        try:
            render_message(str(template), arguments)
        except ValueError:
            template, arguments = f"{warning.category.__name__}.untemplated", {}
        entry = {"template": template, "args": arguments}
        key = json.dumps(entry, sort_keys=True)
        if key not in counts and len(counts) >= _MAX_WARNING_ENTRIES:
            other.append(warning)
            continue
        counts[key] = counts.get(key, 0) + 1
        entries[key] = entry
    return [dict(entry, count=counts[key]) for key, entry in entries.items()], other
