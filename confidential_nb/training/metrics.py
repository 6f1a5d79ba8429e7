"""Classification metrics with scikit-learn's names, argument order and results.

Each function matches scikit-learn 1.9.1 to rounding on the inputs it accepts;
the docstrings name the few places where it differs. Messages and warnings name
counts and parameter values but never labels or scores, because they leave the
enclave.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from confidential_nb.library_warnings import TemplatedWarning
from confidential_nb.training._validation import check_labels, check_same_length

# Probabilities are clipped to [EPSILON, 1 - EPSILON] so that log(0) never occurs,
# as scikit-learn's log_loss does (checked in scikit-learn 1.9.1).
EPSILON = float(np.finfo(np.float64).eps)

# Rows of a probability matrix must sum to 1 within this relative tolerance,
# the one scikit-learn 1.9.1 uses in log_loss.
_ROW_SUM_RTOL = math.sqrt(EPSILON)

AVERAGE_OPTIONS = (None, "binary", "micro", "macro", "weighted")


class UndefinedMetricWarning(TemplatedWarning):
    """A metric divided by zero and was set to the ``zero_division`` value or NaN."""


def accuracy_score(y_true: Any, y_pred: Any) -> float:
    """Return the fraction of samples whose predicted label equals the true label."""
    true = check_labels(y_true, name="y_true")
    predicted = check_labels(y_pred, name="y_pred")
    check_same_length(true, predicted, "y_true", "y_pred")
    return float(np.mean(true == predicted))


# --- log loss ---------------------------------------------------------------


def log_loss(y_true: Any, y_prob: Any, *, labels: Any = None) -> float:
    """Return the mean cross-entropy (natural log) of predicted class probabilities.

    ``y_prob`` is either the probability of the positive class, shape
    (n_samples,), or ``predict_proba`` output, shape (n_samples, n_classes),
    with columns in sorted label order. The classes are ``labels`` when given,
    else the labels in ``y_true``. With a 1-D ``y_prob`` there must be exactly
    two classes, and the positive one is the larger.

    Each probability is clipped to [eps, 1 - eps] before the log, as in
    scikit-learn. Unlike scikit-learn, which only warns, rows of a matrix
    that do not sum to 1 (relative tolerance sqrt(eps)) raise ValueError.
    ``labels`` that are not distinct and sorted also raise ValueError, where
    scikit-learn sorts them and so may pair columns with the wrong classes.
    """
    true = check_labels(y_true, name="y_true")
    classes = np.unique(true) if labels is None else _sorted_labels(labels, "y_prob")
    unknown = int(np.sum(~np.isin(true, classes)))
    if unknown:
        raise ValueError(f"y_true has {unknown} label(s) not in labels.")

    probabilities = _probability_matrix(y_prob, classes.size)
    check_same_length(true, probabilities, "y_true", "y_prob")
    true_class = np.searchsorted(classes, true)
    picked = probabilities[np.arange(true.size), true_class]
    return float(-np.mean(np.log(np.clip(picked, EPSILON, 1.0 - EPSILON))))


def _probability_matrix(y_prob: Any, n_classes: int) -> np.ndarray:
    probabilities = _numeric_array(y_prob, "y_prob")
    if probabilities.ndim == 2 and probabilities.shape[1] == 1:
        probabilities = probabilities[:, 0]

    if probabilities.ndim == 1:
        if n_classes != 2:
            raise ValueError(
                f"log_loss with 1-D y_prob needs exactly 2 classes, found {n_classes}; "
                "pass labels=[negative, positive] when y_true holds one class, "
                "or pass one probability column per class."
            )
        probabilities = np.column_stack([1.0 - probabilities, probabilities])
    elif probabilities.ndim != 2:
        raise ValueError(f"y_prob must have shape (n_samples,) or (n_samples, n_classes), got {probabilities.shape}.")
    elif probabilities.shape[1] != n_classes:
        raise ValueError(
            f"y_prob has {probabilities.shape[1]} columns but there are {n_classes} classes; "
            "pass labels= with every class, in sorted order."
        )

    _check_probabilities(probabilities)
    return probabilities


def _sorted_labels(labels: Any, columns_name: str) -> np.ndarray:
    """Return labels after checking that they are distinct and sorted, as the columns of the scores are."""
    classes = check_labels(labels, name="labels")
    if np.unique(classes).size != classes.size or np.any(classes[:-1] > classes[1:]):
        raise ValueError(
            f"labels must be distinct and sorted, because the columns of {columns_name} follow "
            "sorted label order; pass sorted(labels) and order the columns to match."
        )
    return classes


def _numeric_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype.name}.")
    return array.astype(np.float64)


def _check_probabilities(probabilities: np.ndarray) -> None:
    if not np.all((probabilities >= 0.0) & (probabilities <= 1.0)):
        raise ValueError("y_prob must contain probabilities in [0, 1] (NaN is not allowed).")
    row_sums = probabilities.sum(axis=1)
    n_bad_rows = int(np.sum(~np.isclose(row_sums, 1.0, rtol=_ROW_SUM_RTOL, atol=0.0)))
    if n_bad_rows:
        raise ValueError(f"{n_bad_rows} row(s) of y_prob do not sum to 1; pass predict_proba output.")


# --- ROC AUC ----------------------------------------------------------------


def roc_auc_score(
    y_true: Any, y_score: Any, *, average: str = "macro", multi_class: str = "raise", labels: Any = None
) -> float:
    """Return the area under the ROC curve.

    Binary: ``y_score`` is a score of the positive class (the larger label),
    shape (n_samples,); tied scores count one half, as in scikit-learn's
    trapezoidal curve. Unlike scikit-learn, ``predict_proba`` output of shape
    (n_samples, 2) is also accepted and its second column used.

    Multiclass needs ``multi_class="ovr"`` and a probability matrix with one
    column per class in sorted label order (``labels`` when given). The result
    is the one-vs-rest AUC of each class, averaged with equal weights
    (``average="macro"``) or by class prevalence (``"weighted"``).

    When ``y_true`` contains a single class the AUC is undefined: the result is
    NaN with an ``UndefinedMetricWarning``, as in scikit-learn 1.9.1.
    """
    true = check_labels(y_true, name="y_true")
    scores = _numeric_array(y_score, "y_score")
    check_same_length(true, scores, "y_true", "y_score")
    if not np.all(np.isfinite(scores)):
        raise ValueError("y_score contains NaN or infinite values.")
    if multi_class not in ("raise", "ovr"):
        raise ValueError(f"multi_class must be 'raise' or 'ovr', got {multi_class!r}.")

    classes = np.unique(true)
    if scores.ndim == 2 and scores.shape[1] == 2 and classes.size <= 2 and labels is None:
        scores = scores[:, 1]
    if scores.ndim == 1:
        if classes.size > 2:
            raise ValueError(f"y_true has {classes.size} classes, so y_score needs one column per class.")
        return _binary_auc(true == classes[-1], scores)
    return _ovr_auc(true, scores, average, multi_class, labels)


def _binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    n_positive = int(is_positive.sum())
    n_negative = is_positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        warnings.warn(UndefinedMetricWarning.from_template("metrics.roc_auc_one_class"), stacklevel=3)
        return float("nan")

    # Mann-Whitney U: the AUC is the chance that a random positive outscores a
    # random negative, with ties counting one half, which average ranks give.
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    positive_rank_sum = float(ranks[is_positive].sum())
    u_statistic = positive_rank_sum - n_positive * (n_positive + 1) / 2.0
    return u_statistic / (n_positive * n_negative)


def _ovr_auc(true: np.ndarray, scores: np.ndarray, average: str, multi_class: str, labels: Any) -> float:
    if multi_class != "ovr":
        raise ValueError("y_score has several columns: multiclass ROC AUC needs multi_class='ovr'.")
    if average not in ("macro", "weighted"):
        raise ValueError(f"average must be 'macro' or 'weighted' for multiclass ROC AUC, got {average!r}.")
    if scores.ndim != 2:
        raise ValueError(f"y_score must have shape (n_samples,) or (n_samples, n_classes), got {scores.shape}.")

    classes = np.unique(true) if labels is None else _sorted_labels(labels, "y_score")
    if classes.size != scores.shape[1]:
        raise ValueError(f"y_score has {scores.shape[1]} columns but there are {classes.size} classes.")
    if classes.size < 3:
        raise ValueError(f"multiclass ROC AUC needs at least 3 classes, found {classes.size}.")
    unknown = int(np.sum(~np.isin(true, classes)))
    if unknown:
        raise ValueError(f"y_true has {unknown} label(s) not in labels.")
    _check_scores_are_probabilities(scores)

    areas = np.array([_binary_auc(true == label, scores[:, column]) for column, label in enumerate(classes)])
    if average == "weighted":
        prevalence = np.array([np.sum(true == label) for label in classes], dtype=np.float64)
        return float(np.average(areas, weights=prevalence))
    return float(np.mean(areas))


def _check_scores_are_probabilities(scores: np.ndarray) -> None:
    # scikit-learn 1.9.1 checks np.allclose(row sums, 1) with its default tolerances.
    if not np.allclose(scores.sum(axis=1), 1.0):
        raise ValueError("multiclass ROC AUC needs probabilities: each row of y_score must sum to 1.")


# --- precision, recall, F-score ---------------------------------------------


def precision_recall_fscore_support(
    y_true: Any,
    y_pred: Any,
    *,
    beta: float = 1.0,
    labels: Any = None,
    pos_label: Any = 1,
    average: str | None = None,
    zero_division: str | float = "warn",
) -> tuple[Any, Any, Any, Any]:
    """Return precision, recall, F-beta score and support for each label or averaged.

    ``average=None`` returns four arrays in ``labels`` order (default: the
    sorted labels of ``y_true`` and ``y_pred``). ``"binary"`` reports
    ``pos_label`` only and needs at most two labels. ``"micro"`` pools the
    counts of all labels. ``"macro"`` is the unweighted mean over labels, and
    ``"weighted"`` weights each label by its support. An averaged result has
    None as its support. A ratio with a zero denominator is set to ``zero_division``
    (0.0, 1.0 or NaN); ``"warn"`` sets it to 0.0 and emits an
    ``UndefinedMetricWarning``. Averages skip NaN entries, as in scikit-learn.
    """
    return _precision_recall_fscore(
        y_true, y_pred, beta, labels, pos_label, average, zero_division, ("precision", "recall", "f-score")
    )


def precision_score(
    y_true: Any, y_pred: Any, *, labels: Any = None, pos_label: Any = 1,
    average: str | None = "binary", zero_division: str | float = "warn",
) -> Any:
    """Return the precision tp / (tp + fp); see ``precision_recall_fscore_support``."""
    return _precision_recall_fscore(y_true, y_pred, 1.0, labels, pos_label, average, zero_division, ("precision",))[0]


def recall_score(
    y_true: Any, y_pred: Any, *, labels: Any = None, pos_label: Any = 1,
    average: str | None = "binary", zero_division: str | float = "warn",
) -> Any:
    """Return the recall tp / (tp + fn); see ``precision_recall_fscore_support``."""
    return _precision_recall_fscore(y_true, y_pred, 1.0, labels, pos_label, average, zero_division, ("recall",))[1]


def f1_score(
    y_true: Any, y_pred: Any, *, labels: Any = None, pos_label: Any = 1,
    average: str | None = "binary", zero_division: str | float = "warn",
) -> Any:
    """Return the F1 score 2 tp / (2 tp + fp + fn); see ``precision_recall_fscore_support``."""
    return _precision_recall_fscore(y_true, y_pred, 1.0, labels, pos_label, average, zero_division, ("f-score",))[2]


def _precision_recall_fscore(
    y_true: Any,
    y_pred: Any,
    beta: float,
    labels: Any,
    pos_label: Any,
    average: str | None,
    zero_division: str | float,
    warn_for: tuple[str, ...],
) -> tuple[Any, Any, Any, Any]:
    zero_value = _check_zero_division(zero_division)
    if average not in AVERAGE_OPTIONS:
        raise ValueError(f"average must be one of {list(AVERAGE_OPTIONS)}, got {average!r}.")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"beta must be a non-negative number, got {beta!r}.")

    true = check_labels(y_true, name="y_true")
    predicted = check_labels(y_pred, name="y_pred")
    check_same_length(true, predicted, "y_true", "y_pred")
    chosen = _set_wise_labels(true, predicted, labels, pos_label, average)
    true_positives, predicted_counts, true_counts = _label_counts(true, predicted, chosen)
    if average == "micro":
        true_positives, predicted_counts, true_counts = (
            counts.sum(keepdims=True) for counts in (true_positives, predicted_counts, true_counts)
        )

    warn = zero_division == "warn"
    precision = _divide(true_positives, predicted_counts, zero_value, warn and "precision" in warn_for, "metrics.precision_no_predicted")
    recall = _divide(true_positives, true_counts, zero_value, warn and "recall" in warn_for, "metrics.recall_no_true")
    f_score = _f_score(true_positives, predicted_counts, true_counts, precision, recall, float(beta), zero_value, warn and "f-score" in warn_for)

    if average is None:
        return precision, recall, f_score, true_counts
    weights = true_counts if average == "weighted" else None
    return _nan_average(precision, weights), _nan_average(recall, weights), _nan_average(f_score, weights), None


def _check_zero_division(zero_division: Any) -> float:
    if isinstance(zero_division, str):
        if zero_division == "warn":
            return 0.0
    elif isinstance(zero_division, (int, float)) and not isinstance(zero_division, bool):
        if math.isnan(zero_division) or zero_division in (0, 1):
            return float(zero_division)
    raise ValueError(f"zero_division must be 'warn', 0.0, 1.0 or NaN, got {zero_division!r}.")


def _set_wise_labels(
    true: np.ndarray, predicted: np.ndarray, labels: Any, pos_label: Any, average: str | None
) -> np.ndarray:
    present = np.unique(np.concatenate([true, predicted]))
    if average == "binary":
        if present.size > 2:
            raise ValueError(
                f"y_true and y_pred contain {present.size} labels but average='binary'; "
                "choose average=None, 'micro', 'macro' or 'weighted'."
            )
        if pos_label not in present.tolist() and present.size == 2:
            raise ValueError(f"pos_label={pos_label!r} is not one of the 2 labels in y_true and y_pred.")
        return np.array([pos_label])

    if labels is None:
        return present
    chosen = check_labels(labels, name="labels")
    if np.unique(chosen).size != chosen.size:
        raise ValueError(f"labels must be distinct, got {chosen.size} entries with repeats.")
    return chosen


def _label_counts(true: np.ndarray, predicted: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return the true positives, predicted counts and true counts of each chosen label."""
    index = pd.Index(chosen)
    true_codes = index.get_indexer(true)
    predicted_codes = index.get_indexer(predicted)
    size = chosen.size
    hits = (true_codes == predicted_codes) & (true_codes >= 0)
    true_positives = np.bincount(true_codes[hits], minlength=size)
    predicted_counts = np.bincount(predicted_codes[predicted_codes >= 0], minlength=size)
    true_counts = np.bincount(true_codes[true_codes >= 0], minlength=size)
    return true_positives.astype(np.int64), predicted_counts.astype(np.int64), true_counts.astype(np.int64)


