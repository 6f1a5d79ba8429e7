"""Tests of StratifiedKFold and cross_validate against scikit-learn and the result codec."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics
import sklearn.model_selection

from confidential_nb.result_codec import decode_result, encode_result
from confidential_nb.training import History, LogisticRegression, log_loss
from confidential_nb.training.model_selection import SCORERS, StratifiedKFold, cross_validate


def small_data(n_samples: int = 80, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n_samples) > 0).astype(int)
    return pd.DataFrame(X, columns=["a", "b", "c"]), y


def converging_model() -> LogisticRegression:
    # A loose tol so that every fold converges well within the epoch limit.
    return LogisticRegression(epochs=500, learning_rate=0.5, tol=0.01)


class MajorityClassifier:
    """A minimal estimator without history_, predict_proba or validation_data."""

    def __init__(self, *, tag: str = "x") -> None:
        self.tag = tag

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"tag": self.tag}

    def fit(self, X: Any, y: Any) -> MajorityClassifier:
        values, counts = np.unique(y, return_counts=True)
        self.majority_ = values[np.argmax(counts)]
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.majority_)


# --- StratifiedKFold --------------------------------------------------------


# Random small classes trigger both libraries' small-class warning, tested separately below.
@pytest.mark.filterwarnings("ignore:.*least populated class:UserWarning")
def test_stratified_kfold_matches_sklearn_without_shuffle() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        n_splits = int(rng.integers(2, 6))
        n_classes = int(rng.integers(2, 5))
        size = int(rng.integers(n_splits * n_classes, 60))
        # Skewed class shares and an interleaved order test the per-class blocks.
        y = rng.choice(np.array(["b", "a", "d", "c"])[:n_classes], size=size, p=None)
        y[:n_classes] = np.array(["b", "a", "d", "c"])[:n_classes]
        X = np.zeros((size, 1))

        ours = list(StratifiedKFold(n_splits).split(X, y))
        theirs = list(sklearn.model_selection.StratifiedKFold(n_splits).split(X, y))

        assert len(ours) == len(theirs)
        for (train, test), (expected_train, expected_test) in zip(ours, theirs):
            np.testing.assert_array_equal(train, expected_train)
            np.testing.assert_array_equal(test, expected_test)


def test_stratified_kfold_shuffle_keeps_class_shares() -> None:
    y = np.array([0] * 23 + [1] * 11 + [2] * 6)
    X = np.zeros((y.size, 2))

    folds = list(StratifiedKFold(5, shuffle=True, random_state=3).split(X, y))
    tests = [test for _, test in folds]

    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(y.size))
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == y.size
    for label, total in ((0, 23), (1, 11), (2, 6)):
        per_fold = [int(np.sum(y[test] == label)) for test in tests]
        # Each class is spread as evenly as whole samples allow.
        assert max(per_fold) - min(per_fold) <= 1
        assert sum(per_fold) == total


def test_stratified_kfold_same_seed_same_folds() -> None:
    y = np.array([0, 1] * 15)
    X = np.zeros((30, 1))

    first = list(StratifiedKFold(3, shuffle=True, random_state=11).split(X, y))
    second = list(StratifiedKFold(3, shuffle=True, random_state=11).split(X, y))
    other = list(StratifiedKFold(3, shuffle=True, random_state=12).split(X, y))

    for (train, test), (train_again, test_again) in zip(first, second):
        np.testing.assert_array_equal(train, train_again)
        np.testing.assert_array_equal(test, test_again)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))


def test_stratified_kfold_get_n_splits_and_repr() -> None:
    splitter = StratifiedKFold(4, shuffle=True, random_state=2)

    assert splitter.get_n_splits() == 4
    assert repr(splitter) == "StratifiedKFold(n_splits=4, shuffle=True, random_state=2)"


def test_stratified_kfold_warns_for_small_class() -> None:
    y = np.array([0] * 10 + [1] * 2)

    with pytest.warns(UserWarning, match=r"least populated class in y has 2 members, fewer than n_splits=3"):
        folds = list(StratifiedKFold(3).split(np.zeros(12), y))

    assert len(folds) == 3


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"n_splits": 1}, r"n_splits must be an int of at least 2, got 1"),
        ({"n_splits": 2.5}, r"n_splits must be an int of at least 2, got 2.5"),
        ({"shuffle": "yes"}, r"shuffle must be True or False, got str"),
        ({"random_state": 1}, r"random_state has no effect when shuffle=False"),
        ({"shuffle": True, "random_state": -1}, r"random_state=-1 must be non-negative"),
    ],
)
def test_stratified_kfold_rejects_bad_arguments(arguments: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StratifiedKFold(**arguments)


def test_stratified_kfold_split_errors() -> None:
    with pytest.raises(ValueError, match=r"n_splits=5 is more than the 4 samples"):
        list(StratifiedKFold(5).split(np.zeros(4), [0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"more than the number of members of every class \(largest class: 3\)"):
        list(StratifiedKFold(4).split(np.zeros(6), [0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"X and y have different numbers of samples: 5 and 4"):
        list(StratifiedKFold(2).split(np.zeros(5), [0, 1, 0, 1]))


# --- cross_validate ---------------------------------------------------------


def test_cross_validate_scores_match_manual_folds() -> None:
    X, y = small_data()
    scoring = ["accuracy", "neg_log_loss", "roc_auc", "f1", "precision_macro"]

    result = cross_validate(converging_model(), X, y, cv=4, scoring=scoring, return_estimator=True)

    folds = sklearn.model_selection.StratifiedKFold(4).split(X, y)
    for fold, (train, test) in enumerate(folds):
        model = converging_model().fit(X.iloc[train], y[train])
        model_from_cv = result["estimator"][fold]
        np.testing.assert_array_equal(model.coef_, model_from_cv.coef_)

        predicted = model.predict(X.iloc[test])
        probabilities = model.predict_proba(X.iloc[test])
        assert result["test_accuracy"][fold] == sklearn.metrics.accuracy_score(y[test], predicted)
        assert result["test_f1"][fold] == pytest.approx(sklearn.metrics.f1_score(y[test], predicted), rel=1e-12)
        assert result["test_precision_macro"][fold] == pytest.approx(
            sklearn.metrics.precision_score(y[test], predicted, average="macro"), rel=1e-12
        )
        # The same formula on the same probabilities, so only rounding differs.
        assert result["test_neg_log_loss"][fold] == pytest.approx(-sklearn.metrics.log_loss(y[test], probabilities), rel=1e-12)
        assert result["test_roc_auc"][fold] == pytest.approx(
            sklearn.metrics.roc_auc_score(y[test], probabilities[:, 1]), rel=1e-12
        )
        assert result["train_accuracy"][fold] == sklearn.metrics.accuracy_score(y[train], model.predict(X.iloc[train]))


def test_cross_validate_returns_float_arrays_per_fold() -> None:
    X, y = small_data()

    result = cross_validate(converging_model(), X, y, cv=3)

    assert sorted(result) == ["fit_time", "history", "score_time", "test_accuracy", "train_accuracy"]
    for key in ("fit_time", "score_time", "test_accuracy", "train_accuracy"):
        assert result[key].dtype == np.float64
        assert result[key].shape == (3,)
    assert np.all(result["fit_time"] >= 0)


def test_cross_validate_histories_record_test_fold() -> None:
    X, y = small_data()

    result = cross_validate(converging_model(), X, y, cv=3, scoring="neg_log_loss")

    histories = result["history"]
    assert len(histories) == 3
    for fold, history in enumerate(histories):
        assert isinstance(history, History)
        assert history.keys() == ["loss", "accuracy", "val_loss", "val_accuracy"]
        # History computes the loss from logits and log_loss from clipped
        # probabilities; the two agree to rounding, far inside 1e-9.
        assert history.val_loss[-1] == pytest.approx(-result["test_neg_log_loss"][fold], rel=1e-9)


def test_cross_validate_without_validation_records_train_only() -> None:
    X, y = small_data()

    result = cross_validate(converging_model(), X, y, cv=3, record_validation=False)

    assert result["history"][0].keys() == ["loss", "accuracy"]


def test_cross_validate_result_passes_codec() -> None:
    X, y = small_data()
    result = cross_validate(converging_model(), X, y, cv=3, scoring=["accuracy", "roc_auc"], return_estimator=True)

    decoded = decode_result(encode_result(result))

    assert isinstance(decoded, dict)
    assert sorted(decoded) == sorted(result)
    np.testing.assert_array_equal(decoded["test_roc_auc"], result["test_roc_auc"])
    assert decoded["history"] == result["history"]
    np.testing.assert_array_equal(decoded["estimator"][2].coef_, result["estimator"][2].coef_)


def test_cross_validate_leaves_estimator_unfitted() -> None:
    X, y = small_data()
    model = converging_model()

    cross_validate(model, X, y, cv=2)

    assert not hasattr(model, "coef_")


def test_cross_validate_optional_keys_can_be_dropped() -> None:
    X, y = small_data()

    result = cross_validate(converging_model(), X, y, cv=2, return_train_score=False, return_histories=False)

    assert sorted(result) == ["fit_time", "score_time", "test_accuracy"]


def test_cross_validate_estimator_without_history() -> None:
    X, y = small_data()

    result = cross_validate(MajorityClassifier(), X.to_numpy(), y, cv=4)

    assert "history" not in result
    for fold, (train, test) in enumerate(sklearn.model_selection.StratifiedKFold(4).split(X, y)):
        majority = np.bincount(y[train]).argmax()
        assert result["test_accuracy"][fold] == np.mean(y[test] == majority)


def test_cross_validate_accepts_splitter_and_pairs() -> None:
    X, y = small_data()
    splitter = StratifiedKFold(3, shuffle=True, random_state=5)
    pairs = list(splitter.split(X, y))

    from_splitter = cross_validate(converging_model(), X, y, cv=splitter)
    from_pairs = cross_validate(converging_model(), X, y, cv=pairs)

    np.testing.assert_array_equal(from_splitter["test_accuracy"], from_pairs["test_accuracy"])


def test_cross_validate_list_inputs() -> None:
    X, y = small_data(40)

    result = cross_validate(converging_model(), X.to_numpy().tolist(), y.tolist(), cv=2)

    assert result["test_accuracy"].shape == (2,)


def test_scorers_cover_sklearn_names() -> None:
    expected = {"accuracy", "neg_log_loss", "roc_auc", "roc_auc_ovr", "f1", "f1_macro", "precision_weighted", "recall_micro"}

    assert expected <= set(SCORERS)
    assert expected <= set(sklearn.metrics.get_scorer_names())


def test_cross_validate_errors() -> None:
    X, y = small_data(20)
    model = converging_model()

    with pytest.raises(ValueError, match=r"unknown scoring name\(s\) \['r2'\]; valid names: \['accuracy'"):
        cross_validate(model, X, y, scoring="r2")
    with pytest.raises(ValueError, match=r"scoring must name at least one metric"):
        cross_validate(model, X, y, scoring=[])
    with pytest.raises(ValueError, match=r"scoring names must be distinct"):
        cross_validate(model, X, y, scoring=["accuracy", "accuracy"])
    with pytest.raises(ValueError, match=r"cv must be a number of folds.*got float"):
        cross_validate(model, X, y, cv=2.5)
    with pytest.raises(ValueError, match=r"cv produced no folds"):
        cross_validate(model, X, y, cv=[])
    with pytest.raises(ValueError, match=r"a fold index is out of range for 20 samples"):
        cross_validate(model, X, y, cv=[(np.arange(10), np.arange(15, 25))])
    with pytest.raises(ValueError, match=r"non-empty 1-D integer index array, got shape \(0,\)"):
        cross_validate(model, X, y, cv=[(np.arange(10), np.array([], dtype=int))])
    with pytest.raises(TypeError, match=r"estimator must have a get_params\(\) method, got object"):
        cross_validate(object(), X, y)
    with pytest.raises(ValueError, match=r"scoring 'neg_log_loss' needs predict_proba\(\), which MajorityClassifier does not have"):
        cross_validate(MajorityClassifier(), X, y, scoring="neg_log_loss")


def test_log_loss_of_history_matches_metric() -> None:
    # Guards the identity the history test above relies on: the final val_loss
    # is the log loss of the fitted model's probabilities.
    X, y = small_data()
    model = converging_model().fit(X.iloc[:60], y[:60], validation_data=(X.iloc[60:], y[60:]))

    assert model.history_.val_loss[-1] == pytest.approx(log_loss(y[60:], model.predict_proba(X.iloc[60:])), rel=1e-9)


def test_cross_validate_multiclass_scores_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = np.argmax(X + rng.normal(scale=0.5, size=(90, 3)), axis=1)
    model = LogisticRegression(epochs=2000, learning_rate=0.5, tol=0.01)
    scoring = ["neg_log_loss", "roc_auc_ovr", "f1_macro"]

    result = cross_validate(model, X, y, cv=3, scoring=scoring, return_estimator=True)

    for fold, (train, test) in enumerate(sklearn.model_selection.StratifiedKFold(3).split(X, y)):
        fitted = result["estimator"][fold]
        probabilities = fitted.predict_proba(X[test])
        # The same formulas on the same inputs, so only rounding differs.
        assert result["test_neg_log_loss"][fold] == pytest.approx(-sklearn.metrics.log_loss(y[test], probabilities), rel=1e-12)
        assert result["test_roc_auc_ovr"][fold] == pytest.approx(
            sklearn.metrics.roc_auc_score(y[test], probabilities, multi_class="ovr"), rel=1e-12
        )
        assert result["test_f1_macro"][fold] == pytest.approx(
            sklearn.metrics.f1_score(y[test], fitted.predict(X[test]), average="macro"), rel=1e-12
        )
