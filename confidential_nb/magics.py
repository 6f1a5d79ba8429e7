"""IPython magics: ``%cape_seal``, ``%%cape``, ``%cape_start``, ``%cape_status``, ``%cape_key`` and ``%cape_run``.

Each magic only parses its line and calls the plain functions below, which
work on a namespace dict and need no running shell.
"""

from __future__ import annotations

import argparse
import gc
import keyword
import logging
import math
import re
import sys
import time
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .errors import ConfidentialNBError
from .limits import DEFAULT_MEMORY_BYTES, DEFAULT_TIMEOUT_SECONDS, MEMORY_PER_INPUT_BYTE, format_size, parse_size
from .sandbox import describe_layers

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from .background import BackgroundRun
    from .keys import PublicKey
    from .results import RunResult
    from .sealing import Sealed

logger = logging.getLogger("confidential_nb.magics")

DEFAULT_BIND_NAME = "data"
"""In-cell variable of the unsealed DataFrame when there is one input and no ``--as``."""

DEFAULT_OUT_NAME = "result"
"""Notebook variable that receives the `RunResult` when ``--out`` is not given."""

_CELL_RESULT_NAME = "result"
"""Variable whose value a run sends back, so no input or parameter may use the name."""

_OUTPUT_CACHE_NAME = re.compile(r"^(_{1,3}|_\d+)$")
"""Names under which IPython's displayhook keeps outputs: _, __, ___ and _N."""

_TIMEOUT_HELP = (
    f"Wall-clock limit of the run in seconds (default {DEFAULT_TIMEOUT_SECONDS:g}, that is "
    f"{DEFAULT_TIMEOUT_SECONDS / 60:g} minutes). The run is stopped after it."
)
_MEMORY_HELP = (
    f"Memory limit of the run, such as 8G or 512MiB (default {format_size(DEFAULT_MEMORY_BYTES)} "
    f"or {MEMORY_PER_INPUT_BYTE}x the size of the sealed inputs, whichever is larger). "
    "The limit counts what the enclave's runner has already loaded (Python, numpy, pandas)."
)


