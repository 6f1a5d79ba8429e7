"""Compare the codecs and a warm enclave run with their plain-Python baselines.

Usage: python benchmarks/bench_codecs.py

Each line prints both timings, measured side by side in this one process, and
their ratio, so the numbers stay comparable on a noisy machine. Times are the
median of several repetitions.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pandas as pd


def median_seconds(function: Callable[[], object], repeats: int = 7) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def report(name: str, ours: float, baseline: float, baseline_name: str) -> None:
    print(f"{name:<38} {ours * 1e3:9.2f} ms   {baseline_name:<28} {baseline * 1e3:9.2f} ms   ratio {ours / baseline:6.2f}")


def bench_frame_codec() -> None:
    from confidential_nb.frame_codec import decode_frame, encode_frame

    frame = pd.DataFrame({f"x{i}": np.random.default_rng(i).random(1_000_000) for i in range(4)})
    blob = encode_frame(frame)
    copy = median_seconds(lambda: [frame[name].to_numpy().tobytes() for name in frame.columns])
    report("encode_frame 1M rows x 4 float64", median_seconds(lambda: encode_frame(frame)), copy, "column tobytes() copies")
    report("decode_frame 1M rows x 4 float64", median_seconds(lambda: decode_frame(blob)), copy, "column tobytes() copies")


def bench_warm_run() -> None:
    import confidential_nb
    from confidential_nb.datasets import load_breast_cancer

    frame = load_breast_cancer()
    source = "float(data['mean radius'].mean())"
    with tempfile.TemporaryDirectory() as home:
        os.environ["CONFIDENTIAL_NB_HOME"] = home
        sealed = confidential_nb.seal(frame)
        with confidential_nb.Enclave(home) as enclave:
            enclave.run(source, inputs={"data": sealed})
            warm = median_seconds(lambda: enclave.run(source, inputs={"data": sealed}), repeats=15)
    local = median_seconds(lambda: eval(source, {"data": frame}), repeats=15)
    report("warm trivial run, breast-cancer frame", warm, local, "same cell evaluated locally")

    training = (
        "from confidential_nb.training import LogisticRegression, train_test_split\n"
        "X_train, X_test, y_train, y_test = train_test_split(data, target='target', test_size=0.33, random_state=0)\n"
        "result = LogisticRegression(epochs=300).fit(X_train, y_train).score(X_test, y_test)\n"
    )
    with tempfile.TemporaryDirectory() as home:
        os.environ["CONFIDENTIAL_NB_HOME"] = home
        sealed = confidential_nb.seal(frame)
        with confidential_nb.Enclave(home) as enclave:
            enclave.run("1")
            in_enclave = median_seconds(lambda: enclave.run(training, inputs={"data": sealed}), repeats=5)

    def train_locally() -> None:
        namespace = {"data": frame}
        exec(training, namespace)

    report("training run (300 epochs), in enclave", in_enclave, median_seconds(train_locally, repeats=5), "same training locally")


if __name__ == "__main__":
    bench_frame_codec()
    bench_warm_run()
