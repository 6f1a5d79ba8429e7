"""Progress reports of the training loops: rate limit, final epoch and agreement with the history."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from confidential_nb.datasets import load_breast_cancer
from confidential_nb.progress_records import MAX_EPOCHS, normalize_record
from confidential_nb.training import LinearSVC, LogisticRegression, MLPClassifier, cross_validate, progress, train_test_split


class FakeClock:
    """A clock that moves only by ``step`` seconds per call, or when a test sets ``now``."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(autouse=True)
def no_sink() -> Iterator[None]:
    progress.set_sink(None)
    yield
    progress.set_sink(None)


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    X_train, X_test, y_train, y_test = train_test_split(load_breast_cancer(), target="target", test_size=0.33, random_state=0)
    return X_train, X_test, y_train, y_test


def collect(step: float) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    progress.set_sink(records.append, min_interval=0.1, clock=FakeClock(step))
    return records


def round4(value: float) -> float:
    return float(f"{value:.4g}")


# --- rate limiter -----------------------------------------------------------


def test_report_without_sink_sends_nothing() -> None:
    assert not progress.active()
    assert not progress.due(1)
    assert not progress.due(5, last=True)
    progress.report("LogisticRegression", 1, 10, 0.5, 0.5, last=True)


def test_rate_limiter_first_interval_last() -> None:
    records: list[dict[str, Any]] = []
    clock = FakeClock()
    progress.set_sink(records.append, min_interval=0.1, clock=clock)

    schedule = [(0.0, 1, False), (0.05, 2, False), (0.1, 3, False), (0.15, 4, False), (0.16, 5, True), (0.17, 1, False)]
    for now, epoch, last in schedule:
        clock.now = now
        progress.report("LogisticRegression", epoch, 5, 0.5, 0.5, last=last)

    assert [record["epoch"] for record in records] == [1, 3, 5, 1]


def test_rate_limiter_due_matches_report() -> None:
    records: list[dict[str, Any]] = []
    clock = FakeClock()
    progress.set_sink(records.append, min_interval=0.1, clock=clock)
    for tick in range(40):
        clock.now = tick * 0.03
        epoch = tick + 1
        expected = progress.due(epoch)
        before = len(records)
        progress.report("MLPClassifier", epoch, 100, 0.5, 0.5)
        assert (len(records) > before) == expected, epoch
    gaps = np.diff([record["epoch"] for record in records])
    assert gaps.min() >= 4  # 0.1 s at 0.03 s per epoch


def test_rate_limiter_zero_interval_sends_every_epoch() -> None:
    records: list[dict[str, Any]] = []
    progress.set_sink(records.append, min_interval=0.0, clock=FakeClock())
    for epoch in range(1, 11):
        progress.report("LinearSVC", epoch, 10, 1.0, 0.5)
    assert [record["epoch"] for record in records] == list(range(1, 11))


@pytest.mark.parametrize("interval", [-0.1, math.nan, math.inf])
def test_set_sink_rejects_bad_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="min_interval"):
        progress.set_sink(print, min_interval=interval)


def test_report_sends_nonfinite_as_none() -> None:
    records = collect(step=1.0)
    progress.report("LogisticRegression", 1, 3, math.nan, math.inf)
    assert records == [{"model": "LogisticRegression", "epoch": 1, "epochs": 3, "loss": None, "accuracy": None}]


def test_report_rounds_and_normalizes() -> None:
    records = collect(step=1.0)
    progress.report("LogisticRegression", 1, 3, np.float32(0.123456), np.float64(0.987654))
    assert records == [{"model": "LogisticRegression", "epoch": 1, "epochs": 3, "loss": 0.1235, "accuracy": 0.9877}]
    assert type(records[0]["loss"]) is float


def test_report_drops_out_of_bounds_epochs() -> None:
    records = collect(step=1.0)
    progress.report("LogisticRegression", 1, MAX_EPOCHS + 1, 0.5, 0.5)
    progress.report("LogisticRegression", 2, MAX_EPOCHS + 1, 0.5, 0.5, last=True)
    assert records == []


# --- estimators -------------------------------------------------------------

# Each case fits a model whose training ends before or at ``epochs``, with
# record_every=1 so every epoch's training loss is in the history.
FIT_CASES: dict[str, tuple[Callable[[], Any], bool]] = {
    "logistic_gd_converges": (lambda: LogisticRegression(epochs=300), False),
    "logistic_gd_early_stop": (lambda: LogisticRegression(epochs=2000, tol=0, learning_rate=1.0, patience=5), True),
    "logistic_newton": (lambda: LogisticRegression(epochs=50, solver="newton"), False),
    "logistic_sgd": (lambda: LogisticRegression(epochs=40, tol=0, solver="sgd", random_state=0), False),
    "logistic_adam": (lambda: LogisticRegression(epochs=40, tol=0, solver="adam", random_state=0), False),
    "svc_squared_hinge": (lambda: LinearSVC(), False),
    "svc_hinge": (lambda: LinearSVC(loss="hinge", tol=1e-2), False),
    "mlp_converges": (lambda: MLPClassifier(epochs=200, n_iter_no_change=3, tol=1e-2, random_state=0), False),
    "mlp_all_epochs": (lambda: MLPClassifier(epochs=15, random_state=0), False),
}