@magics_class
class ConfidentialMagics(Magics):
    """The magics of confidential_nb, added to a shell by `register_magics`."""

    @property
    def _shell(self) -> InteractiveShell:
        if self.shell is None:
            raise RuntimeError("confidential_nb magics used before being registered with a shell")
        return self.shell

    @magic_arguments()
    @argument("name", help="Name of the notebook variable that contains the DataFrame (or bytes) to seal.")
    @argument(
        "--drop",
        action="store_true",
        help="Also delete the variable and its entries in Out, _, __, ___ and _N, then report "
        "how many other references to the same object remain in the kernel. Copies derived "
        "from it, such as df.head() or df.drop(...), are not tracked.",
    )
    @argument(
        "--no-schema",
        action="store_true",
        help="Keep the column names, dtypes and row count out of the sealed header, so the "
        "analyst cannot read them (they are public by default).",
    )
    @argument(
        "--allow-debug",
        action="store_true",
        help="Let %%%%cape --debug run on the sealed data, which shows what the cell prints and its "
        "exception messages (not allowed by default).",
    )
    @line_magic
    def cape_seal(self, line: str) -> Sealed:
        """Seal a DataFrame to the enclave's attested key and return the `Sealed` input.

        Only the enclave can unseal the result. With ``--drop`` the plaintext
        also leaves the kernel's namespace and output history.

        Example::

            df = pd.read_csv("patients.csv")
            sealed = %cape_seal df --drop
        """
        args = _parse_magic_line(self.cape_seal, line, "%cape_seal")
        sealed = seal_variable(self._shell.user_ns, args.name, schema_public=not args.no_schema,
                               allow_debug=args.allow_debug)

        if args.drop:
            remaining = drop_variable(self._shell, args.name)
            print(format_drop_report(args.name, remaining))
        return sealed

    # The parser's name gets one "%" added in the usage line, so "%cape" reads "%%cape".
    @magic_arguments(name="%cape")
    @argument(
        "--input",
        dest="inputs",
        metavar="NAME",
        action="append",
        default=[],
        help="Notebook variable holding a Sealed input (made by %%cape_seal). Repeat the flag for several inputs.",
    )
    @argument(
        "--as",
        dest="bind_as",
        metavar="VAR",
        help=f"Variable that contains the unsealed DataFrame inside the cell (default {DEFAULT_BIND_NAME!r}). "
        "With several inputs, a comma-separated list with one name per input; without it each "
        "input keeps its notebook variable name.",
    )
    @argument(
        "--param",
        dest="params",
        metavar="NAME",
        action="append",
        default=[],
        help="Notebook variable sent into the run under the same name. Repeatable. The value may be "
        "None, a bool, number, str or bytes, a numeric numpy array or scalar, a pandas DataFrame or "
        "Series, or a list, tuple or dict (with str or int keys) of these.",
    )
    @argument(
        "--out",
        metavar="NAME",
        default=DEFAULT_OUT_NAME,
        help=f"Notebook variable that receives the RunResult (default {DEFAULT_OUT_NAME!r}).",
    )
    @argument("--timeout", metavar="SECONDS", help=_TIMEOUT_HELP)
    @argument("--memory", metavar="SIZE", help=_MEMORY_HELP)
    @argument(
        "--debug",
        action="store_true",
        help="Run in the separate debug enclave, started on first use, which shows what the cell prints "
        "and its exception messages. Every input's policy must allow debug runs, and the receipt says debug.",
    )
    @argument(
        "--background",
        action="store_true",
        help="Return at once and go on running in the background; the --out variable receives a BackgroundRun "
        "whose result() returns the RunResult. Background runs go on in parallel, one per core.",
    )
    @cell_magic
    def cape(self, line: str, cell: str) -> None:
        """Run the cell in the enclave on sealed inputs and bind the `RunResult`.

        The cell never runs in this kernel. Its value is the variable
        ``result`` when the cell sets it, else its last expression; only that
        value comes back, with a signed receipt. Printed output stays in the
        enclave and only its line count is shown, unless ``--debug`` runs the
        cell in the debug enclave. When the value contains a training History,
        the loss and accuracy curves are displayed.

        Example::

            %%cape --input sealed --as data --param epochs --out run
            from confidential_nb.training import LogisticRegression, train_test_split
            X_train, X_test, y_train, y_test = train_test_split(data, target="target", random_state=0)
            model = LogisticRegression(epochs=epochs).fit(X_train, y_train, validation_data=(X_test, y_test))
            result = {"accuracy": model.score(X_test, y_test), "model": model}

        Afterwards ``run.value["accuracy"]``, ``run.plot()`` and
        ``run.to_frame()`` are available in the notebook.
        """
        # IPython leaves frames with this local out of tracebacks, so an enclave
        # error shows as one clear exception rather than the magic's internals.
        __tracebackhide__ = True

        args = _parse_magic_line(self.cape, line, "%%cape")
        namespace = self._shell.user_ns
        if not cell.strip():
            raise UsageError("the %%cape cell is empty: write the code to run in the enclave below the %%cape line")
        inputs = resolve_inputs(namespace, args.inputs, args.bind_as)
        params = resolve_params(namespace, args.params)
        check_run_names(list(inputs), list(params))
        timeout = parse_timeout(args.timeout)
        memory = parse_memory(args.memory)
        out_name = validate_identifier(args.out, "--out")

        if args.background:
            namespace[out_name] = submit_to_enclave(cell, inputs, params, timeout=timeout, memory=memory,
                                                    debug=args.debug)
            print(f"running in the background: {out_name}.result() waits for the RunResult, "
                  f"{out_name}.cancel() stops the run")
            return
        try:
            result = run_in_enclave(cell, inputs, params, timeout=timeout, memory=memory, debug=args.debug)
        except ConfidentialNBError as error:
            # The client's frames tell the user nothing about their cell, and the
            # message already names the cause, so the error is shown from here.
            raise with_magic_line(error).with_traceback(None)
        except KeyboardInterrupt as interrupt:
            raise interrupt.with_traceback(None)

        namespace[out_name] = result
        show_result(result)

    @magic_arguments(name="%cape_run")
    @argument("function", help="The deployed function's id or name, as 'confidential-nb deploy' printed it.")
    @argument("--input", dest="input", metavar="SEALED", help="Name of the notebook variable with the Sealed input.")
    @argument("--out", default="run", help="Name of the variable that receives the RunResult (default: run).")
    @argument("--timeout", metavar="SECONDS", help=_TIMEOUT_HELP)
    @line_magic
    def cape_run(self, line: str) -> None:
        """Run a deployed Cape function's ``cape_handler`` on a sealed input and bind the `RunResult`.

        Example::

            %cape_run word-count --input sealed --out counts

        Afterwards ``counts.value`` holds what ``cape_handler`` returned.
        """
        __tracebackhide__ = True
        from . import registry
        from .client import default_enclave
        from .progress import run_with_progress

        args = _parse_magic_line(self.cape_run, line, "%cape_run")
        namespace = self._shell.user_ns
        sealed = next(iter(resolve_inputs(namespace, [args.input], None).values())) if args.input else None
        timeout = parse_timeout(args.timeout)
        out_name = validate_identifier(args.out, "--out")

        try:
            ref = registry.resolve(args.function)
            bundle = registry.load_bundle(ref)
            # A line magic may follow other output in its cell, so the progress bar leaves an empty display instead.
            result = run_with_progress(
                lambda progress: default_enclave().invoke(bundle, sealed, timeout=timeout, progress=progress),
                clear_cell_output=False)
        except ConfidentialNBError as error:
            raise error.with_traceback(None)

        namespace[out_name] = result
        show_result(result)

    @magic_arguments()
    @argument("--debug", action="store_true", help="Start the separate debug enclave instead.")
    @line_magic
    def cape_start(self, line: str) -> None:
        """Start the shared enclave now, so the first %%cape run does not wait for it, and print how long it took.

        Without this magic the enclave starts on the first run. It stays up
        until the kernel ends.

        Example::

            %cape_start
        """
        __tracebackhide__ = True
        from .client import default_enclave

        args = _parse_magic_line(self.cape_start, line, "%cape_start")
        enclave = default_enclave(debug=args.debug)
        was_running = enclave.running
        started = time.perf_counter()
        try:
            status = enclave.status()
        except ConfidentialNBError as error:
            raise error.with_traceback(None)
        print(format_start(status, None if was_running else time.perf_counter() - started))

    @line_magic
    def cape_status(self, line: str) -> None:
        """Print the status of the shared enclave: processes, key, sandbox layers.

        Example::

            %cape_status
        """
        from .client import default_enclave

        print(format_status(default_enclave().status()))

    @line_magic
    def cape_key(self, line: str) -> None:
        """Print the fingerprint of the enclave key that `%cape_seal` seals to, then its KEM and measurements.

        Compare the fingerprint with the one the data owner sealed to
        (``Sealed.recipient``), and the measurements with the ones the data
        owner expects (``confidential-nb measurements export``).

        Example::

            %cape_key
        """
        from .client import default_enclave

        enclave = default_enclave()
        key = enclave.public_key()
        print(key_fingerprint(key))
        print(f"kem: {key.kem}")
        for index, value in sorted(enclave.attestation().measurements.items()):
            print(f"PCR {index}: {value}")


