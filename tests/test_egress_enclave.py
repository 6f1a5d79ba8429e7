"""The result guard through the real monitor, zygote and runner: which rule catches which mistake, and what passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Enclave, Sealed
from confidential_nb.errors import EgressError, EnclaveWarning, PolicyError
from confidential_nb.frame_codec import encode_frame

ROWS = 200


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Patients with a unique id, a group name, an age, a measurement and a label."""
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "patient_id": [f"P-{number:06d}" for number in rng.permutation(ROWS)],
        "group": rng.choice(["north", "south", "east"], ROWS),
        "age": rng.integers(20, 90, ROWS),
        "x": rng.normal(size=ROWS),
        "label": rng.integers(0, 2, ROWS),
    })


@pytest.fixture(scope="module")
def sealed(frame) -> Sealed:
    return confidential_nb.seal(frame)


@pytest.fixture(scope="module")
def private(frame) -> Sealed:
    return confidential_nb.seal(frame, policy={"schema_public": False})


def _rejected(enclave: Enclave, source: str, inputs: dict[str, Sealed]) -> str:
    """Run a cell that the guard must refuse, check the enclave still runs the next cell, and return the message."""
    with pytest.raises(EgressError) as caught:
        enclave.run(source, inputs=inputs)
    assert enclave.run("len(data)", inputs={"data": next(iter(inputs.values()))}).value >= 0
    return str(caught.value)


def test_guard_whole_frame_item_rule(enclave, sealed):
    message = _rejected(enclave, "data", {"data": sealed})
    assert message.startswith(f"result is a DataFrame of {ROWS} rows and 5 columns")
    assert "max_items" in message


def test_guard_column_item_rule(enclave, sealed):
    message = _rejected(enclave, "data['x']", {"data": sealed})
    assert message.startswith(f"result is a Series of {ROWS} items")


def test_guard_csv_text_rule(enclave, sealed):
    message = _rejected(enclave, "data.to_csv()", {"data": sealed})
    assert "max_text" in message
    assert message.startswith("result is a str of")


def test_guard_head_rare_value_rule(enclave, sealed):
    # Five rows pass the item rule (5 < 100), so the ids and measurements in them are what give head() away.
    message = _rejected(enclave, "data.head()", {"data": sealed})
    assert "rare values of input 'data' (its column 'patient_id' first)" in message


def test_guard_head_without_ids_passes(enclave, sealed, frame):
    # Honest limit: rows of common values (group names, labels, ages within the row count) are not caught.
    run = enclave.run("data[['group', 'age', 'label']].head()", inputs={"data": sealed})
    pd.testing.assert_frame_equal(run.value, frame[["group", "age", "label"]].head())


def test_guard_one_row_passes(enclave, sealed, frame):
    # Honest limit: one row has only two rare values (id and x), fewer than rare_k = 3.
    run = enclave.run("data.iloc[0].to_dict()", inputs={"data": sealed})
    assert run.value["patient_id"] == frame["patient_id"][0]


def test_guard_deep_rows_rare_value_rule(enclave, sealed):
    source = "{'report': {'rows': [data.iloc[i].to_dict() for i in range(3)]}}"
    message = _rejected(enclave, source, {"data": sealed})
    assert "the first at result['report']['rows'][0]['patient_id']" in message


def test_guard_deep_table_item_rule(enclave, sealed):
    message = _rejected(enclave, "{'report': [{'table': data.values.tolist()}]}", {"data": sealed})
    assert message.startswith(f"result['report'][0]['table'] is a list of {ROWS} items")


def test_guard_dict_of_row_values_rejected(enclave, sealed):
    # 200 keys do not break the item rule, but the values are the rows' measurements.
    message = _rejected(enclave, "{f'row_{i}': float(v) for i, v in enumerate(data['x'])}", {"data": sealed})
    assert "rare values" in message
    assert "result['row_0']" in message


def test_guard_dict_of_counts_passes(enclave, sealed, frame):
    source = "import numpy as np\n{f'bin_{i}': int(c) for i, c in enumerate(np.histogram(data['x'], bins=150)[0])}"
    run = enclave.run(source, inputs={"data": sealed})
    assert len(run.value) == 150
    assert sum(run.value.values()) == ROWS


