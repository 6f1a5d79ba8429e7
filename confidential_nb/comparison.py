"""Overlay the training curves of several runs and tabulate their final metrics."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .training.history import History

COMPARABLE_METRICS = ("loss", "accuracy")

# The loss panel uses a log scale when its largest value exceeds its smallest
# by more than this factor, so that late epochs stay readable next to early ones.
LOG_SCALE_MIN_RATIO = 10.0

# A series with fewer recorded epochs than this gets a marker on each point,
# so that a run of a few epochs shows as dots instead of a stub of a line.
MARKER_MAX_POINTS = 20

FRAME_COLUMNS = ("epochs", "loss", "accuracy", "val_loss", "val_accuracy")


def compare(
    results: Sequence[Any] | Mapping[str, Any],
    names: Sequence[str] | None = None,
    *,
    metrics: Sequence[str] = COMPARABLE_METRICS,
) -> tuple[Figure, pd.DataFrame]:
    """Draw the curves of several runs in one figure and return it with a table of final metrics.

    ``results`` is a list of ``RunResult`` or ``History`` objects (or fitted
    models with ``history_``), named by ``names`` or "model 1", "model 2", and
    so on, or a dict from name to such an item. There is one panel per metric
    in ``metrics``, with one colour per model: training curves are solid and
    validation curves dashed, and a run of fewer than 20 recorded epochs has
    a marker on each point. The loss panel uses a log scale when all its
    values are positive and the largest is more than 10 times the smallest.
    Its legend shows "<model> (<loss_name>)" for each History whose
    ``loss_name`` is set, and ``compare`` emits a UserWarning when the set
    loss names differ, because such losses are not on one scale.

    The returned DataFrame has one row per model, indexed by name, with the
    number of epochs and the final ``loss``, ``accuracy``, ``val_loss`` and
    ``val_accuracy`` (NaN when not recorded). Rows are sorted by
    ``val_accuracy``, best first, when any model recorded it, so models
    without validation come last. Otherwise they are sorted by ``accuracy``.
    The sort column is stored in ``frame.attrs["sorted_by"]``.

    Raises ValueError for an empty input, ``names`` of the wrong length or with
    repeats, an item without a History or with no epochs, and unknown metrics.
    """
    chosen_metrics = _check_metrics(metrics)
    histories = _named_histories(results, names)
    _warn_if_losses_differ(histories)

    figure = _draw(histories, chosen_metrics)
    return figure, _final_metrics(histories)


def _check_metrics(metrics: Sequence[str]) -> list[str]:
    chosen = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [metric for metric in chosen if metric not in COMPARABLE_METRICS]
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        raise ValueError(f"metrics must be distinct names from {list(COMPARABLE_METRICS)}, got {chosen}.")
    return chosen


def _named_histories(results: Sequence[Any] | Mapping[str, Any], names: Sequence[str] | None) -> dict[str, History]:
    if isinstance(results, Mapping):
        if names is not None:
            raise ValueError("names must be None when results is a dict, because the dict keys are the names.")
        names = [str(name) for name in results]
        items = list(results.values())
    elif isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        items = list(results)
        if names is None:
            names = [f"model {position}" for position in range(1, len(items) + 1)]
        elif isinstance(names, str) or len(names) != len(items):
            count = 1 if isinstance(names, str) else len(names)
            raise ValueError(f"names has {count} entries but there are {len(items)} results; give one name per result.")
        names = [str(name) for name in names]
    else:
        raise TypeError(f"results must be a list or a dict of RunResult or History objects, got {type(results).__name__}.")

    if not items:
        raise ValueError("compare needs at least one RunResult or History, got none.")
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be distinct, got {names}.")
    return {name: _history_of(item, name) for name, item in zip(names, items)}


def _history_of(item: Any, name: str) -> History:
    from .training.history import History

    history = item
    if not isinstance(item, History):
        history = getattr(item, "history", None)
        if history is None:
            history = getattr(item, "history_", None)
    if history is None:
        raise ValueError(
            f"result {name!r} ({type(item).__name__}) has no training history: return the fitted model "
            "or its history_ from the cell."
        )
    if not isinstance(history, History):
        raise TypeError(f"result {name!r} has a history of type {type(history).__name__}, expected History.")
    if len(history) == 0:
        raise ValueError(f"result {name!r} has a History with no recorded epochs.")
    return history


def _warn_if_losses_differ(histories: dict[str, History]) -> None:
    known = {name: history.loss_name for name, history in histories.items() if history.loss_name is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{name!r}: {loss_name}" for name, loss_name in known.items())
        warnings.warn(
            f"the models recorded different losses ({listed}), so their loss curves and final "
            "losses are on different scales; compare them by accuracy instead.",
            UserWarning,
            stacklevel=3,
        )


def _draw(histories: dict[str, History], metrics: list[str]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5 * len(metrics), 4.5), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        _draw_metric(ax, histories, metric)

    count = len(histories)
    figure.suptitle(f"Training curves of {count} model{'s' if count != 1 else ''}")
    return figure


def _draw_metric(ax: Axes, histories: dict[str, History], metric: str) -> None:
    from matplotlib.ticker import MaxNLocator

    plotted: list[float] = []
    for position, (name, history) in enumerate(histories.items()):
        colour = f"C{position % 10}"
        keys = history.keys()
        style: dict[str, Any] = {"color": colour, "marker": "o" if len(history) < MARKER_MAX_POINTS else None, "markersize": 4}
        label = name
        if metric == "loss" and history.loss_name is not None:
            label = f"{name} ({history.loss_name})"
        if metric in keys:
            ax.plot(history.epoch, history[metric], linestyle="-", label=f"{label} train", **style)
            plotted.extend(history[metric])
        if f"val_{metric}" in keys:
            ax.plot(history.epoch, history[f"val_{metric}"], linestyle="--", label=f"{label} validation", **style)
            plotted.extend(history[f"val_{metric}"])

    log_scale = metric == "loss" and _spans_decade(plotted)
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(metric.capitalize())
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (log scale)" if log_scale else metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if plotted:
        ax.legend(fontsize="small")


def _spans_decade(values: list[float]) -> bool:
    finite = [value for value in values if math.isfinite(value)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) > LOG_SCALE_MIN_RATIO * min(finite)


def _final_metrics(histories: dict[str, History]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for history in histories.values():
        # The last recorded epoch, not the number of records, which record_every can thin.
        row: dict[str, float] = {"epochs": float(history.epoch[-1])}
        for column in FRAME_COLUMNS[1:]:
            row[column] = history[column][-1] if column in history.keys() else math.nan
        rows.append(row)

    frame = pd.DataFrame(rows, index=pd.Index(list(histories), name="model"), columns=list(FRAME_COLUMNS))
    frame["epochs"] = frame["epochs"].astype("int64")
    sort_column = "val_accuracy" if frame["val_accuracy"].notna().any() else "accuracy"
    # A stable sort keeps the input order among equal scores.
    frame = frame.sort_values(sort_column, ascending=False, kind="stable", na_position="last")
    frame.attrs["sorted_by"] = sort_column
    return frame