def _parse_magic_line(magic: Any, line: str, magic_name: str) -> argparse.Namespace:
    """Parse the options of ``magic``, and on a parse error name the help command that lists them."""
    try:
        return parse_argstring(magic, line)
    except UsageError as error:
        raise UsageError(f"{error}; run {magic_name}? for the options") from None


def register_magics(ipython: InteractiveShell) -> None:
    """Register the confidential_nb magics with ``ipython``, and a PNG formatter for matplotlib Figures."""
    ipython.register_magics(ConfidentialMagics)
    register_figure_formatter(ipython)


def register_figure_formatter(ipython: InteractiveShell) -> None:
    """Render a matplotlib Figure that is a cell's value, such as ``run.plot()``, as a PNG.

    `RunResult.plot` builds its Figure without pyplot, and IPython shows such a
    Figure only as text unless pyplot's inline backend has registered a
    formatter. A formatter already registered, such as the inline backend's,
    is kept. The type is registered by name, so matplotlib is not imported here.
    """
    if ipython.display_formatter is None:
        logger.warning("the shell has no display formatter, so matplotlib Figures show as text only")
        return
    formatter = ipython.display_formatter.formatters["image/png"]
    if _has_figure_printer(formatter):
        return
    formatter.for_type_by_name("matplotlib.figure", "Figure", _figure_png)


