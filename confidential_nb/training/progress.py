"""Progress of the library's training loops, sent through the runner when a sink is set (minimal stand-in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_sink: Callable[[dict[str, Any]], None] | None = None


def set_sink(sink: Callable[[dict[str, Any]], None] | None) -> None:
    global _sink
    _sink = sink


def report(model: str, epoch: int, epochs: int, loss: float | None, accuracy: float | None) -> None:
    if _sink is not None:
        _sink({"model": model, "epoch": epoch, "epochs": epochs, "loss": loss, "accuracy": accuracy})
