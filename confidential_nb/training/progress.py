"""Per-epoch progress reports from the training loops to an installed sink.

The runner installs a sink with ``set_sink`` that sends each record to the
host. The training loops call ``report`` once per epoch. Without a sink,
``report`` and ``due`` return at once, so fits outside the enclave pay one
function call per epoch.

Rate limit, per fit: the first epoch is always sent, later ones at most once
per ``min_interval`` seconds, and the last epoch of a fit (the one that
converged, stopped early or reached ``epochs``) is always sent, so a
progress bar ends on the epoch where training ended. A record for epoch 1
starts a new fit.

Records are normalized with ``confidential_nb.progress_records`` before they
go to the sink, so the monitor never rejects a record of the library itself.
This module is internal to the library: it is not exported from
``confidential_nb.training``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from confidential_nb.progress_records import normalize_record

logger = logging.getLogger("confidential_nb.training")

Sink = Callable[[dict[str, Any]], None]

DEFAULT_MIN_INTERVAL = 0.1


class _RateLimiter:
    """Decides which epochs are sent; ``clock`` is injectable for tests."""

    def __init__(self, min_interval: float = DEFAULT_MIN_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self.clock = clock
        self.last_sent: float | None = None

    def due(self, epoch: int, last: bool) -> bool:
        if epoch == 1 or last or self.last_sent is None:
            return True
        return self.clock() - self.last_sent >= self.min_interval

    def mark_sent(self) -> None:
        self.last_sent = self.clock()


_sink: Sink | None = None
_limiter = _RateLimiter()


def set_sink(sink: Sink | None, *, min_interval: float = DEFAULT_MIN_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
    """Install the function that receives progress records, or remove it with None.

    ``min_interval`` is the minimum time in seconds between two records of
    one fit, apart from its first and last epochs. ``clock`` returns seconds
    and exists for tests.
    """
    global _sink, _limiter
    if min_interval < 0 or not math.isfinite(min_interval):
        raise ValueError(f"min_interval must be a finite number of seconds >= 0, got {min_interval!r}.")
    _sink = sink
    _limiter = _RateLimiter(min_interval, clock)


def active() -> bool:
    """Return True when a sink is installed."""
    return _sink is not None


def due(epoch: int, last: bool = False) -> bool:
    """Return True when ``report`` for this epoch would send a record.

    A loop that computes the training loss only on some epochs calls this
    first, to compute it on the epochs that are sent.
    """
    return _sink is not None and _limiter.due(epoch, last)


def report(model: str, epoch: int, epochs: int, loss: float | None, accuracy: float | None, *, last: bool = False) -> None:
    """Send the progress of one epoch to the sink, subject to the rate limit.

    ``last`` marks the final epoch of a fit, which is always sent. A loss or
    accuracy that is NaN or infinite (an epoch that did not compute it, or a
    diverging fit) is sent as None.
    """
    sink = _sink
    if sink is None or not _limiter.due(epoch, last):
        return
    record = normalize_record(
        {"model": model, "epoch": epoch, "epochs": epochs, "loss": _finite_or_none(loss), "accuracy": _finite_or_none(accuracy)}
    )
    if record is None:
        # NOTE: fits with more than MAX_EPOCHS epochs report nothing, because
        # the monitor rejects epoch counts above that bound.
        logger.debug("progress record of %s epoch %d/%d is out of bounds and was not sent", model, epoch, epochs)
        return
    _limiter.mark_sent()
    sink(record)


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
