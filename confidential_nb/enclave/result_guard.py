"""The result guard: egress rules applied to the decoded result of a run.

The monitor decodes the result (no pickle) after the runner has ended and
walks it. It rejects long lists, arrays and frames, long text, and results
that copy several of a sealed input's rare values verbatim, naming the path
in the result. These rules catch mistakes, such as returning the rows or a
CSV dump. They do not stop a determined analyst (see the comment below).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ProtocolError
from ..policy import Policy
from ..result_codec import _object_types, decode_result
from .rare_values import Candidates, Value, find_rare_values, frame_rows


# The guard on the decoded result value.
#
# It catches mistakes such as returning the input frame, a column, a few
# rows or a CSV dump. It does not stop a determined analyst, who can still
# encode data in numbers the rules let through (a few bits per run, or many
# runs), and differential privacy is the defence against that.

_KEY_PREVIEW_CHARS = 32

# A step of a path: a list or tuple position, or the position and key of a dict item.
_Step = int | tuple[int, str | int]
_Path = tuple[_Step, ...]


class EgressRejected(Exception):
    """The result breaks an egress rule; the message names its path, the rule and what to do instead."""


@dataclass(frozen=True)
class SealedSource:
    """One sealed input as the result guard reads it: its policy and, for a DataFrame, its encoded frame."""

    name: str
    policy: Policy
    frame: bytes | memoryview | Path | None


@dataclass(frozen=True)
class ResultLimits:
    """The walk's limits: the strictest of the inputs' policies and the smallest input's row count."""

    max_items: int
    items_reason: str
    max_text: int
    private: bool

    @classmethod
    def for_inputs(cls, sources: list[SealedSource]) -> ResultLimits:
        max_items = min(source.policy.max_items for source in sources)
        reason = "the policy's max_items"
        rows = [frame_rows(source.frame) for source in sources if source.frame is not None]
        # A frame without rows has no row to leak, so it does not lower the limit.
        smallest = min((count for count in rows if count > 0), default=None)
        if smallest is not None and smallest < max_items:
            max_items, reason = smallest, "the row count of the smallest sealed DataFrame input"
        return cls(max_items=max_items, items_reason=reason,
                   max_text=min(source.policy.max_text for source in sources),
                   private=not all(source.policy.schema_public for source in sources))


def guard_result(blob: bytes, sources: list[SealedSource]) -> None:
    """Decode an encoded result and raise `EgressRejected` unless it keeps to every rule of the inputs' policies.

    A run without sealed inputs has nothing to protect, so every result passes.
    """
    if not sources:
        return
    try:
        value = decode_result(blob)
    except ProtocolError as exc:
        raise EgressRejected(f"the result could not be decoded in the enclave ({exc}), so it was withheld; "
                            "return only the types the result format supports") from None

    try:
        limits = ResultLimits.for_inputs(sources)
        candidates = Candidates()
        for _, node in _nodes(value, limits):
            _add_values(candidates, node)

        values = candidates.values()
        for source in sources:
            _check_rare_values(value, values, source, limits)
    except ProtocolError as exc:
        # The runner decoded the same frames, so this means a defect here; the result stays inside.
        raise EgressRejected(f"a sealed input could not be read for the egress check ({exc}), so the result was "
                            "withheld; seal the data again, and report the error if it persists") from None


def _check_rare_values(value: object, values: set[Value], source: SealedSource, limits: ResultLimits) -> None:
    k = source.policy.rare_k
    # Fewer candidates than k can never make k matches, so the input is not read.
    if source.frame is None or k <= 1 or len(values) < k:
        return
    matches = find_rare_values(source.frame, values, k)
    if len(matches.values) < k:
        return

    where = first_path_with(value, matches.values, limits)
    count = "" if limits.private else f"{len(matches.values)} "
    column = ""
    if source.policy.schema_public:
        column = " (its index first)" if matches.first_column is None else f" (its column {matches.first_column!r} first)"
    raise EgressRejected(
        f"{count}values of the result, the first at {where}, are rare values of input {source.name!r}{column}: "
        f"each occurs in fewer than {k} of its rows (the policy's rare_k), so the result may identify individual "
        "rows. Return aggregates such as counts or means, or drop identifying columns before returning rows"
    )


def first_path_with(value: object, targets: set[Value], limits: ResultLimits) -> str:
    """Return the path of the first part of ``value`` that contains one of the ``targets``."""
    for path, node in _nodes(value, limits):
        found = Candidates()
        _add_values(found, node)
        if found.values() & targets:
            return _render(path, limits)
    return "result"


