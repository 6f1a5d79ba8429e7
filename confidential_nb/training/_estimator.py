"""Private helpers that LogisticRegression, LinearSVC and MLPClassifier share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from confidential_nb.training._numerics import FloatArray, RealArray
from confidential_nb.training._validation import check_feature_names, feature_names_of
from confidential_nb.training.history import History

# A column whose standard deviation is below this multiple of machine epsilon,
# relative to its magnitude, is treated as constant because its spread is
# rounding noise.
_CONSTANT_COLUMN_EPS_FACTOR = 10.0
_EPS = float(np.finfo(np.float64).eps)


@dataclass
class Scaler:
    """Per-column float64 mean and scale that standardize features inside a model."""

    mean: FloatArray
    scale: FloatArray

    @overload
    def transform(self, X: FloatArray) -> FloatArray: ...

    @overload
    def transform(self, X: RealArray) -> RealArray: ...

    def transform(self, X: RealArray) -> RealArray:
        """Return (X - mean) / scale, computed in the dtype of X."""
        standardized = X - self.mean.astype(X.dtype)
        standardized /= self.scale.astype(X.dtype)
        return standardized


def fit_scaler(features: RealArray, standardize: bool, center: bool) -> Scaler:
    """Return the population-std scaler of the features, or the identity when standardize is False.

    The statistics are float64 whatever the dtype of the features. A column
    treated as constant gets scale 1, and ``center=False`` keeps mean 0.
    """
    n_features = features.shape[1]
    if not standardize:
        return Scaler(np.zeros(n_features), np.ones(n_features))

    mean = features.mean(axis=0, dtype=np.float64)
    scale = features.std(axis=0, dtype=np.float64)
    constant = scale <= _CONSTANT_COLUMN_EPS_FACTOR * _EPS * np.maximum(np.abs(mean), 1.0)
    scale[constant] = 1.0
    if not center:
        mean = np.zeros(n_features)
    return Scaler(mean, scale)


def encode_labels(labels: np.ndarray, owner: str) -> tuple[np.ndarray, npt.NDArray[np.intp]]:
    """Return the sorted classes and each label's index into them.

    ``owner`` is the estimator's name for the message that rejects a single class.
    """
    classes = np.unique(labels)
    if classes.dtype.kind in "US":
        classes = classes.astype(object)
    if classes.size == 1:
        raise ValueError(f"y contains a single class; {owner} needs samples of at least 2 classes.")
    return classes, encode_known_labels(labels, classes, "y")


def encode_known_labels(labels: np.ndarray, classes: np.ndarray, name: str) -> npt.NDArray[np.intp]:
    """Return each label's index into classes, raising ValueError if ``name`` has a label outside them."""
    codes = pd.Index(classes).get_indexer(labels)
    unknown = int(np.sum(codes < 0))
    if unknown:
        raise ValueError(f"{name} has {unknown} label(s) that are not among the {classes.size} classes of y.")
    return codes.astype(np.intp)


def store_feature_names(model: object, X: Any) -> None:
    """Set ``model.feature_names_in_`` to the column names of a DataFrame X, or delete it for other inputs.

    Deleting matters on a refit, so that names from an earlier fit do not survive.
    """
    names = feature_names_of(X) if isinstance(X, pd.DataFrame) else None
    if names is not None:
        setattr(model, "feature_names_in_", np.array(names, dtype=object))
    elif hasattr(model, "feature_names_in_"):
        delattr(model, "feature_names_in_")


def check_predict_features(features: RealArray, X: Any, owner: str, n_features_in: int, fitted_names: np.ndarray | None) -> None:
    """Raise ValueError unless the checked features of X match the fitted feature count and names."""
    if features.shape[1] != n_features_in:
        raise ValueError(
            f"X has {features.shape[1]} features, but {owner} was fitted with {n_features_in} features."
        )

    check_feature_names(None if fitted_names is None else list(fitted_names), X)