def fit_quietly(model: Any, split: tuple[Any, ...], validation: bool) -> Any:
    X_train, X_test, y_train, y_test = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if validation:
            return model.fit(X_train, y_train, validation_data=(X_test, y_test))
        return model.fit(X_train, y_train)


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_fit_reports_every_epoch_like_history(case: str, split: tuple[Any, ...]) -> None:
    factory, validation = FIT_CASES[case]
    records = collect(step=1.0)  # every epoch is past the interval

    model = fit_quietly(factory(), split, validation)

    name = type(model).__name__
    epochs = [record["epoch"] for record in records]
    assert epochs == list(range(1, model.n_iter_ + 1))
    assert all(record["model"] == name for record in records)
    assert all(record["epochs"] == model.epochs for record in records)
    assert all(normalize_record(record) == record for record in records)
    history = model.history_
    assert history.epoch == epochs
    assert [record["loss"] for record in records] == [round4(loss) for loss in history.loss]
    assert [record["accuracy"] for record in records] == [round4(accuracy) for accuracy in history.accuracy]


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_fit_frozen_clock_first_and_last(case: str, split: tuple[Any, ...]) -> None:
    factory, validation = FIT_CASES[case]
    records = collect(step=0.0)  # no time passes, so only the first and last epochs are due

    model = fit_quietly(factory(), split, validation)

    expected = [1] if model.n_iter_ == 1 else [1, model.n_iter_]
    assert [record["epoch"] for record in records] == expected
    assert records[-1]["loss"] == round4(model.history_.loss[-1])
    if validation:
        assert model.stopped_early_
        assert model.n_iter_ < model.epochs


def test_early_stop_thinned_history_final_record(split: tuple[Any, ...]) -> None:
    records = collect(step=0.0)
    model = fit_quietly(
        LogisticRegression(epochs=500, tol=0, solver="sgd", random_state=0, patience=3, record_every=7), split, True
    )
    assert model.stopped_early_
    assert model.n_iter_ % 7 != 0
    assert records[-1]["epoch"] == model.n_iter_
    assert records[-1]["loss"] is not None
    assert records[-1]["accuracy"] is not None


@pytest.mark.parametrize(
    "factory",
    [
        lambda: LogisticRegression(epochs=60, record_every=0),
        lambda: LogisticRegression(epochs=60, record_every=7, solver="sgd", random_state=0),
        lambda: LinearSVC(epochs=60, record_every=0),
        lambda: MLPClassifier(epochs=12, record_every=5, random_state=0),
    ],
)
def test_unrecorded_epochs_report_metrics(factory: Callable[[], Any], split: tuple[Any, ...]) -> None:
    records = collect(step=1.0)
    model = fit_quietly(factory(), split, False)
    assert [record["epoch"] for record in records] == list(range(1, model.n_iter_ + 1))
    assert all(record["loss"] is not None and record["accuracy"] is not None for record in records)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: LogisticRegression(epochs=80, record_every=7, learning_rate=3.0),
        lambda: LogisticRegression(epochs=80, record_every=0, solver="sgd", random_state=0),
        lambda: LinearSVC(epochs=80, record_every=9),
        lambda: MLPClassifier(epochs=12, record_every=5, random_state=0),
    ],
)
def test_fit_result_independent_of_progress(factory: Callable[[], Any], split: tuple[Any, ...]) -> None:
    def fit_with_warnings() -> tuple[Any, list[str]]:
        X_train, _, y_train, _ = split
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = factory().fit(X_train, y_train)
        return model, [str(warning.message) for warning in caught]

    plain, plain_warnings = fit_with_warnings()
    records = collect(step=1.0)
    reported, reported_warnings = fit_with_warnings()

    assert records
    assert reported.n_iter_ == plain.n_iter_
    assert reported.history_ == plain.history_
    assert reported_warnings == plain_warnings
    method = "predict_proba" if hasattr(plain, "predict_proba") else "decision_function"
    np.testing.assert_array_equal(getattr(reported, method)(split[1]), getattr(plain, method)(split[1]))


def test_cross_validate_restarts_each_fold(split: tuple[Any, ...]) -> None:
    records = collect(step=0.0)
    X_train, _, y_train, _ = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cross_validate(LogisticRegression(epochs=30), X_train, y_train, cv=3)
    starts = [index for index, record in enumerate(records) if record["epoch"] == 1]
    assert len(starts) == 3
    assert [records[index - 1]["epoch"] for index in starts[1:]] == [len(history) for history in result["history"][:2]]
