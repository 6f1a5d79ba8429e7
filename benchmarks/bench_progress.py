"""Time the progress reports of the training loops against fits without them.

Run: python3 benchmarks/bench_progress.py [--rows 20000]

Prints timings measured side by side in one process, with their ratio:

- ``progress.report`` with no sink installed, per call, against a call of an
  empty function;
- fits on rows x 30 float64 with no sink against the same fits with a sink
  that appends records to a list. The sink runs at the default rate limit
  (0.1 s) and at none, where every epoch is sent. With ``record_every=0``
  the loops skip their metrics, so each sent epoch pays an extra pass to
  compute loss and accuracy.

Times are the median of several repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from confidential_nb.training import LinearSVC, LogisticRegression, MLPClassifier, progress

N_FEATURES = 30
REPEATS = 7


def make_data(n_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, N_FEATURES))
    y = (X @ rng.normal(size=N_FEATURES) + rng.normal(size=n_rows) > 0).astype(np.int64)
    return X, y


def fit_seconds(factory: Callable[[], Any], X: np.ndarray, y: np.ndarray, intervals: list[float | None]) -> list[float]:
    """Return the median fit time per setting: no sink for None, else a list sink at that min_interval.

    The settings take turns in each repetition, after one warm-up fit, so a
    slow phase of the machine affects them alike.
    """
    records: list[dict[str, Any]] = []
    timings: list[list[float]] = [[] for _ in intervals]

    def fit() -> None:
        records.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factory().fit(X, y)

    fit()
    try:
        for _ in range(REPEATS):
            for index, interval in enumerate(intervals):
                if interval is None:
                    progress.set_sink(None)
                else:
                    progress.set_sink(records.append, min_interval=interval)
                start = time.perf_counter()
                fit()
                timings[index].append(time.perf_counter() - start)
    finally:
        progress.set_sink(None)
    return [statistics.median(values) for values in timings]


def bench_report_call() -> None:
    progress.set_sink(None)

    def empty(model: str, epoch: int, epochs: int, loss: float | None, accuracy: float | None, *, last: bool = False) -> None:
        return None

    calls = 1_000_000
    ours = min(timeit.repeat(lambda: progress.report("LogisticRegression", 5, 10, 0.5, 0.5), number=calls, repeat=REPEATS)) / calls
    baseline = min(timeit.repeat(lambda: empty("LogisticRegression", 5, 10, 0.5, 0.5), number=calls, repeat=REPEATS)) / calls
    print(f"{'report() with no sink, per call':<52} {ours * 1e9:8.1f} ns   empty function {baseline * 1e9:8.1f} ns   ratio {ours / baseline:5.2f}")


def bench_fits(n_rows: int) -> None:
    X, y = make_data(n_rows)
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("LogisticRegression gd, 100 epochs", lambda: LogisticRegression(epochs=100, tol=0)),
        ("LogisticRegression gd, 100 epochs, record_every=0", lambda: LogisticRegression(epochs=100, tol=0, record_every=0)),
        ("LinearSVC, 100 epochs, record_every=0", lambda: LinearSVC(epochs=100, tol=0, record_every=0)),
        ("MLPClassifier, 5 epochs", lambda: MLPClassifier(epochs=5, random_state=0, batch_size=256)),
    ]
    for label, factory in cases:
        plain, limited, unlimited = fit_seconds(factory, X, y, [None, progress.DEFAULT_MIN_INTERVAL, 0.0])
        print(
            f"{label:<52} no sink {plain * 1e3:8.1f} ms   sink, 0.1 s {limited * 1e3:8.1f} ms (ratio {limited / plain:5.2f})"
            f"   sink, every epoch {unlimited * 1e3:8.1f} ms (ratio {unlimited / plain:5.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=20000, help="number of training rows (default 20000)")
    arguments = parser.parse_args()
    bench_report_call()
    bench_fits(arguments.rows)


if __name__ == "__main__":
    main()