def classes_from_state(values: object, owner: str, *, sorted_order: bool) -> np.ndarray:
    """Return the class labels of an ``owner`` state, raising ValueError unless they are 2 or more distinct labels.

    The labels must be all strings or all numbers. ``sorted_order=True`` also
    requires them in ascending order, as ``fit`` stores them, and then tests
    distinctness on the array, where NaN labels count as equal. Without it,
    distinctness is tested on the Python values, as LogisticRegression states
    have always been checked.
    """
    if not isinstance(values, list) or len(values) < 2:
        raise ValueError(f"{owner} state 'classes' must be a list of at least 2 labels.")
    if all(isinstance(value, str) for value in values):
        classes = np.array(values, dtype=object)
    elif all(isinstance(value, (bool, int, float)) for value in values):
        classes = np.array(values)
    else:
        raise ValueError(f"{owner} state 'classes' must be all strings or all numbers.")

    if sorted_order:
        if len(pd.unique(classes)) != classes.size or not bool(np.all(classes[:-1] < classes[1:])):
            raise ValueError(f"{owner} state 'classes' must be distinct labels in sorted order.")
    elif len(set(values)) != len(values):
        raise ValueError(f"{owner} state 'classes' must be distinct labels.")
    return classes


def feature_names_from_state(names: object, n_features: int, owner: str) -> np.ndarray | None:
    """Return the feature names of an ``owner`` state as an object array, or None when it has none.

    Raises ValueError unless ``names`` is None or n_features distinct strings.
    """
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{owner} state 'feature_names' must be None or a list of str.")
    if len(names) != n_features or len(set(names)) != len(names):
        raise ValueError(f"{owner} state 'feature_names' must hold {n_features} distinct names, got {len(names)}.")
    return np.array(names, dtype=object)


def is_recorded(record_every: int | None, epoch: int, last: bool) -> bool:
    """Return True when the history records this epoch: every record_every-th one and the last."""
    if not record_every:
        return False
    return last or epoch % record_every == 0


def recorded_epochs(record_every: int | None, n_iter: int) -> list[int]:
    """Return the epoch numbers that a fit of n_iter epochs records."""
    return [epoch for epoch in range(1, n_iter + 1) if is_recorded(record_every, epoch, epoch == n_iter)]


def progress_from_state(
    fields: Mapping[str, object], owner: str, epochs: int, record_every: int | None, *, exact_epochs: bool
) -> tuple[int, bool, History]:
    """Return the n_iter, converged and history fields of an ``owner`` state, raising ValueError on bad values.

    n_iter must lie between 0 and epochs, and the history must fit
    record_every as ``_check_history_epochs`` describes.
    """
    n_iter = fields["n_iter"]
    converged = fields["converged"]
    history = fields["history"]
    if not isinstance(n_iter, int) or isinstance(n_iter, bool):
        raise ValueError(f"{owner} state 'n_iter' must be an int, got {type(n_iter).__name__}.")
    if not isinstance(converged, bool):
        raise ValueError(f"{owner} state 'converged' must be a bool, got {type(converged).__name__}.")
    if not isinstance(history, History):
        raise ValueError(f"{owner} state 'history' must be a History, got {type(history).__name__}.")
    if not 0 <= n_iter <= epochs:
        raise ValueError(f"{owner} state 'n_iter' ({n_iter}) must be between 0 and epochs ({epochs}).")

    _check_history_epochs(history, n_iter, record_every, owner, exact_epochs=exact_epochs)
    return n_iter, converged, history


def _check_history_epochs(history: History, n_iter: int, record_every: int | None, owner: str, *, exact_epochs: bool) -> None:
    """Raise ValueError unless the history fits n_iter and record_every.

    With recording off, the history must be empty. Otherwise
    ``exact_epochs=True`` requires exactly the epochs that ``recorded_epochs``
    lists. ``exact_epochs=False`` requires only that the last recorded epoch is
    n_iter, the looser rule that LogisticRegression states have always met.
    """
    if not record_every:
        if len(history):
            raise ValueError(f"{owner} state 'history' must be empty when record_every turns recording off.")
        return

    last = history.epoch[-1] if len(history) else 0
    if exact_epochs:
        if history.epoch != recorded_epochs(record_every, n_iter):
            raise ValueError(
                f"{owner} state 'history' must contain the epochs that record_every={record_every} keeps up to "
                f"n_iter ({n_iter}), but it contains {len(history)} epochs ending at epoch {last}."
            )
    elif last != n_iter:
        raise ValueError(f"{owner} state 'n_iter' ({n_iter}) must equal the last recorded epoch ({last}).")
