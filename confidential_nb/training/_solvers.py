"""The logistic regression objective and the solvers that minimise it.

The objective is scikit-learn's, divided by ``C`` times the sum of the
sample weights S so that it is a weighted mean:

    J(W, b) = sum_i s_i * loss_i / S + 0.5 / (C * S) * ||W||^2

where ``s_i`` is the sample's class weight and the intercept ``b`` is not
penalised. ``loss_i`` is the binary cross-entropy with one weight column for
two classes. For more it is the softmax cross-entropy over all classes, with
one penalised weight column per class. Dividing by a constant does
not move the minimiser, so the optimum is scikit-learn's.

Every solver works in the dtype of the features (float32 or float64) except
the Newton step, whose small linear system is solved in float64.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from confidential_nb.training import progress
from confidential_nb.training._numerics import (
    RealArray,
    sigmoid,
    sigmoid_and_log_loss,
    softmax,
    softmax_and_log_loss,
)
from confidential_nb.training.history import History

# Adam's moment decay rates and denominator offset, as in Kingma and Ba (2015).
_ADAM_BETA1 = 0.9
_ADAM_BETA2 = 0.999
_ADAM_EPSILON = 1e-8

# Rows per block when the Newton solver forms X^T diag(c) X, so the
# temporary stays a few megabytes whatever the number of samples.
_GRAM_BLOCK_ROWS = 32768

# Without recording, the objective is still computed every this many epochs
# to notice a rising loss (a too large learning rate).
_LOSS_CHECK_EVERY = 10

# The estimator name in progress records.
_PROGRESS_MODEL = "LogisticRegression"

# Armijo constant and the number of halvings the Newton line search tries.
_ARMIJO_FRACTION = 1e-4
_MAX_HALVINGS = 40

# An objective rise below this multiple of machine epsilon, relative to the
# objective, is rounding noise.
_ROUNDING_EPS_FACTOR = 64.0


class DivergedError(ValueError):
    """The objective or the parameters became infinite or NaN during training."""

    def __init__(self, epoch: int) -> None:
        super().__init__(epoch)
        self.epoch = epoch


@dataclass
class Problem:
    """Standardized training data with its targets, weights and penalty."""

    features: RealArray
    codes: npt.NDArray[np.intp]
    n_classes: int
    sample_weight: RealArray | None
    penalty_strength: float
    fit_intercept: bool
    weight_sum: float = field(init=False)
    targets: RealArray = field(init=False)

    def __post_init__(self) -> None:
        dtype = self.features.dtype
        n_samples = self.features.shape[0]
        self.weight_sum = float(n_samples if self.sample_weight is None else self.sample_weight.sum(dtype=np.float64))
        if self.n_classes == 2:
            self.targets = self.codes.astype(dtype)
        else:
            self.targets = np.zeros((n_samples, self.n_classes), dtype=dtype)
            self.targets[np.arange(n_samples), self.codes] = 1.0

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.features.dtype

    def initial_parameters(self) -> tuple[RealArray, RealArray]:
        """Return zero weights and intercepts: shape (d,) and () for two classes, (d, k) and (k,) for more."""
        n_features = self.features.shape[1]
        if self.n_classes == 2:
            return np.zeros(n_features, dtype=self.dtype), np.zeros((), dtype=self.dtype)
        return np.zeros((n_features, self.n_classes), dtype=self.dtype), np.zeros(self.n_classes, dtype=self.dtype)


@dataclass
class Evaluation:
    """The objective, its gradient and the probabilities at one point."""

    objective: float
    mean_loss: float
    accuracy: float
    weight_gradient: RealArray
    intercept_gradient: RealArray
    probabilities: RealArray

    def gradient_norm(self) -> float:
        return float(np.sqrt(np.sum(self.weight_gradient**2, dtype=np.float64) + np.sum(self.intercept_gradient**2, dtype=np.float64)))


def evaluate(
    problem: Problem,
    weights: RealArray,
    intercept: RealArray,
    rows: slice | npt.NDArray[np.intp] | None = None,
    with_metrics: bool = True,
) -> Evaluation:
    """Return J and its gradient at (weights, intercept), over all samples or the given rows.

    On a subset of rows the gradient is scaled to estimate the full-data one.
    ``mean_loss`` and ``accuracy`` are unweighted, over the rows used. With
    ``with_metrics=False`` only the gradient is computed, and the objective,
    loss and accuracy are NaN, which saves about a third of a gd epoch.
    """
    features = problem.features if rows is None else problem.features[rows]
    codes = problem.codes if rows is None else problem.codes[rows]
    targets = problem.targets if rows is None else problem.targets[rows]
    sample_weight = problem.sample_weight
    if sample_weight is not None and rows is not None:
        sample_weight = sample_weight[rows]

    logits = features @ weights + intercept
    if not with_metrics:
        probabilities = sigmoid(logits) if problem.n_classes == 2 else softmax(logits)
        weighted_loss = mean_loss = accuracy = np.nan
    elif problem.n_classes == 2:
        probabilities, losses = sigmoid_and_log_loss(logits, targets)
        accuracy = float(np.mean((logits > 0) == (codes == 1)))
    else:
        probabilities, losses = softmax_and_log_loss(logits, codes)
        accuracy = float(np.mean(np.argmax(logits, axis=1) == codes))
    if with_metrics:
        mean_loss = float(np.mean(losses, dtype=np.float64))
        weighted_loss = mean_loss
        if sample_weight is not None:
            weighted_loss = float(np.dot(sample_weight, losses)) / float(sample_weight.sum(dtype=np.float64))

    residuals = probabilities - targets
    if sample_weight is not None:
        residuals *= sample_weight if residuals.ndim == 1 else sample_weight[:, None]

    # The data term's gradient is sum_i s_i * r_i * x_i / S, and a batch of
    # m of the n rows estimates it with the factor n / m.
    scale = problem.weight_sum * len(codes) / problem.features.shape[0]
    weight_gradient = features.T @ residuals
    weight_gradient /= scale
    weight_gradient += problem.penalty_strength * weights
    if problem.fit_intercept:
        intercept_gradient = residuals.sum(axis=0) / scale
    else:
        intercept_gradient = np.zeros_like(intercept)

    penalty = 0.5 * problem.penalty_strength * float(np.sum(weights * weights, dtype=np.float64))
    return Evaluation(
        objective=weighted_loss + penalty,
        mean_loss=mean_loss,
        accuracy=accuracy,
        weight_gradient=weight_gradient,
        intercept_gradient=np.asarray(intercept_gradient, dtype=problem.dtype),
        probabilities=probabilities,
    )


@dataclass
class Monitor:
    """Per-epoch bookkeeping shared by the solvers: history, validation and early stopping."""

    record_every: int
    validation: tuple[RealArray, npt.NDArray[np.intp]] | None
    patience: int | None
    n_classes: int
    history: History = field(init=False)
    best_loss: float = np.inf
    best_epoch: int = 0
    best_parameters: tuple[RealArray, RealArray] | None = None
    stopped_early: bool = False
    loss_rose: bool = False
    last_recorded: int = 0

    def __post_init__(self) -> None:
        names = ("loss", "accuracy", "val_loss", "val_accuracy") if self.validation else ("loss", "accuracy")
        self.history = History(names)

    def due(self, epoch: int) -> bool:
        """Return True when epoch is one that thinned recording keeps."""
        return self.record_every > 0 and epoch % self.record_every == 0

    def end_epoch(
        self, epoch: int, started: float, evaluation: Evaluation, weights: RealArray, intercept: RealArray, last: bool
    ) -> bool:
        """Record the epoch when due and return True when early stopping ends training.

        ``evaluation`` must have its metrics when the epoch is recorded.
        """
        recording = self.record_every > 0 and (epoch % self.record_every == 0 or last)
        validation_metrics = None
        if self.validation is not None and (recording or self.patience is not None):
            validation_metrics = validation_loss_and_accuracy(self.validation, weights, intercept, self.n_classes)

        stop = False
        if self.patience is not None and validation_metrics is not None:
            stop = self._check_patience(epoch, validation_metrics[0], weights, intercept)
        if recording:
            metrics = {"loss": evaluation.mean_loss, "accuracy": evaluation.accuracy}
            if validation_metrics is not None:
                metrics.update(val_loss=validation_metrics[0], val_accuracy=validation_metrics[1])
            self.history.record_at(epoch, time.perf_counter() - started, **metrics)
            self.last_recorded = epoch
        return stop

    def _check_patience(self, epoch: int, loss: float, weights: RealArray, intercept: RealArray) -> bool:
        assert self.patience is not None
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_epoch = epoch
            self.best_parameters = (weights.copy(), intercept.copy())
            return False
        return epoch - self.best_epoch >= self.patience


def validation_loss_and_accuracy(
    validation: tuple[RealArray, npt.NDArray[np.intp]], weights: RealArray, intercept: RealArray, n_classes: int
) -> tuple[float, float]:
    """Return the unweighted mean log loss and the accuracy on the validation data."""
    features, codes = validation
    logits = features @ weights + intercept
    if n_classes == 2:
        _, losses = sigmoid_and_log_loss(logits, codes.astype(logits.dtype))
        correct = (logits > 0) == (codes == 1)
    else:
        _, losses = softmax_and_log_loss(logits, codes)
        correct = np.argmax(logits, axis=1) == codes
    return float(np.mean(losses, dtype=np.float64)), float(np.mean(correct))


@dataclass
class SolverSettings:
    """The hyperparameters a solver reads."""

    solver: str
    epochs: int
    learning_rate: float
    learning_rate_decay: float
    tol: float
    batch_size: int
    random_state: int | None


@dataclass
class Outcome:
    """Final parameters and how training ended."""

    weights: RealArray
    intercept: RealArray
    n_iter: int
    converged: bool
    monitor: Monitor


def solve(problem: Problem, settings: SolverSettings, monitor: Monitor) -> Outcome:
    """Minimise J with the chosen solver, one epoch at a time."""
    step = _STEPPERS[settings.solver](problem, settings)
    weights, intercept = problem.initial_parameters()
    evaluation = evaluate(problem, weights, intercept)
    converged = False
    epoch = 0

    checked_objective = evaluation.objective
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        with_metrics = monitor.due(epoch) or epoch % _LOSS_CHECK_EVERY == 0 or epoch == settings.epochs
        # Overflow needs an absurd learning rate, and the finiteness check
        # below reports it as divergence instead of as a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            rate = settings.learning_rate / (1.0 + settings.learning_rate_decay * (epoch - 1))
            weights, intercept, evaluation = step(weights, intercept, evaluation, rate, with_metrics)
            gradient_norm = evaluation.gradient_norm()
        if not (np.isfinite(gradient_norm) and (np.isfinite(evaluation.objective) or not with_metrics)):
            raise DivergedError(epoch)

        if with_metrics:
            rise = evaluation.objective - checked_objective
            monitor.loss_rose = monitor.loss_rose or rise > _ROUNDING_EPS_FACTOR * np.finfo(problem.dtype).eps * checked_objective
            checked_objective = evaluation.objective
        converged = gradient_norm <= settings.tol
        last = converged or epoch == settings.epochs
        if last and not with_metrics and monitor.record_every > 0:
            evaluation = evaluate(problem, weights, intercept)
        stop = monitor.end_epoch(epoch, started, evaluation, weights, intercept, last)
        _report_progress(problem, settings.epochs, epoch, evaluation, weights, intercept, last or stop)
        if stop:
            monitor.stopped_early = True
            break
        if converged:
            break

    if monitor.stopped_early and monitor.best_parameters is not None:
        weights, intercept = monitor.best_parameters
    _record_last_epoch(monitor, problem, epoch, weights, intercept)
    return Outcome(weights, intercept, epoch, converged, monitor)


def _record_last_epoch(monitor: Monitor, problem: Problem, epoch: int, weights: RealArray, intercept: RealArray) -> None:
    # Early stopping can end training on an epoch that thinned recording
    # skipped; the history still ends with the last epoch run.
    if monitor.record_every == 0 or monitor.last_recorded == epoch:
        return
    started = time.perf_counter()
    monitor.patience = None
    monitor.end_epoch(epoch, started, evaluate(problem, weights, intercept), weights, intercept, last=True)


def _report_progress(
    problem: Problem, epochs: int, epoch: int, evaluation: Evaluation, weights: RealArray, intercept: RealArray, last: bool
) -> None:
    if not progress.due(epoch, last):
        return
    loss, accuracy = evaluation.mean_loss, evaluation.accuracy
    if np.isnan(loss):
        # The epoch skipped its metrics. They are computed here, apart from
        # the step, because an evaluation with metrics rounds the gradient
        # differently and the fit must not depend on when progress is sent.
        loss, accuracy = validation_loss_and_accuracy((problem.features, problem.codes), weights, intercept, problem.n_classes)
    progress.report(_PROGRESS_MODEL, epoch, epochs, loss, accuracy, last=last)


# A step takes the parameters, their evaluation, the epoch's learning rate
# and whether the new evaluation needs its metrics, and returns the new
# parameters and evaluation.
Step = Callable[[RealArray, RealArray, Evaluation, float, bool], tuple[RealArray, RealArray, Evaluation]]


def _gradient_descent(problem: Problem, settings: SolverSettings) -> Step:
    def step(
        weights: RealArray, intercept: RealArray, evaluation: Evaluation, rate: float, with_metrics: bool
    ) -> tuple[RealArray, RealArray, Evaluation]:
        weights = weights - rate * evaluation.weight_gradient
        intercept = intercept - rate * evaluation.intercept_gradient
        return weights, intercept, evaluate(problem, weights, intercept, with_metrics=with_metrics)

    return step


def _minibatch_steps(
    problem: Problem, settings: SolverSettings, update: Callable[[RealArray, RealArray, Evaluation, float], None]
) -> Step:
    rng = np.random.default_rng(settings.random_state)
    n_samples = problem.features.shape[0]

    def step(
        weights: RealArray, intercept: RealArray, evaluation: Evaluation, rate: float, with_metrics: bool
    ) -> tuple[RealArray, RealArray, Evaluation]:
        weights = weights.copy()
        intercept = intercept.copy()
        order = rng.permutation(n_samples)
        for start in range(0, n_samples, settings.batch_size):
            rows = np.sort(order[start : start + settings.batch_size])
            update(weights, intercept, evaluate(problem, weights, intercept, rows, with_metrics=False), rate)
        # One full pass measures the epoch's result for the convergence test
        # and the history.
        return weights, intercept, evaluate(problem, weights, intercept, with_metrics=with_metrics)

    return step


def _stochastic_gradient_descent(problem: Problem, settings: SolverSettings) -> Step:
    def update(weights: RealArray, intercept: RealArray, batch: Evaluation, rate: float) -> None:
        weights -= rate * batch.weight_gradient
        intercept -= rate * batch.intercept_gradient

    return _minibatch_steps(problem, settings, update)


def _adam(problem: Problem, settings: SolverSettings) -> Step:
    weights, intercept = problem.initial_parameters()
    moments = [np.zeros_like(weights), np.zeros_like(intercept)]
    squares = [np.zeros_like(weights), np.zeros_like(intercept)]
    updates = [0]

    def update(weights: RealArray, intercept: RealArray, batch: Evaluation, base_rate: float) -> None:
        updates[0] += 1
        count = updates[0]
        rate = base_rate * np.sqrt(1.0 - _ADAM_BETA2**count) / (1.0 - _ADAM_BETA1**count)
        for parameter, gradient, moment, square in zip(
            (weights, intercept), (batch.weight_gradient, batch.intercept_gradient), moments, squares
        ):
            moment *= _ADAM_BETA1
            moment += (1.0 - _ADAM_BETA1) * gradient
            square *= _ADAM_BETA2
            square += (1.0 - _ADAM_BETA2) * gradient * gradient
            parameter -= rate * moment / (np.sqrt(square) + _ADAM_EPSILON)

    return _minibatch_steps(problem, settings, update)


def _newton(problem: Problem, settings: SolverSettings) -> Step:
    def step(
        weights: RealArray, intercept: RealArray, evaluation: Evaluation, rate: float, with_metrics: bool
    ) -> tuple[RealArray, RealArray, Evaluation]:
        # The line search compares objectives, so every evaluation here has its metrics.
        if not np.isfinite(evaluation.objective):
            evaluation = evaluate(problem, weights, intercept)
        gradient = _flatten(problem, evaluation.weight_gradient, evaluation.intercept_gradient)
        direction = _newton_direction(hessian(problem, evaluation.probabilities), gradient)
        slope = float(gradient @ direction)
        start = _flatten(problem, weights, intercept)

        fraction = 1.0
        for _ in range(_MAX_HALVINGS):
            trial_weights, trial_intercept = _unflatten(problem, start + fraction * direction)
            trial = evaluate(problem, trial_weights, trial_intercept)
            if trial.objective <= evaluation.objective + _ARMIJO_FRACTION * fraction * slope:
                return trial_weights, trial_intercept, trial
            fraction /= 2.0
        # No step lowers J measurably: the iterate is at the optimum to the
        # precision of the dtype, so it stays where it is.
        return weights, intercept, evaluation

    return step


def hessian(problem: Problem, probabilities: RealArray) -> npt.NDArray[np.float64]:
    """Return J's Hessian over the flattened parameters (class-major, intercept last in each class)."""
    weight = problem.sample_weight
    scale = 1.0 / problem.weight_sum
    if problem.n_classes == 2:
        curvature = probabilities * (1.0 - probabilities) * scale
        if weight is not None:
            curvature *= weight
        matrix = weighted_gram(problem.features, curvature, problem.fit_intercept)
    else:
        size = problem.features.shape[1] + int(problem.fit_intercept)
        k = problem.n_classes
        matrix = np.zeros((k * size, k * size))
        for row in range(k):
            for column in range(row, k):
                curvature = probabilities[:, row] * ((row == column) - probabilities[:, column]) * scale
                if weight is not None:
                    curvature *= weight
                block = weighted_gram(problem.features, curvature, problem.fit_intercept)
                matrix[row * size : (row + 1) * size, column * size : (column + 1) * size] = block
                matrix[column * size : (column + 1) * size, row * size : (row + 1) * size] = block
    penalised = _flatten(problem, np.ones(problem.initial_parameters()[0].shape), np.zeros(problem.initial_parameters()[1].shape))
    matrix[np.diag_indices_from(matrix)] += problem.penalty_strength * penalised
    return matrix


