"""Logistic regression, binary and multinomial, with four solvers and per-epoch history."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from confidential_nb.training._estimator import (
    Scaler,
    check_predict_features,
    classes_from_state,
    encode_known_labels,
    encode_labels,
    feature_names_from_state,
    fit_scaler,
    progress_from_state,
    store_feature_names,
)
from confidential_nb.training._numerics import FloatArray, RealArray, sigmoid, softmax
from confidential_nb.training._parameters import (
    LOGISTIC_REGRESSION_RULES,
    VERSION_1_PARAMETERS,
    validate_parameters,
)
from confidential_nb.training._solvers import DivergedError, Monitor, Outcome, Problem, SolverSettings, solve
from confidential_nb.training._state import check_array, check_keys
from confidential_nb.training._validation import (
    check_class_labels,
    check_feature_names,
    check_features,
    check_labels,
    check_same_length,
    feature_names_of,
)
from confidential_nb.training.exceptions import ConvergenceWarning, NotFittedError
from confidential_nb.training.metrics import accuracy_score

logger = logging.getLogger("confidential_nb.training")

STATE_FORMAT = "confidential_nb.training.LogisticRegression"
STATE_VERSION = 2
_VERSION_1_KEYS = {"format", "version", "params", "classes", "coef", "intercept", "feature_names", "n_iter", "converged", "history"}
_STATE_KEYS = _VERSION_1_KEYS | {"best_epoch", "stopped_early"}

# The loss that history_ records, for History.loss_name.
LOSS_NAME = "log loss"

_SOLVER_NAMES = {
    "gd": "gradient descent",
    "sgd": "stochastic gradient descent",
    "adam": "Adam",
    "newton": "Newton's method",
}


class LogisticRegression:
    """Logistic regression fitted by gradient descent, SGD, Adam or Newton's method.

    The objective is scikit-learn's: ``C * sum(s_i * log loss_i) + 0.5 *
    ||W||^2`` for ``penalty="l2"``, where ``s_i`` is the sample's class
    weight. Here it is divided by ``C`` times the sum of the class weights
    (``n_samples`` without ``class_weight``), so the solvers work on the
    weighted mean log loss plus ``0.5 / (C * S) * ||W||^2``. The optimum is the
    same. The intercept is not penalized. ``penalty=None`` drops the second
    term. With two classes the model has one weight vector and predicts
    ``classes_[1]`` from a sigmoid. With more it is multinomial: a softmax
    over one weight vector per class, every one penalized, as scikit-learn's
    lbfgs does for more than two classes.

    Solvers:

    - ``"gd"`` (default): full-batch gradient descent, one step of size
      ``learning_rate`` per epoch.
    - ``"sgd"``: one step per mini-batch of ``batch_size`` samples, in an
      order shuffled each epoch from ``random_state``.
    - ``"adam"``: Adam on the same mini-batches, with ``learning_rate`` as its
      base step size and moment decays 0.9 and 0.999.
    - ``"newton"``: Newton's method with the full Hessian and a backtracking
      line search, damped when the Hessian is singular. ``epochs`` caps its
      iterations and ``learning_rate`` is unused. It reaches scikit-learn's
      lbfgs solution in a few iterations: use it with a small ``tol`` (such
      as 1e-8) for parity with scikit-learn.

    ``learning_rate`` is a number, the step size. scikit-learn's
    ``SGDClassifier`` uses that name for the schedule and takes ``eta0`` for
    the number. Here the schedule is ``learning_rate_decay``: epoch t (from
    1) uses ``learning_rate / (1 + learning_rate_decay * (t - 1))``, so the
    default 0 keeps the step constant. Newton's method ignores both.

    ``class_weight`` is None, ``"balanced"`` (weights ``n_samples /
    (n_classes * count of the class)``, as scikit-learn computes them) or a
    dict from class label to weight, in which missing classes get weight 1.

    With ``standardize=True`` (the default) each feature is centred and divided
    by its population standard deviation (ddof=0) inside the model, the
    penalty applies to the weights of those standardized features, and
    ``coef_`` and ``intercept_`` are converted back to the original feature
    scale, so this matches ``StandardScaler`` followed by scikit-learn's
    ``LogisticRegression``. Constant columns get a scale of 1 and a zero
    weight. With ``fit_intercept=False`` the features are scaled but not
    centred, because centring would add an intercept. float32 features stay
    float32 in training; everything else is converted to float64. ``coef_``
    and ``intercept_`` are float64.

    Convergence: training stops, with ``converged_ = True``, after the first
    epoch that leaves the full-data gradient of the objective with
    ``||grad J||_2 <= tol``. The test is on the model after the epoch, so it
    does not depend on the learning rate. When training ends at ``epochs``
    without passing it, ``fit`` emits a ``ConvergenceWarning``. The default
    ``tol=0.03`` is a stopping rule for prediction, not a tight optimum, because
    scikit-learn's lbfgs stops at a gradient entry of 1e-4. On the bundled
    breast cancer data, standardized and split as in the package example
    (``test_size=0.33, random_state=0``), gradient descent stops after 214 of
    the default 300 epochs. For coefficients close to the exact optimum, set
    a small ``tol`` and use ``solver="newton"``, or many more epochs. On the
    standardized bundled data (all 569 rows, ``C=1``), gradient descent
    with ``learning_rate=1.0`` first gets within 1e-3 of the exact training
    log loss at epoch 559, and with the default 0.1 not within 3000. On
    unscaled features the gradient is large, so ``standardize=False`` usually
    ends with the warning. Stochastic solvers rarely get below a small tol.

    Early stopping: with ``patience=k`` and ``validation_data``, training
    stops once k epochs pass without a new lowest validation loss, and the
    model keeps the parameters of the best epoch (``best_epoch_``;
    ``stopped_early_`` is True). That is not convergence, so ``converged_``
    stays False but no warning is emitted. ``patience`` has no effect without
    validation data.

    History: ``history_`` records the training loss and accuracy (and the
    validation ones when given) after every ``record_every``-th epoch and
    after the last one. ``record_every=None`` or ``0`` records nothing, which
    saves one pass over the validation data per epoch.

    ``random_state`` seeds the shuffling of ``"sgd"`` and ``"adam"``;
    ``"gd"`` and ``"newton"`` start from zero weights and are deterministic.
    """

    # Set by fit only when X is a DataFrame whose column names are all str,
    # and by from_state when the state lists feature names.
    feature_names_in_: np.ndarray

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
        class_weight: str | Mapping[Any, float] | None = None,
        learning_rate_decay: float = 0.0,
        batch_size: int = 32,
        patience: int | None = None,
        record_every: int | None = 1,
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
        self.class_weight = class_weight
        self.learning_rate_decay = learning_rate_decay
        self.batch_size = batch_size
        self.patience = patience
        self.record_every = record_every

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
        """Fit the model on features X and labels y (2 or more classes), and record ``history_``.

        ``validation_data=(X_val, y_val)`` adds ``val_loss`` and
        ``val_accuracy`` to the history; it affects training only through
        early stopping (``patience``).
        """
        validate_parameters(type(self).__name__, self.get_params(), LOGISTIC_REGRESSION_RULES)

        features = check_features(X, keep_float32=True)
        labels = check_labels(y)
        check_class_labels(labels, estimator=type(self).__name__)
        check_same_length(features, labels, "X", "y")
        classes, codes = encode_labels(labels, "LogisticRegression")
        sample_weight = self._sample_weight(classes, codes, features.dtype)
        validation = self._prepare_validation(validation_data, X, features.shape[1], classes)

        scaler = fit_scaler(features, self.standardize, center=self.fit_intercept)
        outcome = self._solve(scaler, features, codes, classes.size, sample_weight, validation)

        self._store_fit(outcome.weights, outcome.intercept, scaler, classes, X)
        self.n_iter_ = outcome.n_iter
        self.converged_ = outcome.converged
        self.history_ = outcome.monitor.history
        self.history_.loss_name = LOSS_NAME
        self.stopped_early_ = outcome.monitor.stopped_early
        self.best_epoch_ = outcome.monitor.best_epoch if self._early_stopping_active(validation) else None
        if not (outcome.converged or outcome.monitor.stopped_early):
            self._warn_not_converged(outcome.monitor.loss_rose, features.dtype)
        logger.debug("LogisticRegression fit: %d epochs, converged=%s", self.n_iter_, self.converged_)
        return self

    def _early_stopping_active(self, validation: object) -> bool:
        return self.patience is not None and validation is not None

    def _solve(
        self,
        scaler: Scaler,
        features: RealArray,
        codes: npt.NDArray[np.intp],
        n_classes: int,
        sample_weight: RealArray | None,
        validation: tuple[RealArray, npt.NDArray[np.intp]] | None,
    ) -> Outcome:
        standardized = scaler.transform(features) if self.standardize else features
        weight_sum = features.shape[0] if sample_weight is None else float(sample_weight.sum(dtype=np.float64))
        problem = Problem(
            features=standardized,
            codes=codes,
            n_classes=n_classes,
            sample_weight=sample_weight,
            penalty_strength=1.0 / (self.C * weight_sum) if self.penalty == "l2" else 0.0,
            fit_intercept=self.fit_intercept,
        )
        settings = SolverSettings(
            self.solver,
            self.epochs,
            float(self.learning_rate),
            float(self.learning_rate_decay),
            float(self.tol),
            self.batch_size,
            self.random_state,
        )
        if validation is not None:
            val_features = validation[0].astype(features.dtype, copy=False)
            validation = (scaler.transform(val_features) if self.standardize else val_features, validation[1])
        monitor = Monitor(self.record_every or 0, validation, self.patience, n_classes)
        try:
            return solve(problem, settings, monitor)
        except DivergedError as error:
            raise ValueError(
                f"{_SOLVER_NAMES[self.solver]} diverged at epoch {error.epoch}: the loss overflowed; "
                f"use a smaller learning_rate (now {self.learning_rate}){self._standardize_hint()}."
            ) from None

    def _sample_weight(
        self, classes: np.ndarray, codes: npt.NDArray[np.intp], dtype: np.dtype[Any]
    ) -> RealArray | None:
        """Return each sample's class weight, or None when all are 1."""
        if self.class_weight is None:
            return None
        if isinstance(self.class_weight, str):
            counts = np.bincount(codes, minlength=classes.size)
            per_class = len(codes) / (classes.size * counts.astype(np.float64))
        else:
            per_class = _class_weights_from_dict(self.class_weight, classes)
        weights = per_class[codes].astype(dtype)
        if not weights.sum(dtype=np.float64) > 0:
            raise ValueError("class_weight gives every sample of y weight 0; give at least one present class a weight > 0.")
        return weights

    def _prepare_validation(
        self, validation_data: tuple[Any, Any] | None, X: Any, n_features: int, classes: np.ndarray
    ) -> tuple[RealArray, npt.NDArray[np.intp]] | None:
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val).")

        features = check_features(validation_data[0], name="X_val", keep_float32=True)
        labels = check_labels(validation_data[1], name="y_val")
        check_same_length(features, labels, "X_val", "y_val")
        if features.shape[1] != n_features:
            raise ValueError(f"X_val has {features.shape[1]} features, but X has {n_features}.")
        check_feature_names(
            feature_names_of(X) if isinstance(X, pd.DataFrame) else None,
            validation_data[0],
            name="X_val",
            expected_label="the feature names of X",
            order_hint="the column order of X",
        )
        return features, encode_known_labels(labels, classes, "y_val")

    def _store_fit(self, weights: RealArray, intercept: RealArray, scaler: Scaler, classes: np.ndarray, X: Any) -> None:
        # Solver weights are (d,) for two classes and (d, k) for more. coef_ is
        # (1, d) or (k, d) on the input's scale, as in scikit-learn.
        standardized = np.asarray(weights, dtype=np.float64).reshape(weights.shape[0], -1).T
        shifts = np.asarray(intercept, dtype=np.float64).reshape(-1)
        if shifts.size > 2 and self.fit_intercept:
            # Adding one constant to every class's intercept leaves the
            # softmax unchanged, so centre them as scikit-learn does.
            shifts = shifts - shifts.mean()
        self.coef_ = standardized / scaler.scale
        self.intercept_ = shifts - self.coef_ @ scaler.mean
        self.classes_ = classes
        self.n_features_in_ = int(self.coef_.shape[1])
        store_feature_names(self, X)

    def _warn_not_converged(self, loss_rose: bool, dtype: np.dtype[Any]) -> None:
        # The message is a fixed template with numeric arguments, so it may leave the enclave.
        unscaled = self.standardize is False
        arguments: dict[str, Any] = {"epochs": self.epochs, "tol": self.tol}
        if self.solver == "newton" and dtype == np.float32:
            template = "logistic.newton_float32"
        elif self.solver == "newton":
            template = "logistic.newton"
        elif loss_rose and self.solver == "gd":
            template = "logistic.gd_loss_rose_unscaled" if unscaled else "logistic.gd_loss_rose"
            arguments["learning_rate"] = self.learning_rate
        elif self.solver == "gd":
            template = "logistic.gd_unscaled" if unscaled else "logistic.gd"
            arguments["learning_rate"] = self.learning_rate
        else:
            template = "logistic.minibatch"
            arguments.update(learning_rate=self.learning_rate, batch_size=self.batch_size)
        # stacklevel 3 points at the caller of fit().
        warnings.warn(ConvergenceWarning.from_template(template, **arguments), stacklevel=3)

    def _standardize_hint(self) -> str:
        """Return " or standardize=True" when standardization is off, else an empty string."""
        return " or standardize=True" if self.standardize is False else ""

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) before using it."
            )

    def _check_predict_features(self, X: Any, action: str) -> FloatArray:
        self._check_fitted()
        features = check_features(X, action=action)
        check_predict_features(features, X, type(self).__name__, self.n_features_in_, getattr(self, "feature_names_in_", None))
        return features

    def decision_function(self, X: Any) -> FloatArray:
        """Return logits: of ``classes_[1]``, shape (n_samples,), for two classes, else (n_samples, n_classes)."""
        return self._logits(X, "predicting")

    def _logits(self, X: Any, action: str) -> FloatArray:
        features = self._check_predict_features(X, action)
        if self.coef_.shape[0] == 1:
            return features @ self.coef_[0] + self.intercept_[0]
        return features @ self.coef_.T + self.intercept_

    def predict_proba(self, X: Any) -> FloatArray:
        """Return class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        logits = self.decision_function(X)
        if logits.ndim == 1:
            return np.column_stack([sigmoid(-logits), sigmoid(logits)]).astype(np.float64)
        return softmax(logits).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Return the predicted label of each sample, using the labels given to ``fit``."""
        return self._predict(X, "predicting")

    def _predict(self, X: Any, action: str) -> np.ndarray:
        logits = self._logits(X, action)
        if logits.ndim == 1:
            return self.classes_[(logits > 0).astype(np.intp)]
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Return the accuracy of ``predict(X)`` against y."""
        return accuracy_score(y, self._predict(X, "scoring"))

    def to_state(self) -> dict[str, object]:
        """Return the fitted model as a dict of plain values and arrays, for the result codec."""
        self._check_fitted()
        names = getattr(self, "feature_names_in_", None)
        params = self.get_params()
        # A class_weight dict can have float or bool labels as keys, which the
        # result codec rejects, so it travels as a list of [label, weight] pairs.
        if isinstance(self.class_weight, Mapping):
            params["class_weight"] = [[_plain_label(label), float(weight)] for label, weight in self.class_weight.items()]
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "params": params,
            "classes": [_plain_label(label) for label in self.classes_],
            "coef": self.coef_.copy(),
            "intercept": self.intercept_.copy(),
            "feature_names": None if names is None else [str(name) for name in names],
            "n_iter": self.n_iter_,
            "converged": self.converged_,
            "history": self.history_,
            "best_epoch": self.best_epoch_,
            "stopped_early": self.stopped_early_,
        }

    @classmethod
    def from_state(cls, state: object) -> Self:
        """Rebuild a fitted model from ``to_state`` output (this or the first version), raising ValueError on anything malformed."""
        version = state.get("version") if isinstance(state, Mapping) else None
        if version not in (1, STATE_VERSION) or isinstance(version, bool):
            check_keys(state, _STATE_KEYS, "LogisticRegression state")
            raise ValueError(f"LogisticRegression state must have format {STATE_FORMAT!r} and version 1 or {STATE_VERSION}.")
        fields = check_keys(state, _VERSION_1_KEYS if version == 1 else _STATE_KEYS, "LogisticRegression state")
        if fields["format"] != STATE_FORMAT:
            raise ValueError(f"LogisticRegression state must have format {STATE_FORMAT!r} and version 1 or {STATE_VERSION}.")

        model = cls()._restore_params(fields["params"], version)
        model._restore_coefficients(fields)
        names = feature_names_from_state(fields["feature_names"], model.n_features_in_, "LogisticRegression")
        if names is not None:
            model.feature_names_in_ = names
        _restore_progress(model, fields)
        return model

    def _restore_params(self, value: object, version: object) -> Self:
        names = set(VERSION_1_PARAMETERS) if version == 1 else set(LOGISTIC_REGRESSION_RULES)
        params = dict(check_keys(value, names, "LogisticRegression state 'params'"))
        pairs = params.get("class_weight")
        if isinstance(pairs, list):
            params["class_weight"] = _class_weight_from_pairs(pairs)
        self.set_params(**params)
        validate_parameters(type(self).__name__, self.get_params(), LOGISTIC_REGRESSION_RULES)
        return self

    def _restore_coefficients(self, fields: Mapping[str, object]) -> None:
        self.classes_ = classes_from_state(fields["classes"], "LogisticRegression", sorted_order=False)
        n_rows = 1 if self.classes_.size == 2 else self.classes_.size
        coef = check_array(fields["coef"], "LogisticRegression state 'coef'", kind="f", shape=(n_rows, None))
        intercept = check_array(fields["intercept"], "LogisticRegression state 'intercept'", kind="f", shape=(n_rows,))
        self.coef_ = coef.astype(np.float64)
        self.intercept_ = intercept.astype(np.float64)
        self.n_features_in_ = int(self.coef_.shape[1])
        if self.n_features_in_ == 0:
            raise ValueError("LogisticRegression state 'coef' must have at least 1 feature.")


def _plain_label(label: object) -> object:
    """Return a class label as a Python bool, int, float or str for the state."""
    return label.item() if isinstance(label, np.generic) else label


def _class_weight_from_pairs(pairs: list[object]) -> dict[object, float]:
    weights: dict[object, float] = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (bool, int, float, str))):
            raise ValueError("LogisticRegression state 'class_weight' must be a list of [label, weight] pairs.")
        weights[pair[0]] = pair[1]
    return weights


def _class_weights_from_dict(class_weight: Mapping[Any, float], classes: np.ndarray) -> FloatArray:
    keys = list(class_weight)
    positions = pd.Index(classes).get_indexer(pd.Index(keys, dtype=object) if classes.dtype == object else keys)
    unknown = int(np.sum(positions < 0))
    if unknown:
        raise ValueError(
            f"class_weight has {unknown} key(s) that are not among the {classes.size} classes of y; "
            "use the labels of y as keys."
        )
    per_class = np.ones(classes.size)
    per_class[positions] = [float(class_weight[key]) for key in keys]
    return per_class


def _restore_progress(model: LogisticRegression, fields: Mapping[str, object]) -> None:
    n_iter, converged, history = progress_from_state(
        fields, "LogisticRegression", model.epochs, model.record_every, exact_epochs=False
    )
    model.n_iter_ = n_iter
    model.converged_ = converged
    if history.loss_name is None:
        # States written before History had loss_name still hold a log loss.
        history.loss_name = LOSS_NAME
    elif history.loss_name != LOSS_NAME:
        raise ValueError(f"LogisticRegression state 'history' must record {LOSS_NAME!r}, got {history.loss_name!r}.")
    model.history_ = history
    _restore_early_stopping(model, fields, n_iter)


def _restore_early_stopping(model: LogisticRegression, fields: Mapping[str, object], n_iter: int) -> None:
    best_epoch = fields.get("best_epoch")
    stopped_early = fields.get("stopped_early", False)
    if not isinstance(stopped_early, bool):
        raise ValueError(f"LogisticRegression state 'stopped_early' must be a bool, got {type(stopped_early).__name__}.")
    if best_epoch is not None and not (
        isinstance(best_epoch, int) and not isinstance(best_epoch, bool) and 0 <= best_epoch <= n_iter
    ):
        raise ValueError(f"LogisticRegression state 'best_epoch' must be None or an int from 0 to n_iter ({n_iter}).")
    if stopped_early and best_epoch is None:
        raise ValueError("LogisticRegression state 'best_epoch' must be set when 'stopped_early' is True.")
    model.best_epoch_ = best_epoch
    model.stopped_early_ = stopped_early
