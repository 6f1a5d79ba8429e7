"""Checks for state dicts, which arrive from another, untrusted process.

Each check raises ValueError naming the field and what was expected, so a
malformed state never becomes a half-built model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def check_keys(state: object, expected: set[str], field_name: str) -> Mapping[str, object]:
    """Return state as a mapping after checking it has exactly the expected str keys."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{field_name} must be a dict, got {type(state).__name__}.")
    keys = set(state)
    if not all(isinstance(key, str) for key in keys):
        raise ValueError(f"{field_name} must have str keys only.")
    missing = sorted(expected - keys)
    unexpected = sorted(keys - expected)
    if missing or unexpected:
        raise ValueError(f"{field_name} has missing keys {missing} and unexpected keys {unexpected}.")
    return state


def check_vector(value: object, field_name: str, *, kind: str, length: int | None = None) -> np.ndarray:
    """Check that value is a 1-D ndarray of a dtype kind ('f' float, 'i' integer) and length."""
    return check_array(value, field_name, kind=kind, shape=(length,))


def check_array(value: object, field_name: str, *, kind: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """Check an ndarray's dtype kind and shape; None in shape matches any size."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{field_name} must be a numpy ndarray, got {type(value).__name__}.")
    if value.dtype.kind not in _accepted_kinds(kind):
        raise ValueError(f"{field_name} must have dtype kind {kind!r}, got dtype {value.dtype.name}.")
    if value.ndim != len(shape) or any(
        expected is not None and actual != expected for actual, expected in zip(value.shape, shape)
    ):
        expected_text = tuple("any" if size is None else size for size in shape)
        raise ValueError(f"{field_name} must have shape {expected_text}, got {value.shape}.")
    if kind == "f" and not np.isfinite(value).all():
        raise ValueError(f"{field_name} must contain finite values only.")
    return value


def _accepted_kinds(kind: str) -> str:
    # Integer arrays may arrive signed or unsigned, floats in any width.
    return "iu" if kind == "i" else kind
