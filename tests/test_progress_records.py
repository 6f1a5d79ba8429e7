"""Validation, rounding, size and digest of training progress records."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest

from confidential_nb.progress_records import (
    MAX_EPOCHS,
    MODEL_NAMES,
    normalize_record,
    progress_digest,
    record_bytes,
)


class StrSubclass(str):
    """A str subclass, which could carry extra state past the model name check."""


def valid_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"model": "LogisticRegression", "epoch": 12, "epochs": 300, "loss": 0.1234, "accuracy": 0.95}
    record.update(changes)
    return record


def test_normalize_record_valid_unchanged() -> None:
    record = valid_record()
    assert normalize_record(record) == record


def test_normalize_record_every_model_name() -> None:
    for name in MODEL_NAMES:
        normalized = normalize_record(valid_record(model=name))
        assert normalized is not None
        assert normalized["model"] == name


@pytest.mark.parametrize(
    "changes",
    [
        {"epoch": True},
        {"epochs": True},
        {"epoch": 1.0},
        {"epochs": "300"},
        {"epoch": 0},
        {"epoch": -1},
        {"epoch": 301},
        {"epochs": MAX_EPOCHS + 1, "epoch": 1},
        {"epochs": 10**100, "epoch": 1},
        {"loss": math.nan},
        {"loss": math.inf},
        {"loss": -math.inf},
        {"loss": -0.5},
        {"loss": "0.5"},
        {"loss": True},
        {"loss": 10**400},
        {"loss": [0.5]},
        {"accuracy": math.nan},
        {"accuracy": 1.5},
        {"accuracy": -0.01},
        {"accuracy": 1.00001},
        {"loss": -1e-9},
        {"accuracy": False},
        {"model": "LogisticRegressionX"},
        {"model": "logisticregression"},
        {"model": None},
        {"model": StrSubclass("LogisticRegression")},
        {"model": ["LogisticRegression"]},
    ],
    ids=lambda changes: ",".join(f"{key}={value!r}"[:40] for key, value in changes.items()),
)
def test_normalize_record_rejects_bad_field(changes: dict[str, Any]) -> None:
    assert normalize_record(valid_record(**changes)) is None


def test_normalize_record_rejects_extra_key() -> None:
    assert normalize_record({**valid_record(), "note": "x"}) is None


def test_normalize_record_rejects_missing_key() -> None:
    record = valid_record()
    del record["accuracy"]
    assert normalize_record(record) is None


@pytest.mark.parametrize("raw", [None, [], "record", 42, [("model", "LogisticRegression")]])
def test_normalize_record_rejects_non_dict(raw: object) -> None:
    assert normalize_record(raw) is None


def test_normalize_record_accepts_none_metrics() -> None:
    normalized = normalize_record(valid_record(loss=None, accuracy=None))
    assert normalized is not None
    assert normalized["loss"] is None
    assert normalized["accuracy"] is None


def test_normalize_record_bounds_inclusive() -> None:
    low = normalize_record(valid_record(epoch=1, epochs=1, loss=0, accuracy=0))
    high = normalize_record(valid_record(epoch=MAX_EPOCHS, epochs=MAX_EPOCHS, accuracy=1))
    assert low == {"model": "LogisticRegression", "epoch": 1, "epochs": 1, "loss": 0.0, "accuracy": 0.0}
    assert high is not None
    assert high["epoch"] == MAX_EPOCHS
    assert high["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.123456789, 0.1235),
        (1234567.0, 1235000.0),
        (0.000123456, 0.0001235),
        (2.5e-300, 2.5e-300),
        (1.0, 1.0),
        (7, 7.0),
        (99995.0, 1e5),
        (1.7976931348623157e308, 1.798e308),
    ],
)
def test_normalize_record_rounds_loss(value: float, expected: float) -> None:
    normalized = normalize_record(valid_record(loss=value))
    assert normalized is not None
    assert normalized["loss"] == pytest.approx(expected, rel=1e-12)
    assert type(normalized["loss"]) is float


def test_normalize_record_rounds_to_four_digits() -> None:
    # Every rounded value must print with at most 4 significant digits.
    for value in (0.987654321, 3.14159265, 123.456789, 1e-7 / 3):
        normalized = normalize_record(valid_record(loss=value))
        assert normalized is not None
        digits = f"{normalized['loss']:.15e}".split("e")[0].replace(".", "").rstrip("0")
        assert len(digits) <= 4, normalized["loss"]


def test_normalize_record_accuracy_rounds_into_range() -> None:
    normalized = normalize_record(valid_record(accuracy=0.99996))
    assert normalized is not None
    assert normalized["accuracy"] == 1.0


def test_normalize_record_negative_zero_canonical() -> None:
    normalized = normalize_record(valid_record(loss=-0.0, accuracy=-0.0))
    assert normalized is not None
    assert math.copysign(1.0, normalized["loss"]) == 1.0
    assert math.copysign(1.0, normalized["accuracy"]) == 1.0


def test_normalize_record_idempotent() -> None:
    once = normalize_record(valid_record(loss=0.3333333, accuracy=2 / 3))
    assert once is not None
    assert normalize_record(once) == once


def test_record_bytes_is_canonical_json_size() -> None:
    record = valid_record()
    expected = len(json.dumps(record, sort_keys=True, separators=(",", ":")).encode("ascii"))
    assert record_bytes(record) == expected


def test_record_bytes_rejects_unnormalized() -> None:
    with pytest.raises(ValueError, match="normalize_record"):
        record_bytes(valid_record(loss=0.123456))


def independent_digest(records: list[dict[str, Any]]) -> str:
    # Recomputed from the documented definition, without the module's helpers.
    state = hashlib.sha256()
    state.update(b"confidential_nb progress digest v1" + b"\x00")
    for record in records:
        encoded = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
        state.update(len(encoded).to_bytes(8, "big") + encoded)
    return state.hexdigest()


def test_progress_digest_matches_definition() -> None:
    records = [
        valid_record(epoch=1, loss=0.6931, accuracy=0.5),
        valid_record(epoch=12),
        valid_record(model="MLPClassifier", epoch=300, loss=None, accuracy=None),
    ]
    assert progress_digest(records) == independent_digest(records)


def test_progress_digest_empty_is_prefix_hash() -> None:
    assert progress_digest([]) == hashlib.sha256(b"confidential_nb progress digest v1\x00").hexdigest()


def test_progress_digest_depends_on_order() -> None:
    first, second = valid_record(epoch=1), valid_record(epoch=2)
    assert progress_digest([first, second]) != progress_digest([second, first])


def test_progress_digest_depends_on_each_field() -> None:
    base = progress_digest([valid_record()])
    for changes in ({"epoch": 13}, {"epochs": 301}, {"loss": 0.1235}, {"accuracy": 0.951}, {"model": "LinearSVC"}):
        assert progress_digest([valid_record(**changes)]) != base, changes


def test_progress_digest_rejects_unnormalized() -> None:
    with pytest.raises(ValueError, match="not in normalized form"):
        progress_digest([valid_record(loss=1)])
    with pytest.raises(ValueError, match="not in normalized form"):
        progress_digest([{**valid_record(), "extra": 1}])