def _has_figure_printer(formatter: Any) -> bool:
    if ("matplotlib.figure", "Figure") in formatter.deferred_printers:
        return True
    figure_module = sys.modules.get("matplotlib.figure")
    return figure_module is not None and figure_module.Figure in formatter.type_printers


def _figure_png(figure: Any) -> bytes | None:
    from IPython.core.pylabtools import print_figure

    png: bytes | None = print_figure(figure, "png")
    return png


def seal_variable(namespace: Mapping[str, Any], name: str, *, schema_public: bool = True,
                  allow_debug: bool = False) -> Sealed:
    """Seal the DataFrame or bytes in the variable ``name`` of ``namespace``.

    Raises UsageError when the variable is missing or has another type.
    """
    import pandas as pd

    from .policy import Policy
    from .sealing import seal

    if name not in namespace:
        raise UsageError(f"no variable named {name!r} in the notebook: load the DataFrame into it first")
    value = namespace[name]
    if not isinstance(value, (pd.DataFrame, bytes)):
        raise UsageError(
            f"variable {name!r} contains a value of type {type(value).__name__}, but %cape_seal seals "
            "a pandas DataFrame or bytes; convert it first (for a Series, use .to_frame())"
        )

    policy = Policy(schema_public=schema_public, allow_debug=allow_debug)
    return seal(value, policy=policy)


def drop_variable(shell: InteractiveShell, name: str) -> list[str]:
    """Delete ``name`` and the output-history entries of its value, and return what still refers to it.

    The entries removed are ``Out[N]``, ``_N``, ``_``, ``__``, ``___`` (in the
    user namespace and its hidden part), the displayhook's copies and the last
    execution result, when they are the same object. Other variables
    bound to the value are kept. The returned list names each remaining
    reference: a variable name, or the type of the object that holds it.
    """
    # No comprehension in this function or in its helpers may use `value`: it
    # would capture it in a closure cell, which then counts as a reference.
    namespace = shell.user_ns
    value = namespace.pop(name)

    # The displayhook also records _, __, ___ and _N in user_ns_hidden.
    for cache_namespace in (namespace, shell.user_ns_hidden):
        for cache_name in _keys_bound_to(cache_namespace, value):
            if _OUTPUT_CACHE_NAME.match(cache_name):
                del cache_namespace[cache_name]
    output_cache = shell.history_manager.output_hist if shell.history_manager is not None else {}
    for number in _keys_bound_to(output_cache, value):
        del output_cache[number]
    for attribute in ("_", "__", "___"):
        if getattr(shell.displayhook, attribute, None) is value:
            setattr(shell.displayhook, attribute, None)
    last = shell.last_execution_result
    if last is not None and last.result is value:
        last.result = None

    return _describe_referrers(value, namespace)


def _keys_bound_to(mapping: Mapping[Any, Any], value: Any) -> list[Any]:
    keys = []
    for key, item in mapping.items():
        if item is value:
            keys.append(key)
    return keys


def _describe_referrers(value: Any, namespace: Mapping[str, Any]) -> list[str]:
    descriptions = []
    for alias in sorted(_keys_bound_to(namespace, value)):
        descriptions.append(f"variable {alias!r}")

    # NOTE: frames are skipped because the callers' own frames hold the value
    # at this point. A reference kept only by another running frame, such as
    # a suspended generator, is therefore not reported.
    for referrer in gc.get_referrers(value):
        if referrer is not namespace and not isinstance(referrer, types.FrameType):
            descriptions.append(f"a {type(referrer).__name__}")
    return descriptions


def format_drop_report(name: str, remaining: list[str]) -> str:
    """Return the message that ``%cape_seal --drop`` prints.

    The references counted are to the dropped object itself. Copies derived
    from it are separate objects, and the message states that it does not track them.
    """
    untracked = (
        f"Copies derived from it, such as {name}.head() or {name}.drop(...), are not tracked, "
        "so delete any that you made."
    )
    if not remaining:
        return (
            f"Dropped {name!r} from the namespace and output history, and no other reference "
            f"to this object remains. {untracked}"
        )
    count = len(remaining)
    references = "reference to this object remains" if count == 1 else "references to this object remain"
    return (
        f"Dropped {name!r} from the namespace and output history, but {count} other {references} "
        f"({', '.join(remaining)}). Delete {'it' if count == 1 else 'them'} to remove the object "
        f"from the kernel. {untracked}"
    )


