"""The host-side result of one enclave run: value, receipt, curves and display."""

from __future__ import annotations

import html
import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .training.history import History

logger = logging.getLogger("confidential_nb.results")

_MAX_SUMMARY_KEYS = 20
"""Maximum number of dict keys listed in a display. The rest are only counted."""

_MAX_TEXT_CHARS = 60
"""Maximum length of a string value in a display. Longer strings are shortened."""

_MAX_DECIMAL_INT_BITS = 128
"""Maximum bit length of an int shown in decimal. Wider ints are described by bit length,
because Python refuses to convert an int of more than 4300 digits to str."""

_NO_HISTORY_FIX = (
    "return the fitted model or its history_ from the cell, for example "
    "result = {'accuracy': model.score(X_test, y_test), 'model': model}"
)


class Receipt(Protocol):
    """The signed receipt of a run, as far as a `RunResult` uses it."""

    @property
    def function_checksum(self) -> str:
        """Checksum of the cell that ran."""

    def verify(self, *, allow_debug: bool = False) -> bool:
        """Return True when the signature and measurements check out, else raise AttestationError.

        A receipt of a debug run is rejected unless ``allow_debug`` is True.
        """


@dataclass(repr=False, eq=False)
class RunResult:
    """The result of one enclave run.

    ``value`` is the decoded result of the cell. ``receipt`` is the run's signed
    receipt. ``withheld_lines`` counts the lines the cell printed to stdout or
    stderr that stayed in the enclave. ``warnings`` are the library warnings
    that passed the egress guard, rendered from their fixed templates.
    ``debug`` marks a debug run, whose printed output, bounded in size, is
    ``output``; outside debug runs ``output`` is None.
    """

    value: Any
    receipt: Receipt | None = None
    withheld_lines: int = 0
    warnings: list[str] = field(default_factory=list)
    output: str | None = None
    debug: bool = False

    @cached_property
    def history(self) -> History | None:
        """The first training History in the value, or None when it contains none."""
        return find_history(self.value)

    def plot(self, title: str | None = None) -> Figure:
        """Draw the loss and accuracy per epoch, train and validation, in one figure.

        Raises ValueError when the value contains no History.
        """
        return plot_history(self._require_history("plot"), title=title)

    def to_frame(self) -> pd.DataFrame:
        """Return the History as a DataFrame indexed by epoch.

        Raises ValueError when the value contains no History.
        """
        return self._require_history("to_frame").to_frame()

    def _require_history(self, method: str) -> History:
        history = self.history
        if history is None:
            raise ValueError(
                f"RunResult.{method}() needs a training history, but the value "
                f"({describe_value(self.value)}) contains none: {_NO_HISTORY_FIX}"
            )
        return history

    @cached_property
    def receipt_status(self) -> str:
        """Verification status of the receipt: ``verified``, ``verified (debug run)``, ``failed: ...`` or ``missing``."""
        from .errors import AttestationError

        if self.receipt is None:
            return "missing"
        try:
            # The client sets `debug` from the enclave that ran the cell, so only a debug run accepts a debug receipt.
            verified = self.receipt.verify(allow_debug=self.debug)
        except AttestationError as error:
            logger.warning("run receipt failed verification: %s", error)
            return f"failed: {error}"
        if not verified:
            return "failed"
        return "verified (debug run)" if self.debug else "verified"

    def summary_rows(self) -> list[tuple[str, str]]:
        """Return the display as (label, text) rows, unescaped."""
        rows = [("value", describe_value(self.value))]
        if isinstance(self.value, Mapping):
            rows.extend(_describe_items(self.value))

        history = self.history
        if history is not None:
            keys = ", ".join(str(key) for key in history.keys())
            rows.append(("history", f"{len(history.epoch)} epochs: {keys}"))

        if self.output is not None:
            line_count = self.output.count("\n")
            rows.append(("debug output", f"{_count(line_count, 'line')} in the output attribute"))
        rows.append(("withheld output", _count_lines(self.withheld_lines)))
        rows.extend(("warning", text) for text in self.warnings)
        rows.append(("receipt", self.receipt_status))
        return rows

    def __repr__(self) -> str:
        lines = ["RunResult"]
        lines.extend(f"  {label}: {text}" for label, text in self.summary_rows())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        # Keys, values, column names and warnings come from the enclave, so every
        # cell is escaped because a hostile result must not inject markup or script.
        cells = "".join(
            f"<tr><th style=\"text-align:left\">{html.escape(label)}</th>"
            f"<td style=\"text-align:left\">{html.escape(text)}</td></tr>"
            for label, text in self.summary_rows()
        )
        return f"<table><caption>RunResult</caption>{cells}</table>"


def find_history(value: Any) -> History | None:
    """Return the first History in ``value``, searching depth-first, or None.

    Dicts are searched in insertion order, then lists and tuples in order, and
    an object whose instance attributes contain a History as ``history_`` (a
    fitted model) counts as containing it.
    """
    from .training.history import History

    pending = [value]
    seen: set[int] = set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))

        if isinstance(item, History):
            return item
        children = _children(item)
        # Reversed so that the first child is popped, and so searched, first.
        pending.extend(reversed(children))
    return None


