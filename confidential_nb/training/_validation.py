"""Input checks shared by the models and metrics.

Every message names shapes, counts, column names or parameter values, never
the data itself, because these messages can leave the enclave.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
RealArray = npt.NDArray[np.floating[Any]]

# Maximum number of column names quoted in one message.
MAX_NAMES_IN_MESSAGE = 10


def format_names(names: Sequence[object]) -> str:
    """Return names as a comma-separated list of reprs, shortened past a limit."""
    shown = ", ".join(repr(str(name)) for name in names[:MAX_NAMES_IN_MESSAGE])
    hidden = len(names) - MAX_NAMES_IN_MESSAGE
    if hidden > 0:
        shown += f" and {hidden} more"
    return shown


def format_indices(positions: Sequence[int]) -> str:
    """Return "index 3" or "indices 1, 3" for array positions, shortened past a limit."""
    shown = ", ".join(str(position) for position in positions[:MAX_NAMES_IN_MESSAGE])
    hidden = len(positions) - MAX_NAMES_IN_MESSAGE
    if hidden > 0:
        shown += f" and {hidden} more"
    return f"index {shown}" if len(positions) == 1 else f"indices {shown}"


def feature_names_of(frame: pd.DataFrame) -> list[str] | None:
    """Return the column labels when every one is a str, else None (as scikit-learn does)."""
    labels = list(frame.columns)
    if labels and all(isinstance(label, str) for label in labels):
        return labels
    return None


def check_feature_names(
    expected: Sequence[str] | None,
    X: Any,
    *,
    name: str = "X",
    expected_label: str = "the fitted feature names",
    order_hint: str = "feature_names_in_",
) -> None:
    """Raise ValueError when X is a DataFrame whose str column names differ from ``expected``.

    The check applies only when both sides have names, as in scikit-learn:
    an array, or no ``expected`` names, passes. ``expected_label`` names the
    reference in the message and ``order_hint`` names the column order to
    restore, so fit can check validation data against X with the rule that
    predict uses against the fitted names.
    """
    given = feature_names_of(X) if isinstance(X, pd.DataFrame) else None
    if expected is None or given is None:
        return
    fitted = list(expected)
    if fitted == given:
        return

    missing = [column for column in fitted if column not in set(given)]
    unexpected = [column for column in given if column not in set(fitted)]
    if not missing and not unexpected:
        raise ValueError(
            f"{name} has {expected_label} in a different order; reorder its columns to {order_hint}."
        )
    raise ValueError(
        f"{name}'s columns differ from {expected_label}: missing {format_names(missing) or 'none'}, "
        f"unexpected {format_names(unexpected) or 'none'}."
    )


@overload
def check_features(
    X: Any, *, name: str = ..., keep_float32: Literal[False] = ..., action: str = ...
) -> FloatArray: ...


@overload
def check_features(X: Any, *, name: str = ..., keep_float32: bool, action: str = ...) -> RealArray: ...


def check_features(X: Any, *, name: str = "X", keep_float32: bool = False, action: str = "fitting") -> RealArray:
    """Convert a DataFrame or array of features to a finite 2-D float64 array.

    With ``keep_float32=True``, float32 input stays float32. The result may
    share memory with X when no conversion is needed, so callers must not
    write to it. ``action`` names the caller's step in messages ("fitting",
    "predicting" or "scoring"), as in "impute or drop them before predicting".
    """
    if isinstance(X, pd.DataFrame):
        return _check_feature_frame(X, name, keep_float32, action)
    if isinstance(X, pd.Series):
        raise ValueError(
            f"{name} must be 2-D (a DataFrame or an array of shape (n_samples, n_features)), "
            f"got a Series of length {len(X)}; use series.to_frame() for a single feature."
        )

    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_samples, n_features), got shape {array.shape}; "
            "use array.reshape(-1, 1) for a single feature."
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must have a numeric dtype, got dtype {array.dtype.name}.")
    _check_not_empty(array.shape, name)

    values = array.astype(_training_dtype([array.dtype], keep_float32), copy=False)
    bad_columns = np.flatnonzero(~np.isfinite(values).all(axis=0))
    if bad_columns.size:
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad_columns.size} column(s) "
            f"at {format_indices(bad_columns.tolist())}; impute or drop them before {action}."
        )
    return values


def _training_dtype(dtypes: Sequence[Any], keep_float32: bool) -> type[np.floating[Any]]:
    if keep_float32 and dtypes and all(dtype == np.float32 for dtype in dtypes):
        return np.float32
    return np.float64


def _check_feature_frame(frame: pd.DataFrame, name: str, keep_float32: bool, action: str) -> RealArray:
    non_numeric = [
        column
        for column in frame.columns
        if not (pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]))
    ]
    if non_numeric:
        raise ValueError(
            f"{name} has {len(non_numeric)} non-numeric column(s): {format_names(non_numeric)}; "
            f"encode or drop them before {action}."
        )
    _check_not_empty(frame.shape, name)

    # Nullable dtypes (Int64, boolean) hold pd.NA, which becomes NaN here.
    dtype = _training_dtype(list(frame.dtypes), keep_float32)
    values = frame.to_numpy(dtype=dtype, na_value=np.nan)
    bad_columns = [column for column, ok in zip(frame.columns, np.isfinite(values).all(axis=0)) if not ok]
    if bad_columns:
        raise ValueError(
            f"{name} contains NaN or infinite values in {len(bad_columns)} column(s): "
            f"{format_names(bad_columns)}; impute or drop them before {action}."
        )
    return values


def _check_not_empty(shape: tuple[int, ...], name: str) -> None:
    if shape[0] == 0:
        raise ValueError(f"{name} has 0 samples (shape {shape}); at least 1 is required.")
    if shape[1] == 0:
        raise ValueError(f"{name} has 0 features (shape {shape}); at least 1 is required.")


def check_labels(y: Any, *, name: str = "y") -> np.ndarray:
    """Convert labels to a 1-D array; a column vector or one-column DataFrame counts as 1-D."""
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(f"{name} must be 1-D or have one column, got a DataFrame of shape {y.shape}.")
        y = y.iloc[:, 0]

    if isinstance(y, pd.Series):
        array = y.to_numpy(dtype=object) if y.hasnans else y.to_numpy()
    else:
        array = np.asarray(y)

    if array.ndim == 2 and array.shape[1:] == (1,):
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D or of shape (n_samples, 1), got shape {array.shape}.")
    if array.shape[0] == 0:
        raise ValueError(f"{name} has 0 samples; at least 1 is required.")

    _check_label_values(array, name)
    return array


def check_class_labels(labels: np.ndarray, *, name: str = "y", estimator: str) -> None:
    """Raise ValueError when float labels are not all whole numbers, i.e. a continuous target.

    scikit-learn rejects such targets as "Unknown label type: continuous".
    Whole-number floats such as 1.0 and 2.0 pass as class labels. ``labels``
    must already have passed ``check_labels``.
    """
    if labels.dtype.kind == "f":
        floats = labels
    elif labels.dtype.kind == "O":
        floats = np.array([value for value in labels if isinstance(value, (float, np.floating))], dtype=np.float64)
    else:
        return
    if np.all(floats == np.round(floats)):
        return
    n_distinct = len(pd.unique(labels))
    raise ValueError(
        f"{name} has dtype {labels.dtype.name} with {n_distinct} distinct values, not all whole numbers, "
        f"so it looks like a continuous target; {estimator} is a classifier: use class labels "
        "or bin the target (for example with pandas.cut)."
    )


def _check_label_values(array: np.ndarray, name: str) -> None:
    missing = pd.isna(array)
    if missing.any():
        raise ValueError(f"{name} contains {int(missing.sum())} missing (NaN or None) label(s); drop those rows.")
    if array.dtype.kind in "biufUS":
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"{name} contains infinite label(s); labels must be finite.")
        return
    if array.dtype.kind != "O":
        raise ValueError(f"{name} must contain numbers or strings, got dtype {array.dtype.name}.")

    kinds = {_label_kind(value) for value in array}
    if None in kinds:
        raise ValueError(f"{name} must contain only numbers or strings, found another type.")
    if len(kinds) > 1:
        raise ValueError(f"{name} mixes strings and numbers; use one type of label.")


def _label_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return "number"
    return None


def check_same_length(first: np.ndarray, second: np.ndarray, first_name: str, second_name: str) -> None:
    """Raise ValueError unless the two arrays have the same number of samples."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{first_name} and {second_name} have different numbers of samples: "
            f"{first.shape[0]} and {second.shape[0]}."
        )
