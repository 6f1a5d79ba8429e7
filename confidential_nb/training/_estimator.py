"""Private helpers that LogisticRegression, LinearSVC and MLPClassifier share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from confidential_nb.training._numerics import FloatArray, RealArray

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
