"""Numerically stable logistic functions for float64 arrays.

Both functions avoid ``exp`` of a large positive number, so they neither
overflow nor emit a RuntimeWarning for logits of any finite size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def sigmoid(logits: FloatArray) -> FloatArray:
    """Return 1 / (1 + exp(-logits)) elementwise."""
    # exp(-|z|) is at most 1, and the two branches are the same function
    # written so that each one only ever exponentiates a non-positive number.
    decay = np.exp(-np.abs(logits))
    return np.where(logits >= 0, 1.0 / (1.0 + decay), decay / (1.0 + decay))


def log_loss_per_sample(logits: FloatArray, labels: FloatArray) -> FloatArray:
    """Return the binary cross-entropy of each sample from its logit and 0/1 label."""
    # -log p(label) = softplus(-z) for label 1 and softplus(z) for label 0,
    # and np.logaddexp(0, t) computes softplus(t) without overflow.
    signs = 2.0 * labels - 1.0
    return np.logaddexp(0.0, -signs * logits)
