"""The one table of LogisticRegression hyperparameters and their valid values."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

# Maximum length of a parameter repr quoted in an error message.
MAX_VALUE_REPR = 60


@dataclass(frozen=True)
class ParameterRule:
    """Rule for a hyperparameter's accepted values: a test and its description for messages."""

    description: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


SOLVERS = ("gd", "sgd", "adam", "newton")


def _is_class_weight(value: Any) -> bool:
    if value is None or (isinstance(value, str) and value == "balanced"):
        return True
    if not isinstance(value, Mapping) or not value:
        return False
    return all(_is_real(weight) and weight >= 0 for weight in value.values())


LOGISTIC_REGRESSION_RULES: dict[str, ParameterRule] = {
    "epochs": ParameterRule("an int >= 1", lambda value: _is_int(value) and value >= 1),
    "learning_rate": ParameterRule("a finite number > 0", lambda value: _is_real(value) and value > 0),
    "C": ParameterRule("a finite number > 0", lambda value: _is_real(value) and value > 0),
    "penalty": ParameterRule("'l2' or None", lambda value: value is None or (isinstance(value, str) and value == "l2")),
    "fit_intercept": ParameterRule("a bool", _is_bool),
    "standardize": ParameterRule("a bool", _is_bool),
    "tol": ParameterRule("a finite number >= 0", lambda value: _is_real(value) and value >= 0),
    "random_state": ParameterRule("None or an int >= 0", lambda value: value is None or (_is_int(value) and value >= 0)),
    "solver": ParameterRule(
        "one of " + ", ".join(repr(name) for name in SOLVERS),
        lambda value: isinstance(value, str) and value in SOLVERS,
    ),
    "class_weight": ParameterRule(
        "None, 'balanced' or a non-empty dict of class label to a finite number >= 0", _is_class_weight
    ),
    "learning_rate_decay": ParameterRule("a finite number >= 0", lambda value: _is_real(value) and value >= 0),
    "batch_size": ParameterRule("an int >= 1", lambda value: _is_int(value) and value >= 1),
    "patience": ParameterRule("None or an int >= 1", lambda value: value is None or (_is_int(value) and value >= 1)),
    "record_every": ParameterRule(
        "None or an int >= 0 (None and 0 turn recording off)",
        lambda value: value is None or (_is_int(value) and value >= 0),
    ),
}

# The parameters of the first state version; later ones take their defaults
# when an older state is loaded.
VERSION_1_PARAMETERS = ("epochs", "learning_rate", "C", "penalty", "fit_intercept", "standardize", "tol", "random_state", "solver")


def validate_parameters(owner: str, params: Mapping[str, Any], rules: Mapping[str, ParameterRule]) -> None:
    """Raise ValueError naming the first parameter whose value its rule rejects."""
    for name, rule in rules.items():
        value = params[name]
        if not rule.accepts(value):
            shown = repr(value)
            if len(shown) > MAX_VALUE_REPR:
                shown = f"<{type(value).__name__}>"
            raise ValueError(f"invalid {owner} parameter {name}={shown}: expected {rule.description}.")
