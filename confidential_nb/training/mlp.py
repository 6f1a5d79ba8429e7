"""One-hidden-layer neural network classifier trained with Adam on mini-batches."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Self

import numpy as np

from confidential_nb.training import progress
from confidential_nb.training._estimator import fit_scaler, is_recorded, store_feature_names
from confidential_nb.training._parameters import (
    ParameterRule,
    _is_bool,
    _is_int,
    _is_real,
    validate_parameters,
)
from confidential_nb.training._state import check_array
from confidential_nb.training._validation import FloatArray
from confidential_nb.training.exceptions import ConvergenceWarning
from confidential_nb.training.history import History
from confidential_nb.training.svm import RECORD_EVERY_RULE, _Classifier

logger = logging.getLogger("confidential_nb.training")

STATE_FORMAT = "confidential_nb.training.MLPClassifier"
# Version 2 added the record_every parameter. Version 1 states load with
# its default, 1, which matches their every-epoch histories.
STATE_VERSION = 2
_STATE_KEYS = {
    "format", "version", "params", "classes", "hidden_weights", "hidden_bias",
    "output_weights", "output_bias", "feature_names", "n_iter", "converged", "history",
}

MLP_CLASSIFIER_RULES: dict[str, ParameterRule] = {
    "hidden_units": ParameterRule("an int >= 1", lambda value: _is_int(value) and value >= 1),
    "learning_rate": ParameterRule("a finite number > 0", lambda value: _is_real(value) and value > 0),
    "epochs": ParameterRule("an int >= 1", lambda value: _is_int(value) and value >= 1),
    "batch_size": ParameterRule("an int >= 1", lambda value: _is_int(value) and value >= 1),
    "alpha": ParameterRule("a finite number >= 0", lambda value: _is_real(value) and value >= 0),
    "tol": ParameterRule("a finite number >= 0", lambda value: _is_real(value) and value >= 0),
    "n_iter_no_change": ParameterRule("an int >= 1", lambda value: _is_int(value) and value >= 1),
    "standardize": ParameterRule("a bool", _is_bool),
    "random_state": ParameterRule("None or an int >= 0", lambda value: value is None or (_is_int(value) and value >= 0)),
    "record_every": RECORD_EVERY_RULE,
}

# Adam's moment decay rates and denominator guard, as Kingma and Ba (2015)
# and scikit-learn's MLPClassifier default them.
_BETA_1 = 0.9
_BETA_2 = 0.999
_ADAM_EPSILON = 1e-8


class MLPClassifier(_Classifier):
    """Neural network classifier with one hidden ReLU layer and a softmax output.

    The output layer has one unit per class, also for 2 classes. Training
    minimizes the mean cross-entropy plus ``0.5 * alpha / n_samples`` times
    the squared weights of both layers (biases are not penalized), by Adam
    on shuffled mini-batches of ``batch_size`` samples. Weights start from
    Glorot-uniform draws and biases from zero.

    ``random_state`` seeds the initial weights and the shuffling, so two fits
    with the same seed and data return identical models. ``None`` draws
    fresh entropy.

    Convergence follows scikit-learn: training stops with
    ``converged_ = True`` once the training loss has failed to fall by more
    than ``tol`` below its best value for ``n_iter_no_change`` consecutive
    epochs. Otherwise it runs all ``epochs`` and ``fit`` warns.

    ``standardize=True`` centres each feature and divides it by its
    population standard deviation inside the model. The learned first
    layer is then folded back to the original feature scale.

    History: ``history_`` records the mean cross-entropy (without the
    penalty) and the accuracy, on the training data and on
    ``validation_data`` when given, after every ``record_every``-th epoch and
    after the last one. ``record_every=None`` or ``0`` records nothing. The
    stopping rule reads the training loss of every epoch either way, but
    epochs left unrecorded skip the pass over the validation data.
    """

    _RULES = MLP_CLASSIFIER_RULES
    hidden_weights_: FloatArray
    hidden_bias_: FloatArray
    output_weights_: FloatArray
    output_bias_: FloatArray

    def __init__(
        self,
        *,
        hidden_units: int = 32,
        learning_rate: float = 1e-3,
        epochs: int = 200,
        batch_size: int = 32,
        alpha: float = 1e-4,
        tol: float = 1e-4,
        n_iter_no_change: int = 10,
        standardize: bool = True,
        random_state: int | None = None,
        record_every: int | None = 1,
    ) -> None:
        self.hidden_units = hidden_units
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.alpha = alpha
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.standardize = standardize
        self.random_state = random_state
        self.record_every = record_every

    def fit(self, X: Any, y: Any, validation_data: tuple[Any, Any] | None = None) -> Self:
        """Fit the network on features X and labels y (2 or more classes), and record ``history_``.

        ``validation_data=(X_val, y_val)`` adds ``val_loss`` and
        ``val_accuracy`` to the history; it does not affect training.
        """
        validate_parameters(type(self).__name__, self.get_params(), MLP_CLASSIFIER_RULES)

        features, classes, codes, validation = self._check_fit_data(X, y, validation_data)

        scaler = fit_scaler(features, self.standardize, center=True)
        scaled_validation = None if validation is None else (scaler.transform(validation[0]), validation[1])
        rng = np.random.default_rng(self.random_state)
        parameters = _initial_parameters(features.shape[1], self.hidden_units, classes.size, rng)
        # Overflow needs an absurd learning rate; _train checks the loss after
        # each epoch and reports it as divergence instead of as a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            history, n_iter, converged = self._train(scaler.transform(features), codes, scaled_validation, parameters, rng)

        # Fold the scaler into the first layer: (x - mean) / scale @ W = x @ (W / scale) - (mean / scale) @ W.
        hidden_weights = parameters[0] / scaler.scale[:, np.newaxis]
        self.hidden_weights_ = hidden_weights
        self.hidden_bias_ = parameters[1] - scaler.mean @ hidden_weights
        self.output_weights_ = parameters[2]
        self.output_bias_ = parameters[3]
        self.classes_ = classes
        self.n_features_in_ = int(features.shape[1])
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.history_ = history
        store_feature_names(self, X)

        if not converged:
            # The message is a fixed template with numeric arguments, so it may leave the enclave.
            template = "mlp.default" if self.standardize else "mlp.unscaled"
            warning = ConvergenceWarning.from_template(
                template, epochs=self.epochs, tol=self.tol, learning_rate=self.learning_rate
            )
            # stacklevel 2 points at the caller of fit().
            warnings.warn(warning, stacklevel=2)
        logger.debug("MLPClassifier fit: %d epochs, converged=%s", self.n_iter_, self.converged_)
        return self

    def _train(
        self,
        features: FloatArray,
        codes: np.ndarray,
        validation: tuple[FloatArray, np.ndarray] | None,
        parameters: list[FloatArray],
        rng: np.random.Generator,
    ) -> tuple[History, int, bool]:
        """Run Adam and return the history, the number of epochs run and whether training converged."""
        n_samples = features.shape[0]
        one_hot = np.eye(len(parameters[3]))[codes]
        first_moments = [np.zeros_like(parameter) for parameter in parameters]
        second_moments = [np.zeros_like(parameter) for parameter in parameters]
        names = ("loss", "accuracy", "val_loss", "val_accuracy") if validation else ("loss", "accuracy")
        history = History(names, loss_name="log loss")
        best_loss = np.inf
        epochs_without_progress = 0
        step_count = 0

        for epoch in range(1, self.epochs + 1):
            started = time.perf_counter()
            order = rng.permutation(n_samples)
            for start in range(0, n_samples, self.batch_size):
                batch = order[start : start + self.batch_size]
                gradients = _gradients(features[batch], one_hot[batch], parameters, self.alpha, n_samples)
                step_count += 1
                _adam_step(parameters, gradients, first_moments, second_moments, self.learning_rate, step_count)

            metrics: dict[str, Any] = _metrics(features, codes, parameters, "")
            if not np.isfinite(metrics["loss"]):
                raise ValueError(
                    f"MLPClassifier training diverged at epoch {epoch}: the loss overflowed; "
                    f"use a smaller learning_rate (now {self.learning_rate}) or standardize=True."
                )
            if metrics["loss"] > best_loss - self.tol:
                epochs_without_progress += 1
            else:
                epochs_without_progress = 0
            best_loss = min(best_loss, metrics["loss"])
            converged = epochs_without_progress >= self.n_iter_no_change
            last = converged or epoch == self.epochs
            progress.report("MLPClassifier", epoch, self.epochs, metrics["loss"], metrics["accuracy"], last=last)

            if is_recorded(self.record_every, epoch, last):
                if validation is not None:
                    metrics.update(_metrics(validation[0], validation[1], parameters, "val_"))
                history.record_at(epoch, time.perf_counter() - started, **metrics)
            if converged:
                return history, epoch, True

        return history, self.epochs, False

    def predict_proba(self, X: Any) -> FloatArray:
        """Return class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        features = self._check_predict_features(X)
        hidden = np.maximum(0.0, features @ self.hidden_weights_ + self.hidden_bias_)
        return _softmax(hidden @ self.output_weights_ + self.output_bias_)

    def predict(self, X: Any) -> np.ndarray:
        """Return the predicted label of each sample, using the labels given to ``fit``."""
        probabilities = self.predict_proba(X)
        return self.classes_[np.argmax(probabilities, axis=1)]

    def to_state(self) -> dict[str, object]:
        """Return the fitted model as a dict of plain values and arrays, for the result codec."""
        self._check_fitted()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "hidden_weights": self.hidden_weights_.copy(),
            "hidden_bias": self.hidden_bias_.copy(),
            "output_weights": self.output_weights_.copy(),
            "output_bias": self.output_bias_.copy(),
            **self._common_state(),
        }

    @classmethod
    def from_state(cls, state: object) -> Self:
        """Rebuild a fitted model from ``to_state`` output (this or the first version), raising ValueError on anything malformed."""
        model, fields = cls._model_from_state(state, _STATE_KEYS, STATE_FORMAT, STATE_VERSION)
        units = model.hidden_units
        hidden_weights = check_array(fields["hidden_weights"], "MLPClassifier state 'hidden_weights'", kind="f", shape=(None, units))
        model._restore_common(fields, int(hidden_weights.shape[0]))

        n_classes = model.classes_.size
        model.hidden_weights_ = hidden_weights.astype(np.float64)
        model.hidden_bias_ = check_array(fields["hidden_bias"], "MLPClassifier state 'hidden_bias'", kind="f", shape=(units,)).astype(np.float64)
        model.output_weights_ = check_array(
            fields["output_weights"], "MLPClassifier state 'output_weights'", kind="f", shape=(units, n_classes)
        ).astype(np.float64)
        model.output_bias_ = check_array(fields["output_bias"], "MLPClassifier state 'output_bias'", kind="f", shape=(n_classes,)).astype(np.float64)
        return model