def _nodes(value: object, limits: ResultLimits) -> Iterator[tuple[_Path, object]]:
    """Yield every part of a decoded result with its path, depth first, after checking its length and text rules.

    A dict key is yielded as a part of its own, after the dict and before
    its value. DataFrames, Series and arrays are yielded whole, and the
    library's History and fitted models are skipped. An explicit stack keeps
    the walk off Python's call stack; result_codec bounds the depth and the
    number of parts.
    """
    exempt = tuple(_object_types().values())
    stack: list[tuple[_Path, object]] = [((), value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, exempt):
            continue
        _check_node(path, node, limits)
        yield path, node

        if isinstance(node, (list, tuple)):
            stack.extend(reversed([((*path, position), item) for position, item in enumerate(node)]))
        elif isinstance(node, dict):
            children: list[tuple[_Path, object]] = []
            for position, (key, item) in enumerate(node.items()):
                children.append(((*path, (position, key)), _DictKey(key)))
                children.append(((*path, (position, key)), item))
            stack.extend(reversed(children))


@dataclass(frozen=True)
class _DictKey:
    """A dict key reached by the walk, kept apart from the item's value at the same path."""

    key: str | int


def _check_node(path: _Path, node: object, limits: ResultLimits) -> None:
    length = _length(node)
    if length is not None and length >= limits.max_items:
        raise EgressRejected(_items_message(path, node, length, limits))

    text = _longest_text(node)
    if text > limits.max_text:
        raise EgressRejected(_text_message(path, node, text, limits))


def _length(node: object) -> int | None:
    """Return what the item limit is held to: a sequence's length or an array's or frame's largest dimension."""
    if isinstance(node, (list, tuple, pd.Series)):
        return len(node)
    if isinstance(node, (np.ndarray, pd.DataFrame)) and node.ndim:
        return max(node.shape)
    return None


def _longest_text(node: object) -> int:
    if isinstance(node, _DictKey):
        node = node.key
    if isinstance(node, (str, bytes)):
        return len(node)
    if not isinstance(node, (pd.Series, pd.DataFrame)):
        return 0
    lengths = [len(text) for column in _frame_parts(node) for text in _texts(column)]
    return max(lengths, default=0)


def _add_values(candidates: Candidates, node: object) -> None:
    """Add the numbers and texts that a part of the result shows, but not those of the parts inside it."""
    if isinstance(node, _DictKey):
        node = node.key
    if isinstance(node, str):
        candidates.texts.add(node)
    elif isinstance(node, (int, float, np.number)):
        candidates.add_number(node)
    elif isinstance(node, np.ndarray):
        candidates.add_array(node)
    elif isinstance(node, (pd.Series, pd.DataFrame)):
        for column in _frame_parts(node):
            _add_column(candidates, column)


def _frame_parts(node: pd.Series | pd.DataFrame) -> list[pd.Series]:
    """Return a Series's or DataFrame's columns, its index unless it is a RangeIndex, and its labels, as Series."""
    frame = node.to_frame(name=0) if isinstance(node, pd.Series) else node
    labels = [node.name] if isinstance(node, pd.Series) else list(frame.columns)
    parts = [frame.iloc[:, position] for position in range(frame.shape[1])]
    if not isinstance(frame.index, pd.RangeIndex):
        parts.append(frame.index.to_series())
    parts.append(pd.Series([label for label in labels if label is not None], dtype=object))
    return parts


def _texts(column: pd.Series) -> list[str | bytes]:
    if column.dtype.kind in "biufcmM":
        return []
    return [item for item in column.tolist() if isinstance(item, (str, bytes))]


def _add_column(candidates: Candidates, column: pd.Series) -> None:
    values = column.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(values.cat.categories.dtype)
    if values.dtype.kind in "iuf":
        # Masked dtypes such as Int64 convert to their numpy dtype once the missing values are gone.
        numpy_dtype: Any = getattr(values.dtype, "numpy_dtype", values.dtype)
        candidates.add_array(values.to_numpy(dtype=numpy_dtype))
        return
    for item in values.tolist():
        if isinstance(item, str):
            candidates.texts.add(item)
        else:
            candidates.add_number(item)


def _render(path: _Path, limits: ResultLimits) -> str:
    """Write a path as Python would index the result, showing a dict key by position when it could be data."""
    parts = ["result"]
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
            continue
        position, key = step
        readable = isinstance(key, str) and key.isidentifier() and len(key) <= _KEY_PREVIEW_CHARS
        parts.append(f"[{key!r}]" if readable and not limits.private else f"[<key {position}>]")
    return "".join(parts)


def _describe(node: object, limits: ResultLimits) -> str:
    """Name a part's type, with its size unless an input's schema is private."""
    name = {list: "list", tuple: "tuple", str: "str", bytes: "bytes", pd.Series: "Series",
            pd.DataFrame: "DataFrame", np.ndarray: "numpy array"}.get(type(node), type(node).__name__)
    if limits.private:
        return f"a {name}"
    if isinstance(node, pd.DataFrame):
        return f"a DataFrame of {node.shape[0]:,} rows and {node.shape[1]:,} columns"
    if isinstance(node, np.ndarray):
        return f"a numpy array of shape {node.shape}"
    if isinstance(node, (str, bytes)):
        unit = "characters" if isinstance(node, str) else "bytes"
        return f"a {name} of {len(node):,} {unit}"
    return f"a {name} of {len(node):,} items"  # type: ignore[arg-type]


def _items_message(path: _Path, node: object, length: int, limits: ResultLimits) -> str:
    bound = f"fewer than {limits.max_items:,} items"
    if limits.private and limits.items_reason != "the policy's max_items":
        # The row count is part of a private schema, so the message does not print it.
        bound = "fewer items than the smallest sealed DataFrame input has rows"
    return (f"{_render(path, limits)} is {_describe(node, limits)}, but a result's lists, tuples, arrays, Series and "
            f"DataFrames must have {bound} ({limits.items_reason}), because a longer one may hold a value per row: "
            "return aggregates such as counts, means or histograms, or return a fitted model or its History")


def _text_message(path: _Path, node: object, length: int, limits: ResultLimits) -> str:
    where = _render(path, limits)
    if isinstance(node, _DictKey):
        subject = f"the key of {where} is a {type(node.key).__name__}"
        if not limits.private:
            subject += f" of {length:,} characters"
    elif isinstance(node, (pd.Series, pd.DataFrame)):
        subject = f"{where} is {_describe(node, limits)} containing a text"
        if not limits.private:
            subject += f" of {length:,} characters"
    else:
        subject = f"{where} is {_describe(node, limits)}"
    return (f"{subject}, above the limit of {limits.max_text:,} (the policy's max_text) for a str or bytes value "
            "in a result: return a summary such as counts or lengths instead of the text, or ask the data owner "
            "for a larger max_text")
