"""Warning and exception classes of the training library."""

from __future__ import annotations

from confidential_nb.library_warnings import TemplatedWarning


class ConvergenceWarning(TemplatedWarning):
    """Training ended at its epoch limit before the convergence test passed."""


class NotFittedError(ValueError, AttributeError):
    """A model was asked to predict or serialize before ``fit`` was called."""