def _initial_parameters(n_features: int, n_hidden: int, n_classes: int, rng: np.random.Generator) -> list[FloatArray]:
    """Return [hidden weights, hidden bias, output weights, output bias], Glorot-uniform weights and zero biases."""
    hidden_bound = np.sqrt(6.0 / (n_features + n_hidden))
    output_bound = np.sqrt(6.0 / (n_hidden + n_classes))
    return [
        rng.uniform(-hidden_bound, hidden_bound, size=(n_features, n_hidden)),
        np.zeros(n_hidden),
        rng.uniform(-output_bound, output_bound, size=(n_hidden, n_classes)),
        np.zeros(n_classes),
    ]


def _softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return np.asarray(exponentials / exponentials.sum(axis=1, keepdims=True), dtype=np.float64)


def _forward(features: FloatArray, parameters: list[FloatArray]) -> tuple[FloatArray, FloatArray]:
    """Return the hidden activations and the output logits."""
    hidden = np.maximum(0.0, features @ parameters[0] + parameters[1])
    return hidden, hidden @ parameters[2] + parameters[3]


def _gradients(
    features: FloatArray, one_hot: FloatArray, parameters: list[FloatArray], alpha: float, n_samples: int
) -> list[FloatArray]:
    """Return the gradient of the batch's mean cross-entropy plus its share of the penalty."""
    hidden, logits = _forward(features, parameters)
    batch_size = features.shape[0]
    logit_gradient = (_softmax(logits) - one_hot) / batch_size
    hidden_gradient = (logit_gradient @ parameters[2].T) * (hidden > 0)
    penalty = alpha / n_samples
    return [
        features.T @ hidden_gradient + penalty * parameters[0],
        hidden_gradient.sum(axis=0),
        hidden.T @ logit_gradient + penalty * parameters[2],
        logit_gradient.sum(axis=0),
    ]


