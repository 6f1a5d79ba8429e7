"""Tests of confidential_nb.compare with histories from real fits and a real enclave run."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from confidential_nb import RunResult, compare
from confidential_nb.training import History, LogisticRegression


def split_data(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] - X[:, 2] + rng.normal(scale=0.8, size=120) > 0).astype(int)
    return X[:80], X[80:], y[:80], y[80:]


def fit(learning_rate: float, *, validation: bool = True, C: float = 1.0, columns: tuple[int, ...] = (0, 1, 2)) -> LogisticRegression:
    X_train, X_test, y_train, y_test = split_data()
    X_train, X_test = X_train[:, columns], X_test[:, columns]
    model = LogisticRegression(epochs=1000, learning_rate=learning_rate, C=C, tol=0.02)
    return model.fit(X_train, y_train, validation_data=(X_test, y_test) if validation else None)


@pytest.fixture(scope="module")
def models() -> dict[str, LogisticRegression]:
    # "blind" is fitted on one feature unrelated to y, so it ranks last.
    return {"blind": fit(0.3, columns=(1,)), "slow": fit(0.1), "fast": fit(1.0), "weak": fit(0.3, C=0.01)}


def legend_texts(ax: Any) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_compare_frame_has_final_metrics(models: dict[str, LogisticRegression]) -> None:
    _, frame = compare([model.history_ for model in models.values()], names=list(models))

    assert frame.index.name == "model"
    assert list(frame.columns) == ["epochs", "loss", "accuracy", "val_loss", "val_accuracy"]
    for name, model in models.items():
        history = model.history_
        assert frame.loc[name, "epochs"] == len(history)
        assert frame.loc[name, "loss"] == history.loss[-1]
        assert frame.loc[name, "accuracy"] == history.accuracy[-1]
        assert frame.loc[name, "val_loss"] == history.val_loss[-1]
        assert frame.loc[name, "val_accuracy"] == history.val_accuracy[-1]


def test_compare_frame_sorted_by_validation_accuracy(models: dict[str, LogisticRegression]) -> None:
    _, frame = compare({name: model.history_ for name, model in models.items()})

    expected = sorted(models, key=lambda name: -models[name].history_.val_accuracy[-1])
    assert frame.attrs["sorted_by"] == "val_accuracy"
    assert list(frame["val_accuracy"]) == sorted(frame["val_accuracy"], reverse=True)
    # Ties keep the input order, which Python's sorted also does.
    assert list(frame.index) == expected
    assert frame.index[-1] == "blind"


def test_compare_frame_without_validation_sorts_by_accuracy() -> None:
    histories = {"a": fit(0.3, validation=False, columns=(1,)).history_, "b": fit(0.1, validation=False).history_}

    _, frame = compare(histories)

    assert frame.attrs["sorted_by"] == "accuracy"
    assert frame["val_loss"].isna().all()
    assert list(frame.index) == ["b", "a"]


def test_compare_frame_puts_missing_validation_last(models: dict[str, LogisticRegression]) -> None:
    histories = {"train only": fit(1.0, validation=False).history_, "slow": models["slow"].history_}

    _, frame = compare(histories)

    assert list(frame.index) == ["slow", "train only"]


def test_compare_figure_titles_labels_and_legend(models: dict[str, LogisticRegression]) -> None:
    figure, _ = compare([models["slow"], models["fast"]], names=["slow", "fast"])

    loss_ax, accuracy_ax = figure.axes
    assert figure.get_suptitle() == "Training curves of 2 models"
    assert loss_ax.get_title() == "Loss"
    assert accuracy_ax.get_title() == "Accuracy"
    assert loss_ax.get_xlabel() == "epoch"
    assert accuracy_ax.get_xlabel() == "epoch"
    assert accuracy_ax.get_ylabel() == "accuracy"
    assert legend_texts(accuracy_ax) == ["slow train", "slow validation", "fast train", "fast validation"]
    assert legend_texts(loss_ax) == [
        "slow (log loss) train",
        "slow (log loss) validation",
        "fast (log loss) train",
        "fast (log loss) validation",
    ]


def test_compare_lines_train_solid_validation_dashed(models: dict[str, LogisticRegression]) -> None:
    figure, _ = compare([models["slow"].history_, models["fast"].history_], names=["slow", "fast"])

    lines = {line.get_label(): line for line in figure.axes[1].get_lines()}
    assert lines["slow train"].get_linestyle() == "-"
    assert lines["slow validation"].get_linestyle() == "--"
    assert lines["slow train"].get_color() == lines["slow validation"].get_color()
    assert lines["slow train"].get_color() != lines["fast train"].get_color()
    np.testing.assert_array_equal(lines["fast validation"].get_ydata(), models["fast"].history_.val_accuracy)
    np.testing.assert_array_equal(lines["fast train"].get_xdata(), models["fast"].history_.epoch)


def make_history(losses: list[float], loss_name: str | None = None) -> History:
    history = History(("loss", "accuracy"), loss_name)
    for loss in losses:
        history.record(0.0, loss=loss, accuracy=0.5)
    return history


def test_compare_loss_log_scale_over_tenfold_range() -> None:
    # Real fits on separable data drive the loss down by orders of magnitude;
    # fixed values make the 10x boundary exact.
    figure, _ = compare([make_history([1.0, 0.5]), make_history([0.2, 0.099])])

    loss_ax = figure.axes[0]
    assert loss_ax.get_yscale() == "log"
    assert loss_ax.get_ylabel() == "loss (log scale)"
    assert figure.axes[1].get_yscale() == "linear"


def test_compare_loss_linear_within_tenfold_range(models: dict[str, LogisticRegression]) -> None:
    exactly_ten = compare([make_history([1.0, 0.1])])[0]
    fitted = compare([models["slow"]])[0]

    assert exactly_ten.axes[0].get_yscale() == "linear"
    assert exactly_ten.axes[0].get_ylabel() == "loss"
    losses = models["slow"].history_.loss + models["slow"].history_.val_loss
    assert max(losses) < 10 * min(losses)
    assert fitted.axes[0].get_yscale() == "linear"
    assert fitted.get_suptitle() == "Training curves of 1 model"


def test_compare_marks_points_of_short_runs(models: dict[str, LogisticRegression]) -> None:
    long_history = models["slow"].history_
    assert len(long_history) >= 20

    figure, _ = compare({"short": make_history([0.6, 0.5]), "long": long_history})

    for ax in figure.axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        short = next(line for label, line in lines.items() if label.startswith("short"))
        long_line = next(line for label, line in lines.items() if label.startswith("long"))
        assert short.get_marker() == "o"
        assert long_line.get_marker() == "None"


def test_compare_warns_when_losses_differ(models: dict[str, LogisticRegression]) -> None:
    hinge = make_history([0.9, 0.7], loss_name="squared hinge")

    with pytest.warns(UserWarning, match=r"the models recorded different losses \('logistic': log loss, 'svm': squared hinge\), so their loss curves and final losses are on different scales"):
        figure, _ = compare({"logistic": models["slow"], "svm": hinge})

    assert legend_texts(figure.axes[0])[-1] == "svm (squared hinge) train"


def test_compare_unknown_loss_name_does_not_warn(models: dict[str, LogisticRegression]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure, _ = compare({"logistic": models["slow"], "plain": make_history([0.9, 0.7])})

    assert legend_texts(figure.axes[0])[-1] == "plain train"


def test_compare_selected_metric_only(models: dict[str, LogisticRegression]) -> None:
    figure, _ = compare([models["slow"]], metrics=["accuracy"])

    assert [ax.get_title() for ax in figure.axes] == ["Accuracy"]


def test_compare_default_names(models: dict[str, LogisticRegression]) -> None:
    _, frame = compare([models["slow"].history_, models["slow"].history_])

    assert sorted(frame.index) == ["model 1", "model 2"]


def test_compare_run_results_from_enclave(enclave: Any) -> None:
    source = (
        "import numpy as np\n"
        "from confidential_nb.training import LogisticRegression\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.normal(size=(100, 2))\n"
        "y = (X[:, 0] + rng.normal(scale=0.5, size=100) > 0).astype(int)\n"
        "model = LogisticRegression(epochs=1000, learning_rate=rate, tol=0.02)\n"
        "model.fit(X[:70], y[:70], validation_data=(X[70:], y[70:]))\n"
        "result = {'model': model}\n"
    )
    runs = {f"rate {rate}": enclave.run(source, params={"rate": rate}) for rate in (0.1, 1.0)}

    figure, frame = compare(runs)

    for name, run in runs.items():
        assert isinstance(run, RunResult)
        assert frame.loc[name, "epochs"] == len(run.history)
        assert frame.loc[name, "val_accuracy"] == run.history.val_accuracy[-1]
    assert legend_texts(figure.axes[1]) == ["rate 0.1 train", "rate 0.1 validation", "rate 1.0 train", "rate 1.0 validation"]
    assert legend_texts(figure.axes[0])[0] == "rate 0.1 (log loss) train"


def test_compare_errors(models: dict[str, LogisticRegression]) -> None:
    history = models["slow"].history_

    with pytest.raises(ValueError, match=r"compare needs at least one RunResult or History, got none"):
        compare([])
    with pytest.raises(ValueError, match=r"compare needs at least one RunResult or History, got none"):
        compare({})
    with pytest.raises(ValueError, match=r"names has 1 entries but there are 2 results"):
        compare([history, history], names=["only"])
    with pytest.raises(ValueError, match=r"names has 1 entries but there are 2 results"):
        compare([history, history], names="ab")
    with pytest.raises(ValueError, match=r"names must be None when results is a dict"):
        compare({"a": history}, names=["b"])
    with pytest.raises(ValueError, match=r"model names must be distinct, got \['a', 'a'\]"):
        compare([history, history], names=["a", "a"])
    with pytest.raises(ValueError, match=r"result 'model 2' \(RunResult\) has no training history"):
        compare([history, RunResult(value={"accuracy": 0.9})])
    with pytest.raises(ValueError, match=r"result 'empty' has a History with no recorded epochs"):
        compare({"empty": History()})
    with pytest.raises(TypeError, match=r"result 'bad' has a history of type str, expected History"):
        compare({"bad": _WithHistory("x")})
    with pytest.raises(TypeError, match=r"results must be a list or a dict.*got History"):
        compare(history)
    with pytest.raises(ValueError, match=r"metrics must be distinct names from \['loss', 'accuracy'\], got \['auc'\]"):
        compare([history], metrics=["auc"])
    with pytest.raises(ValueError, match=r"metrics must be distinct names.*got \[\]"):
        compare([history], metrics=[])


class _WithHistory:
    def __init__(self, history: Any) -> None:
        self.history = history


def test_compare_importable_twice_as_function() -> None:
    import confidential_nb

    first = confidential_nb.compare
    second = confidential_nb.compare

    assert callable(first)
    assert first is second
    assert isinstance(compare([make_history([0.5])])[1], pd.DataFrame)


def test_compare_epochs_column_counts_thinned_runs():
    thinned = History(("loss", "accuracy"))
    for epoch in (5, 10, 12):
        thinned.record_at(epoch, 0.0, loss=1.0 / epoch, accuracy=0.5)
    _, frame = compare({"thinned": thinned})
    assert frame.loc["thinned", "epochs"] == 12
