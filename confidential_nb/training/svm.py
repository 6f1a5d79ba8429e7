"""Linear support vector classifier trained by full-batch gradient methods.

This module also contains ``_Classifier``, the base class that ``mlp.py``
shares: parameter handling, prediction-time checks and the restoring of
untrusted state dicts. Helpers that LogisticRegression also uses live in
``_estimator.py``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from confidential_nb.training import progress
from confidential_nb.training._estimator import (
    Scaler,
    check_predict_features,
    classes_from_state,
    encode_known_labels,
    encode_labels,
    feature_names_from_state,
    fit_scaler,
    is_recorded,
    progress_from_state,
    store_feature_names,
)
from confidential_nb.training._parameters import (
    LOGISTIC_REGRESSION_RULES,
    ParameterRule,
    _is_bool,
    _is_int,
    _is_real,
    validate_parameters,
)
from confidential_nb.training._state import check_array, check_keys
from confidential_nb.training._validation import (
    FloatArray,
    check_class_labels,
    check_feature_names,
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

STATE_FORMAT = "confidential_nb.training.LinearSVC"
# Version 2 added the record_every parameter. Version 1 states load with
# its default, 1, which matches their every-epoch histories.
STATE_VERSION = 2
_STATE_KEYS = {"format", "version", "params", "classes", "coef", "intercept", "feature_names", "n_iter", "converged", "history"}

_EPS = float(np.finfo(np.float64).eps)

# The hinge solver has no gradient to test, so it stops once the best
# objective has improved by less than tol (relative) over this many epochs.
_HINGE_PATIENCE = 20

# learning_rate="auto" for the hinge loss is this multiple of the squared
# hinge's step; the subgradient step then decays as 1 / sqrt(epoch).
_HINGE_STEP_FACTOR = 10.0

# An objective rise below this multiple of machine epsilon, relative to the
# objective, is rounding noise.
_ROUNDING_EPS_FACTOR = 64.0

# The same rule as LogisticRegression's, so all models accept the same values.
RECORD_EVERY_RULE = LOGISTIC_REGRESSION_RULES["record_every"]

LINEAR_SVC_RULES: dict[str, ParameterRule] = {
    "C": ParameterRule("a finite number > 0", lambda value: _is_real(value) and value > 0),
    "loss": ParameterRule("'squared_hinge' or 'hinge'", lambda value: isinstance(value, str) and value in ("squared_hinge", "hinge")),
    "penalty": ParameterRule("'l2' (the only penalty so far)", lambda value: isinstance(value, str) and value == "l2"),
    "fit_intercept": ParameterRule("a bool", _is_bool),
    "standardize": ParameterRule("a bool", _is_bool),
    "epochs": ParameterRule("an int >= 1", lambda value: _is_int(value) and value >= 1),
    "learning_rate": ParameterRule(
        "'auto' or a finite number > 0",
        lambda value: (isinstance(value, str) and value == "auto") or (_is_real(value) and value > 0),
    ),
    "tol": ParameterRule("a finite number >= 0", lambda value: _is_real(value) and value >= 0),
    "random_state": ParameterRule("None or an int >= 0", lambda value: value is None or (_is_int(value) and value >= 0)),
    "record_every": RECORD_EVERY_RULE,
}


# --- helpers shared with mlp.py ---------------------------------------------


def _float_features(X: Any, name: str = "X", action: str = "fitting") -> FloatArray:
    """Return check_features(X) as a float64 array; ``action`` names the step in messages."""
    return np.asarray(check_features(X, name=name, action=action), dtype=np.float64)


class _Classifier:
    """Parameter handling, input checks and state restoring shared by the classifiers."""

    _RULES: ClassVar[dict[str, ParameterRule]]
    classes_: np.ndarray
    n_features_in_: int
    feature_names_in_: np.ndarray
    n_iter_: int
    converged_: bool
    history_: History

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the hyperparameters by name; ``deep`` exists for scikit-learn compatibility."""
        return {name: getattr(self, name) for name in self._RULES}

    def set_params(self, **params: Any) -> Self:
        """Set hyperparameters by name; they are validated at the next ``fit``."""
        unknown = sorted(set(params) - set(self._RULES))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; valid ones: {list(self._RULES)}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = {name: value for name, value in self.get_params().items() if value != defaults[name]}
        return f"{type(self).__name__}({', '.join(f'{name}={value!r}' for name, value in changed.items())})"

    def _check_fit_data(
        self, X: Any, y: Any, validation_data: tuple[Any, Any] | None
    ) -> tuple[FloatArray, np.ndarray, npt.NDArray[np.intp], tuple[FloatArray, np.ndarray] | None]:
        """Return the float64 features, the sorted classes, each label's code and the checked validation data."""
        features = _float_features(X)
        labels = check_labels(y)
        check_class_labels(labels, estimator=type(self).__name__)
        check_same_length(features, labels, "X", "y")
        classes, codes = encode_labels(labels, type(self).__name__)
        validation = self._prepare_validation(validation_data, features.shape[1], classes, X)
        return features, classes, codes, validation

    def _prepare_validation(
        self, validation_data: tuple[Any, Any] | None, n_features: int, classes: np.ndarray, X: Any
    ) -> tuple[FloatArray, np.ndarray] | None:
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val).")

        # The same rule as predict: reordered or renamed columns would be scored silently wrong.
        check_feature_names(feature_names_of(X) if isinstance(X, pd.DataFrame) else None, validation_data[0],
                            name="X_val", expected_label="the feature names of X", order_hint="the column order of X")
        features = _float_features(validation_data[0], name="X_val")
        labels = check_labels(validation_data[1], name="y_val")
        check_same_length(features, labels, "X_val", "y_val")
        if features.shape[1] != n_features:
            raise ValueError(f"X_val has {features.shape[1]} features, but X has {n_features}.")
        return features, encode_known_labels(labels, classes, "y_val")

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) before using it."
            )

    def _check_predict_features(self, X: Any, action: str = "predicting") -> FloatArray:
        self._check_fitted()
        features = _float_features(X, action=action)
        check_predict_features(features, X, type(self).__name__, self.n_features_in_, getattr(self, "feature_names_in_", None))
        return features

    def predict(self, X: Any) -> np.ndarray:
        """Return the predicted label of each sample, using the labels given to ``fit``."""
        raise NotImplementedError

    def score(self, X: Any, y: Any) -> float:
        """Return the accuracy of ``predict(X)`` against y."""
        return accuracy_score(y, self.predict(X))

    def _common_state(self) -> dict[str, object]:
        names = getattr(self, "feature_names_in_", None)
        return {
            "params": self.get_params(),
            "classes": self.classes_.tolist(),
            "feature_names": None if names is None else [str(name) for name in names],
            "n_iter": self.n_iter_,
            "converged": self.converged_,
            "history": self.history_,
        }

    @classmethod
    def _model_from_state(cls, state: object, keys: set[str], state_format: str, version: int) -> tuple[Self, Mapping[str, object]]:
        """Return an unfitted model with the state's validated parameters, and the state's fields.

        States of version 1 lack ``record_every``, which then keeps its default.
        """
        owner = cls.__name__
        fields = check_keys(state, keys, f"{owner} state")
        state_version = fields["version"]
        if fields["format"] != state_format or state_version not in (1, version) or isinstance(state_version, bool):
            raise ValueError(f"{owner} state must have format {state_format!r} and version 1 or {version}.")

        names = set(cls._RULES) - {"record_every"} if state_version == 1 else set(cls._RULES)
        params = check_keys(fields["params"], names, f"{owner} state 'params'")
        model = cls().set_params(**params)
        validate_parameters(owner, model.get_params(), cls._RULES)
        return model, fields

    def _restore_common(self, fields: Mapping[str, object], n_features: int) -> None:
        """Restore classes, feature names and training progress from validated-shape state fields."""
        owner = type(self).__name__
        if n_features == 0:
            raise ValueError(f"{owner} state must describe at least 1 feature.")
        self.n_features_in_ = n_features
        self.classes_ = classes_from_state(fields["classes"], owner, sorted_order=True)

        names = feature_names_from_state(fields["feature_names"], n_features, owner)
        if names is not None:
            self.feature_names_in_ = names

        n_iter, converged, history = progress_from_state(
            fields, owner, getattr(self, "epochs"), getattr(self, "record_every"), exact_epochs=True
        )
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.history_ = history


