"""Parity of confidential_nb.training.metrics with scikit-learn on many random cases."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sklearn.exceptions
import sklearn.metrics

from confidential_nb.training.metrics import (
    UndefinedMetricWarning,
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)

# Both sides compute the same sums in a different order, so results agree to a
# few units in the last place; 1e-12 relative leaves room for that and nothing more.
TOLERANCE = 1e-12

# A label placed in test data; no error or warning message may contain it.
SECRET = "s3cr3t-label"

N_CASES = 60


def assert_close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True)


def random_labels(rng: np.random.Generator, n_classes: int, size: int) -> np.ndarray:
    return rng.integers(0, n_classes, size=size)


def random_probabilities(rng: np.random.Generator, size: int, n_classes: int) -> np.ndarray:
    weights = rng.random((size, n_classes)) ** 3
    return weights / weights.sum(axis=1, keepdims=True)


def cases(seed: int) -> Iterator[tuple[np.random.Generator, int]]:
    rng = np.random.default_rng(seed)
    for _ in range(N_CASES):
        yield rng, int(rng.integers(2, 40))


def sklearn_quiet(function: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.UndefinedMetricWarning)
        return function(*args, **kwargs)


def ours_quiet(function: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return function(*args, **kwargs)


# --- accuracy_score and confusion_matrix ------------------------------------


def test_accuracy_score_random_parity() -> None:
    for rng, size in cases(1):
        n_classes = int(rng.integers(2, 5))
        y_true = random_labels(rng, n_classes, size)
        y_pred = random_labels(rng, n_classes, size)

        assert accuracy_score(y_true, y_pred) == sklearn.metrics.accuracy_score(y_true, y_pred)


def test_accuracy_score_returns_python_float() -> None:
    assert type(accuracy_score([0, 1], [0, 0])) is float


def test_confusion_matrix_random_parity() -> None:
    for rng, size in cases(2):
        n_classes = int(rng.integers(2, 5))
        y_true = random_labels(rng, n_classes, size)
        y_pred = random_labels(rng, n_classes + 1, size)

        with warnings.catch_warnings():
            # scikit-learn warns when a case happens to hold a single label; ours needs no warning there.
            warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
            expected = sklearn.metrics.confusion_matrix(y_true, y_pred)
        np.testing.assert_array_equal(confusion_matrix(y_true, y_pred), expected)


# --- log_loss ---------------------------------------------------------------


def test_log_loss_binary_random_parity() -> None:
    for rng, size in cases(3):
        y_true = np.concatenate([[0, 1], random_labels(rng, 2, size)])
        # Exact 0 and 1 probabilities exercise the clipping.
        y_prob = np.round(rng.random(y_true.size), int(rng.integers(0, 4)))

        assert_close(log_loss(y_true, y_prob), sklearn.metrics.log_loss(y_true, y_prob))
        matrix = np.column_stack([1 - y_prob, y_prob])
        assert_close(log_loss(y_true, matrix), sklearn.metrics.log_loss(y_true, matrix))


def test_log_loss_multiclass_random_parity() -> None:
    for rng, size in cases(4):
        n_classes = int(rng.integers(3, 6))
        labels = np.arange(n_classes) * 10
        # Some classes are usually absent from a short y_true, so labels= is needed.
        y_true = labels[random_labels(rng, n_classes, size)]
        y_prob = random_probabilities(rng, size, n_classes)

        assert_close(log_loss(y_true, y_prob, labels=labels), sklearn.metrics.log_loss(y_true, y_prob, labels=labels))


def test_log_loss_string_labels_parity() -> None:
    y_true = np.array(["cat", "dog", "pig", "dog"])
    y_prob = random_probabilities(np.random.default_rng(5), 4, 3)

    assert_close(log_loss(y_true, y_prob), sklearn.metrics.log_loss(y_true, y_prob))


def test_log_loss_one_class_with_labels_parity() -> None:
    y_true = np.array([1, 1, 1])
    y_prob = np.array([0.9, 0.2, 1.0])

    assert_close(log_loss(y_true, y_prob, labels=[0, 1]), sklearn.metrics.log_loss(y_true, y_prob, labels=[0, 1]))


def test_log_loss_errors() -> None:
    with pytest.raises(ValueError, match=r"1-D y_prob needs exactly 2 classes, found 3"):
        log_loss([0, 1, 2], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"y_prob has 3 columns but there are 2 classes"):
        log_loss([0, 1], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"1 row\(s\) of y_prob do not sum to 1"):
        log_loss([0, 1, 2], [[0.2, 0.3, 0.5], [0.2, 0.3, 0.4], [0.1, 0.1, 0.8]])
    with pytest.raises(ValueError, match=r"y_prob must have shape \(n_samples,\) or \(n_samples, n_classes\)"):
        log_loss([0, 1], np.full((2, 2, 1), 0.5))
    with pytest.raises(ValueError, match=r"y_prob must be numeric, got dtype"):
        log_loss([0, 1], ["a", "b"])


def test_log_loss_rejects_unsorted_labels() -> None:
    y_prob = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]

    with pytest.raises(ValueError, match=r"labels must be distinct and sorted, because the columns of y_prob follow sorted label order"):
        log_loss([0, 1], y_prob, labels=[1, 0, 2])
    with pytest.raises(ValueError, match=r"labels must be distinct and sorted"):
        log_loss([0, 1], y_prob, labels=[0, 1, 1, 2])
    with pytest.raises(ValueError, match=r"y_prob has 3 columns but there are 2 classes; pass labels= with every class, in sorted order\.$"):
        log_loss([0, 1], y_prob)


# --- roc_auc_score ----------------------------------------------------------


def test_roc_auc_score_binary_random_parity() -> None:
    for rng, size in cases(6):
        y_true = np.concatenate([[0, 1], random_labels(rng, 2, size)])
        scores = rng.normal(size=y_true.size)

        assert_close(roc_auc_score(y_true, scores), sklearn.metrics.roc_auc_score(y_true, scores))


def test_roc_auc_score_ties_parity() -> None:
    for rng, size in cases(7):
        y_true = np.concatenate([[3, 7], rng.choice([3, 7], size=size)])
        # Few distinct scores, so most samples are tied with others.
        scores = rng.integers(0, 3, size=y_true.size).astype(float)

        assert_close(roc_auc_score(y_true, scores), sklearn.metrics.roc_auc_score(y_true, scores))


def test_roc_auc_score_all_tied_is_half() -> None:
    assert roc_auc_score([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_roc_auc_score_accepts_proba_matrix() -> None:
    y_true = np.array([0, 1, 1, 0, 1])
    positive = np.array([0.1, 0.7, 0.4, 0.4, 0.9])

    # scikit-learn takes the positive column only; this is our documented extension.
    expected = sklearn.metrics.roc_auc_score(y_true, positive)
    assert_close(roc_auc_score(y_true, np.column_stack([1 - positive, positive])), expected)


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_roc_auc_score_multiclass_ovr_parity(average: str) -> None:
    for rng, size in cases(8):
        n_classes = int(rng.integers(3, 6))
        y_true = np.concatenate([np.arange(n_classes), random_labels(rng, n_classes, size)])
        y_prob = random_probabilities(rng, y_true.size, n_classes)
        y_prob = np.round(y_prob, 2) if size % 2 else y_prob
        y_prob /= y_prob.sum(axis=1, keepdims=True)

        expected = sklearn.metrics.roc_auc_score(y_true, y_prob, multi_class="ovr", average=average)
        assert_close(roc_auc_score(y_true, y_prob, multi_class="ovr", average=average), expected)


def test_roc_auc_score_one_class_is_nan() -> None:
    with pytest.warns(UndefinedMetricWarning, match=r"one class only, so ROC AUC is undefined"):
        ours = roc_auc_score([1, 1, 1], [0.1, 0.2, 0.3])

    assert np.isnan(ours)
    assert np.isnan(sklearn_quiet(sklearn.metrics.roc_auc_score, [1, 1, 1], [0.1, 0.2, 0.3]))


def test_roc_auc_score_absent_class_is_nan() -> None:
    y_true = np.array([0, 1, 1, 0])
    y_prob = random_probabilities(np.random.default_rng(9), 4, 3)

    with pytest.warns(UndefinedMetricWarning):
        ours = roc_auc_score(y_true, y_prob, multi_class="ovr", labels=[0, 1, 2])

    expected = sklearn_quiet(sklearn.metrics.roc_auc_score, y_true, y_prob, multi_class="ovr", labels=[0, 1, 2])
    assert np.isnan(ours)
    assert np.isnan(expected)


def test_roc_auc_score_errors() -> None:
    y_prob = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"multiclass ROC AUC needs multi_class='ovr'"):
        roc_auc_score([0, 1, 2, 2], y_prob)
    with pytest.raises(ValueError, match=r"multi_class must be 'raise' or 'ovr', got 'ovo'"):
        roc_auc_score([0, 1, 2, 2], y_prob, multi_class="ovo")
    with pytest.raises(ValueError, match=r"average must be 'macro' or 'weighted' for multiclass ROC AUC, got 'micro'"):
        roc_auc_score([0, 1, 2, 2], y_prob, multi_class="ovr", average="micro")
    with pytest.raises(ValueError, match=r"each row of y_score must sum to 1"):
        roc_auc_score([0, 1, 2, 2], np.full((4, 3), 0.5), multi_class="ovr")
    with pytest.raises(ValueError, match=r"y_score has 3 columns but there are 4 classes"):
        roc_auc_score([0, 1, 2, 3], y_prob, multi_class="ovr")
    with pytest.raises(ValueError, match=r"y_true has 3 classes, so y_score needs one column per class"):
        roc_auc_score([0, 1, 2, 2], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match=r"labels must be distinct and sorted"):
        roc_auc_score([0, 1, 2, 2], y_prob, multi_class="ovr", labels=[2, 1, 0])
    with pytest.raises(ValueError, match=r"y_true has 1 label\(s\) not in labels"):
        roc_auc_score([0, 1, 2, 5], y_prob, multi_class="ovr", labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"y_score contains NaN or infinite values"):
        roc_auc_score([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match=r"multiclass ROC AUC needs at least 3 classes, found 2"):
        roc_auc_score([0, 1], [[0.5, 0.5], [0.5, 0.5]], multi_class="ovr", labels=[0, 1])


# --- precision_recall_fscore_support ----------------------------------------


@pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
def test_precision_recall_fscore_support_random_parity(average: str | None, zero_division: float) -> None:
    for rng, size in cases(10):
        n_classes = int(rng.integers(2, 6))
        # Short vectors over several classes leave some class out of y_pred or y_true.
        y_true = random_labels(rng, n_classes, size % 12 + 1)
        y_pred = random_labels(rng, n_classes, y_true.size)
        beta = float(rng.choice([0.5, 1.0, 2.0]))

        ours = precision_recall_fscore_support(y_true, y_pred, beta=beta, average=average, zero_division=zero_division)
        expected = sklearn.metrics.precision_recall_fscore_support(
            y_true, y_pred, beta=beta, average=average, zero_division=zero_division
        )
        for mine, theirs in zip(ours[:3], expected[:3]):
            assert_close(mine, theirs)
        if average is None:
            np.testing.assert_array_equal(ours[3], expected[3])
        else:
            assert ours[3] is None


def test_precision_recall_fscore_support_binary_parity() -> None:
    for rng, size in cases(11):
        y_true = rng.choice(["no", "yes"], size=size)
        y_pred = rng.choice(["no", "yes"], size=size)

        ours = precision_recall_fscore_support(y_true, y_pred, average="binary", pos_label="yes", zero_division=1.0)
        expected = sklearn.metrics.precision_recall_fscore_support(
            y_true, y_pred, average="binary", pos_label="yes", zero_division=1.0
        )
        assert ours == expected


def test_precision_recall_fscore_support_labels_parity() -> None:
    y_true = np.array([0, 0, 2, 2, 3])
    y_pred = np.array([0, 2, 2, 2, 0])

    for labels in ([2, 0], [1, 2], [3]):
        for average in (None, "micro", "macro", "weighted"):
            ours = ours_quiet(precision_recall_fscore_support, y_true, y_pred, labels=labels, average=average)
            expected = sklearn_quiet(
                sklearn.metrics.precision_recall_fscore_support, y_true, y_pred, labels=labels, average=average
            )
            for mine, theirs in zip(ours[:3], expected[:3]):
                assert_close(mine, theirs)


def test_precision_recall_fscore_support_class_absent_from_predictions() -> None:
    y_true = np.array([0, 1, 2, 2])
    y_pred = np.array([0, 0, 2, 2])

    with pytest.warns(UndefinedMetricWarning, match=r"Precision is ill-defined for 1 label\(s\) with no predicted samples"):
        ours = precision_recall_fscore_support(y_true, y_pred)

    expected = sklearn_quiet(sklearn.metrics.precision_recall_fscore_support, y_true, y_pred)
    for mine, theirs in zip(ours, expected):
        assert_close(mine, theirs)
    assert ours[0][1] == 0.0


def test_precision_recall_fscore_support_binary_one_label_present() -> None:
    y_true = np.array([0, 0, 0])
    y_pred = np.array([0, 0, 0])

    with pytest.warns(UndefinedMetricWarning) as caught:
        ours = precision_recall_fscore_support(y_true, y_pred, average="binary")
    messages = [str(warning.message) for warning in caught]
    assert any(message.startswith("Precision is ill-defined for 1 label(s) with no predicted samples") for message in messages)
    assert any(message.startswith("Recall is ill-defined for 1 label(s) with no true samples") for message in messages)
    assert any(message.startswith("F-score is ill-defined for 1 label(s) with no true nor predicted samples") for message in messages)

    assert ours == sklearn_quiet(sklearn.metrics.precision_recall_fscore_support, y_true, y_pred, average="binary")


def test_precision_recall_fscore_support_infinite_and_zero_beta() -> None:
    y_true = np.array([0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 2, 2, 2, 1])

    for beta in (0.0, np.inf):
        ours = precision_recall_fscore_support(y_true, y_pred, beta=beta, average="macro")
        expected = sklearn.metrics.precision_recall_fscore_support(y_true, y_pred, beta=beta, average="macro")
        assert_close(ours[2], expected[2])


@pytest.mark.parametrize(
    ("function", "sklearn_function"),
    [
        (precision_score, sklearn.metrics.precision_score),
        (recall_score, sklearn.metrics.recall_score),
        (f1_score, sklearn.metrics.f1_score),
    ],
)
def test_single_score_functions_parity(function: Any, sklearn_function: Any) -> None:
    for rng, size in cases(12):
        y_true = random_labels(rng, 2, size)
        y_pred = random_labels(rng, 2, size)

        assert_close(ours_quiet(function, y_true, y_pred), sklearn_quiet(sklearn_function, y_true, y_pred))
        assert_close(
            ours_quiet(function, y_true, y_pred, average="macro"),
            sklearn_quiet(sklearn_function, y_true, y_pred, average="macro"),
        )


def test_precision_score_warns_for_precision_only() -> None:
    # Recall is defined here (true samples exist) and precision is not.
    with pytest.warns(UndefinedMetricWarning, match=r"Precision is ill-defined") as caught:
        assert precision_score([0, 1, 1], [0, 0, 0]) == 0.0

    assert len(caught) == 1


def test_precision_recall_fscore_support_errors() -> None:
    with pytest.raises(ValueError, match=r"average must be one of \[None, 'binary', 'micro', 'macro', 'weighted'\], got 'samples'"):
        precision_recall_fscore_support([0, 1], [0, 1], average="samples")
    with pytest.raises(ValueError, match=r"contain 3 labels but average='binary'"):
        precision_recall_fscore_support([0, 1, 2], [0, 1, 2], average="binary")
    with pytest.raises(ValueError, match=r"pos_label=5 is not one of the 2 labels"):
        precision_recall_fscore_support([0, 1], [0, 1], average="binary", pos_label=5)
    with pytest.raises(ValueError, match=r"zero_division must be 'warn', 0.0, 1.0 or NaN, got 0.5"):
        precision_recall_fscore_support([0, 1], [0, 1], zero_division=0.5)
    with pytest.raises(ValueError, match=r"zero_division must be 'warn', 0.0, 1.0 or NaN, got 'skip'"):
        precision_recall_fscore_support([0, 1], [0, 1], zero_division="skip")
    with pytest.raises(ValueError, match=r"beta must be a non-negative number, got -1"):
        precision_recall_fscore_support([0, 1], [0, 1], beta=-1)
    with pytest.raises(ValueError, match=r"labels must be distinct, got 2 entries with repeats"):
        precision_recall_fscore_support([0, 1], [0, 1], labels=[1, 1])
    with pytest.raises(ValueError, match=r"different numbers of samples: 2 and 3"):
        precision_recall_fscore_support([0, 1], [0, 1, 1])


# --- messages ---------------------------------------------------------------


def test_metric_messages_omit_label_values() -> None:
    y_true = np.array([SECRET, "b", "c"])
    calls = [
        lambda: log_loss(y_true, [0.5, 0.5, 0.5]),
        lambda: roc_auc_score(y_true, [0.1, 0.2, 0.3]),
        lambda: precision_recall_fscore_support(y_true, y_true, average="binary"),
        lambda: precision_recall_fscore_support(y_true[:2], y_true[:2], average="binary", pos_label="z"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r".") as caught:
            call()
        assert SECRET not in str(caught.value)

    with pytest.warns(UndefinedMetricWarning) as caught_warnings:
        roc_auc_score([SECRET, SECRET], [0.1, 0.2])
        precision_recall_fscore_support([SECRET, "b"], ["b", "b"])
    assert all(SECRET not in str(warning.message) for warning in caught_warnings)
