"""The one table of LogisticRegression hyperparameters and their valid values."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

# Longest parameter repr quoted in an error message.
MAX_VALUE_REPR = 60


@dataclass(frozen=True)
class ParameterRule:
    """What a hyperparameter accepts: a test and its description for messages."""

    description: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


LOGISTIC_REGRESSION_RULES: dict[str, ParameterRule] = {
    "epochs": ParameterRule("an int >= 1", lambda value: _is_int(value) and value >= 1),
    "learning_rate": ParameterRule("a finite number > 0", lambda value: _is_real(value) and value > 0),
    "C": ParameterRule("a finite number > 0", lambda value: _is_real(value) and value > 0),
    "penalty": ParameterRule("'l2' or None", lambda value: value is None or (isinstance(value, str) and value == "l2")),
    "fit_intercept": ParameterRule("a bool", _is_bool),
    "standardize": ParameterRule("a bool", _is_bool),
    "tol": ParameterRule("a finite number >= 0", lambda value: _is_real(value) and value >= 0),
    "random_state": ParameterRule("None or an int >= 0", lambda value: value is None or (_is_int(value) and value >= 0)),
    "solver": ParameterRule("'gd' (the only solver so far)", lambda value: isinstance(value, str) and value == "gd"),
}


def validate_parameters(owner: str, params: Mapping[str, Any], rules: Mapping[str, ParameterRule]) -> None:
    """Raise ValueError naming the first parameter whose value its rule rejects."""
    for name, rule in rules.items():
        value = params[name]
        if not rule.accepts(value):
            shown = repr(value)
            if len(shown) > MAX_VALUE_REPR:
                shown = f"<{type(value).__name__}>"
            raise ValueError(f"invalid {owner} parameter {name}={shown}: expected {rule.description}.")