# --- LinearSVC ----------------------------------------------------------------


@dataclass
class _Descent:
    weights: FloatArray  # (n_features, n_problems), on the standardized features
    bias: FloatArray  # (n_problems,)
    history: History
    n_iter: int
    converged: bool
    objective_rose: bool


class LinearSVC(_Classifier):
    """Linear support vector classifier with scikit-learn's objective.

    For each binary problem the objective is scikit-learn's
    ``0.5 * ||w||^2 + C * sum(losses)``, where the loss of a sample with label
    y in {-1, +1} and decision value z is ``max(0, 1 - y*z)**2`` for
    ``loss="squared_hinge"`` and ``max(0, 1 - y*z)`` for ``loss="hinge"``.
    The solver works on that objective divided by ``C * n_samples``: the mean
    loss plus ``0.5 / (C * n_samples) * ||w||^2``. Unlike liblinear, which
    scikit-learn's LinearSVC uses, the intercept is not penalized. With more
    than 2 classes, one binary problem per class separates it from the rest
    (one-vs-rest), ``coef_`` has shape (n_classes, n_features) and the class
    with the largest decision value wins. With 2 classes ``coef_`` has shape
    (1, n_features) and a positive decision value means ``classes_[1]``.

    ``standardize=True`` works as in ``LogisticRegression``: population
    standard deviation, penalty on the standardized weights, ``coef_`` and
    ``intercept_`` converted back to the original feature scale.

    Solvers, one epoch being one full-batch step:

    - ``squared_hinge`` is smooth, so Nesterov's accelerated gradient descent
      (restarted whenever the objective rises) minimizes it. Training stops
      with ``converged_ = True`` after the first epoch that leaves every
      problem's gradient norm at or below ``tol``.
    - ``hinge`` is not differentiable at the margin, so subgradient descent
      with step ``learning_rate / sqrt(epoch)`` minimizes it and the model
      keeps the best iterate seen. It converges slowly: training stops once
      the best objective has improved by less than ``tol`` (relative) over
      the last 20 epochs.

    History: ``history_`` records the mean loss over samples and problems
    (without the penalty) and the accuracy, on the training data and on
    ``validation_data`` when given, after every ``record_every``-th epoch and
    after the last one. ``record_every=None`` or ``0`` records nothing.

    ``learning_rate="auto"`` sets the step to ``1 / L``, where L is the
    Lipschitz constant of the squared hinge objective's gradient, computed
    from the largest eigenvalue of the (standardized) features' Gram matrix.
    For ``loss="hinge"`` it sets the first step to ``10 / L``.
    ``random_state`` is stored for scikit-learn compatibility but not used:
    both solvers start from zero weights and are deterministic.
    """

    _RULES = LINEAR_SVC_RULES
    coef_: FloatArray
    intercept_: FloatArray

    def __init__(
        self,
        *,
        C: float = 1.0,
        loss: str = "squared_hinge",
        penalty: str = "l2",
        fit_intercept: bool = True,
        standardize: bool = True,
        epochs: int = 2000,
        learning_rate: float | str = "auto",
        tol: float = 1e-4,
        random_state: int | None = None,
        record_every: int | None = 1,
    ) -> None:
        self.C = C
        self.loss = loss
        self.penalty = penalty
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.tol = tol
        self.random_state = random_state
        self.record_every = record_every

    def fit(self, X: Any, y: Any, validation_data: tuple[Any, Any] | None = None) -> Self:
        """Fit the model on features X and labels y (2 or more classes), and record ``history_``.

        ``validation_data=(X_val, y_val)`` adds ``val_loss`` and
        ``val_accuracy`` to the history; it does not affect training.
        """
        validate_parameters(type(self).__name__, self.get_params(), LINEAR_SVC_RULES)

        features, classes, codes, validation = self._check_fit_data(X, y, validation_data)

        scaler = fit_scaler(features, self.standardize, self.fit_intercept)
        scaled = scaler.transform(features)
        scaled_validation = None if validation is None else (scaler.transform(validation[0]), validation[1])
        descent = self._descend(scaled, codes, classes.size, scaled_validation)

        self._store_fit(descent, scaler, classes, X)
        if not descent.converged:
            self._warn_not_converged(descent.objective_rose)
        logger.debug("LinearSVC fit: %d epochs, converged=%s", self.n_iter_, self.converged_)
        return self

    def _descend(
        self,
        features: FloatArray,
        codes: np.ndarray,
        n_classes: int,
        validation: tuple[FloatArray, np.ndarray] | None,
    ) -> _Descent:
        n_samples, n_features = features.shape
        n_problems = 1 if n_classes == 2 else n_classes
        signs = _signs(codes, n_classes)
        penalty_strength = 1.0 / (self.C * n_samples)
        step = self._step_size(features, penalty_strength)
        names = ("loss", "accuracy", "val_loss", "val_accuracy") if validation else ("loss", "accuracy")
        history = History(names, loss_name=self.loss.replace("_", " "))

        weights = np.zeros((n_features, n_problems))
        bias = np.zeros(n_problems)
        if self.loss == "squared_hinge":
            return self._accelerated_descent(features, signs, codes, validation, weights, bias, step, penalty_strength, history)
        return self._subgradient_descent(features, signs, codes, validation, weights, bias, step, penalty_strength, history)

    def _step_size(self, features: FloatArray, penalty_strength: float) -> float:
        if self.learning_rate != "auto":
            return float(self.learning_rate)
        augmented = np.column_stack([features, np.ones(len(features))]) if self.fit_intercept else features
        largest_eigenvalue = float(np.linalg.eigvalsh(augmented.T @ augmented)[-1])
        # The mean squared hinge has gradient Lipschitz constant at most
        # 2 * lambda_max(A^T A) / n; the penalty adds its own strength.
        step = 1.0 / (2.0 * largest_eigenvalue / len(features) + penalty_strength)
        # NOTE: the hinge factor is empirical. Of 1, 10, 100 and 1000, 10 came
        # closest to liblinear's objective within 5000 epochs on standardized
        # breast cancer and make_classification data; 1000 diverged.
        return step if self.loss == "squared_hinge" else _HINGE_STEP_FACTOR * step

    def _accelerated_descent(
        self,
        features: FloatArray,
        signs: FloatArray,
        codes: np.ndarray,
        validation: tuple[FloatArray, np.ndarray] | None,
        weights: FloatArray,
        bias: FloatArray,
        step: float,
        penalty_strength: float,
        history: History,
    ) -> _Descent:
        look_weights, look_bias = weights, bias
        momentum = 1.0
        objective = self._objective(features, signs, weights, bias, penalty_strength)
        objective_rose = False

        for epoch in range(1, self.epochs + 1):
            started = time.perf_counter()
            weight_gradient, bias_gradient = self._gradient(features, signs, look_weights, look_bias, penalty_strength)
            new_weights = look_weights - step * weight_gradient
            new_bias = look_bias - step * bias_gradient
            new_objective = self._objective(features, signs, new_weights, new_bias, penalty_strength, epoch)

            # Adaptive restart: when the objective rises, drop the momentum
            # so the next step is a plain gradient step from the new point.
            next_momentum = (1.0 + np.sqrt(1.0 + 4.0 * momentum**2)) / 2.0
            if new_objective > objective:
                objective_rose = objective_rose or new_objective - objective > _ROUNDING_EPS_FACTOR * _EPS * objective
                next_momentum = 1.0
            factor = (momentum - 1.0) / next_momentum
            look_weights = new_weights + factor * (new_weights - weights)
            look_bias = new_bias + factor * (new_bias - bias)
            weights, bias, objective, momentum = new_weights, new_bias, new_objective, next_momentum

            weight_gradient, bias_gradient = self._gradient(features, signs, weights, bias, penalty_strength)
            gradient_norms = np.sqrt((weight_gradient**2).sum(axis=0) + bias_gradient**2)
            converged = float(gradient_norms.max()) <= self.tol
            last = converged or epoch == self.epochs
            recorded = None
            if is_recorded(self.record_every, epoch, last):
                recorded = self._record(history, epoch, features, signs, codes, validation, weights, bias, started)
            self._report_progress(epoch, last, recorded, features, signs, codes, weights, bias)
            if converged:
                return _Descent(weights, bias, history, epoch, True, objective_rose)

        # With the auto step 1 / L a rise only comes from momentum and the
        # restart handles it, so only a user-chosen step is blamed.
        return _Descent(weights, bias, history, self.epochs, False, objective_rose and self.learning_rate != "auto")

    def _subgradient_descent(
        self,
        features: FloatArray,
        signs: FloatArray,
        codes: np.ndarray,
        validation: tuple[FloatArray, np.ndarray] | None,
        weights: FloatArray,
        bias: FloatArray,
        step: float,
        penalty_strength: float,
        history: History,
    ) -> _Descent:
        best_weights, best_bias = weights, bias
        best_objective = self._objective(features, signs, weights, bias, penalty_strength)
        best_by_epoch = [best_objective]

        for epoch in range(1, self.epochs + 1):
            started = time.perf_counter()
            weight_gradient, bias_gradient = self._gradient(features, signs, weights, bias, penalty_strength)
            weights = weights - step / np.sqrt(epoch) * weight_gradient
            bias = bias - step / np.sqrt(epoch) * bias_gradient
            objective = self._objective(features, signs, weights, bias, penalty_strength, epoch)
            if objective < best_objective:
                best_weights, best_bias, best_objective = weights, bias, objective
            best_by_epoch.append(best_objective)

            stalled = False
            if epoch >= _HINGE_PATIENCE:
                earlier = best_by_epoch[epoch - _HINGE_PATIENCE]
                stalled = earlier - best_objective <= self.tol * earlier
            last = stalled or epoch == self.epochs
            recorded = None
            if is_recorded(self.record_every, epoch, last):
                recorded = self._record(history, epoch, features, signs, codes, validation, best_weights, best_bias, started)
            self._report_progress(epoch, last, recorded, features, signs, codes, best_weights, best_bias)
            if stalled:
                return _Descent(best_weights, best_bias, history, epoch, True, False)

        return _Descent(best_weights, best_bias, history, self.epochs, False, False)

    def _slacks(self, features: FloatArray, signs: FloatArray, weights: FloatArray, bias: FloatArray) -> FloatArray:
        return np.maximum(0.0, 1.0 - signs * (features @ weights + bias))

    def _losses(self, slacks: FloatArray) -> FloatArray:
        return slacks**2 if self.loss == "squared_hinge" else slacks

    def _objective(
        self,
        features: FloatArray,
        signs: FloatArray,
        weights: FloatArray,
        bias: FloatArray,
        penalty_strength: float,
        epoch: int = 0,
    ) -> float:
        """Return the sum over problems of the mean loss plus the penalty."""
        # Overflow needs an absurd learning rate; it is checked just below
        # and reported as divergence instead of as a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            slacks = self._slacks(features, signs, weights, bias)
            objective = float(self._losses(slacks).mean(axis=0).sum() + 0.5 * penalty_strength * (weights**2).sum())
        if not np.isfinite(objective):
            raise ValueError(
                f"LinearSVC training diverged at epoch {epoch}: the objective overflowed; "
                f"use learning_rate='auto' or a smaller learning_rate (now {self.learning_rate})."
            )
        return objective

    def _gradient(
        self, features: FloatArray, signs: FloatArray, weights: FloatArray, bias: FloatArray, penalty_strength: float
    ) -> tuple[FloatArray, FloatArray]:
        """Return the (sub)gradient of each problem's objective: weights (n_features, n_problems), then intercepts."""
        slacks = self._slacks(features, signs, weights, bias)
        if self.loss == "squared_hinge":
            decision_gradient = -2.0 * signs * slacks / len(features)
        else:
            decision_gradient = -signs * (slacks > 0) / len(features)
        weight_gradient = features.T @ decision_gradient + penalty_strength * weights
        bias_gradient = decision_gradient.sum(axis=0) if self.fit_intercept else np.zeros(weights.shape[1])
        return weight_gradient, bias_gradient

    def _record(
        self,
        history: History,
        epoch: int,
        features: FloatArray,
        signs: FloatArray,
        codes: np.ndarray,
        validation: tuple[FloatArray, np.ndarray] | None,
        weights: FloatArray,
        bias: FloatArray,
        started: float,
    ) -> dict[str, float]:
        """Record the epoch's metrics in the history and return them."""
        metrics: dict[str, Any] = self._metrics(features, signs, codes, weights, bias, "")
        if validation is not None:
            val_signs = _signs(validation[1], max(2, weights.shape[1]))
            metrics.update(self._metrics(validation[0], val_signs, validation[1], weights, bias, "val_"))
        history.record_at(epoch, time.perf_counter() - started, **metrics)
        return metrics

    def _report_progress(
        self,
        epoch: int,
        last: bool,
        recorded: dict[str, float] | None,
        features: FloatArray,
        signs: FloatArray,
        codes: np.ndarray,
        weights: FloatArray,
        bias: FloatArray,
    ) -> None:
        """Send the epoch's progress when due, computing the training metrics unless the history just recorded them."""
        if not progress.due(epoch, last):
            return
        metrics = recorded if recorded is not None else self._metrics(features, signs, codes, weights, bias, "")
        progress.report("LinearSVC", epoch, self.epochs, metrics["loss"], metrics["accuracy"], last=last)

    def _metrics(
        self, features: FloatArray, signs: FloatArray, codes: np.ndarray, weights: FloatArray, bias: FloatArray, prefix: str
    ) -> dict[str, float]:
        decisions = features @ weights + bias
        losses = self._losses(np.maximum(0.0, 1.0 - signs * decisions))
        return {
            f"{prefix}loss": float(losses.mean()),
            f"{prefix}accuracy": float(np.mean(_decision_to_codes(decisions) == codes)),
        }

    def _store_fit(self, descent: _Descent, scaler: Scaler, classes: np.ndarray, X: Any) -> None:
        original_weights = descent.weights / scaler.scale[:, np.newaxis]
        self.coef_ = original_weights.T.copy()
        self.intercept_ = descent.bias - scaler.mean @ original_weights
        self.classes_ = classes
        self.n_features_in_ = int(self.coef_.shape[1])
        self.n_iter_ = descent.n_iter
        self.converged_ = descent.converged
        self.history_ = descent.history
        store_feature_names(self, X)

    def _warn_not_converged(self, objective_rose: bool) -> None:
        # The message is a fixed template with numeric arguments, so it may leave the enclave.
        arguments: dict[str, Any] = {"epochs": self.epochs, "tol": self.tol}
        if objective_rose:
            template = "svm.objective_rose"
            arguments["learning_rate"] = self.learning_rate
        elif self.loss == "hinge":
            template = "svm.hinge"
        elif not self.standardize:
            template = "svm.unscaled"
        else:
            template = "svm.default"
        # stacklevel 3 points at the caller of fit().
        warnings.warn(ConvergenceWarning.from_template(template, **arguments), stacklevel=3)

    def decision_function(self, X: Any) -> FloatArray:
        """Return decision values: shape (n_samples,) for 2 classes, else (n_samples, n_classes)."""
        features = self._check_predict_features(X)
        decisions = features @ self.coef_.T + self.intercept_
        return decisions[:, 0] if self.classes_.size == 2 else decisions

    def predict(self, X: Any) -> np.ndarray:
        """Return the predicted label of each sample, using the labels given to ``fit``."""
        features = self._check_predict_features(X)
        return self.classes_[_decision_to_codes(features @ self.coef_.T + self.intercept_)]

    def to_state(self) -> dict[str, object]:
        """Return the fitted model as a dict of plain values and arrays, for the result codec."""
        self._check_fitted()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "coef": self.coef_.copy(),
            "intercept": self.intercept_.copy(),
            **self._common_state(),
        }

    @classmethod
    def from_state(cls, state: object) -> Self:
        """Rebuild a fitted model from ``to_state`` output (this or the first version), raising ValueError on anything malformed."""
        model, fields = cls._model_from_state(state, _STATE_KEYS, STATE_FORMAT, STATE_VERSION)
        coef = check_array(fields["coef"], "LinearSVC state 'coef'", kind="f", shape=(None, None)).astype(np.float64)
        intercept = check_array(fields["intercept"], "LinearSVC state 'intercept'", kind="f", shape=(coef.shape[0],))
        model._restore_common(fields, int(coef.shape[1]))

        n_problems = 1 if model.classes_.size == 2 else model.classes_.size
        if coef.shape[0] != n_problems:
            raise ValueError(
                f"LinearSVC state 'coef' must have {n_problems} row(s) for {model.classes_.size} classes, "
                f"got {coef.shape[0]}."
            )
        model.coef_ = coef
        model.intercept_ = intercept.astype(np.float64)
        return model


def _signs(codes: np.ndarray, n_classes: int) -> FloatArray:
    """Return +1/-1 targets: one column (+1 for classes_[1]) for 2 classes, else one column per class."""
    if n_classes == 2:
        return np.where(codes == 1, 1.0, -1.0)[:, np.newaxis]
    return np.where(codes[:, np.newaxis] == np.arange(n_classes), 1.0, -1.0)


def _decision_to_codes(decisions: FloatArray) -> np.ndarray:
    if decisions.shape[1] == 1:
        return (decisions[:, 0] > 0).astype(np.intp)
    return np.argmax(decisions, axis=1)