def weighted_gram(features: RealArray, curvature: RealArray, fit_intercept: bool) -> npt.NDArray[np.float64]:
    """Return [X 1]^T diag(curvature) [X 1] in float64 (without the 1 column unless fit_intercept)."""
    n_features = features.shape[1]
    size = n_features + int(fit_intercept)
    gram = np.zeros((size, size))
    nonnegative = bool(np.all(curvature >= 0))
    for start in range(0, features.shape[0], _GRAM_BLOCK_ROWS):
        block = features[start : start + _GRAM_BLOCK_ROWS]
        weights = curvature[start : start + _GRAM_BLOCK_ROWS]
        if nonnegative:
            # numpy computes A.T @ A with a symmetric product (syrk), which
            # costs half a general one.
            root = np.sqrt(weights)[:, None] * block
            gram[:n_features, :n_features] += root.T @ root
            scaled = root * np.sqrt(weights)[:, None] if fit_intercept else root
        else:
            scaled = block * weights[:, None]
            gram[:n_features, :n_features] += block.T @ scaled
        if fit_intercept:
            column = scaled.sum(axis=0, dtype=np.float64)
            gram[:n_features, n_features] += column
            gram[n_features, :n_features] += column
            gram[n_features, n_features] += float(weights.sum(dtype=np.float64))
    return gram


