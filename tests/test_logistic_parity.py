"""Parity of confidential_nb's LogisticRegression with scikit-learn's on the same objective.

Features are standardized beforehand and the model is fitted with
``standardize=False``, so both libraries minimise
``C * sum(s_i * log loss_i) + 0.5 * ||W||^2`` on the same matrix.
scikit-learn runs lbfgs at ``tol=1e-10, max_iter=10000``, which is as close
to the optimum as float64 allows for these sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn.datasets
import sklearn.linear_model
import sklearn.metrics

from confidential_nb.datasets import load_breast_cancer
from confidential_nb.training import LogisticRegression

# The objective is strongly convex with modulus at least 1 / (C * S) (S the
# weight sum, at most a few hundred here), so a gradient norm of 1e-10 puts
# the coefficients within about 1e-7 of the optimum. Both solvers get there,
# and 1e-4 on coefficients and 1e-6 on log loss leave wide room for lbfgs's
# own stopping error.
COEF_TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-6


def reference_fit(X: np.ndarray, y: np.ndarray, **params: Any) -> sklearn.linear_model.LogisticRegression:
    return sklearn.linear_model.LogisticRegression(tol=1e-10, max_iter=10000, **params).fit(X, y)


def newton_fit(X: np.ndarray, y: np.ndarray, **params: Any) -> LogisticRegression:
    return LogisticRegression(solver="newton", standardize=False, tol=1e-10, epochs=100, **params).fit(X, y)


@pytest.fixture(scope="module")
def standardized_cancer() -> tuple[np.ndarray, np.ndarray]:
    frame: pd.DataFrame = load_breast_cancer()
    X = frame.drop(columns="target").to_numpy()
    return (X - X.mean(axis=0)) / X.std(axis=0), frame["target"].to_numpy()


@pytest.mark.parametrize("C", [1.0, 0.05])
def test_newton_matches_sklearn_on_breast_cancer(standardized_cancer: tuple[np.ndarray, np.ndarray], C: float) -> None:
    X, y = standardized_cancer
    model = newton_fit(X, y, C=C)
    reference = reference_fit(X, y, C=C)

    assert model.converged_
    np.testing.assert_allclose(model.coef_, reference.coef_, atol=COEF_TOLERANCE)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, atol=COEF_TOLERANCE)
    model_loss = sklearn.metrics.log_loss(y, model.predict_proba(X))
    reference_loss = sklearn.metrics.log_loss(y, reference.predict_proba(X))
    assert model_loss == pytest.approx(reference_loss, abs=LOSS_TOLERANCE)
    assert model.history_.loss[-1] == pytest.approx(reference_loss, abs=LOSS_TOLERANCE)


CASES = [
    pytest.param(2, True, None, id="binary"),
    pytest.param(2, False, None, id="binary-no-intercept"),
    pytest.param(2, True, "balanced", id="binary-balanced"),
    pytest.param(2, False, {0: 0.5, 1: 3.0}, id="binary-dict-no-intercept"),
    pytest.param(3, True, None, id="three-class"),
    pytest.param(3, False, None, id="three-class-no-intercept"),
    pytest.param(3, True, "balanced", id="three-class-balanced"),
    pytest.param(3, False, {0: 2.0, 2: 0.5}, id="three-class-dict-no-intercept"),
]


@pytest.mark.parametrize(("n_classes", "fit_intercept", "class_weight"), CASES)
def test_newton_matches_sklearn_on_generated_data(
    n_classes: int, fit_intercept: bool, class_weight: Any
) -> None:
    # Unequal class shares make "balanced" differ from no weights at all.
    shares = [0.7, 0.3] if n_classes == 2 else [0.5, 0.3, 0.2]
    X, y = sklearn.datasets.make_classification(
        n_samples=300, n_features=6, n_informative=4, n_classes=n_classes, weights=shares, random_state=n_classes
    )
    params = {"C": 0.5, "fit_intercept": fit_intercept, "class_weight": class_weight}
    model = newton_fit(X, y, **params)
    reference = reference_fit(X, y, **params)

    assert model.converged_
    assert model.coef_.shape == reference.coef_.shape
    np.testing.assert_allclose(model.coef_, reference.coef_, atol=COEF_TOLERANCE)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, atol=COEF_TOLERANCE)
    model_loss = sklearn.metrics.log_loss(y, model.predict_proba(X))
    reference_loss = sklearn.metrics.log_loss(y, reference.predict_proba(X))
    assert model_loss == pytest.approx(reference_loss, abs=LOSS_TOLERANCE)
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))


def test_newton_class_weights_change_the_fit() -> None:
    X, y = sklearn.datasets.make_classification(n_samples=300, n_features=6, weights=[0.8, 0.2], random_state=1)

    plain = newton_fit(X, y)
    balanced = newton_fit(X, y, class_weight="balanced")

    # Without this the weighted parity cases could pass with weights ignored.
    assert np.abs(plain.coef_ - balanced.coef_).max() > 0.01


def test_newton_standardize_matches_sklearn_pipeline() -> None:
    X, y = sklearn.datasets.make_classification(n_samples=200, n_features=5, n_classes=3, n_informative=3, random_state=4)
    X = X * [1.0, 10.0, 100.0, 0.1, 5.0] + 3.0
    model = LogisticRegression(solver="newton", tol=1e-10).fit(X, y)
    reference = reference_fit((X - X.mean(axis=0)) / X.std(axis=0), y)

    # coef_ is on the input's scale, so it equals scikit-learn's divided by the scale.
    np.testing.assert_allclose(model.coef_ * X.std(axis=0), reference.coef_, atol=COEF_TOLERANCE)


@pytest.mark.parametrize("solver", ["gd", "sgd", "adam"])
def test_first_order_solvers_approach_newton(solver: str) -> None:
    X, y = sklearn.datasets.make_classification(
        n_samples=200, n_features=4, n_classes=3, n_informative=3, n_redundant=0, random_state=2
    )
    exact = newton_fit(X, y)
    rates = {"gd": 1.0, "sgd": 0.05, "adam": 0.01}
    model = LogisticRegression(
        solver=solver, learning_rate=rates[solver], epochs=300, tol=0.0, batch_size=16, random_state=0, standardize=False
    )

    with pytest.warns(match="did not converge in 300 epochs"):
        model.fit(X, y)

    # The loss starts 0.2 to 0.4 above the optimum. Mini-batch steps end in
    # a noise ball around it that grows with the step size: 300 epochs leave
    # gaps of at most 2.2e-4 (adam) on this machine, so 1e-3 has 4x room.
    assert model.history_.loss[-1] == pytest.approx(exact.history_.loss[-1], abs=1e-3)


def test_gradient_descent_epochs_to_exact_loss(standardized_cancer: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = standardized_cancer
    exact_loss = newton_fit(X, y).history_.loss[-1]

    model = LogisticRegression(learning_rate=1.0, tol=0.0, epochs=600, standardize=False)
    with pytest.warns(match="did not converge in 600 epochs"):
        model.fit(X, y)
    gaps = np.array(model.history_.loss) - exact_loss

    # The LogisticRegression docstring documents 559 epochs for this run.
    assert int(np.flatnonzero(gaps <= 1e-3)[0]) + 1 == 559
    assert gaps.min() >= -1e-9