def resolve_inputs(namespace: Mapping[str, Any], names: list[str], bind_as: str | None) -> dict[str, Sealed]:
    """Map each in-cell variable name to the Sealed input named in ``names``.

    Raises UsageError for a name that is missing or not a Sealed, naming the
    Sealed variables that do exist.
    """
    from .sealing import Sealed

    for name in names:
        if not isinstance(namespace.get(name), Sealed):
            raise UsageError(_describe_bad_input(namespace, name, Sealed))

    bind_names = _bind_names(names, bind_as)
    return {bind_name: namespace[name] for bind_name, name in zip(bind_names, names)}


def _describe_bad_input(namespace: Mapping[str, Any], name: str, sealed_type: type) -> str:
    if name not in namespace:
        problem = f"--input {name!r}: no variable of that name exists"
    else:
        problem = f"--input {name!r} contains a value of type {type(namespace[name]).__name__}, not a Sealed input"

    available = sorted(key for key, item in namespace.items() if isinstance(item, sealed_type) and not key.startswith("_"))
    if available:
        return f"{problem}. Sealed variables in the notebook: {', '.join(available)}"
    return f"{problem}, and the notebook has no Sealed variables. Make one with: sealed = %cape_seal df"


def _bind_names(names: list[str], bind_as: str | None) -> list[str]:
    if bind_as is None:
        bind_names = [DEFAULT_BIND_NAME] if len(names) == 1 else list(names)
    else:
        bind_names = [part.strip() for part in bind_as.split(",")]
        if len(bind_names) != len(names):
            raise UsageError(
                f"--as {bind_as!r} gives {len(bind_names)} names for {len(names)} inputs: "
                "give one comma-separated name per --input, in the same order"
            )

    for bind_name in bind_names:
        validate_identifier(bind_name, "--as")
    duplicates = sorted({bind_name for bind_name in bind_names if bind_names.count(bind_name) > 1})
    if duplicates:
        raise UsageError(f"inputs bound twice to {', '.join(duplicates)}: give each --input its own name with --as")
    return bind_names


