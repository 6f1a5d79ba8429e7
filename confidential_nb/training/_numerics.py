"""Numerically stable logistic and softmax functions.

The functions avoid ``exp`` of a large positive number, so they neither
overflow nor emit a RuntimeWarning for logits of any finite size. They keep
the dtype of their input, so float32 logits give float32 results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
# float32 or float64: the training loop keeps the dtype of the features.
RealArray = npt.NDArray[np.floating[Any]]


def sigmoid(logits: RealArray) -> RealArray:
    """Return 1 / (1 + exp(-logits)) elementwise."""
    # exp(-|z|) is at most 1, and the two branches are the same function
    # written so that each one only ever exponentiates a non-positive number.
    decay = np.exp(-np.abs(logits))
    return np.where(logits >= 0, 1.0 / (1.0 + decay), decay / (1.0 + decay))


def log_loss_per_sample(logits: RealArray, labels: RealArray) -> RealArray:
    """Return the binary cross-entropy of each sample from its logit and 0/1 label."""
    # -log p(label) = softplus(-z) for label 1 and softplus(z) for label 0,
    # and np.logaddexp(0, t) computes softplus(t) without overflow.
    signs = 2.0 * labels - 1.0
    return np.logaddexp(0.0, -signs * logits)


def sigmoid_and_log_loss(logits: RealArray, labels: RealArray) -> tuple[RealArray, RealArray]:
    """Return ``sigmoid(logits)`` and ``log_loss_per_sample(logits, labels)`` from one exp pass."""
    # With decay = exp(-|z|): softplus(t) = max(t, 0) + log1p(decay) for
    # t = +-z, and the sigmoid is 1 / (1 + decay) or decay / (1 + decay).
    decay = np.exp(-np.abs(logits))
    inverse = 1.0 / (1.0 + decay)
    probabilities = np.where(logits >= 0, inverse, decay * inverse)
    losses = np.log1p(decay)
    losses += np.maximum(np.where(labels > 0.5, -logits, logits), 0.0)
    return probabilities, losses


def softmax_and_log_loss(logits: RealArray, codes: npt.NDArray[np.intp]) -> tuple[RealArray, RealArray]:
    """Return row-wise softmax probabilities of (n, k) logits and each row's cross-entropy.

    ``codes`` contains each row's class index into the columns of ``logits``.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    totals = exponentials.sum(axis=1, keepdims=True)
    probabilities = exponentials / totals
    losses = np.log(totals[:, 0]) - shifted[np.arange(len(codes)), codes]
    return probabilities, losses


def softmax(logits: RealArray) -> RealArray:
    """Return row-wise softmax probabilities of (n, k) logits."""
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)
