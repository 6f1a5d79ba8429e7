"""Random train/test splits with scikit-learn's signature and return order."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from confidential_nb.training._validation import check_labels, format_names

# Share of the samples that goes to the test set when neither size is given.
DEFAULT_TEST_SIZE = 0.25


def train_test_split(
    *arrays: Any,
    test_size: float | int | None = None,
    train_size: float | int | None = None,
    random_state: int | np.random.Generator | None = None,
    shuffle: bool = True,
    stratify: Any = None,
    target: Any = None,
) -> list[Any]:
    """Split arrays or DataFrames into random train and test subsets.

    Returns ``[a_train, a_test, b_train, b_test, ...]`` for the arrays given,
    each of the input's type (DataFrame, Series, ndarray or list), as
    ``sklearn.model_selection.train_test_split`` does. Sizes are a fraction in
    (0, 1) or a count; the test size defaults to 0.25 and the train size to
    the rest. ``random_state`` seeds ``numpy.random.default_rng``, so the same
    seed gives the same split. ``stratify`` keeps the class shares of the
    given labels in both parts.

    ``target="column"``: pass one DataFrame and get ``X_train, X_test,
    y_train, y_test``, where X is the other columns (a DataFrame) and y that
    column (a Series). With ``target`` set and ``stratify=None`` the split is
    stratified on the target column (when ``shuffle=True``). Pass
    ``stratify=False`` to turn that off, for instance for a continuous target.
    """
    if target is not None:
        return _split_on_target(arrays, target, test_size, train_size, random_state, shuffle, stratify)
    if stratify is False:
        stratify = None

    if not arrays:
        raise ValueError("train_test_split needs at least one array.")
    n_samples = _common_length(arrays)
    n_train, n_test = _split_sizes(n_samples, test_size, train_size)
    train_index, test_index = _split_indices(n_samples, n_train, n_test, random_state, shuffle, stratify)

    parts: list[Any] = []
    for array in arrays:
        parts.append(_take(array, train_index))
        parts.append(_take(array, test_index))
    return parts


def _split_on_target(
    arrays: tuple[Any, ...],
    target: Any,
    test_size: float | int | None,
    train_size: float | int | None,
    random_state: int | np.random.Generator | None,
    shuffle: bool,
    stratify: Any,
) -> list[Any]:
    if len(arrays) != 1 or not isinstance(arrays[0], pd.DataFrame):
        raise ValueError(
            f"target= needs exactly one DataFrame as the only positional argument, got {len(arrays)} argument(s)."
        )
    frame = arrays[0]
    if target not in frame.columns:
        raise ValueError(
            f"target column {str(target)!r} not found; available columns: {format_names(list(frame.columns))}."
        )

    features = frame.drop(columns=[target])
    labels = frame[target]
    if stratify is None and shuffle:
        stratify = labels
    elif stratify is False:
        stratify = None
    return train_test_split(
        features,
        labels,
        test_size=test_size,
        train_size=train_size,
        random_state=random_state,
        shuffle=shuffle,
        stratify=stratify,
    )


def _common_length(arrays: tuple[Any, ...]) -> int:
    lengths = [_length(array) for array in arrays]
    if len(set(lengths)) != 1:
        raise ValueError(f"all arrays must have the same number of samples, got lengths {lengths}.")
    return lengths[0]


def _length(array: Any) -> int:
    if isinstance(array, (pd.DataFrame, pd.Series, np.ndarray, list, tuple)):
        if isinstance(array, np.ndarray) and array.ndim == 0:
            raise ValueError("train_test_split cannot split a 0-d array.")
        return len(array)
    raise TypeError(
        f"train_test_split accepts DataFrame, Series, ndarray, list or tuple, got {type(array).__name__}."
    )


def _split_sizes(n_samples: int, test_size: float | int | None, train_size: float | int | None) -> tuple[int, int]:
    if test_size is None and train_size is None:
        test_size = DEFAULT_TEST_SIZE
    n_test = _size_to_count(test_size, "test_size", n_samples, math.ceil)
    n_train = _size_to_count(train_size, "train_size", n_samples, math.floor)

    if n_test is None:
        n_test = n_samples - n_train  # type: ignore[operator]
    if n_train is None:
        n_train = n_samples - n_test

    if n_train + n_test > n_samples:
        raise ValueError(
            f"train_size ({n_train} samples) plus test_size ({n_test} samples) exceeds the "
            f"{n_samples} samples; reduce one of them."
        )
    if n_train == 0 or n_test == 0:
        raise ValueError(
            f"with {n_samples} samples, test_size={test_size} and train_size={train_size} leave "
            f"{n_train} training and {n_test} test samples; both must be at least 1."
        )
    return n_train, n_test


def _size_to_count(size: float | int | None, name: str, n_samples: int, rounding: Any) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, Real):
        raise ValueError(f"{name} must be a float in (0, 1), an int or None, got {type(size).__name__}.")
    if isinstance(size, Integral):
        if not 0 < int(size) < n_samples:
            raise ValueError(f"{name}={size} must be between 1 and {n_samples - 1} for {n_samples} samples.")
        return int(size)
    if not 0.0 < float(size) < 1.0:
        raise ValueError(f"{name}={size} must be in the open interval (0, 1) when given as a float.")
    return int(rounding(float(size) * n_samples))


def _split_indices(
    n_samples: int,
    n_train: int,
    n_test: int,
    random_state: int | np.random.Generator | None,
    shuffle: bool,
    stratify: Any,
) -> tuple[np.ndarray, np.ndarray]:
    if not shuffle:
        if stratify is not None:
            raise ValueError("stratify requires shuffle=True; set shuffle=True or stratify=None.")
        return np.arange(n_train), np.arange(n_train, n_train + n_test)

    rng = _make_rng(random_state)
    if stratify is None:
        permutation = rng.permutation(n_samples)
        return permutation[n_test : n_test + n_train], permutation[:n_test]
    return _stratified_indices(check_labels(stratify, name="stratify"), n_samples, n_train, n_test, rng)


def _make_rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, Integral)):
        raise ValueError(f"random_state must be None, an int or a numpy Generator, got {type(random_state).__name__}.")
    if random_state is not None and random_state < 0:
        raise ValueError(f"random_state={random_state} must be non-negative.")
    return np.random.default_rng(random_state)


def _stratified_indices(
    labels: np.ndarray, n_samples: int, n_train: int, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if labels.shape[0] != n_samples:
        raise ValueError(f"stratify has {labels.shape[0]} labels but the arrays have {n_samples} samples.")
    classes, codes = np.unique(labels, return_inverse=True)
    class_counts = np.bincount(codes)
    _check_stratifiable(class_counts, n_train, n_test)

    test_counts = _allocate(n_test, class_counts, class_counts - 1)
    train_counts = _allocate(n_train, class_counts, class_counts - test_counts)

    train_parts, test_parts = [], []
    for code in range(classes.size):
        members = rng.permutation(np.flatnonzero(codes == code))
        test_parts.append(members[: test_counts[code]])
        train_parts.append(members[test_counts[code] : test_counts[code] + train_counts[code]])

    # Shuffle again so that the parts are not sorted by class.
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(test_parts))


def _check_stratifiable(class_counts: np.ndarray, n_train: int, n_test: int) -> None:
    smallest = int(class_counts.min())
    if smallest < 2:
        raise ValueError(
            f"stratify: the least populated class has {smallest} member; every class needs at least 2."
        )
    n_classes = class_counts.size
    if n_test < n_classes or n_train < n_classes:
        raise ValueError(
            f"stratify: the train ({n_train}) and test ({n_test}) sizes must each be at least "
            f"the number of classes ({n_classes})."
        )


def _allocate(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Split total into integer counts proportional to weights, each at most its cap.

    Uses the largest-remainder method. Ties go to the class that comes first
    in sorted label order, so the result does not depend on the random state.
    """
    exact = total * weights / weights.sum()
    counts = np.minimum(np.floor(exact).astype(np.int64), caps)
    remainders = exact - counts
    while counts.sum() < total:
        open_classes = counts < caps
        candidate = int(np.argmax(np.where(open_classes, remainders, -np.inf)))
        counts[candidate] += 1
        remainders[candidate] -= 1.0
    return counts


def _take(array: Any, index: np.ndarray) -> Any:
    if isinstance(array, (pd.DataFrame, pd.Series)):
        return array.iloc[index]
    if isinstance(array, np.ndarray):
        return array[index]
    return [array[position] for position in index.tolist()]