def _children(item: Any) -> list[Any]:
    if isinstance(item, Mapping):
        return list(item.values())
    if isinstance(item, (list, tuple)):
        return list(item)

    # The instance dict rather than getattr, because getattr on a DataFrame returns a column named history_.
    attributes = getattr(item, "__dict__", None)
    if isinstance(attributes, dict) and "history_" in attributes:
        return [attributes["history_"]]
    return []


def plot_history(history: History, title: str | None = None) -> Figure:
    """Draw a loss panel and an accuracy panel of ``history`` in a new Figure.

    The Figure is made without pyplot, so it opens no window and leaves no
    pyplot state behind. A panel shows only the metrics the History recorded:
    validation lines appear when the fit had validation data.
    """
    from matplotlib.figure import Figure

    keys = set(history.keys())
    panels = [metric for metric in ("loss", "accuracy") if metric in keys]
    if not panels:
        raise ValueError(f"nothing to plot: the History records neither loss nor accuracy, only {sorted(keys)}")

    figure = Figure(figsize=(5.0 * len(panels), 4.0), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, metric in zip(axes, panels):
        _draw_metric(ax, history, metric, has_validation=f"val_{metric}" in keys)

    if title is not None:
        figure.suptitle(title)
    return figure


def _draw_metric(ax: Any, history: History, metric: str, *, has_validation: bool) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.plot(history.epoch, history[metric], label="train")
    if has_validation:
        ax.plot(history.epoch, history[f"val_{metric}"], label="validation")

    ax.set_title(metric.capitalize())
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.legend()


def describe_value(value: Any) -> str:
    """Describe ``value`` in one line: a rounded scalar, or its type and size."""
    if value is None:
        return "None"
    scalar = _format_scalar(value)
    if scalar is not None:
        return f"{type(value).__name__} {scalar}"

    type_name = type(value).__name__
    if isinstance(value, str):
        return f"str {_shorten(repr(value))}"
    if isinstance(value, (bytes, bytearray)):
        return f"{type_name} of {len(value)} bytes"
    if isinstance(value, Mapping):
        return f"{type_name} with {_count(len(value), 'key')}"
    if isinstance(value, (list, tuple)):
        return f"{type_name} of {_count(len(value), 'item')}"
    return _describe_object(value, type_name)


def _describe_object(value: Any, type_name: str) -> str:
    columns = getattr(value, "columns", None)
    shape = getattr(value, "shape", None)
    if columns is not None and shape is not None:
        names = ", ".join(str(name) for name in list(columns)[:10])
        more = ", ..." if len(columns) > 10 else ""
        return f"{type_name} {shape[0]} rows x {shape[1]} columns ({names}{more})"
    if shape is not None and hasattr(value, "dtype"):
        return f"{type_name} {value.dtype} of shape {tuple(shape)}"

    epochs = getattr(value, "epoch", None)
    if isinstance(epochs, list):
        return f"{type_name} of {_count(len(epochs), 'epoch')}"
    return type_name


def _describe_items(mapping: Mapping[Any, Any]) -> list[tuple[str, str]]:
    rows = []
    for index, (key, item) in enumerate(mapping.items()):
        if index == _MAX_SUMMARY_KEYS:
            rows.append(("...", f"{len(mapping) - _MAX_SUMMARY_KEYS} more keys"))
            break
        label = f"[int {_format_int(key)}]" if type(key) is int and _is_wide(key) else f"[{key!r}]"
        rows.append((label, describe_value(item)))
    return rows


def _format_scalar(value: Any) -> str | None:
    """Format a bool or number rounded to 4 decimals, or return None for anything else."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return _format_int(int(value))
    if not isinstance(value, numbers.Real):
        return None

    number = float(value)
    if not math.isfinite(number) or number == 0:
        return str(number)
    # Rounding to 4 decimals would show a small loss such as 3e-07 as 0.0.
    if abs(number) < 1e-4 or abs(number) >= 1e15:
        return f"{number:.4g}"
    return str(round(number, 4))


def _format_int(number: int) -> str:
    """Format an int in decimal, or by its bit length when it is wider than `_MAX_DECIMAL_INT_BITS`."""
    if not _is_wide(number):
        return str(number)
    sign = ", negative" if number < 0 else ""
    return f"of {number.bit_length()} bits{sign}"


def _is_wide(number: int) -> bool:
    return number.bit_length() > _MAX_DECIMAL_INT_BITS


def _shorten(text: str) -> str:
    if len(text) <= _MAX_TEXT_CHARS:
        return text
    return text[: _MAX_TEXT_CHARS - 3] + "..."


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _count_lines(number: int) -> str:
    if number == 0:
        return "none"
    return f"{_count(number, 'printed line')} (output stays in the enclave)"
