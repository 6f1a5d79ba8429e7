"""Binary logistic regression trained by full-batch gradient descent."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd

from confidential_nb.training._numerics import FloatArray, log_loss_per_sample, sigmoid
from confidential_nb.training._parameters import LOGISTIC_REGRESSION_RULES, validate_parameters
from confidential_nb.training._state import check_array, check_keys
from confidential_nb.training._validation import (
    check_features,
    check_labels,
    check_same_length,
    feature_names_of,
    format_names,
)
from confidential_nb.training.exceptions import ConvergenceWarning, NotFittedError
from confidential_nb.training.history import History
from confidential_nb.training.metrics import accuracy_score

logger = logging.getLogger("confidential_nb.training")

STATE_FORMAT = "confidential_nb.training.LogisticRegression"
STATE_VERSION = 1
_STATE_KEYS = {"format", "version", "params", "classes", "coef", "intercept", "feature_names", "n_iter", "converged", "history"}

# A column whose standard deviation is below this multiple of machine epsilon,
# relative to its magnitude, is treated as constant: its spread is rounding noise.
_CONSTANT_COLUMN_EPS_FACTOR = 10.0

# An objective rise below this multiple of machine epsilon, relative to the
# objective, is rounding noise.
_ROUNDING_EPS_FACTOR = 64.0
_EPS = float(np.finfo(np.float64).eps)


@dataclass
class _Scaler:
    mean: FloatArray
    scale: FloatArray

    def transform(self, X: FloatArray) -> FloatArray:
        return (X - self.mean) / self.scale


@dataclass
class _Descent:
    weights: FloatArray
    bias: float
    history: History
    converged: bool
    loss_rose: bool


class LogisticRegression:
    """Binary logistic regression fitted by full-batch gradient descent.

    The objective is scikit-learn's: ``C * sum(log losses) + 0.5 * ||w||^2``
    for ``penalty="l2"``, divided here by ``C * n_samples`` so that gradient
    descent works on the mean log loss plus ``0.5 / (C * n_samples) * ||w||^2``.
    The intercept is not penalized. ``penalty=None`` drops the second term.

    With ``standardize=True`` (the default) each feature is centred and divided
    by its population standard deviation (ddof=0) inside the model, the
    penalty applies to the weights of those standardized features, and
    ``coef_`` and ``intercept_`` are converted back to the original feature
    scale, so this matches ``StandardScaler`` followed by scikit-learn's
    ``LogisticRegression``. Constant columns get a scale of 1 and a zero
    weight. With ``fit_intercept=False`` the features are scaled but not
    centred, because centring would add an intercept.

    Convergence: each epoch takes one step ``theta -= learning_rate * grad``
    on the regularized mean objective J, where theta is the weights (of the
    standardized features when ``standardize=True``) and the intercept.
    Training stops, with ``converged_ = True``, after the first epoch that
    leaves ``||grad J||_2 <= tol``: the test is on the final model's gradient,
    so it does not depend on the learning rate, and a learning rate that is
    too small or too large runs out of epochs rather than stopping early.
    When training ends at ``epochs`` without passing it, ``fit`` emits a
    ``ConvergenceWarning``. The default ``tol=0.03`` is a stopping rule for
    prediction, not a tight optimum (scikit-learn's lbfgs stops at a
    gradient entry of 1e-4): on the bundled breast cancer data, standardized
    and split as in the package example (``test_size=0.33,
    random_state=0``), it stops after 214 of the default 300 epochs.
    For coefficients close to the exact optimum, set a small ``tol`` (such as
    1e-8) and more epochs. On unscaled features the gradient is large, so
    ``standardize=False`` usually ends with the warning.

    ``random_state`` is stored for scikit-learn compatibility but not used:
    full-batch gradient descent from zero weights is deterministic.
    """

    def __init__(
        self,
        *,
        epochs: int = 300,
        learning_rate: float = 0.1,
        C: float = 1.0,
        penalty: str | None = "l2",
        fit_intercept: bool = True,
        standardize: bool = True,
        tol: float = 0.03,
        random_state: int | None = None,
        solver: str = "gd",
    ) -> None:
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.C = C
        self.penalty = penalty
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.tol = tol
        self.random_state = random_state
        self.solver = solver

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the hyperparameters by name; ``deep`` exists for scikit-learn compatibility."""
        return {name: getattr(self, name) for name in LOGISTIC_REGRESSION_RULES}

    def set_params(self, **params: Any) -> Self:
        """Set hyperparameters by name; they are validated at the next ``fit``."""
        unknown = sorted(set(params) - set(LOGISTIC_REGRESSION_RULES))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; valid ones: {list(LOGISTIC_REGRESSION_RULES)}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = {name: value for name, value in self.get_params().items() if value != defaults[name]}
        return f"{type(self).__name__}({', '.join(f'{name}={value!r}' for name, value in changed.items())})"

    def fit(self, X: Any, y: Any, validation_data: tuple[Any, Any] | None = None) -> Self:
        """Fit the model on features X and binary labels y, and record ``history_``.

        ``validation_data=(X_val, y_val)`` adds ``val_loss`` and
        ``val_accuracy`` to the history; it does not affect training.
        """
        validate_parameters(type(self).__name__, self.get_params(), LOGISTIC_REGRESSION_RULES)

        features = check_features(X)
        labels = check_labels(y)
        check_same_length(features, labels, "X", "y")
        classes, targets = _encode_binary_labels(labels)
        validation = self._prepare_validation(validation_data, features.shape[1], classes)

        scaler = self._fit_scaler(features)
        descent = self._descend(scaler.transform(features), targets, validation, scaler)

        self._store_fit(descent, scaler, classes, X)
        if not descent.converged:
            self._warn_not_converged(descent.loss_rose)
        logger.debug("LogisticRegression fit: %d epochs, converged=%s", self.n_iter_, self.converged_)
        return self

    def _prepare_validation(
        self, validation_data: tuple[Any, Any] | None, n_features: int, classes: np.ndarray
    ) -> tuple[FloatArray, FloatArray] | None:
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val).")

        features = check_features(validation_data[0], name="X_val")
        labels = check_labels(validation_data[1], name="y_val")
        check_same_length(features, labels, "X_val", "y_val")
        if features.shape[1] != n_features:
            raise ValueError(f"X_val has {features.shape[1]} features, but X has {n_features}.")
        return features, _encode_known_labels(labels, classes, "y_val")

    def _fit_scaler(self, features: FloatArray) -> _Scaler:
        n_features = features.shape[1]
        if not self.standardize:
            return _Scaler(np.zeros(n_features), np.ones(n_features))

        mean = features.mean(axis=0)
        scale = features.std(axis=0)
        constant = scale <= _CONSTANT_COLUMN_EPS_FACTOR * _EPS * np.maximum(np.abs(mean), 1.0)
        scale[constant] = 1.0
        if not self.fit_intercept:
            mean = np.zeros(n_features)
        return _Scaler(mean, scale)

    def _descend(
        self,
        features: FloatArray,
        targets: FloatArray,
        validation: tuple[FloatArray, FloatArray] | None,
        scaler: _Scaler,
    ) -> _Descent:
        n_samples, n_features = features.shape
        penalty_strength = 1.0 / (self.C * n_samples) if self.penalty == "l2" else 0.0
        names = ("loss", "accuracy", "val_loss", "val_accuracy") if validation else ("loss", "accuracy")
        history = History(names)
        val_features = None if validation is None else scaler.transform(validation[0])

        weights = np.zeros(n_features)
        bias = 0.0
        logits = features @ weights + bias
        gradient = self._gradient(features, targets, logits, weights, penalty_strength)
        objective = float(np.mean(log_loss_per_sample(logits, targets)))
        loss_rose = False

        for epoch in range(1, self.epochs + 1):
            started = time.perf_counter()
            weights, bias, logits, new_objective = self._step(
                features, targets, weights, bias, gradient, penalty_strength, epoch
            )
            gradient = self._gradient(features, targets, logits, weights, penalty_strength)

            metrics = _binary_metrics(logits, targets, "")
            if validation is not None and val_features is not None:
                metrics.update(_binary_metrics(val_features @ weights + bias, validation[1], "val_"))
            history.record(time.perf_counter() - started, **metrics)

            # Gradient descent with a small enough step never raises the
            # objective, so any rise beyond rounding means the step is too large.
            loss_rose = loss_rose or new_objective - objective > _ROUNDING_EPS_FACTOR * _EPS * objective
            objective = new_objective
            if float(np.linalg.norm(gradient)) <= self.tol:
                return _Descent(weights, bias, history, True, loss_rose)

        return _Descent(weights, bias, history, False, loss_rose)

    def _gradient(
        self,
        features: FloatArray,
        targets: FloatArray,
        logits: FloatArray,
        weights: FloatArray,
        penalty_strength: float,
    ) -> FloatArray:
        """Return the objective's gradient: the weights' entries, then the intercept's (0 without one)."""
        residuals = sigmoid(logits) - targets
        weight_gradient = features.T @ residuals / features.shape[0] + penalty_strength * weights
        bias_gradient = float(residuals.mean()) if self.fit_intercept else 0.0
        return np.append(weight_gradient, bias_gradient)

    def _step(
        self,
        features: FloatArray,
        targets: FloatArray,
        weights: FloatArray,
        bias: float,
        gradient: FloatArray,
        penalty_strength: float,
        epoch: int,
    ) -> tuple[FloatArray, float, FloatArray, float]:
        """Take one gradient step and return the new weights, bias, logits and objective."""
        # Overflow needs an absurd learning rate; it is checked just below
        # and reported as divergence instead of as a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            new_weights = weights - self.learning_rate * gradient[:-1]
            new_bias = float(bias - self.learning_rate * gradient[-1])
            logits = features @ new_weights + new_bias
            objective = float(np.mean(log_loss_per_sample(logits, targets)))
            objective += 0.5 * penalty_strength * float(new_weights @ new_weights)

        if not (np.isfinite(logits).all() and np.isfinite(objective)):
            raise ValueError(
                f"gradient descent diverged at epoch {epoch}: the loss overflowed; "
                f"use a smaller learning_rate (now {self.learning_rate}) or standardize=True."
            )
        return new_weights, new_bias, logits, objective

    def _store_fit(self, descent: _Descent, scaler: _Scaler, classes: np.ndarray, X: Any) -> None:
        standardized_weights = descent.weights / scaler.scale
        self.coef_ = standardized_weights.reshape(1, -1)
        self.intercept_ = np.array([descent.bias - float(standardized_weights @ scaler.mean)])
        self.classes_ = classes
        self.n_features_in_ = int(self.coef_.shape[1])
        self.n_iter_ = len(descent.history)
        self.converged_ = descent.converged
        self.history_ = descent.history

        names = feature_names_of(X) if isinstance(X, pd.DataFrame) else None
        if names is not None:
            self.feature_names_in_ = np.array(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _warn_not_converged(self, loss_rose: bool) -> None:
        if loss_rose:
            advice = (
                f"the loss rose during training, so learning_rate={self.learning_rate} is probably "
                "too large: use a smaller learning_rate or standardize=True."
            )
        else:
            advice = (
                f"increase epochs, use a larger learning_rate (now {self.learning_rate}), "
                "or set standardize=True if the features have very different scales."
            )
        message = (
            f"LogisticRegression did not converge in {self.epochs} epochs (tol={self.tol}): {advice}"
        )
        # stacklevel 3 points at the caller of fit().
        warnings.warn(message, ConvergenceWarning, stacklevel=3)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) before using it."
            )

    def _check_predict_features(self, X: Any) -> FloatArray:
        self._check_fitted()
        features = check_features(X)
        if features.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {features.shape[1]} features, but {type(self).__name__} was fitted with "
                f"{self.n_features_in_} features."
            )

        fitted_names = getattr(self, "feature_names_in_", None)
        input_names = feature_names_of(X) if isinstance(X, pd.DataFrame) else None
        if fitted_names is not None and input_names is not None:
            _check_same_names(list(fitted_names), input_names)
        return features

    def decision_function(self, X: Any) -> FloatArray:
        """Return the logit of the positive class ``classes_[1]`` for each sample."""
        features = self._check_predict_features(X)
        return features @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: Any) -> FloatArray:
        """Return class probabilities, shape (n_samples, 2), columns in ``classes_`` order."""
        logits = self.decision_function(X)
        return np.column_stack([sigmoid(-logits), sigmoid(logits)])

    def predict(self, X: Any) -> np.ndarray:
        """Return the predicted label of each sample, using the labels given to ``fit``."""
        logits = self.decision_function(X)
        return self.classes_[(logits > 0).astype(np.intp)]

    def score(self, X: Any, y: Any) -> float:
        """Return the accuracy of ``predict(X)`` against y."""
        return accuracy_score(y, self.predict(X))

    def to_state(self) -> dict[str, object]:
        """Return the fitted model as a dict of plain values and arrays, for the result codec."""
        self._check_fitted()
        names = getattr(self, "feature_names_in_", None)
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "params": self.get_params(),
            "classes": self.classes_.tolist(),
            "coef": self.coef_.copy(),
            "intercept": self.intercept_.copy(),
            "feature_names": None if names is None else [str(name) for name in names],
            "n_iter": self.n_iter_,
            "converged": self.converged_,
            "history": self.history_,
        }

    @classmethod
    def from_state(cls, state: object) -> Self:
        """Rebuild a fitted model from ``to_state`` output, raising ValueError on anything malformed."""
        fields = check_keys(state, _STATE_KEYS, "LogisticRegression state")
        if fields["format"] != STATE_FORMAT or fields["version"] != STATE_VERSION:
            raise ValueError(f"LogisticRegression state must have format {STATE_FORMAT!r} and version {STATE_VERSION}.")

        params = check_keys(fields["params"], set(LOGISTIC_REGRESSION_RULES), "LogisticRegression state 'params'")
        model = cls().set_params(**params)
        validate_parameters(cls.__name__, model.get_params(), LOGISTIC_REGRESSION_RULES)

        model.coef_ = check_array(fields["coef"], "LogisticRegression state 'coef'", kind="f", shape=(1, None)).astype(np.float64)
        model.intercept_ = check_array(fields["intercept"], "LogisticRegression state 'intercept'", kind="f", shape=(1,)).astype(np.float64)
        model.n_features_in_ = int(model.coef_.shape[1])
        if model.n_features_in_ == 0:
            raise ValueError("LogisticRegression state 'coef' must have at least 1 feature.")
        model.classes_ = _classes_from_state(fields["classes"])
        _restore_feature_names(model, fields["feature_names"])
        _restore_progress(model, fields)
        return model


