"""Training progress records: validation, size and digest.

A progress record reports one training epoch of a library estimator::

    {"model": "LogisticRegression", "epoch": 12, "epochs": 300, "loss": 0.1234, "accuracy": 0.95}

The runner sends records, the monitor validates each one with
``normalize_record`` before it counts it against the run's result budget
(``record_bytes``) and binds all of them into the receipt
(``progress_digest``), and the host validates them again before display.
User code shares the runner's process, so it can forge records. The
validation bounds what one forged record can carry: one of a few model
names, two bounded ints and two numbers rounded to 4 significant digits.

This module imports only the standard library, so the monitor, the runner
and the host can all import it.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

# The estimators of confidential_nb.training whose fit reports progress.
MODEL_NAMES: frozenset[str] = frozenset({"LogisticRegression", "LinearSVC", "MLPClassifier"})

RECORD_KEYS: frozenset[str] = frozenset({"model", "epoch", "epochs", "loss", "accuracy"})

# Upper bound on ``epochs``. Larger epoch counts are valid estimator
# parameters, but their fits send no progress.
MAX_EPOCHS = 10**7

SIGNIFICANT_DIGITS = 4

DIGEST_PREFIX = b"confidential_nb progress digest v1\x00"


def normalize_record(raw: object) -> dict[str, Any] | None:
    """Return the canonical form of a progress record, or None when it is malformed.

    A valid record is a dict with exactly the keys of ``RECORD_KEYS``:
    ``model`` in ``MODEL_NAMES``, ``epoch`` and ``epochs`` ints (not bools)
    with ``1 <= epoch <= epochs <= MAX_EPOCHS``, ``loss`` None or a finite
    number >= 0, ``accuracy`` None or a finite number in [0, 1]. The
    canonical form has the keys in that order, the ints as ``int`` and
    the numbers as ``float`` rounded to 4 significant digits, with -0.0
    made 0.0.
    """
    if not isinstance(raw, dict) or set(raw) != RECORD_KEYS:
        return None
    model = raw["model"]
    if type(model) is not str or model not in MODEL_NAMES:
        return None

    epoch = _bounded_int(raw["epoch"])
    epochs = _bounded_int(raw["epochs"])
    if epoch is None or epochs is None or epoch > epochs:
        return None

    try:
        loss = _rounded_number(raw["loss"], 0.0, math.inf)
        accuracy = _rounded_number(raw["accuracy"], 0.0, 1.0)
    except _InvalidNumber:
        return None
    return {"model": model, "epoch": epoch, "epochs": epochs, "loss": loss, "accuracy": accuracy}


def canonical_json(record: dict[str, Any]) -> bytes:
    """Encode a normalized record as compact ASCII JSON with sorted keys."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii")


def record_bytes(record: dict[str, Any]) -> int:
    """Return the size in bytes of the record's canonical JSON, which the result budget charges."""
    return len(canonical_json(_checked(record)))


def progress_digest(records: list[dict[str, Any]]) -> str:
    """Return the hex SHA-256 digest that binds a run's progress records, in order, into its receipt.

    The digest is SHA-256 over ``DIGEST_PREFIX`` (the ASCII bytes
    ``confidential_nb progress digest v1`` followed by one zero byte), then,
    for each record in the order sent, the length of its canonical JSON as
    an 8-byte big-endian unsigned int followed by that JSON. Canonical JSON
    is ``json.dumps(record, sort_keys=True, separators=(",", ":"),
    ensure_ascii=True, allow_nan=False)`` encoded as ASCII. No records give
    the digest of the prefix alone.

    Raises ValueError when a record is not in normalized form, because two
    spellings of one record would otherwise give two digests.
    """
    digest = hashlib.sha256(DIGEST_PREFIX)
    for record in records:
        encoded = canonical_json(_checked(record))
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


class _InvalidNumber(ValueError):
    """A loss or accuracy that is not None or a finite number within its bounds."""


def _bounded_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if not 1 <= value <= MAX_EPOCHS:
        return None
    return int(value)


def _rounded_number(value: object, minimum: float, maximum: float) -> float | None:
    """Return None for None, else the number rounded to 4 significant digits, raising _InvalidNumber when invalid."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _InvalidNumber(value)
    # float() of a huge int raises OverflowError, and such a value is invalid anyway.
    try:
        number = float(value)
    except OverflowError:
        raise _InvalidNumber(value) from None
    if not (math.isfinite(number) and minimum <= number <= maximum):
        raise _InvalidNumber(value)
    # The g presentation rounds the exact binary value to significant digits,
    # ties to even. Adding 0.0 turns -0.0 into 0.0.
    return float(f"{number:.{SIGNIFICANT_DIGITS}g}") + 0.0


def _checked(record: dict[str, Any]) -> dict[str, Any]:
    normalized = normalize_record(record)
    if normalized is None or normalized != record or any(type(normalized[key]) is not type(record[key]) for key in record):
        raise ValueError(f"progress record is not in normalized form: {record!r}; pass it through normalize_record first.")
    return normalized
