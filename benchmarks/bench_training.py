"""Time LogisticRegression against the matrix products it needs and against scikit-learn.

Run: python3 benchmarks/bench_training.py [--rows 1000000]

Prints ratios measured side by side in one process:

- one full-batch gd epoch on rows x 30 float64, averaged over 50 epochs,
  against ``X @ w`` plus ``X.T @ r`` on the same array, with history
  recording off and with loss and accuracy recorded every epoch;
- the newton solver against scikit-learn's lbfgs, both run to a tight
  tolerance, on the bundled breast-cancer data and on rows x 30;
- the peak memory that fit allocates (tracemalloc) against the size of X.

scikit-learn is used here only as a baseline; the library does not import it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Callable

import numpy as np
import sklearn.linear_model
import sklearn.metrics

from confidential_nb.datasets import load_breast_cancer
from confidential_nb.training import ConvergenceWarning, LogisticRegression

N_FEATURES = 30
TIMED_EPOCHS = 50
# Epochs run before the timed ones, so the per-epoch figure excludes the
# set-up (input checks, the initial gradient) that fit pays once.
SETUP_EPOCHS = 5


def make_data(n_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, N_FEATURES))
    true_weights = rng.standard_normal(N_FEATURES) / np.sqrt(N_FEATURES)
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-(X @ true_weights)))).astype(np.int64)
    return X, y


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fit_gd(X: np.ndarray, y: np.ndarray, epochs: int, record_every: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        LogisticRegression(epochs=epochs, tol=0.0, standardize=False, record_every=record_every).fit(X, y)


def gd_epoch_seconds(X: np.ndarray, y: np.ndarray, record_every: int | None) -> float:
    """Return one epoch's time: the difference of two fits divided by the extra epochs."""
    short = median_seconds(lambda: fit_gd(X, y, SETUP_EPOCHS, record_every), 3)
    long = median_seconds(lambda: fit_gd(X, y, SETUP_EPOCHS + TIMED_EPOCHS, record_every), 3)
    return (long - short) / TIMED_EPOCHS


def products_seconds(X: np.ndarray) -> float:
    weights = np.full(X.shape[1], 0.01)

    def products() -> None:
        for _ in range(TIMED_EPOCHS):
            logits = X @ weights
            X.T @ logits

    return median_seconds(products, 3) / TIMED_EPOCHS


def report(label: str, ours: float, baseline_label: str, baseline: float, goal: str) -> None:
    print(f"{label:<44} {ours * 1e3:9.2f} ms   {baseline_label:<28} {baseline * 1e3:9.2f} ms   ratio {ours / baseline:6.2f}  (goal {goal})")


def bench_gd_epoch(n_rows: int) -> None:
    X, y = make_data(n_rows)
    baseline = products_seconds(X)
    report(f"gd epoch {n_rows} x {N_FEATURES}, recording off", gd_epoch_seconds(X, y, None), "X @ w and X.T @ r", baseline, "<= 1.3")
    baseline = products_seconds(X)
    report(f"gd epoch {n_rows} x {N_FEATURES}, recording every epoch", gd_epoch_seconds(X, y, 1), "X @ w and X.T @ r", baseline, "<= 1.6")


def bench_exact(X: np.ndarray, y: np.ndarray, label: str, repeats: int, goal: str) -> None:
    ours = LogisticRegression(solver="newton", standardize=False, tol=1e-8, epochs=100)
    reference = sklearn.linear_model.LogisticRegression(tol=1e-8, max_iter=10000)
    ours_seconds = median_seconds(lambda: ours.fit(X, y), repeats)
    reference_seconds = median_seconds(lambda: reference.fit(X, y), repeats)
    gap = sklearn.metrics.log_loss(y, ours.predict_proba(X)) - sklearn.metrics.log_loss(y, reference.predict_proba(X))
    report(f"newton, {label} ({ours.n_iter_} iterations)", ours_seconds, f"sklearn lbfgs ({reference.n_iter_[0]} iterations)", reference_seconds, goal)
    print(f"{'':<44} log loss difference (ours - sklearn): {gap:.2e}")


def peak_ratio(X: np.ndarray, y: np.ndarray, **params: object) -> float:
    model = LogisticRegression(**{"tol": 0.0, "epochs": 5, **params})
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / X.nbytes


def bench_memory(n_rows: int) -> None:
    X, y = make_data(n_rows)
    for label, params in [
        ("gd, standardize=True", {}),
        ("gd, standardize=False", {"standardize": False}),
        ("newton, standardize=True", {"solver": "newton"}),
        ("sgd, standardize=True", {"solver": "sgd", "epochs": 1}),
    ]:
        print(f"peak memory allocated by fit, {label:<26} {peak_ratio(X, y, **params):5.2f} x X.nbytes ({X.nbytes / 1e6:.0f} MB)  (goal < 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated matrix (default 1000000)")
    args = parser.parse_args()

    bench_gd_epoch(args.rows)

    frame = load_breast_cancer()
    X = frame.drop(columns="target").to_numpy()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    bench_exact(X, frame["target"].to_numpy(), "bundled breast cancer", 15, "ratio <= 1")
    bench_exact(*make_data(args.rows, seed=1), f"{args.rows} x {N_FEATURES}", 1, "ratio <= 2")

    bench_memory(args.rows)


if __name__ == "__main__":
    main()