def resolve_params(namespace: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """Return the values of the notebook variables ``names``, keyed by name.

    Raises UsageError for a name that does not exist.
    """
    missing = [name for name in names if name not in namespace]
    if missing:
        raise UsageError(
            f"--param {missing[0]!r}: no variable of that name exists in the notebook; assign it in a cell before %%cape"
        )
    return {name: namespace[name] for name in names}


def check_run_names(input_names: list[str], param_names: list[str]) -> None:
    """Raise UsageError when an in-cell name is reserved or used by both an input and a parameter."""
    for name in [*input_names, *param_names]:
        if name == _CELL_RESULT_NAME:
            raise UsageError(
                f"{name!r} cannot name an input or a parameter: inside the cell it is the value sent back. "
                "Rename the notebook variable, or give the input another name with --as"
            )
    shared = sorted(set(input_names) & set(param_names))
    if shared:
        raise UsageError(f"{shared[0]!r} names both an input and a --param: rename one of them (--as renames the input)")


def validate_identifier(name: str, flag: str) -> str:
    """Return ``name`` when it is a valid Python variable name, else raise UsageError naming ``flag``."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"{flag} {name!r} is not a valid Python variable name")
    return name


def parse_timeout(text: str | None) -> float | None:
    """Parse the ``--timeout`` value in seconds; None means the default."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"invalid --timeout {text!r}: give a positive number of seconds, such as 120")
    return seconds


def parse_memory(text: str | None) -> int | None:
    """Parse the ``--memory`` value into bytes; None means the default."""
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as error:
        raise UsageError(f"invalid --memory: {error}") from None


def run_in_enclave(
    source: str,
    inputs: Mapping[str, Sealed],
    params: Mapping[str, Any],
    *,
    timeout: float | None = None,
    memory: int | None = None,
    debug: bool = False,
) -> RunResult:
    """Run ``source`` in the shared enclave, or with ``debug`` in the shared debug enclave, and return its `RunResult`.

    Errors of the run (subclasses of ConfidentialNBError) propagate unchanged.
    """
    __tracebackhide__ = True
    from .client import default_enclave

    logger.debug("running a cell with inputs %s and params %s, debug %s", sorted(inputs), sorted(params), debug)
    from .progress import run_with_progress

    enclave = default_enclave(debug=debug)
    # The cell's whole output comes from this magic, so the progress bar may clear it when it closes.
    return run_with_progress(lambda progress: enclave.run(source, inputs=dict(inputs), params=dict(params),
                                                          timeout=timeout, memory=memory, progress=progress))


def with_magic_line(error: ConfidentialNBError) -> ConfidentialNBError:
    """Return `error` with its cell line also counted as Jupyter counts it, from the ``%%cape`` line.

    The enclave runs the cell's body, so line 1 is the line below
    ``%%cape``. The error keeps that number in its ``line`` attribute.
    """
    from .errors import EnclaveError

    line = getattr(error, "line", None)
    if type(error) is not EnclaveError or not line:
        return error
    text = str(error).replace(f"at line {line} of the cell",
                              f"at line {line} of the cell (line {line + 1} counting the %%cape line)", 1)
    return EnclaveError(text, exception_type=error.exception_type, line=line)


def submit_to_enclave(
    source: str,
    inputs: Mapping[str, Sealed],
    params: Mapping[str, Any],
    *,
    timeout: float | None = None,
    memory: int | None = None,
    debug: bool = False,
) -> BackgroundRun:
    """Start ``source`` in the background in the shared (or, with ``debug``, the debug) enclave."""
    from .client import default_enclave

    enclave = default_enclave(debug=debug)
    return enclave.submit(source, inputs=dict(inputs), params=dict(params), timeout=timeout, memory=memory)


def format_start(status: Mapping[str, Any], seconds: float | None) -> str:
    """Return a one-line description of a started enclave: its start time (None: it was already up), key and layers."""
    layers = status.get("layers") or {}
    active = sum(1 for layer in layers.values() if layer.get("active"))
    kind = "debug enclave" if status.get("debug") else "enclave"
    when = "was already running" if seconds is None else f"started in {seconds:.2f} s"
    return (f"{kind} {when}: key {str(status.get('key_fingerprint'))[:16]}, {active} of {len(layers)} sandbox "
            f"layers active, up to {status.get('max_parallel_runs')} runs at once")


def show_result(result: RunResult) -> None:
    """Display what a ``%%cape`` cell shows: the receipt line, the printed output or its line count, and the curves."""
    from IPython.display import display

    from .client import withheld_advice

    # The client has already verified the receipt; the function checksum is stable for a given cell.
    if result.receipt is not None:
        kind = "debug run receipt" if result.debug else "receipt"
        print(f"{kind} verified (function {result.receipt.function_checksum[:12]})")
    if result.output:
        print(result.output, end="" if result.output.endswith("\n") else "\n")
    if result.debug and result.withheld_lines:
        noun = "line" if result.withheld_lines == 1 else "lines"
        print(f"{result.withheld_lines} more {noun} of output stayed in the enclave, past the debug output limit")
    elif result.withheld_lines:
        print(withheld_advice(result.withheld_lines) + ".")
    if result.history is not None:
        display(figure_bundle(result.plot()), raw=True)


def figure_bundle(figure: Any) -> dict[str, Any]:
    """Render a matplotlib Figure into a PNG display bundle.

    Displaying the Figure object itself shows only its text repr unless
    pyplot's inline backend has been activated, so the PNG is rendered here.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return {"image/png": buffer.getvalue(), "text/plain": "<Figure: loss and accuracy per epoch>"}


def format_status(status: Mapping[str, Any], indent: int = 0) -> str:
    """Format an enclave status dict as indented ``key: value`` lines."""
    lines = []
    for key, value in status.items():
        prefix = " " * indent + f"{key}:"
        if key == "layers" and isinstance(value, Mapping):
            lines.append(prefix)
            lines += [" " * (indent + 2) + line for line in describe_layers(dict(value))]
        elif isinstance(value, Mapping) and value:
            lines.append(prefix)
            lines.append(format_status(value, indent + 2))
        elif isinstance(value, (list, tuple)):
            lines.append(f"{prefix} {', '.join(str(item) for item in value) or '(none)'}")
        else:
            lines.append(f"{prefix} {value}")
    return "\n".join(lines)


def key_fingerprint(public_key: PublicKey) -> str:
    """Return the hex fingerprint of ``public_key``, the value `Sealed.recipient` shows."""
    return public_key.fingerprint