def _restore_feature_names(model: LogisticRegression, names: object) -> None:
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError("LogisticRegression state 'feature_names' must be None or a list of str.")
    if len(names) != model.n_features_in_ or len(set(names)) != len(names):
        raise ValueError(
            f"LogisticRegression state 'feature_names' must hold {model.n_features_in_} distinct names, "
            f"got {len(names)}."
        )
    model.feature_names_in_ = np.array(names, dtype=object)


def _restore_progress(model: LogisticRegression, fields: Mapping[str, object]) -> None:
    n_iter = fields["n_iter"]
    converged = fields["converged"]
    history = fields["history"]
    if not isinstance(n_iter, int) or isinstance(n_iter, bool):
        raise ValueError(f"LogisticRegression state 'n_iter' must be an int, got {type(n_iter).__name__}.")
    if not isinstance(converged, bool):
        raise ValueError(f"LogisticRegression state 'converged' must be a bool, got {type(converged).__name__}.")
    if not isinstance(history, History):
        raise ValueError(f"LogisticRegression state 'history' must be a History, got {type(history).__name__}.")
    if not 0 <= n_iter <= model.epochs or len(history) != n_iter:
        raise ValueError(
            f"LogisticRegression state 'n_iter' ({n_iter}) must equal the history length ({len(history)}) "
            f"and be at most epochs ({model.epochs})."
        )
    model.n_iter_ = n_iter
    model.converged_ = converged
    model.history_ = history


