"""Per-epoch training record: losses, accuracies and wall time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Self

import numpy as np
import pandas as pd

from confidential_nb.training._state import check_keys, check_vector

# Metrics a model records, in display order. Validation ones appear only when
# the model was given validation data.
METRIC_NAMES = ("loss", "accuracy", "val_loss", "val_accuracy")


class History:
    """Metrics recorded after each training epoch.

    ``epoch`` counts from 1. ``loss`` and ``accuracy`` are measured on the
    training data after that epoch's update, ``val_loss`` and ``val_accuracy``
    on the validation data when ``fit`` was given some. ``time`` is the wall
    time of each recorded epoch in seconds. A model fitted with
    ``record_every=k`` records every k-th epoch and the last one, so
    ``epoch`` lists the recorded epoch numbers, which need not be 1, 2, 3... It varies from run to run, so ``to_frame``
    leaves it out by default and equality and ``repr`` ignore it.

    ``loss_name`` names the loss that ``loss`` and ``val_loss`` measure, such
    as "log loss", or is None when the model did not name one. ``compare``
    uses it to label curves and to warn about mixing different losses.
    """

    def __init__(self, metric_names: tuple[str, ...] = ("loss", "accuracy"), loss_name: str | None = None) -> None:
        unknown = [name for name in metric_names if name not in METRIC_NAMES]
        if unknown or len(set(metric_names)) != len(metric_names):
            raise ValueError(f"metric_names must be distinct names from {METRIC_NAMES}, got {metric_names}.")
        if loss_name is not None and not (isinstance(loss_name, str) and loss_name):
            raise ValueError(f"loss_name must be None or a non-empty str, got {type(loss_name).__name__}.")
        self.loss_name = loss_name
        self._metrics: dict[str, list[float]] = {name: [] for name in METRIC_NAMES if name in metric_names}
        self._times: list[float] = []
        self._epochs: list[int] = []

    def record(self, time: float, **metrics: float) -> None:
        """Append the next epoch: its wall time in seconds and one value per metric."""
        self.record_at(self._epochs[-1] + 1 if self._epochs else 1, time, **metrics)

    def record_at(self, epoch: int, time: float, **metrics: float) -> None:
        """Append epoch number ``epoch``, which must be after the last one recorded."""
        if set(metrics) != set(self._metrics):
            raise ValueError(f"record() needs exactly the metrics {list(self._metrics)}, got {sorted(metrics)}.")
        previous = self._epochs[-1] if self._epochs else 0
        number = int(epoch)
        if number <= previous:
            raise ValueError(f"record_at() needs an epoch after {previous}, got {number}.")
        for name, value in metrics.items():
            self._metrics[name].append(float(value))
        self._times.append(float(time))
        self._epochs.append(number)

    @property
    def epoch(self) -> list[int]:
        """Recorded epoch numbers, starting at 1 or later, increasing."""
        return list(self._epochs)

    @property
    def loss(self) -> list[float]:
        """Mean training loss after each epoch, without the penalty term, of the kind ``loss_name`` names."""
        return self["loss"]

    @property
    def accuracy(self) -> list[float]:
        """Training accuracy after each epoch."""
        return self["accuracy"]

    @property
    def val_loss(self) -> list[float]:
        """Mean validation loss after each epoch, the same kind as ``loss``."""
        return self["val_loss"]

    @property
    def val_accuracy(self) -> list[float]:
        """Validation accuracy after each epoch."""
        return self["val_accuracy"]

    @property
    def time(self) -> list[float]:
        """Wall time of each epoch in seconds."""
        return list(self._times)

    def keys(self) -> list[str]:
        """Return the names of the recorded metrics, without ``epoch`` and ``time``."""
        return list(self._metrics)

    def __len__(self) -> int:
        return len(self._times)

    def __contains__(self, name: object) -> bool:
        """Return True for a recorded metric name, ``epoch`` or ``time``, as a mapping does."""
        return name in ("epoch", "time") or name in self._metrics

    def __iter__(self) -> Iterator[str]:
        """Iterate over the recorded metric names, as ``keys()`` lists them."""
        return iter(self.keys())

    def __getitem__(self, name: str) -> list[Any]:
        if not isinstance(name, str):
            raise TypeError(
                f"History is indexed by metric name, not by {type(name).__name__}: use h['loss'][-1] "
                f"for the last recorded loss; names: {['epoch', *self._metrics, 'time']}."
            )
        if name == "epoch":
            return self.epoch
        if name == "time":
            return self.time
        if name not in self._metrics:
            raise KeyError(f"{name!r} is not recorded; available: {['epoch', *self._metrics, 'time']}.")
        return list(self._metrics[name])

    def to_frame(self, include_time: bool = False) -> pd.DataFrame:
        """Return one row per epoch, indexed by ``epoch``, one column per metric."""
        columns: dict[str, list[float]] = {name: list(values) for name, values in self._metrics.items()}
        if include_time:
            columns["time"] = list(self._times)
        index = pd.Index(self._epochs, dtype=np.int64, name="epoch")
        return pd.DataFrame(columns, index=index, dtype=np.float64)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return (
            self._metrics == other._metrics and self._epochs == other._epochs and self.loss_name == other.loss_name
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if not self._times:
            return f"History(epochs=0, metrics={self.keys()})"
        final = ", ".join(f"{name}={values[-1]:.4g}" for name, values in self._metrics.items())
        if self._epochs[-1] != len(self):
            return f"History(epochs={len(self)}, last epoch={self._epochs[-1]}, final: {final})"
        return f"History(epochs={len(self)}, final: {final})"

    def to_state(self) -> dict[str, object]:
        """Return the history as a dict of arrays, for the result codec.

        The ``epoch`` entry is present only when the epochs are not 1, 2, ...,
        and ``loss_name`` only when it is set, so such histories keep the
        state layout of earlier versions.
        """
        state: dict[str, object] = {
            "metrics": {name: np.array(values, dtype=np.float64) for name, values in self._metrics.items()},
            "time": np.array(self._times, dtype=np.float64),
        }
        if self._epochs != list(range(1, len(self) + 1)):
            state["epoch"] = np.array(self._epochs, dtype=np.int64)
        if self.loss_name is not None:
            state["loss_name"] = self.loss_name
        return state

    @classmethod
    def from_state(cls, state: object) -> Self:
        """Rebuild a History from ``to_state`` output, raising ValueError on anything malformed."""
        optional = {"epoch", "loss_name"} & set(state) if isinstance(state, Mapping) else set()
        fields = check_keys(state, {"metrics", "time"} | optional, "History state")
        times = check_vector(fields["time"], "History state 'time'", kind="f")
        metrics = fields["metrics"]
        if not isinstance(metrics, Mapping) or not all(isinstance(name, str) for name in metrics):
            raise ValueError("History state 'metrics' must be a dict with str keys.")

        loss_name = fields.get("loss_name")
        if loss_name is not None and not (isinstance(loss_name, str) and loss_name):
            raise ValueError("History state 'loss_name' must be a non-empty str when present.")
        history = cls(tuple(metrics), loss_name)
        if "loss" not in metrics:
            raise ValueError("History state 'metrics' must contain 'loss'.")
        for name, values in metrics.items():
            vector = check_vector(values, f"History state metric {name!r}", kind="f", length=len(times))
            history._metrics[name] = vector.tolist()

        if not np.all(times >= 0):
            raise ValueError("History state 'time' must contain non-negative finite seconds.")
        history._times = times.tolist()
        history._epochs = _epochs_from_state(fields.get("epoch"), len(times))
        return history


def _epochs_from_state(value: object, length: int) -> list[int]:
    if value is None:
        return list(range(1, length + 1))
    epochs = check_vector(value, "History state 'epoch'", kind="i", length=length)
    if length and (epochs[0] < 1 or np.any(np.diff(epochs) <= 0)):
        raise ValueError("History state 'epoch' must be increasing epoch numbers starting at 1 or later.")
    return [int(number) for number in epochs]