def _adam_step(
    parameters: list[FloatArray],
    gradients: list[FloatArray],
    first_moments: list[FloatArray],
    second_moments: list[FloatArray],
    learning_rate: float,
    step_count: int,
) -> None:
    """Update the parameters and moment estimates in place by one Adam step."""
    corrected_rate = learning_rate * np.sqrt(1.0 - _BETA_2**step_count) / (1.0 - _BETA_1**step_count)
    for index, gradient in enumerate(gradients):
        first_moments[index] = _BETA_1 * first_moments[index] + (1.0 - _BETA_1) * gradient
        second_moments[index] = _BETA_2 * second_moments[index] + (1.0 - _BETA_2) * gradient**2
        parameters[index] -= corrected_rate * first_moments[index] / (np.sqrt(second_moments[index]) + _ADAM_EPSILON)


def _metrics(features: FloatArray, codes: np.ndarray, parameters: list[FloatArray], prefix: str) -> dict[str, float]:
    _, logits = _forward(features, parameters)
    # Subtracting the row maximum keeps exp from overflowing.
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {
        f"{prefix}loss": float(-np.mean(log_probabilities[np.arange(len(codes)), codes])),
        f"{prefix}accuracy": float(np.mean(np.argmax(logits, axis=1) == codes)),
    }
