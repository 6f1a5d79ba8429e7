"""Numpy models that record per-epoch history, with metrics and splits.

Everything here imports only numpy and pandas, so it runs inside the enclave.
"""

from __future__ import annotations

from confidential_nb.training.exceptions import ConvergenceWarning, NotFittedError
from confidential_nb.training.history import History
from confidential_nb.training.logistic import LogisticRegression
from confidential_nb.training.metrics import (
    UndefinedMetricWarning,
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)
from confidential_nb.training.mlp import MLPClassifier
from confidential_nb.training.model_selection import StratifiedKFold, cross_validate
from confidential_nb.training.split import train_test_split
from confidential_nb.training.svm import LinearSVC

__all__ = [
    "ConvergenceWarning",
    "History",
    "LinearSVC",
    "LogisticRegression",
    "MLPClassifier",
    "NotFittedError",
    "StratifiedKFold",
    "UndefinedMetricWarning",
    "accuracy_score",
    "confusion_matrix",
    "cross_validate",
    "f1_score",
    "log_loss",
    "precision_recall_fscore_support",
    "precision_score",
    "recall_score",
    "roc_auc_score",
    "train_test_split",
]