def _divide(
    numerator: np.ndarray, denominator: np.ndarray, zero_value: float, warn: bool, template: str
) -> np.ndarray:
    empty = denominator == 0
    result = numerator / np.where(empty, 1, denominator).astype(np.float64)
    result[empty] = zero_value
    if warn and empty.any():
        # The message is a fixed template with numeric arguments, so it may leave the enclave.
        warning = UndefinedMetricWarning.from_template(template, labels=int(empty.sum()))
        warnings.warn(warning, stacklevel=4)
    return result


def _f_score(
    true_positives: np.ndarray,
    predicted_counts: np.ndarray,
    true_counts: np.ndarray,
    precision: np.ndarray,
    recall: np.ndarray,
    beta: float,
    zero_value: float,
    warn: bool,
) -> np.ndarray:
    if math.isinf(beta):
        return recall
    if beta == 0:
        return precision
    # (1 + b^2) P R / (b^2 P + R) written with counts: (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp).
    beta_squared = beta**2
    denominator = beta_squared * true_counts.astype(np.float64) + predicted_counts
    return _divide((1 + beta_squared) * true_positives.astype(np.float64), denominator, zero_value, warn, "metrics.f_score_no_true_nor_predicted")


def _nan_average(values: np.ndarray, weights: np.ndarray | None) -> float:
    """Return the mean of the non-NaN values, weighted unless all their weights are 0."""
    defined = ~np.isnan(values)
    if not defined.any():
        return float("nan")
    if weights is None or not np.any(weights[defined]):
        return float(np.mean(values[defined]))
    return float(np.average(values[defined], weights=weights[defined]))


# --- confusion matrix -------------------------------------------------------


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
