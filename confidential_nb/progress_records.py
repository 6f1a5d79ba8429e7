"""The progress records that runners send while a library model trains, and their checks.

NOTE: minimal version; the full one (estimator names, rounding rules) lands with the training side.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from typing import Any

MODEL_NAMES = frozenset({"LogisticRegression", "LinearSVC", "MLPClassifier"})
MAX_EPOCHS = 10**7
_KEYS = frozenset({"model", "epoch", "epochs", "loss", "accuracy"})
_DIGEST_CONTEXT = b"confidential_nb progress v1\x00"


def normalize_record(raw: object) -> dict[str, Any] | None:
    """Return the canonical record, or None when `raw` is not a well-formed progress record."""
    if not isinstance(raw, dict) or set(raw) != _KEYS or raw["model"] not in MODEL_NAMES:
        return None
    epoch, epochs = raw["epoch"], raw["epochs"]
    if type(epoch) is not int or type(epochs) is not int or not 1 <= epoch <= epochs <= MAX_EPOCHS:
        return None
    loss, accuracy = _figure(raw["loss"]), _figure(raw["accuracy"])
    if loss is False or accuracy is False:
        return None
    if (loss is not None and loss < 0) or (accuracy is not None and not 0 <= accuracy <= 1):
        return None
    return {"model": raw["model"], "epoch": epoch, "epochs": epochs, "loss": loss, "accuracy": accuracy}


def _figure(value: object) -> float | None | bool:
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        return False
    return float(f"{value:.4g}")


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def record_bytes(record: dict[str, Any]) -> int:
    return len(canonical(record))


def progress_digest(records: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256(_DIGEST_CONTEXT)
    for record in records:
        encoded = canonical(record)
        digest.update(struct.pack("!Q", len(encoded)) + encoded)
    return digest.hexdigest()
