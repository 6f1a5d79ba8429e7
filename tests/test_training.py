"""Tests of confidential_nb.training: split, metrics, History and LogisticRegression."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn.linear_model
import sklearn.metrics
import sklearn.preprocessing

from confidential_nb.datasets import load_breast_cancer
from confidential_nb.training import (
    ConvergenceWarning,
    History,
    LogisticRegression,
    NotFittedError,
    accuracy_score,
    confusion_matrix,
    log_loss,
    train_test_split,
)
from confidential_nb.training._numerics import log_loss_per_sample, sigmoid

# A marker placed in cells of test data; no error message may contain it.
SECRET = "s3cr3t-cell-value"


@pytest.fixture(scope="module")
def breast_cancer() -> pd.DataFrame:
    return load_breast_cancer()


@pytest.fixture(scope="module")
def split(breast_cancer: pd.DataFrame) -> list[Any]:
    return train_test_split(breast_cancer, target="target", test_size=0.33, random_state=0)


@pytest.fixture(scope="module")
def fitted(split: list[Any]) -> LogisticRegression:
    X_train, X_test, y_train, y_test = split
    return LogisticRegression(epochs=300).fit(X_train, y_train, validation_data=(X_test, y_test))


def small_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=60) > 0).astype(int)
    return X, y


# --- train_test_split -------------------------------------------------------


def test_train_test_split_same_seed_same_split(breast_cancer: pd.DataFrame) -> None:
    first = train_test_split(breast_cancer, target="target", random_state=3)
    second = train_test_split(breast_cancer, target="target", random_state=3)

    for a, b in zip(first, second):
        assert list(a.index) == list(b.index)


def test_train_test_split_other_seed_other_split(breast_cancer: pd.DataFrame) -> None:
    first = train_test_split(breast_cancer, target="target", random_state=3)
    second = train_test_split(breast_cancer, target="target", random_state=4)

    assert list(first[1].index) != list(second[1].index)


def test_train_test_split_target_returns_frame_and_series(split: list[Any], breast_cancer: pd.DataFrame) -> None:
    X_train, X_test, y_train, y_test = split

    assert isinstance(X_train, pd.DataFrame)
    assert isinstance(y_train, pd.Series)
    assert "target" not in X_train.columns
    assert list(X_train.columns) == list(breast_cancer.columns[:-1])
    assert len(X_test) == 188  # ceil(0.33 * 569)
    assert len(X_train) == 381
    assert list(X_train.index) == list(y_train.index)
    assert list(X_test.index) == list(y_test.index)
    assert set(X_train.index).isdisjoint(X_test.index)


def test_train_test_split_target_stratifies_by_default(split: list[Any]) -> None:
    _, _, y_train, y_test = split

    # 212 of 569 are malignant; largest-remainder allocation of 188 test rows
    # gives round(188 * 212 / 569) = 70 malignant rows to the test part.
    assert int(y_test.sum()) == 70
    assert int(y_train.sum()) == 142


def test_train_test_split_stratify_false_turns_it_off(breast_cancer: pd.DataFrame) -> None:
    counts = set()
    for seed in range(10):
        _, _, _, y_test = train_test_split(
            breast_cancer, target="target", test_size=0.33, random_state=seed, stratify=False
        )
        counts.add(int(y_test.sum()))

    assert len(counts) > 1


def test_train_test_split_stratify_keeps_shares() -> None:
    y = np.array([0] * 80 + [1] * 20)
    X = np.arange(100).reshape(-1, 1)

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=1, stratify=y)

    assert int(y_test.sum()) == 5
    assert int(y_train.sum()) == 15
    np.testing.assert_array_equal(y[X_train[:, 0]], y_train)


def test_train_test_split_keeps_arrays_aligned() -> None:
    X = np.arange(20).reshape(10, 2)
    y = list(range(10))

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=3, random_state=0)

    assert isinstance(y_train, list)
    assert len(y_test) == 3
    np.testing.assert_array_equal(X_train[:, 0] // 2, y_train)
    np.testing.assert_array_equal(X_test[:, 0] // 2, y_test)


def test_train_test_split_sizes_follow_sklearn_rounding() -> None:
    X = np.arange(10)

    train, test = train_test_split(X, test_size=0.25, random_state=0)
    assert (len(train), len(test)) == (7, 3)

    train, test = train_test_split(X, train_size=0.66, random_state=0)
    assert (len(train), len(test)) == (6, 4)

    train, test = train_test_split(X, train_size=4, test_size=2, random_state=0)
    assert (len(train), len(test)) == (4, 2)


def test_train_test_split_without_shuffle_keeps_order() -> None:
    train, test = train_test_split(np.arange(10), test_size=0.3, shuffle=False)

    np.testing.assert_array_equal(train, np.arange(7))
    np.testing.assert_array_equal(test, np.arange(7, 10))


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ({"test_size": 1.5}, r"test_size=1.5 must be in the open interval \(0, 1\)"),
        ({"test_size": 0.0}, r"test_size=0.0 must be in the open interval"),
        ({"test_size": 10}, r"test_size=10 must be between 1 and 9 for 10 samples"),
        ({"train_size": -1}, r"train_size=-1 must be between 1 and 9"),
        ({"test_size": "half"}, r"test_size must be a float in \(0, 1\), an int or None, got str"),
        ({"test_size": 0.5, "train_size": 0.6}, r"exceeds the 10 samples"),
        ({"test_size": 0.01}, r"test_size=0.01 and train_size=None leave 9 training and 1 test"),
    ],
)
def test_train_test_split_bad_sizes(sizes: dict[str, Any], match: str) -> None:
    if sizes == {"test_size": 0.01}:
        # ceil(0.01 * 10) = 1 is valid; use train_size to force an empty part.
        sizes = {"train_size": 0.01}
        match = r"train_size=0.01 leave 0 training and 10 test samples"
    with pytest.raises(ValueError, match=match):
        train_test_split(np.arange(10), **sizes)


def test_train_test_split_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match=r"same number of samples, got lengths \[10, 9\]"):
        train_test_split(np.arange(10), np.arange(9))


def test_train_test_split_missing_target_lists_columns(breast_cancer: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"target column 'label' not found; available columns: 'mean radius'.*and 21 more"):
        train_test_split(breast_cancer, target="label")


def test_train_test_split_target_needs_one_frame() -> None:
    with pytest.raises(ValueError, match=r"target= needs exactly one DataFrame.*got 2 argument"):
        train_test_split(pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"a": [1, 2]}), target="a")


def test_train_test_split_stratify_needs_shuffle() -> None:
    with pytest.raises(ValueError, match=r"stratify requires shuffle=True"):
        train_test_split(np.arange(10), shuffle=False, stratify=np.arange(10) % 2)


def test_train_test_split_stratify_rare_class() -> None:
    with pytest.raises(ValueError, match=r"least populated class has 1 member"):
        train_test_split(np.arange(10), stratify=np.array([0] * 9 + [1]), random_state=0)


def test_train_test_split_rejects_unknown_type() -> None:
    with pytest.raises(TypeError, match=r"got set"):
        train_test_split({1, 2, 3})


def test_train_test_split_rejects_bad_random_state() -> None:
    with pytest.raises(ValueError, match=r"random_state=-1 must be non-negative"):
        train_test_split(np.arange(10), random_state=-1)


def test_train_test_split_needs_an_array() -> None:
    with pytest.raises(ValueError, match=r"at least one array"):
        train_test_split()


# --- metrics ----------------------------------------------------------------


def test_accuracy_score_matches_sklearn() -> None:
    y_true = np.array([0, 1, 1, 0, 1])
    y_pred = np.array([0, 1, 0, 0, 0])

    assert accuracy_score(y_true, y_pred) == sklearn.metrics.accuracy_score(y_true, y_pred)


def test_log_loss_matches_sklearn() -> None:
    y_true = np.array([0, 1, 1, 0, 1])
    y_prob = np.array([0.1, 0.8, 0.4, 0.0, 1.0])

    expected = sklearn.metrics.log_loss(y_true, y_prob)
    assert log_loss(y_true, y_prob) == pytest.approx(expected, rel=1e-12)
    assert log_loss(y_true, np.column_stack([1 - y_prob, y_prob])) == pytest.approx(expected, rel=1e-12)


def test_log_loss_string_labels_use_larger_as_positive() -> None:
    y_true = np.array(["no", "yes", "yes"])

    assert log_loss(y_true, [0.2, 0.9, 0.7]) == pytest.approx(sklearn.metrics.log_loss(y_true, [0.2, 0.9, 0.7]))


def test_log_loss_errors() -> None:
    with pytest.raises(ValueError, match=r"needs exactly 2 classes, found 1"):
        log_loss([1, 1], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        log_loss([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match=r"y_true and y_prob have different numbers of samples: 2 and 3"):
        log_loss([0, 1], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"y_true has 1 label\(s\) not in labels"):
        log_loss([0, 1, 2], [0.5, 0.5, 0.5], labels=[0, 1])


def test_confusion_matrix_matches_sklearn() -> None:
    y_true = np.array(["a", "b", "b", "c", "a"])
    y_pred = np.array(["a", "b", "a", "c", "c"])

    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred), sklearn.metrics.confusion_matrix(y_true, y_pred))
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, labels=["c", "a"]),
        sklearn.metrics.confusion_matrix(y_true, y_pred, labels=["c", "a"]),
    )


def test_confusion_matrix_errors() -> None:
    with pytest.raises(ValueError, match=r"different numbers of samples: 2 and 1"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match=r"none of the given labels occurs in y_true"):
        confusion_matrix([0, 1], [0, 1], labels=[5])
    with pytest.raises(ValueError, match=r"labels must be distinct"):
        confusion_matrix([0, 1], [0, 1], labels=[0, 0])


def test_accuracy_score_rejects_2d_labels() -> None:
    with pytest.raises(ValueError, match=r"y_true must be 1-D or of shape \(n_samples, 1\), got shape \(2, 2\)"):
        accuracy_score(np.zeros((2, 2)), [0, 1])


# --- numerics ---------------------------------------------------------------


def test_sigmoid_and_log_loss_stable_at_extremes() -> None:
    logits = np.array([-1e308, -800.0, -30.0, 0.0, 30.0, 800.0, 1e308])
    labels = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probabilities = sigmoid(logits)
        losses = log_loss_per_sample(logits, labels)

    assert probabilities[0] == 0.0
    assert probabilities[-1] == 1.0
    assert probabilities[3] == 0.5
    assert np.isfinite(losses).all()
    assert losses[1] == pytest.approx(800.0)
    assert losses[5] == pytest.approx(800.0)
    assert losses[-1] == 0.0


# --- History ----------------------------------------------------------------


def make_history(times: tuple[float, ...] = (0.5, 0.25)) -> History:
    history = History(("loss", "accuracy", "val_loss", "val_accuracy"))
    history.record(times[0], loss=0.6, accuracy=0.7, val_loss=0.65, val_accuracy=0.6)
    history.record(times[1], loss=0.4, accuracy=0.9, val_loss=0.5, val_accuracy=0.8)
    return history


def test_history_accessors() -> None:
    history = make_history()

    assert len(history) == 2
    assert history.epoch == [1, 2]
    assert history.loss == [0.6, 0.4]
    assert history["val_accuracy"] == [0.6, 0.8]
    assert history["epoch"] == [1, 2]
    assert history.time == [0.5, 0.25]
    assert history.keys() == ["loss", "accuracy", "val_loss", "val_accuracy"]


def test_history_without_validation_has_no_val_keys() -> None:
    history = History()
    history.record(0.1, loss=0.5, accuracy=0.5)

    assert history.keys() == ["loss", "accuracy"]
    with pytest.raises(KeyError, match=r"'val_loss' is not recorded; available: \['epoch', 'loss', 'accuracy', 'time'\]"):
        history.val_loss


def test_history_loss_name_state_round_trip() -> None:
    named = History(loss_name="squared hinge")
    named.record(0.1, loss=0.5, accuracy=0.9)
    plain = History()
    plain.record(0.1, loss=0.5, accuracy=0.9)

    assert History.from_state(named.to_state()).loss_name == "squared hinge"
    assert "loss_name" not in plain.to_state()
    assert History.from_state(plain.to_state()).loss_name is None
    assert named != plain
    with pytest.raises(ValueError, match=r"History state 'loss_name' must be a non-empty str when present"):
        History.from_state({**named.to_state(), "loss_name": 3})
    with pytest.raises(ValueError, match=r"loss_name must be None or a non-empty str, got int"):
        History(loss_name=3)  # type: ignore[arg-type]


def test_logistic_regression_history_loss_name() -> None:
    X, y = small_data()
    model = LogisticRegression().fit(X, y)
    state = model.to_state()
    old_history = History.from_state({key: value for key, value in model.history_.to_state().items() if key != "loss_name"})

    assert model.history_.loss_name == "log loss"
    assert LogisticRegression.from_state(state).history_.loss_name == "log loss"
    assert LogisticRegression.from_state({**state, "history": old_history}).history_.loss_name == "log loss"
    hinge = History.from_state({**model.history_.to_state(), "loss_name": "squared hinge"})
    with pytest.raises(ValueError, match=r"LogisticRegression state 'history' must record 'log loss', got 'squared hinge'"):
        LogisticRegression.from_state({**state, "history": hinge})

def test_history_rejects_position_index() -> None:
    history = History()
    history.record(0.1, loss=0.5, accuracy=0.9)

    with pytest.raises(TypeError, match=r"History is indexed by metric name, not by int: use h\['loss'\]\[-1\] for the last recorded loss"):
        history[-1]  # type: ignore[index]
    with pytest.raises(TypeError, match=r"not by slice"):
        history[0:1]  # type: ignore[index]


def test_history_to_frame_excludes_time_by_default() -> None:
    frame = make_history().to_frame()

    assert list(frame.columns) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert frame.index.name == "epoch"
    assert list(frame.index) == [1, 2]
    assert frame.loc[2, "val_loss"] == 0.5
    assert list(make_history().to_frame(include_time=True).columns)[-1] == "time"


def test_history_equality_and_repr_ignore_time() -> None:
    first = make_history((0.5, 0.25))
    second = make_history((9.0, 7.0))

    assert first == second
    assert repr(first) == repr(second)
    assert "0.5" not in repr(first).split("final")[0]
    assert repr(first) == "History(epochs=2, final: loss=0.4, accuracy=0.9, val_loss=0.5, val_accuracy=0.8)"


def test_history_inequality_on_metrics() -> None:
    other = History(("loss", "accuracy", "val_loss", "val_accuracy"))
    other.record(0.5, loss=0.6, accuracy=0.7, val_loss=0.65, val_accuracy=0.6)

    assert make_history() != other
    assert make_history() != "History"


def test_history_record_needs_all_metrics() -> None:
    with pytest.raises(ValueError, match=r"record\(\) needs exactly the metrics \['loss', 'accuracy'\]"):
        History().record(0.1, loss=0.5)


def test_history_state_round_trip() -> None:
    history = make_history()
    restored = History.from_state(history.to_state())

    assert restored == history
    assert restored.time == history.time


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda state: state.pop("time"), r"missing keys \['time'\]"),
        (lambda state: state.update(extra=1), r"unexpected keys \['extra'\]"),
        (lambda state: state.update(time=[0.1, 0.2]), r"'time' must be a numpy ndarray, got list"),
        (lambda state: state.update(time=np.array([0.1])), r"metric 'loss' must have shape \(1,\), got \(2,\)"),
        (lambda state: state.update(time=np.array([-1.0, 0.1])), r"non-negative"),
        (lambda state: state["metrics"].update(loss=np.array(["a", "b"])), r"must have dtype kind 'f'"),
        (lambda state: state["metrics"].update(other=np.zeros(2)), r"metric_names must be distinct names"),
        (lambda state: state["metrics"].pop("loss"), r"must contain 'loss'"),
        (lambda state: state.update(metrics=[1]), r"'metrics' must be a dict with str keys"),
    ],
)
def test_history_from_state_rejects_malformed(mutate: Any, match: str) -> None:
    state = make_history().to_state()
    mutate(state)

    with pytest.raises(ValueError, match=match):
        History.from_state(state)


def test_history_from_state_rejects_non_dict() -> None:
    with pytest.raises(ValueError, match=r"History state must be a dict, got list"):
        History.from_state([1, 2])


# --- LogisticRegression: quality and agreement ------------------------------


def test_logistic_regression_default_run_quality(split: list[Any]) -> None:
    X_train, X_test, y_train, y_test = split

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = LogisticRegression(epochs=300).fit(X_train, y_train, validation_data=(X_test, y_test))

    assert model.score(X_test, y_test) >= 0.95
    assert model.converged_
    assert 1 <= model.n_iter_ <= 300
    assert len(model.history_) == model.n_iter_
    assert model.history_.keys() == ["loss", "accuracy", "val_loss", "val_accuracy"]


def test_logistic_regression_history_matches_final_model(fitted: LogisticRegression, split: list[Any]) -> None:
    X_train, X_test, y_train, y_test = split
    history = fitted.history_

    # The history is computed on standardized features, predictions on the
    # original scale, so they agree up to rounding.
    assert history.loss[-1] == pytest.approx(log_loss(y_train, fitted.predict_proba(X_train)), rel=1e-9)
    assert history.val_loss[-1] == pytest.approx(log_loss(y_test, fitted.predict_proba(X_test)), rel=1e-9)
    assert history.accuracy[-1] == fitted.score(X_train, y_train)
    assert history.val_accuracy[-1] == fitted.score(X_test, y_test)
    assert history.loss[0] > history.loss[-1]


@pytest.mark.parametrize("C", [1.0, 0.1])
def test_logistic_regression_matches_sklearn(split: list[Any], C: float) -> None:
    X_train, X_test, y_train, _ = split
    model = LogisticRegression(epochs=20000, learning_rate=0.5, C=C, tol=1e-8).fit(X_train, y_train)
    scaler = sklearn.preprocessing.StandardScaler().fit(X_train)
    reference = sklearn.linear_model.LogisticRegression(C=C, tol=1e-10, max_iter=10000)
    reference.fit(scaler.transform(X_train), y_train)

    assert model.converged_
    # The objective is strongly convex with modulus at least 1 / (C * n) >= 1 / 381,
    # so a gradient norm below 1e-8 puts the weights within 1e-8 * 381 < 4e-6 of
    # the optimum; lbfgs at tol=1e-10 is as close. 1e-4 leaves room for both.
    standardized_coef = model.coef_[0] * scaler.scale_
    np.testing.assert_allclose(standardized_coef, reference.coef_[0], atol=1e-4)
    intercept_standardized = model.intercept_[0] + float(model.coef_[0] @ scaler.mean_)
    assert intercept_standardized == pytest.approx(reference.intercept_[0], abs=1e-4)
    np.testing.assert_allclose(
        model.predict_proba(X_test), reference.predict_proba(scaler.transform(X_test)), atol=1e-5
    )
    np.testing.assert_array_equal(model.predict(X_test), reference.predict(scaler.transform(X_test)))


def test_logistic_regression_deterministic(split: list[Any]) -> None:
    X_train, X_test, y_train, y_test = split
    first = LogisticRegression().fit(X_train, y_train, validation_data=(X_test, y_test))
    second = LogisticRegression().fit(X_train, y_train, validation_data=(X_test, y_test))

    np.testing.assert_array_equal(first.coef_, second.coef_)
    np.testing.assert_array_equal(first.intercept_, second.intercept_)
    assert first.history_ == second.history_


def test_logistic_regression_raw_features_no_runtime_warning(split: list[Any]) -> None:
    X_train, X_test, y_train, y_test = split

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        model = LogisticRegression(standardize=False).fit(X_train, y_train, validation_data=(X_test, y_test))
        probabilities = model.predict_proba(X_test)

    assert np.isfinite(probabilities).all()
    assert np.isfinite(model.history_.loss).all()


def test_logistic_regression_warns_when_out_of_epochs(split: list[Any]) -> None:
    X_train, _, y_train, _ = split

    with pytest.warns(ConvergenceWarning, match=r"did not converge in 5 epochs \(tol=0.03\): increase epochs or use a larger learning_rate \(now 0.1\)\.$"):
        model = LogisticRegression(epochs=5).fit(X_train, y_train)

    assert not model.converged_
    assert model.n_iter_ == 5


def test_logistic_regression_suggests_standardize_only_when_off(split: list[Any]) -> None:
    X_train, _, y_train, _ = split

    with pytest.warns(ConvergenceWarning, match=r"use a larger learning_rate \(now 1e-06\), or set standardize=True if"):
        LogisticRegression(epochs=5, learning_rate=1e-6, standardize=False).fit(X_train, y_train)


def test_logistic_regression_loss_rose_advice_when_standardized() -> None:
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(200, 1))
    # Nearly equal columns make the standardized problem ill-conditioned, so a
    # step of 20 overshoots.
    X = np.hstack([signal, signal + 0.01 * rng.normal(size=(200, 1))] * 3)
    y = (signal[:, 0] + rng.normal(size=200) > 0).astype(int)

    with pytest.warns(ConvergenceWarning, match=r"learning_rate=20.0 is probably too large: use a smaller learning_rate\.$"):
        LogisticRegression(learning_rate=20.0, epochs=50).fit(X, y)


def test_logistic_regression_warns_about_large_learning_rate(split: list[Any]) -> None:
    X_train, _, y_train, _ = split

    # Unscaled features (areas near 1e3) make 0.1 far too large a step.
    with pytest.warns(ConvergenceWarning, match=r"the loss rose during training, so learning_rate=0.1 is probably too large: use a smaller learning_rate or standardize=True\.$"):
        LogisticRegression(standardize=False).fit(X_train, y_train)


def test_logistic_small_learning_rate_runs_all_epochs(split: list[Any]) -> None:
    X_train, _, y_train, _ = split

    with pytest.warns(ConvergenceWarning, match=r"learning_rate \(now 0.0001\)"):
        model = LogisticRegression(learning_rate=1e-4).fit(X_train, y_train)

    assert model.n_iter_ == 300


def test_logistic_regression_diverging_raises(split: list[Any]) -> None:
    X_train, _, y_train, _ = split

    with pytest.raises(ValueError, match=r"diverged at epoch 1: the loss overflowed; use a smaller learning_rate \(now 1e\+300\) or standardize=True\.$"):
        LogisticRegression(learning_rate=1e300, standardize=False).fit(X_train, y_train)
    with pytest.raises(ValueError, match=r"diverged at epoch 1: the loss overflowed; use a smaller learning_rate \(now 1e\+300\)\.$"):
        LogisticRegression(learning_rate=1e300).fit(X_train, y_train)


def test_logistic_regression_warning_points_at_caller(split: list[Any]) -> None:
    X_train, _, y_train, _ = split

    with pytest.warns(ConvergenceWarning) as record:
        LogisticRegression(epochs=2).fit(X_train, y_train)

    assert record[0].filename == __file__


# --- LogisticRegression: options --------------------------------------------


def test_logistic_regression_penalty_none_equals_huge_c() -> None:
    X, y = small_data()
    unpenalized = LogisticRegression(penalty=None, epochs=5000).fit(X, y)
    weak = LogisticRegression(C=1e12, epochs=5000).fit(X, y)

    np.testing.assert_allclose(unpenalized.coef_, weak.coef_, rtol=1e-9)
    assert not np.allclose(LogisticRegression(C=0.01, epochs=5000).fit(X, y).coef_, unpenalized.coef_)


def test_logistic_regression_without_intercept() -> None:
    X, y = small_data()
    model = LogisticRegression(fit_intercept=False).fit(X + 5.0, y)

    assert model.intercept_.shape == (1,)
    assert model.intercept_[0] == 0.0
    np.testing.assert_allclose(model.decision_function(X + 5.0), (X + 5.0) @ model.coef_[0])


def test_logistic_regression_constant_column() -> None:
    X, y = small_data()
    with_constant = np.column_stack([X, np.full(len(X), 1e10)])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = LogisticRegression().fit(with_constant, y)
    reference = LogisticRegression().fit(X, y)

    assert model.coef_[0, -1] == 0.0
    np.testing.assert_allclose(model.coef_[0, :-1], reference.coef_[0], rtol=1e-12)
    np.testing.assert_allclose(model.predict_proba(with_constant), reference.predict_proba(X), rtol=1e-9)


def test_logistic_regression_fitted_attributes(fitted: LogisticRegression, breast_cancer: pd.DataFrame) -> None:
    assert fitted.coef_.shape == (1, 30)
    assert fitted.intercept_.shape == (1,)
    np.testing.assert_array_equal(fitted.classes_, [0, 1])
    assert fitted.n_features_in_ == 30
    assert list(fitted.feature_names_in_) == list(breast_cancer.columns[:-1])


def test_logistic_regression_array_fit_has_no_feature_names(fitted: LogisticRegression, split: list[Any]) -> None:
    X_train, _, y_train, _ = split
    model = copy.deepcopy(fitted).fit(X_train.to_numpy(), y_train.to_numpy())

    assert not hasattr(model, "feature_names_in_")


def test_logistic_regression_predict_outputs(fitted: LogisticRegression, split: list[Any]) -> None:
    _, X_test, _, _ = split
    probabilities = fitted.predict_proba(X_test)
    logits = fitted.decision_function(X_test)

    assert probabilities.shape == (188, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted.predict(X_test), (logits > 0).astype(int))
    np.testing.assert_allclose(probabilities[:, 1], 1 / (1 + np.exp(-logits)))


def test_logistic_regression_string_labels(split: list[Any], fitted: LogisticRegression) -> None:
    X_train, X_test, y_train, y_test = split
    names_train = y_train.map({0: "benign", 1: "malignant"})
    names_test = y_test.map({0: "benign", 1: "malignant"})

    model = LogisticRegression().fit(X_train, names_train, validation_data=(X_test, names_test))

    assert list(model.classes_) == ["benign", "malignant"]
    assert set(model.predict(X_test)) <= {"benign", "malignant"}
    assert model.score(X_test, names_test) == fitted.score(X_test, y_test)
    np.testing.assert_array_equal(model.coef_, fitted.coef_)


@pytest.mark.parametrize("shape", ["column", "frame", "list"])
def test_logistic_regression_label_shapes_like_1d(shape: str) -> None:
    X, y = small_data()
    labels: Any = {"column": y.reshape(-1, 1), "frame": pd.DataFrame({"label": y}), "list": y.tolist()}[shape]

    model = LogisticRegression().fit(X, labels)

    np.testing.assert_array_equal(model.coef_, LogisticRegression().fit(X, y).coef_)


def test_logistic_regression_params_api() -> None:
    model = LogisticRegression(epochs=5, C=0.5)

    assert model.get_params()["epochs"] == 5
    assert model.get_params()["solver"] == "gd"
    assert repr(model) == "LogisticRegression(epochs=5, C=0.5)"
    assert model.set_params(tol=0.1) is model
    assert model.tol == 0.1
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['max_iter'\]; valid ones"):
        model.set_params(max_iter=5)


def test_logistic_regression_keyword_only() -> None:
    with pytest.raises(TypeError, match=r"positional argument"):
        LogisticRegression(300)  # type: ignore[misc]


# --- LogisticRegression: errors ---------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"epochs": 0}, r"epochs=0: expected an int >= 1"),
        ({"epochs": 2.5}, r"epochs=2.5: expected an int >= 1"),
        ({"epochs": True}, r"epochs=True: expected an int >= 1"),
        ({"learning_rate": 0.0}, r"learning_rate=0.0: expected a finite number > 0"),
        ({"learning_rate": float("inf")}, r"learning_rate=inf"),
        ({"C": -1.0}, r"C=-1.0: expected a finite number > 0"),
        ({"penalty": "l1"}, r"penalty='l1': expected 'l2' or None"),
        ({"fit_intercept": 1}, r"fit_intercept=1: expected a bool"),
        ({"standardize": "yes"}, r"standardize='yes': expected a bool"),
        ({"tol": -0.1}, r"tol=-0.1: expected a finite number >= 0"),
        ({"random_state": -3}, r"random_state=-3: expected None or an int >= 0"),
        ({"solver": "lbfgs"}, r"solver='lbfgs': expected one of 'gd', 'sgd', 'adam', 'newton'"),
        ({"class_weight": "auto"}, r"class_weight='auto': expected None, 'balanced' or a non-empty dict"),
        ({"class_weight": {0: -1.0}}, r"class_weight=\{0: -1.0\}: expected None, 'balanced'"),
        ({"class_weight": {}}, r"class_weight=\{\}: expected None, 'balanced' or a non-empty dict"),
        ({"batch_size": 0}, r"batch_size=0: expected an int >= 1"),
        ({"learning_rate_decay": -0.5}, r"learning_rate_decay=-0.5: expected a finite number >= 0"),
        ({"patience": 0}, r"patience=0: expected None or an int >= 1"),
        ({"record_every": -1}, r"record_every=-1: expected None or an int >= 0 \(None and 0 turn recording off\)"),
    ],
)
def test_logistic_regression_invalid_params(params: dict[str, Any], match: str) -> None:
    X, y = small_data()

    with pytest.raises(ValueError, match=r"invalid LogisticRegression parameter " + match):
        LogisticRegression(**params).fit(X, y)


def test_logistic_regression_non_numeric_column_named() -> None:
    X = pd.DataFrame({"age": [30, 40, 50, 60], "city": [SECRET, "b", "c", "d"]})

    with pytest.raises(ValueError, match=r"X has 1 non-numeric column\(s\): 'city'; encode or drop them") as info:
        LogisticRegression().fit(X, [0, 1, 0, 1])

    assert SECRET not in str(info.value)


def test_logistic_regression_nan_column_named() -> None:
    X = pd.DataFrame({"age": [30.0, np.nan, 50.0, 60.0], "income": [1.0, 2.0, np.inf, 4.0], "ok": [1, 2, 3, 4]})

    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 column\(s\): 'age', 'income'") as info:
        LogisticRegression().fit(X, [0, 1, 0, 1])

    assert "50" not in str(info.value)


def test_logistic_regression_nan_in_array_names_column_index() -> None:
    X = np.ones((4, 3))
    X[2, 1] = np.nan

    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 column\(s\) at index 1; impute or drop them before fitting\.$"):
        LogisticRegression().fit(X, [0, 1, 0, 1])
    X[0, 2] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 column\(s\) at indices 1, 2; impute"):
        LogisticRegression().fit(X, [0, 1, 0, 1])


def test_logistic_regression_predict_messages_name_the_call() -> None:
    X, y = small_data()
    model = LogisticRegression().fit(X, y)
    bad = X[:4].copy()
    bad[2, 1] = np.nan

    with pytest.raises(ValueError, match=r"at index 1; impute or drop them before predicting\.$"):
        model.predict(bad)
    with pytest.raises(ValueError, match=r"at index 1; impute or drop them before predicting\.$"):
        model.predict_proba(bad)
    with pytest.raises(ValueError, match=r"at index 1; impute or drop them before scoring\.$"):
        model.score(bad, y[:4])

    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    named = LogisticRegression().fit(frame, y)
    text = frame.head(4).assign(c="x")
    with pytest.raises(ValueError, match=r"X has 1 non-numeric column\(s\): 'c'; encode or drop them before predicting\.$"):
        named.predict(text)
    with pytest.raises(ValueError, match=r"'c'; encode or drop them before scoring\.$"):
        named.score(text, y[:4])


def test_logistic_regression_rejects_1d_features() -> None:
    with pytest.raises(ValueError, match=r"X must be 2-D .* got shape \(4,\); use array.reshape\(-1, 1\)"):
        LogisticRegression().fit(np.arange(4.0), [0, 1, 0, 1])


def test_logistic_regression_rejects_series_features() -> None:
    with pytest.raises(ValueError, match=r"got a Series of length 4; use series.to_frame\(\)"):
        LogisticRegression().fit(pd.Series([1.0, 2.0, 3.0, 4.0]), [0, 1, 0, 1])


def test_logistic_regression_rejects_string_array_features() -> None:
    with pytest.raises(ValueError, match=r"X must have a numeric dtype, got dtype str"):
        LogisticRegression().fit(np.array([[SECRET], ["b"]]), [0, 1])


def test_logistic_regression_single_class() -> None:
    X, _ = small_data()

    with pytest.raises(ValueError, match=r"y contains a single class; LogisticRegression needs samples of at least 2 classes"):
        LogisticRegression().fit(X, np.ones(len(X)))


def test_logistic_regression_multiclass_shapes() -> None:
    X, _ = small_data()
    labels = np.array(["a", "b", "c"])[np.arange(len(X)) % 3]

    model = LogisticRegression(solver="newton", tol=1e-8).fit(X, labels)
    probabilities = model.predict_proba(X)

    assert model.coef_.shape == (3, 3)
    assert model.intercept_.shape == (3,)
    assert list(model.classes_) == ["a", "b", "c"]
    assert model.decision_function(X).shape == (60, 3)
    assert probabilities.shape == (60, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(X), model.classes_[np.argmax(probabilities, axis=1)])


def test_logistic_regression_rejects_2d_labels() -> None:
    X, y = small_data()

    with pytest.raises(ValueError, match=r"y must be 1-D or of shape \(n_samples, 1\), got shape \(60, 2\)"):
        LogisticRegression().fit(X, np.column_stack([y, y]))
    with pytest.raises(ValueError, match=r"y must be 1-D or have one column, got a DataFrame of shape \(60, 2\)"):
        LogisticRegression().fit(X, pd.DataFrame({"a": y, "b": y}))


def test_logistic_regression_rejects_missing_labels() -> None:
    X, _ = small_data()
    labels = pd.Series(["yes", None] * 30)

    with pytest.raises(ValueError, match=r"y contains 30 missing \(NaN or None\) label\(s\)"):
        LogisticRegression().fit(X, labels)


def test_logistic_regression_rejects_mixed_labels() -> None:
    X, _ = small_data()

    with pytest.raises(ValueError, match=r"y mixes strings and numbers"):
        LogisticRegression().fit(X, np.array(["a", 1] * 30, dtype=object))


def test_logistic_regression_mismatched_lengths() -> None:
    X, y = small_data()

    with pytest.raises(ValueError, match=r"X and y have different numbers of samples: 60 and 59"):
        LogisticRegression().fit(X, y[:-1])


def test_logistic_regression_predict_before_fit() -> None:
    X, _ = small_data()

    with pytest.raises(NotFittedError, match=r"this LogisticRegression is not fitted yet; call fit\(X, y\)"):
        LogisticRegression().predict(X)
    with pytest.raises(ValueError, match=r"not fitted yet"):
        LogisticRegression().to_state()


def test_logistic_regression_wrong_feature_count(fitted: LogisticRegression) -> None:
    with pytest.raises(ValueError, match=r"X has 3 features, but LogisticRegression was fitted with 30 features"):
        fitted.predict(np.zeros((2, 3)))


def test_logistic_regression_wrong_feature_names(fitted: LogisticRegression, split: list[Any]) -> None:
    _, X_test, _, _ = split
    renamed = X_test.rename(columns={"mean radius": "radius"})

    with pytest.raises(ValueError, match=r"missing 'mean radius', unexpected 'radius'"):
        fitted.predict(renamed)
    with pytest.raises(ValueError, match=r"different order; reorder its columns"):
        fitted.predict(X_test[X_test.columns[::-1]])


def test_logistic_regression_validation_data_errors() -> None:
    X, y = small_data()

    with pytest.raises(ValueError, match=r"validation_data must be a pair \(X_val, y_val\)"):
        LogisticRegression().fit(X, y, validation_data=(X,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"X_val has 2 features, but X has 3"):
        LogisticRegression().fit(X, y, validation_data=(X[:, :2], y))
    with pytest.raises(ValueError, match=r"y_val has 20 label\(s\) that are not among the 2 classes of y"):
        LogisticRegression().fit(X, y, validation_data=(X, np.where(np.arange(60) < 20, 7, y)))
    with pytest.raises(ValueError, match=r"X_val and y_val have different numbers of samples: 60 and 10"):
        LogisticRegression().fit(X, y, validation_data=(X, y[:10]))


def test_logistic_regression_rejects_continuous_target() -> None:
    X = np.random.default_rng(0).normal(size=(200, 2))

    with pytest.raises(ValueError, match=r"y has dtype float64 with 200 distinct values, not all whole numbers, .* LogisticRegression is a classifier: use class labels or bin the target"):
        LogisticRegression().fit(X, np.linspace(0, 1, 200))
    mixed = np.array([0, 1.5] * 100, dtype=object)
    with pytest.raises(ValueError, match=r"y has dtype object with 2 distinct values"):
        LogisticRegression().fit(X, mixed)


def test_logistic_regression_whole_float_labels() -> None:
    X, y = small_data()

    model = LogisticRegression().fit(X, y + 1.0)

    assert model.classes_.tolist() == [1.0, 2.0]


def test_logistic_regression_validation_feature_names() -> None:
    X, y = small_data()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])

    with pytest.raises(ValueError, match=r"X_val has the feature names of X in a different order; reorder its columns to the column order of X"):
        LogisticRegression(solver="newton").fit(frame, y, validation_data=(frame[["c", "b", "a"]], y))
    renamed = frame.rename(columns={"a": "z"})
    with pytest.raises(ValueError, match=r"X_val's columns differ from the feature names of X: missing 'a', unexpected 'z'"):
        LogisticRegression(solver="newton").fit(frame, y, validation_data=(renamed, y))

    model = LogisticRegression(solver="newton").fit(frame, y, validation_data=(X, y))
    assert model.history_.val_accuracy[-1] == model.history_.accuracy[-1]


# --- LogisticRegression: state ----------------------------------------------


def test_logistic_regression_state_round_trip(fitted: LogisticRegression, split: list[Any]) -> None:
    _, X_test, _, _ = split
    restored = LogisticRegression.from_state(fitted.to_state())

    np.testing.assert_array_equal(restored.predict(X_test), fitted.predict(X_test))
    np.testing.assert_array_equal(restored.predict_proba(X_test), fitted.predict_proba(X_test))
    assert restored.history_ == fitted.history_
    assert restored.get_params() == fitted.get_params()
    assert list(restored.feature_names_in_) == list(fitted.feature_names_in_)
    assert (restored.n_iter_, restored.converged_) == (fitted.n_iter_, fitted.converged_)


def test_logistic_regression_state_contains_only_plain_values(fitted: LogisticRegression) -> None:
    def check(value: object) -> None:
        if isinstance(value, dict):
            assert all(isinstance(key, str) for key in value)
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)
        elif isinstance(value, np.ndarray):
            assert value.dtype.kind in "biuf"
        else:
            assert value is None or isinstance(value, (bool, int, float, str, History))

    check(fitted.to_state())
    check(fitted.history_.to_state())


def test_logistic_regression_state_round_trip_string_labels() -> None:
    X, y = small_data()
    labels = np.where(y == 1, "spam", "ham")
    model = LogisticRegression().fit(X, labels)
    restored = LogisticRegression.from_state(model.to_state())

    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    assert restored.classes_.dtype == model.classes_.dtype
    assert not hasattr(restored, "feature_names_in_")


def _replace(key: str, value: object) -> Any:
    def mutate(state: dict[str, Any]) -> None:
        state[key] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda state: state.pop("coef"), r"missing keys \['coef'\]"),
        (_replace("format", "pickle"), r"must have format"),
        (_replace("coef", [[1.0, 2.0]]), r"'coef' must be a numpy ndarray, got list"),
        (_replace("coef", np.zeros((2, 30))), r"'coef' must have shape \(1, 'any'\), got \(2, 30\)"),
        (_replace("coef", np.full((1, 30), np.nan)), r"'coef' must contain finite values only"),
        (_replace("coef", np.zeros((1, 30), dtype=object)), r"'coef' must have dtype kind 'f', got dtype object"),
        (_replace("intercept", np.zeros(2)), r"'intercept' must have shape \(1,\)"),
        (_replace("classes", [0]), r"'classes' must be a list of at least 2 labels"),
        (_replace("classes", [0, 1, 2]), r"'coef' must have shape \(3, 'any'\), got \(1, 30\)"),
        (_replace("classes", [0, "a"]), r"'classes' must be all strings or all numbers"),
        (_replace("classes", [1, 1]), r"'classes' must be distinct labels"),
        (_replace("feature_names", ["a"]), r"'feature_names' must hold 30 distinct names, got 1"),
        (_replace("feature_names", "abc"), r"'feature_names' must be None or a list of str"),
        (_replace("n_iter", 5), r"'n_iter' \(5\) must equal the last recorded epoch \(214\)"),
        (_replace("n_iter", 301), r"'n_iter' \(301\) must be between 0 and epochs \(300\)"),
        (_replace("version", 3), r"must have format .* and version 1 or 2"),
        (_replace("version", True), r"must have format .* and version 1 or 2"),
        (_replace("best_epoch", "3"), r"'best_epoch' must be None or an int from 0 to n_iter \(214\)"),
        (_replace("best_epoch", 215), r"'best_epoch' must be None or an int from 0 to n_iter"),
        (_replace("stopped_early", 1), r"'stopped_early' must be a bool, got int"),
        (_replace("stopped_early", True), r"'best_epoch' must be set when 'stopped_early' is True"),
        (lambda state: state["params"].update(class_weight=[[0, 1.0, 2.0]]), r"'class_weight' must be a list of \[label, weight\] pairs"),
        (lambda state: state["params"].update(class_weight=[[0, -1.0]]), r"invalid LogisticRegression parameter class_weight"),
        (lambda state: state["params"].update(record_every=None), r"'history' must be empty when record_every turns recording off"),
        (_replace("n_iter", "5"), r"'n_iter' must be an int, got str"),
        (_replace("converged", 1), r"'converged' must be a bool, got int"),
        (_replace("history", {"metrics": {}}), r"'history' must be a History, got dict"),
        (_replace("params", {"epochs": 3}), r"'params' has missing keys"),
        (lambda state: state["params"].update(epochs=-1), r"invalid LogisticRegression parameter epochs=-1"),
    ],
)
def test_logistic_regression_from_state_rejects_malformed(
    fitted: LogisticRegression, mutate: Any, match: str
) -> None:
    state = fitted.to_state()
    state["params"] = dict(state["params"])  # type: ignore[call-overload]
    mutate(state)

    with pytest.raises(ValueError, match=match):
        LogisticRegression.from_state(state)


def test_logistic_regression_from_state_rejects_non_dict() -> None:
    with pytest.raises(ValueError, match=r"LogisticRegression state must be a dict, got str"):
        LogisticRegression.from_state("coef")


# --- LogisticRegression: solvers, weights, history options ------------------


def three_class_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(90, 3))
    y = np.argmax(X @ np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [0.5, 0.0, 0.5]]) + rng.normal(scale=0.3, size=(90, 3)), axis=1)
    return X, y


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_logistic_regression_minibatch_seeded(solver: str) -> None:
    X, y = small_data()
    params = {"solver": solver, "epochs": 3, "batch_size": 7, "tol": 0.0}

    with pytest.warns(ConvergenceWarning, match=r"mini-batch steps keep a gradient noise floor"):
        first = LogisticRegression(random_state=5, **params).fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"batch_size \(now 7\)"):
        second = LogisticRegression(random_state=5, **params).fit(X, y)
    with pytest.warns(ConvergenceWarning):
        other = LogisticRegression(random_state=6, **params).fit(X, y)

    np.testing.assert_array_equal(first.coef_, second.coef_)
    assert not np.array_equal(first.coef_, other.coef_)


def test_logistic_regression_newton_warning_names_cap() -> None:
    X, y = small_data()

    with pytest.warns(ConvergenceWarning, match=r"did not converge in 1 epochs \(tol=0.0\): increase epochs \(the iteration cap\) or tol\.$"):
        model = LogisticRegression(solver="newton", epochs=1, tol=0.0).fit(X, y)

    assert not model.converged_


def test_logistic_regression_newton_float32_advice() -> None:
    X, y = small_data()

    with pytest.warns(ConvergenceWarning, match=r"or tol; a tol below about 1e-4 is out of reach for float32 features\.$"):
        LogisticRegression(solver="newton", epochs=1, tol=0.0).fit(X.astype(np.float32), y)


def test_logistic_regression_sgd_diverging_raises() -> None:
    X, y = small_data()

    with pytest.raises(ValueError, match=r"stochastic gradient descent diverged at epoch 1: the loss overflowed"):
        LogisticRegression(solver="sgd", learning_rate=1e300, standardize=False).fit(X * 1e5, y)


def test_logistic_regression_newton_singular_hessian() -> None:
    X, y = small_data()
    duplicated = np.column_stack([X[:, 0], X[:, 0]])

    # Two equal columns make the unpenalized Hessian singular, and every
    # split of the weight between them is optimal: only the sum is fixed.
    model = LogisticRegression(solver="newton", penalty=None, standardize=False, tol=1e-9).fit(duplicated, y)
    single = LogisticRegression(solver="newton", penalty=None, standardize=False, tol=1e-9).fit(X[:, :1], y)

    assert model.converged_
    assert model.coef_[0].sum() == pytest.approx(single.coef_[0, 0], rel=1e-6)
    np.testing.assert_allclose(model.predict_proba(duplicated), single.predict_proba(X[:, :1]), atol=1e-9)


def test_logistic_regression_balanced_weights_reference() -> None:
    X, y = small_data()
    counts = np.bincount(y)
    as_dict = {label: len(y) / (2 * count) for label, count in enumerate(counts)}

    balanced = LogisticRegression(class_weight="balanced").fit(X, y)
    explicit = LogisticRegression(class_weight=as_dict).fit(X, y)

    np.testing.assert_allclose(balanced.coef_, explicit.coef_, rtol=1e-12)


def test_logistic_regression_class_weight_unknown_key() -> None:
    X, y = small_data()

    with pytest.raises(ValueError, match=r"class_weight has 1 key\(s\) that are not among the 2 classes of y; use the labels of y"):
        LogisticRegression(class_weight={0: 1.0, 7: 2.0}).fit(X, y)


def test_logistic_regression_class_weight_all_zero() -> None:
    X, y = small_data()

    with pytest.raises(ValueError, match=r"class_weight gives every sample of y weight 0"):
        LogisticRegression(class_weight={0: 0.0, 1: 0.0}).fit(X, y)


def test_logistic_regression_string_class_weight_keys() -> None:
    X, y = small_data()
    labels = np.where(y == 1, "spam", "ham")

    named = LogisticRegression(class_weight={"spam": 3.0}).fit(X, labels)
    coded = LogisticRegression(class_weight={1: 3.0}).fit(X, y)

    np.testing.assert_array_equal(named.coef_, coded.coef_)


def test_logistic_regression_float32_stays_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    from confidential_nb.training import _solvers

    seen: list[np.dtype[Any]] = []
    original = _solvers.evaluate

    def spy(problem: Any, weights: Any, intercept: Any, rows: Any = None, with_metrics: bool = True) -> Any:
        seen.append(problem.features.dtype)
        seen.append(weights.dtype)
        return original(problem, weights, intercept, rows, with_metrics)

    monkeypatch.setattr(_solvers, "evaluate", spy)
    X, y = small_data()
    model = LogisticRegression().fit(X.astype(np.float32), y)

    assert set(seen) == {np.dtype(np.float32)}
    assert model.coef_.dtype == np.float64
    # float32 rounding moves the optimum by about its epsilon times the condition.
    np.testing.assert_allclose(model.coef_, LogisticRegression().fit(X, y).coef_, atol=1e-4)


def test_logistic_regression_record_every_thins_history() -> None:
    X, y = small_data()

    model = LogisticRegression(record_every=7, tol=1e-6, epochs=5000).fit(X, y)

    assert model.history_.epoch[:3] == [7, 14, 21]
    assert model.history_.epoch[-1] == model.n_iter_
    assert model.n_iter_ % 7 != 0
    assert model.history_.to_frame().index[-1] == model.n_iter_
    restored = LogisticRegression.from_state(model.to_state())
    assert restored.history_ == model.history_


@pytest.mark.parametrize("record_every", [None, 0])
def test_logistic_regression_record_off(record_every: int | None) -> None:
    X, y = small_data()

    model = LogisticRegression(record_every=record_every).fit(X, y)

    assert len(model.history_) == 0
    assert model.n_iter_ > 0
    assert LogisticRegression.from_state(model.to_state()).n_iter_ == model.n_iter_


def test_logistic_regression_early_stopping_keeps_best() -> None:
    X, y = small_data()
    rng = np.random.default_rng(3)
    # Validation labels unrelated to X make the validation loss rise once
    # the model fits the training data.
    X_val, y_val = rng.normal(size=(40, 3)), rng.integers(0, 2, size=40)

    model = LogisticRegression(patience=5, tol=0.0, epochs=300).fit(X, y, validation_data=(X_val, y_val))

    assert model.stopped_early_
    assert not model.converged_
    assert model.best_epoch_ is not None
    assert model.n_iter_ == model.best_epoch_ + 5
    best_loss = min(model.history_.val_loss)
    assert model.history_.val_loss[model.best_epoch_ - 1] == best_loss
    assert log_loss(y_val, model.predict_proba(X_val)) == pytest.approx(best_loss, rel=1e-9)
    restored = LogisticRegression.from_state(model.to_state())
    assert (restored.best_epoch_, restored.stopped_early_) == (model.best_epoch_, True)


def test_logistic_regression_patience_needs_validation() -> None:
    X, y = small_data()

    model = LogisticRegression(patience=1).fit(X, y)

    assert model.best_epoch_ is None
    assert not model.stopped_early_
    assert model.converged_


def test_logistic_regression_multiclass_state_round_trip() -> None:
    X, y = three_class_data()
    model = LogisticRegression(solver="newton", class_weight={0: 2.0, 2: 0.5}).fit(X, y)

    restored = LogisticRegression.from_state(model.to_state())

    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    assert restored.class_weight == {0: 2.0, 2: 0.5}
    assert restored.coef_.shape == (3, 3)


def test_logistic_regression_multiclass_gd_learns() -> None:
    X, y = three_class_data()

    model = LogisticRegression().fit(X, y)

    assert model.converged_
    assert model.score(X, y) >= 0.8
    assert model.history_.accuracy[-1] == model.score(X, y)
    probabilities = model.predict_proba(X)
    expected_loss = -np.mean(np.log(probabilities[np.arange(len(y)), y]))
    assert model.history_.loss[-1] == pytest.approx(expected_loss, rel=1e-9)


def test_logistic_regression_version_1_state_loads(fitted: LogisticRegression, split: list[Any]) -> None:
    _, X_test, _, _ = split
    state = fitted.to_state()
    state["version"] = 1
    del state["best_epoch"], state["stopped_early"]
    state["params"] = {name: value for name, value in fitted.get_params().items() if name in {
        "epochs", "learning_rate", "C", "penalty", "fit_intercept", "standardize", "tol", "random_state", "solver"
    }}

    restored = LogisticRegression.from_state(state)

    np.testing.assert_array_equal(restored.predict_proba(X_test), fitted.predict_proba(X_test))
    assert restored.class_weight is None
    assert restored.best_epoch_ is None


def test_history_record_at_needs_later_epoch() -> None:
    history = History()
    history.record_at(3, 0.1, loss=0.5, accuracy=0.5)

    with pytest.raises(ValueError, match=r"record_at\(\) needs an epoch after 3, got 3"):
        history.record_at(3, 0.1, loss=0.4, accuracy=0.6)
    assert history.epoch == [3]
    assert repr(history) == "History(epochs=1, last epoch=3, final: loss=0.5, accuracy=0.5)"


@pytest.mark.parametrize(
    ("epochs", "match"),
    [
        (np.array([0, 2]), r"'epoch' must be increasing epoch numbers starting at 1"),
        (np.array([3, 2]), r"'epoch' must be increasing"),
        (np.array([1.0, 2.0]), r"'epoch' must have dtype kind 'i'"),
        (np.array([1]), r"'epoch' must have shape \(2,\)"),
    ],
)
def test_history_from_state_rejects_bad_epochs(epochs: np.ndarray, match: str) -> None:
    state = make_history().to_state()
    state["epoch"] = epochs

    with pytest.raises(ValueError, match=match):
        History.from_state(state)


def test_history_every_epoch_state_has_old_layout() -> None:
    state = make_history().to_state()

    assert set(state) == {"metrics", "time"}


def test_logistic_regression_learning_rate_decay_schedule() -> None:
    X, y = small_data()

    def gradient(weights: np.ndarray, bias: float) -> tuple[np.ndarray, float]:
        residuals = 1.0 / (1.0 + np.exp(-(X @ weights + bias))) - y
        return X.T @ residuals / len(y), float(residuals.mean())

    # Epoch 1 steps with 0.2, epoch 2 with 0.2 / (1 + 1.0 * 1) = 0.1.
    weight_step, bias_step = gradient(np.zeros(3), 0.0)
    weights, bias = -0.2 * weight_step, -0.2 * bias_step
    weight_step, bias_step = gradient(weights, bias)
    weights, bias = weights - 0.1 * weight_step, bias - 0.1 * bias_step
    with pytest.warns(ConvergenceWarning, match=r"did not converge in 2 epochs"):
        model = LogisticRegression(
            epochs=2, learning_rate=0.2, learning_rate_decay=1.0, penalty=None, standardize=False
        ).fit(X, y)

    np.testing.assert_allclose(model.coef_[0], weights, rtol=1e-12)
    assert model.intercept_[0] == pytest.approx(bias, rel=1e-12)


def test_logistic_regression_result_codec_round_trip() -> None:
    from confidential_nb.result_codec import decode_result, encode_result

    X, y = three_class_data()
    labels = np.array(["low", "mid", "high"], dtype=object)[y]
    model = LogisticRegression(solver="newton", class_weight={"low": 2.0}, record_every=3, tol=1e-8)
    model.fit(X, labels, validation_data=(X, labels))

    restored = decode_result(encode_result(model))

    assert isinstance(restored, LogisticRegression)
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    assert restored.class_weight == {"low": 2.0}
    assert restored.history_.epoch == model.history_.epoch
    assert list(restored.classes_) == ["high", "low", "mid"]


def test_history_membership_and_iteration():
    history = History(("loss", "accuracy"))
    history.record(0.1, loss=0.5, accuracy=0.75)
    assert "loss" in history
    assert "epoch" in history
    assert "val_loss" not in history
    assert list(history) == ["loss", "accuracy"]
