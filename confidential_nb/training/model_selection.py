"""Stratified k-fold splits and cross-validation with scikit-learn's names."""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from confidential_nb.training._validation import check_labels
from confidential_nb.training.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from confidential_nb.training.split import _length, _make_rng, _take

IndexPair = tuple[np.ndarray, np.ndarray]


class StratifiedKFold:
    """K-fold splits that keep each class's share of the samples in every test fold.

    With ``shuffle=False`` the folds are those of scikit-learn's
    ``StratifiedKFold`` (checked against scikit-learn 1.9.1). The samples of
    each class keep their order and go to the test folds in consecutive
    blocks. The number of samples of each class per fold comes from dealing
    the samples, sorted by class in order of first appearance, to the folds
    in turn. With
    ``shuffle=True`` the blocks are shuffled within each class by
    ``numpy.random.default_rng(random_state)``, so a seed repeats the folds,
    but they differ from scikit-learn's, which uses its own random generator.
    """

    def __init__(self, n_splits: int = 5, *, shuffle: bool = False, random_state: int | None = None) -> None:
        if isinstance(n_splits, bool) or not isinstance(n_splits, Integral) or n_splits < 2:
            raise ValueError(f"n_splits must be an int of at least 2, got {n_splits!r}.")
        if not isinstance(shuffle, bool):
            raise ValueError(f"shuffle must be True or False, got {type(shuffle).__name__}.")
        if not shuffle and random_state is not None:
            raise ValueError("random_state has no effect when shuffle=False; set shuffle=True or random_state=None.")
        _make_rng(random_state)
        self.n_splits: int = int(n_splits)
        self.shuffle: bool = shuffle
        self.random_state: int | None = random_state

    def __repr__(self) -> str:
        return f"StratifiedKFold(n_splits={self.n_splits}, shuffle={self.shuffle}, random_state={self.random_state!r})"

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Return the number of folds; the arguments exist for scikit-learn compatibility."""
        return self.n_splits

    def split(self, X: Any, y: Any, groups: Any = None) -> Iterator[IndexPair]:
        """Yield ``(train_index, test_index)`` int64 arrays, one pair per fold."""
        labels = check_labels(y, name="y")
        n_samples = _length(X)
        if n_samples != labels.size:
            raise ValueError(f"X and y have different numbers of samples: {n_samples} and {labels.size}.")
        if n_samples < self.n_splits:
            raise ValueError(f"n_splits={self.n_splits} is more than the {n_samples} samples.")

        test_folds = self._test_folds(labels)
        for fold in range(self.n_splits):
            yield np.flatnonzero(test_folds != fold), np.flatnonzero(test_folds == fold)

    def _test_folds(self, labels: np.ndarray) -> np.ndarray:
        """Return the test fold number of each sample."""
        # Code classes by order of first appearance, as scikit-learn does.
        _, first_index, codes = np.unique(labels, return_index=True, return_inverse=True)
        appearance_rank = np.argsort(np.argsort(first_index))
        codes = appearance_rank[codes]
        class_counts = np.bincount(codes)
        self._check_class_counts(class_counts)

        # Deal the samples, sorted by class, to the folds in turn: row k of
        # allocation counts how many samples of each class go to test fold k.
        dealt = np.sort(codes)
        allocation = np.array(
            [np.bincount(dealt[fold :: self.n_splits], minlength=class_counts.size) for fold in range(self.n_splits)]
        )

        rng = _make_rng(self.random_state) if self.shuffle else None
        test_folds = np.empty(labels.size, dtype=np.int64)
        for code in range(class_counts.size):
            folds_of_class = np.repeat(np.arange(self.n_splits), allocation[:, code])
            if rng is not None:
                rng.shuffle(folds_of_class)
            test_folds[codes == code] = folds_of_class
        return test_folds

    def _check_class_counts(self, class_counts: np.ndarray) -> None:
        if np.all(class_counts < self.n_splits):
            raise ValueError(
                f"n_splits={self.n_splits} is more than the number of members of every class "
                f"(largest class: {int(class_counts.max())})."
            )
        smallest = int(class_counts.min())
        if smallest < self.n_splits:
            warnings.warn(
                f"the least populated class in y has {smallest} members, fewer than n_splits={self.n_splits}, "
                "so some test folds lack it.",
                UserWarning,
                stacklevel=4,
            )


# --- scorers ----------------------------------------------------------------

Scorer = Callable[[Any, Any, np.ndarray], float]


def _predict_scorer(metric: Callable[..., Any], **options: Any) -> Scorer:
    def score(estimator: Any, X: Any, y: np.ndarray) -> float:
        return float(metric(y, estimator.predict(X), **options))

    return score


def _neg_log_loss(estimator: Any, X: Any, y: np.ndarray) -> float:
    probabilities = _call(estimator, "predict_proba", X, "neg_log_loss")
    return -log_loss(y, probabilities, labels=estimator.classes_)


def _roc_auc(estimator: Any, X: Any, y: np.ndarray) -> float:
    # decision_function first, as scikit-learn's roc_auc scorer does; the AUC
    # only depends on the order of the scores.
    if hasattr(estimator, "decision_function"):
        scores = estimator.decision_function(X)
    else:
        scores = _call(estimator, "predict_proba", X, "roc_auc")[:, 1]
    return roc_auc_score(y, scores)


def _roc_auc_ovr(estimator: Any, X: Any, y: np.ndarray) -> float:
    probabilities = _call(estimator, "predict_proba", X, "roc_auc_ovr")
    return roc_auc_score(y, probabilities, multi_class="ovr", labels=estimator.classes_)


def _call(estimator: Any, method: str, X: Any, scoring: str) -> Any:
    if not hasattr(estimator, method):
        raise ValueError(f"scoring {scoring!r} needs {method}(), which {type(estimator).__name__} does not have.")
    return getattr(estimator, method)(X)


def _build_scorers() -> dict[str, Scorer]:
    scorers: dict[str, Scorer] = {
        "accuracy": _predict_scorer(accuracy_score),
        "neg_log_loss": _neg_log_loss,
        "roc_auc": _roc_auc,
        "roc_auc_ovr": _roc_auc_ovr,
    }
    for name, metric in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        scorers[name] = _predict_scorer(metric)
        for average in ("micro", "macro", "weighted"):
            scorers[f"{name}_{average}"] = _predict_scorer(metric, average=average)
    return scorers


# Scoring names and their meaning are scikit-learn's. "precision", "recall"
# and "f1" are binary with pos_label=1, so their labels must include 1.
SCORERS = _build_scorers()


# --- cross-validation -------------------------------------------------------


def cross_validate(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    cv: int | Any = 5,
    scoring: str | Sequence[str] = "accuracy",
    return_train_score: bool = True,
    return_estimator: bool = False,
    return_histories: bool = True,
    record_validation: bool = True,
) -> dict[str, Any]:
    """Fit a fresh copy of ``estimator`` on each training fold and score it on both parts.

    ``cv`` is a number of folds (a ``StratifiedKFold`` without shuffling, as
    scikit-learn uses for classifiers), an object with ``split(X, y)`` or an
    iterable of ``(train_index, test_index)`` pairs. ``scoring`` is one name
    or a list of names from ``SCORERS``.

    Returns a dict of float64 arrays with one entry per fold: ``fit_time``
    and ``score_time`` in seconds, ``test_<name>`` and, with
    ``return_train_score``, ``train_<name>``. Unlike scikit-learn, the keys
    name the metric even for a single scoring name (``test_accuracy``, not
    ``test_score``), and ``return_train_score`` defaults to True. With
    ``return_estimator`` the fitted copies are under ``"estimator"``. With
    ``return_histories``, when the copies record ``history_``, their
    ``History`` objects are under ``"history"``.

    Each copy is made as ``type(estimator)(**estimator.get_params())``. With
    ``record_validation`` and a ``fit`` that takes ``validation_data``, the
    test fold is passed as validation data so each History records
    ``val_loss`` and ``val_accuracy``. Turn it off for an estimator whose
    training uses its validation data, such as one that stops early, because
    the test fold would then influence the fit.
    """
    for method in ("get_params", "fit"):
        if not callable(getattr(estimator, method, None)):
            raise TypeError(f"estimator must have a {method}() method, got {type(estimator).__name__}.")
    scorers = _select_scorers(scoring)
    labels = check_labels(y, name="y")
    pass_validation = record_validation and "validation_data" in inspect.signature(estimator.fit).parameters

    folds = _folds(cv, X, labels)
    result: dict[str, list[Any]] = {"fit_time": [], "score_time": []}
    for name in scorers:
        result[f"test_{name}"] = []
        if return_train_score:
            result[f"train_{name}"] = []
    fitted_copies = []

    for train_index, test_index in folds:
        X_train, X_test = _take(X, train_index), _take(X, test_index)
        y_train, y_test = labels[train_index], labels[test_index]
        model = type(estimator)(**estimator.get_params())

        started = time.perf_counter()
        if pass_validation:
            model.fit(X_train, y_train, validation_data=(X_test, y_test))
        else:
            model.fit(X_train, y_train)
        result["fit_time"].append(time.perf_counter() - started)

        started = time.perf_counter()
        for name, scorer in scorers.items():
            result[f"test_{name}"].append(scorer(model, X_test, y_test))
            if return_train_score:
                result[f"train_{name}"].append(scorer(model, X_train, y_train))
        result["score_time"].append(time.perf_counter() - started)
        fitted_copies.append(model)

    return _assemble(result, fitted_copies, return_estimator, return_histories)


def _select_scorers(scoring: str | Sequence[str]) -> dict[str, Scorer]:
    names = [scoring] if isinstance(scoring, str) else list(scoring)
    if not names:
        raise ValueError("scoring must name at least one metric.")
    unknown = [name for name in names if name not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scoring name(s) {unknown}; valid names: {sorted(SCORERS)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"scoring names must be distinct, got {names}.")
    return {name: SCORERS[name] for name in names}


def _folds(cv: Any, X: Any, labels: np.ndarray) -> list[IndexPair]:
    if isinstance(cv, Integral) and not isinstance(cv, bool):
        splitter: Any = StratifiedKFold(int(cv))
        pairs: Iterable[Any] = splitter.split(X, labels)
    elif callable(getattr(cv, "split", None)):
        pairs = cv.split(X, labels)
    elif isinstance(cv, Iterable) and not isinstance(cv, (str, bytes)):
        pairs = cv
    else:
        raise ValueError(
            f"cv must be a number of folds, an object with split(X, y) or (train, test) index pairs, "
            f"got {type(cv).__name__}."
        )

    n_samples = labels.size
    folds = [(_check_index(train, n_samples), _check_index(test, n_samples)) for train, test in pairs]
    if not folds:
        raise ValueError("cv produced no folds.")
    return folds


def _check_index(index: Any, n_samples: int) -> np.ndarray:
    array = np.asarray(index)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
        raise ValueError(f"each fold must be a non-empty 1-D integer index array, got shape {array.shape}.")
    if array.min() < 0 or array.max() >= n_samples:
        raise ValueError(f"a fold index is out of range for {n_samples} samples.")
    return array.astype(np.int64)


def _assemble(
    result: dict[str, list[Any]], fitted_copies: list[Any], return_estimator: bool, return_histories: bool
) -> dict[str, Any]:
    assembled: dict[str, Any] = {name: np.array(values, dtype=np.float64) for name, values in result.items()}
    if return_estimator:
        assembled["estimator"] = fitted_copies
    histories = [getattr(model, "history_", None) for model in fitted_copies]
    if return_histories and all(history is not None for history in histories):
        assembled["history"] = histories
    return assembled
