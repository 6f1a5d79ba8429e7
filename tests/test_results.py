"""Tests of RunResult: finding the History, plotting, frames and escaped display."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from confidential_nb.results import RunResult, describe_value, find_history
from confidential_nb.training.history import History


def make_history(epochs: int = 4, *, validation: bool = True) -> History:
    names = ("loss", "accuracy", "val_loss", "val_accuracy") if validation else ("loss", "accuracy")
    history = History(names)
    for epoch in range(1, epochs + 1):
        metrics = {"loss": 1.0 / epoch, "accuracy": 0.5 + epoch / 100}
        if validation:
            metrics.update(val_loss=1.5 / epoch, val_accuracy=0.4 + epoch / 100)
        history.record(0.01 * epoch, **metrics)
    return history


class FittedModel:
    """A stand-in for a fitted estimator: learned state ends in an underscore."""

    def __init__(self, history: History) -> None:
        self.coef_ = np.zeros(3)
        self.history_ = history


def test_history_none_for_plain_value() -> None:
    assert RunResult(value={"accuracy": 0.9}).history is None


def test_history_found_at_top_level() -> None:
    history = make_history()

    assert RunResult(value=history).history is history


def test_history_found_in_model_attribute() -> None:
    history = make_history()

    assert RunResult(value={"model": FittedModel(history)}).history is history


def test_history_first_depth_first() -> None:
    first, second, third = make_history(2), make_history(3), make_history(4)
    # Depth-first in insertion order: the list under "a" is searched before key "b".
    value = {"a": [0, (FittedModel(first),)], "b": second, "c": [third]}

    assert find_history(value) is first


def test_history_ignores_dataframe_column_named_history() -> None:
    frame = pd.DataFrame({"history_": [1, 2]})

    assert find_history({"frame": frame}) is None


def test_history_survives_self_reference() -> None:
    value: list[object] = [1]
    value.append(value)

    assert find_history(value) is None


def test_plot_returns_figure_with_two_panels() -> None:
    figure = RunResult(value={"model": FittedModel(make_history())}).plot(title="Run 1")

    assert isinstance(figure, Figure)
    assert [ax.get_title() for ax in figure.axes] == ["Loss", "Accuracy"]
    assert figure.get_suptitle() == "Run 1"


def test_plot_draws_train_and_validation_lines() -> None:
    history = make_history(5)
    loss_axes, accuracy_axes = RunResult(value=history).plot().axes

    loss_lines = loss_axes.get_lines()
    assert [line.get_label() for line in loss_lines] == ["train", "validation"]
    assert list(loss_lines[0].get_xdata()) == [1, 2, 3, 4, 5]
    assert list(loss_lines[1].get_ydata()) == history["val_loss"]
    assert list(accuracy_axes.get_lines()[0].get_ydata()) == history["accuracy"]


def test_plot_labels_axes_and_legends() -> None:
    for ax, metric in zip(RunResult(value=make_history()).plot().axes, ["loss", "accuracy"]):
        assert ax.get_xlabel() == "epoch"
        assert ax.get_ylabel() == metric
        assert ax.get_legend() is not None


def test_plot_without_validation_has_train_line_only() -> None:
    axes = RunResult(value=make_history(validation=False)).plot().axes

    for ax in axes:
        assert [line.get_label() for line in ax.get_lines()] == ["train"]


def test_plot_leaves_pyplot_untouched() -> None:
    RunResult(value=make_history()).plot()

    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


def test_plot_without_history_raises() -> None:
    result = RunResult(value={"accuracy": 0.9})

    with pytest.raises(ValueError, match=r"plot\(\) needs a training history.*dict with 1 key.*history_ from the cell"):
        result.plot()


def test_to_frame_returns_history_frame() -> None:
    history = make_history(3)

    frame = RunResult(value=[history]).to_frame()

    pd.testing.assert_frame_equal(frame, history.to_frame())
    assert frame.index.name == "epoch"


def test_to_frame_without_history_raises() -> None:
    with pytest.raises(ValueError, match=r"to_frame\(\) needs a training history.*float 0\.5"):
        RunResult(value=0.5).to_frame()


def test_repr_rounds_scalar_metrics() -> None:
    text = repr(RunResult(value={"accuracy": 0.951234567, "epochs": 300, "tiny": 3e-07}))

    assert "['accuracy']: float 0.9512" in text
    assert "['epochs']: int 300" in text
    assert "['tiny']: float 3e-07" in text


def test_repr_states_withheld_lines_and_receipt() -> None:
    text = repr(RunResult(value=None, withheld_lines=3))

    assert "withheld output: 3 printed lines" in text
    assert "receipt: missing" in text


def test_repr_lists_history_and_warnings() -> None:
    result = RunResult(value={"model": FittedModel(make_history(7))}, warnings=["did not converge"])

    text = repr(result)

    assert "history: 7 epochs: loss, accuracy, val_loss, val_accuracy" in text
    assert "warning: did not converge" in text
    assert "['model']: FittedModel" in text


def test_repr_is_deterministic() -> None:
    first = RunResult(value={"model": FittedModel(make_history())}, withheld_lines=1)
    second = RunResult(value={"model": FittedModel(make_history())}, withheld_lines=1)

    assert repr(first) == repr(second)
    assert first._repr_html_() == second._repr_html_()


def test_repr_shows_none_value() -> None:
    text = repr(RunResult(value=None))

    assert "value: None" in text
    assert "NoneType" not in text


def test_repr_describes_huge_int_by_bit_length() -> None:
    # 10**5000 has more digits than Python converts to str by default.
    result = RunResult(value={"big": 10**5000, "negative": -(10**5000), 10**5000: 1})

    text = repr(result)
    markup = result._repr_html_()

    assert "['big']: int of 16610 bits" in text
    assert "['negative']: int of 16610 bits, negative" in text
    assert "[int of 16610 bits]: int 1" in text
    assert "int of 16610 bits" in markup


def test_repr_describes_huge_int_value() -> None:
    result = RunResult(value=10**5000)

    assert "value: int of 16610 bits" in repr(result)
    assert "int of 16610 bits" in result._repr_html_()


def test_repr_html_escapes_enclave_strings() -> None:
    value = {"<script>alert('key')</script>": "<script>alert('value')</script>"}
    result = RunResult(value=value, warnings=["<img src=x onerror=alert(1)>"])

    markup = result._repr_html_()

    assert "<script>" not in markup
    assert "<img" not in markup
    assert "&lt;script&gt;alert(&#x27;key&#x27;)&lt;/script&gt;" in markup
    assert "&lt;script&gt;alert(&#x27;value&#x27;)&lt;/script&gt;" in markup


def test_repr_html_escapes_column_names() -> None:
    frame = pd.DataFrame({"<b>bold</b>": [1.0, 2.0]})

    markup = RunResult(value={"frame": frame})._repr_html_()

    assert "<b>" not in markup
    assert "&lt;b&gt;bold&lt;/b&gt;" in markup


def test_repr_html_is_a_table() -> None:
    markup = RunResult(value={"accuracy": 0.5})._repr_html_()

    assert markup.startswith("<table>")
    assert "<th style=\"text-align:left\">value</th>" in markup


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "None"),
        (True, "bool True"),
        (2**128 - 1, "int 340282366920938463463374607431768211455"),
        (2**128, "int of 129 bits"),
        (np.float64(0.123456), "float64 0.1235"),
        (np.int64(7), "int64 7"),
        (float("nan"), "float nan"),
        (b"abc", "bytes of 3 bytes"),
        ("x" * 100, "str '" + "x" * 56 + "..."),
        ((1, 2), "tuple of 2 items"),
        (np.zeros((2, 3)), "ndarray float64 of shape (2, 3)"),
        (pd.DataFrame({"a": [1], "b": [2]}), "DataFrame 1 rows x 2 columns (a, b)"),
        (make_history(3), "History of 3 epochs"),
    ],
)
def test_describe_value_cases(value: object, expected: str) -> None:
    assert describe_value(value) == expected


def test_describe_value_limits_listed_keys() -> None:
    text = repr(RunResult(value={f"k{index}": index for index in range(25)}))

    assert "['k19']: int 19" in text
    assert "['k20']" not in text
    assert "...: 5 more keys" in text