def _classes_from_state(values: object) -> np.ndarray:
    if not isinstance(values, list) or len(values) != 2:
        raise ValueError("LogisticRegression state 'classes' must be a list of 2 labels.")
    if all(isinstance(value, str) for value in values):
        classes = np.array(values, dtype=object)
    elif all(isinstance(value, (bool, int, float)) for value in values):
        classes = np.array(values)
    else:
        raise ValueError("LogisticRegression state 'classes' must be 2 strings or 2 numbers.")
    if classes[0] == classes[1]:
        raise ValueError("LogisticRegression state 'classes' must be 2 distinct labels.")
    return classes


def _encode_binary_labels(labels: np.ndarray) -> tuple[np.ndarray, FloatArray]:
    """Return the sorted classes and 0/1 targets (1 for ``classes[1]``)."""
    classes = np.unique(labels)
    if classes.dtype.kind in "US":
        classes = classes.astype(object)
    if classes.size == 1:
        raise ValueError("y contains a single class; LogisticRegression needs samples of 2 classes.")
    if classes.size > 2:
        raise ValueError(
            f"y has {classes.size} classes, but only binary classification is supported: "
            "multinomial (more than 2 classes) is not supported yet."
        )
    return classes, _encode_known_labels(labels, classes, "y")


def _encode_known_labels(labels: np.ndarray, classes: np.ndarray, name: str) -> FloatArray:
    codes = pd.Index(classes).get_indexer(labels)
    unknown = int(np.sum(codes < 0))
    if unknown:
        raise ValueError(f"{name} has {unknown} label(s) that are not among the {classes.size} classes of y.")
    return codes.astype(np.float64)


def _binary_metrics(logits: FloatArray, targets: FloatArray, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}loss": float(np.mean(log_loss_per_sample(logits, targets))),
        f"{prefix}accuracy": float(np.mean((logits > 0) == (targets == 1.0))),
    }


def _check_same_names(fitted: list[str], given: list[str]) -> None:
    if fitted == given:
        return
    missing = [name for name in fitted if name not in set(given)]
    unexpected = [name for name in given if name not in set(fitted)]
    if not missing and not unexpected:
        raise ValueError("X has the fitted feature names in a different order; reorder its columns to feature_names_in_.")
    raise ValueError(
        f"X's columns differ from the fitted feature names: missing {format_names(missing) or 'none'}, "
        f"unexpected {format_names(unexpected) or 'none'}."
    )