def test_guard_aggregates_pass(enclave, sealed, frame):
    source = ("result = {'mean_x': float(data['x'].mean()), 'groups': sorted(data['group'].unique()),\n"
              "          'by_group': data.groupby('group')['x'].mean(), 'labels': data['label'].value_counts()}")
    run = enclave.run(source, inputs={"data": sealed})
    assert run.value["mean_x"] == pytest.approx(frame["x"].mean())
    assert run.value["groups"] == ["east", "north", "south"]
    pd.testing.assert_series_equal(run.value["by_group"], frame.groupby("group")["x"].mean())


def test_guard_model_and_history_pass(enclave, sealed):
    source = ("from confidential_nb.training import LogisticRegression\n"
              "model = LogisticRegression(epochs=150, tol=0.0).fit(data[['x', 'age']], data['label'])\n"
              "result = {'model': model, 'history': model.history_}")
    # tol=0 keeps training for all 150 epochs, so the model warns that it did not converge.
    with pytest.warns(EnclaveWarning, match="ConvergenceWarning"):
        run = enclave.run(source, inputs={"data": sealed})
    # The History holds more epochs than max_items and still leaves, because fitted models and Histories are exempt.
    assert len(run.value["history"].to_frame()) > 100


def test_guard_raised_max_items(enclave, frame):
    counts = "import numpy as np\n[int(c) for c in np.histogram(data['x'], bins=150)[0]]"
    assert "max_items" in _rejected(enclave, counts, {"data": confidential_nb.seal(frame)})
    run = enclave.run(counts, inputs={"data": confidential_nb.seal(frame, policy={"max_items": 180})})
    assert len(run.value) == 150


def test_guard_private_schema_message(enclave, private, frame):
    message = _rejected(enclave, "{pid: 1 for pid in data['patient_id'][:3]}", {"data": private})
    assert "result[<key 0>]" in message
    assert "patient_id" not in message
    assert frame["patient_id"][0] not in message
    assert str(ROWS) not in _rejected(enclave, "data", {"data": private})


def test_guard_file_backed_input(enclave, frame, tmp_path: Path):
    path = confidential_nb.seal(frame).save(tmp_path / "patients.sealed")
    assert "rare values" in _rejected(enclave, "data.head(3)", {"data": Sealed.load(path)})


def test_guard_bytes_input_text_rule(enclave):
    blob = confidential_nb.seal(b"secret line\n" * 500)
    assert "max_text" in _rejected(enclave, "data", {"data": blob})
    assert enclave.run("data[:6]", inputs={"data": blob}).value == b"secret"


def test_guard_run_without_inputs_unrestricted(enclave):
    assert len(enclave.run("list(range(5000))").value) == 5000


def test_guard_bad_policy_value():
    with pytest.raises(PolicyError, match="invalid max_items 0: expected an integer from 1 to"):
        confidential_nb.seal(pd.DataFrame({"x": [1.0]}), policy={"max_items": 0})


def _peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"/proc/{pid}/status has no VmHWM line")


def test_guard_monitor_memory_below_frame(key_home, tmp_path):
    # The guard reads a file-backed frame a column block at a time, so the monitor's peak grows far less than the frame.
    rows = 2_000_000
    rng = np.random.default_rng(3)
    big = pd.DataFrame({"account": np.arange(10**9, 10**9 + rows), "x": rng.normal(size=rows),
                        "code": pd.Series(rng.integers(0, 10**7, rows)).map("{:08d}".format)})
    frame_mib = len(encode_frame(big)) / 1024**2
    path = confidential_nb.seal(big).save(tmp_path / "big.sealed")
    with Enclave(key_home) as fresh:
        monitor = fresh.status()["monitor_pid"]
        fresh.run("1")
        before = _peak_memory_mib(monitor)
        with pytest.raises(EgressError, match="rare values"):
            fresh.run("[data['code'][i] for i in range(3)] + [0.5, 'text']", inputs={"data": Sealed.load(path)}, timeout=120)
        growth = _peak_memory_mib(monitor) - before
    assert growth < frame_mib / 2, f"the monitor's peak grew by {growth:.0f} MiB for a {frame_mib:.0f} MiB frame"
