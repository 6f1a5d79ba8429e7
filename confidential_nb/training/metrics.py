"""Classification metrics with scikit-learn's names and argument order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from confidential_nb.training._validation import check_labels, check_same_length

# Probabilities are clipped to [EPSILON, 1 - EPSILON] so that log(0) never occurs,
# as scikit-learn's log_loss does (checked in scikit-learn 1.9.1).
EPSILON = float(np.finfo(np.float64).eps)


def accuracy_score(y_true: Any, y_pred: Any) -> float:
    """Return the fraction of samples whose predicted label equals the true label."""
    true = check_labels(y_true, name="y_true")
    predicted = check_labels(y_pred, name="y_pred")
    check_same_length(true, predicted, "y_true", "y_pred")
    return float(np.mean(true == predicted))


def log_loss(y_true: Any, y_prob: Any, *, labels: Any = None) -> float:
    """Return the mean binary cross-entropy (natural log) of predicted probabilities.

    ``y_prob`` is either the probability of the positive class, shape
    (n_samples,), or ``predict_proba`` output, shape (n_samples, 2). The
    positive class is the larger of the two labels, taken from ``labels`` when
    given, else from ``y_true``, which must then contain both classes.
    """
    true = check_labels(y_true, name="y_true")
    classes = np.unique(true if labels is None else check_labels(labels, name="labels"))
    if classes.size != 2:
        raise ValueError(
            f"log_loss is binary only and needs exactly 2 classes, found {classes.size}; "
            "pass labels=[negative, positive] when y_true holds one class."
        )
    unknown = int(np.sum(~np.isin(true, classes)))
    if unknown:
        raise ValueError(f"y_true has {unknown} label(s) not in labels.")

    positive = _positive_probability(y_prob)
    check_same_length(true, positive, "y_true", "y_prob")
    positive = np.clip(positive, EPSILON, 1.0 - EPSILON)
    is_positive = true == classes[1]
    return float(-np.mean(np.where(is_positive, np.log(positive), np.log1p(-positive))))


def _positive_probability(y_prob: Any) -> np.ndarray:
    probabilities = np.asarray(y_prob)
    if probabilities.dtype.kind not in "biuf":
        raise ValueError(f"y_prob must be numeric, got dtype {probabilities.dtype.name}.")
    if probabilities.ndim == 2 and probabilities.shape[1] == 2:
        probabilities = probabilities[:, 1]
    elif probabilities.ndim == 2 and probabilities.shape[1] == 1:
        probabilities = probabilities[:, 0]
    if probabilities.ndim != 1:
        raise ValueError(f"y_prob must have shape (n_samples,) or (n_samples, 2), got {np.shape(y_prob)}.")

    probabilities = probabilities.astype(np.float64)
    if not np.all((probabilities >= 0.0) & (probabilities <= 1.0)):
        raise ValueError("y_prob must contain probabilities in [0, 1] (NaN is not allowed).")
    return probabilities


def confusion_matrix(y_true: Any, y_pred: Any, *, labels: Any = None) -> np.ndarray:
    """Return counts with true labels as rows and predicted labels as columns.

    Rows and columns follow ``labels`` when given, else the sorted union of
    the labels in ``y_true`` and ``y_pred``. Samples whose true or predicted
    label is not in ``labels`` are not counted, as in scikit-learn.
    """
    true = check_labels(y_true, name="y_true")
    predicted = check_labels(y_pred, name="y_pred")
    check_same_length(true, predicted, "y_true", "y_pred")

    if labels is None:
        classes = np.unique(np.concatenate([true, predicted]))
    else:
        classes = check_labels(labels, name="labels")
        if np.unique(classes).size != classes.size:
            raise ValueError(f"labels must be distinct, got {classes.size} entries with repeats.")
        if not np.isin(classes, true).any():
            raise ValueError("none of the given labels occurs in y_true.")

    # get_indexer returns -1 for a label that is not in classes.
    positions = pd.Index(classes)
    rows = positions.get_indexer(true)
    columns = positions.get_indexer(predicted)
    counted = (rows >= 0) & (columns >= 0)
    flat = np.bincount(rows[counted] * classes.size + columns[counted], minlength=classes.size**2)
    return flat.reshape(classes.size, classes.size).astype(np.int64)