def _newton_direction(matrix: npt.NDArray[np.float64], gradient: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Without a penalty the Hessian can be singular (separable classes, or
    # the softmax's redundant class), so a growing multiple of the identity
    # is added until the Cholesky factorisation succeeds.
    damping = 0.0
    floor = 1e-10 * max(float(np.max(np.abs(np.diag(matrix)))), 1.0)
    identity = np.eye(len(gradient))
    while True:
        try:
            factor = np.linalg.cholesky(matrix + damping * identity)
            break
        except np.linalg.LinAlgError:
            damping = floor if damping == 0.0 else damping * 10.0
    return -np.linalg.solve(factor.T, np.linalg.solve(factor, gradient))


def _flatten(problem: Problem, weights: RealArray, intercept: RealArray) -> npt.NDArray[np.float64]:
    columns = weights.reshape(weights.shape[0], -1)
    if problem.fit_intercept:
        columns = np.vstack([columns, np.reshape(intercept, (1, -1))])
    return np.asarray(columns.T.ravel(), dtype=np.float64)


def _unflatten(problem: Problem, vector: npt.NDArray[np.float64]) -> tuple[RealArray, RealArray]:
    template_weights, template_intercept = problem.initial_parameters()
    n_columns = 1 if problem.n_classes == 2 else problem.n_classes
    columns = vector.astype(problem.dtype).reshape(n_columns, -1).T
    n_features = template_weights.shape[0]
    weights = columns[:n_features].reshape(template_weights.shape).copy()
    if problem.fit_intercept:
        intercept = columns[n_features].reshape(template_intercept.shape).copy()
    else:
        intercept = template_intercept
    return weights, intercept


_STEPPERS: dict[str, Callable[[Problem, SolverSettings], Step]] = {
    "gd": _gradient_descent,
    "sgd": _stochastic_gradient_descent,
    "adam": _adam,
    "newton": _newton,
}
