"""The library's own warnings as fixed message templates with numeric arguments.

A warning raised in a runner leaves the enclave only as a template id and
its numbers. The monitor renders the text again from `TEMPLATES`, so no text
written in a runner reaches the host, whoever raised the warning. This
module imports nothing heavy, because the monitor imports it.
"""

from __future__ import annotations

import math
import numbers
import string
from collections.abc import Mapping
from typing import Any

# An argument beyond this magnitude is rejected, so a rendered number stays short.
MAX_ARGUMENT_MAGNITUDE = 10**15

_NOT_CONVERGED = "{model} did not converge in {{epochs}} epochs (tol={{tol}}): "
_LOGISTIC = _NOT_CONVERGED.format(model="LogisticRegression")
_SVM = _NOT_CONVERGED.format(model="LinearSVC")
_MLP = _NOT_CONVERGED.format(model="MLPClassifier")
_ZERO_DIVISION = " is set to 0.0; pass zero_division to choose the value."
_UNTEMPLATED = (
    "raised with a message that the enclave cannot render from the library's templates, "
    "so the message stays in the enclave."
)

# Template id: (warning class name, message template with numeric fields only).
TEMPLATES: dict[str, tuple[str, str]] = {
    "logistic.newton_float32": (
        "ConvergenceWarning",
        _LOGISTIC + "increase epochs (the iteration cap) or tol; a tol below about 1e-4 is out of reach "
        "for float32 features.",
    ),
    "logistic.newton": ("ConvergenceWarning", _LOGISTIC + "increase epochs (the iteration cap) or tol."),
    "logistic.gd_loss_rose": (
        "ConvergenceWarning",
        _LOGISTIC + "the loss rose during training, so learning_rate={learning_rate} is probably "
        "too large: use a smaller learning_rate.",
    ),
    "logistic.gd_loss_rose_unscaled": (
        "ConvergenceWarning",
        _LOGISTIC + "the loss rose during training, so learning_rate={learning_rate} is probably "
        "too large: use a smaller learning_rate or standardize=True.",
    ),
    "logistic.gd_unscaled": (
        "ConvergenceWarning",
        _LOGISTIC + "increase epochs, use a larger learning_rate (now {learning_rate}), "
        "or set standardize=True if the features have very different scales.",
    ),
    "logistic.gd": (
        "ConvergenceWarning",
        _LOGISTIC + "increase epochs or use a larger learning_rate (now {learning_rate}).",
    ),
    "logistic.minibatch": (
        "ConvergenceWarning",
        _LOGISTIC + "increase epochs or tol, or tune learning_rate (now {learning_rate}) and batch_size "
        "(now {batch_size}); mini-batch steps keep a gradient noise floor, so solver='newton' suits a small tol.",
    ),
    "svm.objective_rose": (
        "ConvergenceWarning",
        _SVM + "the objective rose during training, so learning_rate={learning_rate} is probably "
        "too large: use learning_rate='auto'.",
    ),
    "svm.hinge": (
        "ConvergenceWarning",
        _SVM + "increase epochs or tol, or use loss='squared_hinge', whose smooth solver converges much faster.",
    ),
    "svm.unscaled": (
        "ConvergenceWarning",
        _SVM + "increase epochs or tol, or set standardize=True if the features have very different scales.",
    ),
    "svm.default": ("ConvergenceWarning", _SVM + "increase epochs or tol."),
    "mlp.unscaled": (
        "ConvergenceWarning",
        _MLP + "increase epochs or learning_rate (now {learning_rate}), or set standardize=True "
        "if the features have very different scales.",
    ),
    "mlp.default": ("ConvergenceWarning", _MLP + "increase epochs or learning_rate (now {learning_rate})."),
    "metrics.roc_auc_one_class": (
        "UndefinedMetricWarning",
        "y_true contains one class only, so ROC AUC is undefined and set to NaN.",
    ),
    "metrics.precision_no_predicted": (
        "UndefinedMetricWarning",
        "Precision is ill-defined for {labels} label(s) with no predicted samples" + _ZERO_DIVISION,
    ),
    "metrics.recall_no_true": (
        "UndefinedMetricWarning",
        "Recall is ill-defined for {labels} label(s) with no true samples" + _ZERO_DIVISION,
    ),
    "metrics.f_score_no_true_nor_predicted": (
        "UndefinedMetricWarning",
        "F-score is ill-defined for {labels} label(s) with no true nor predicted samples" + _ZERO_DIVISION,
    ),
    # A library warning class raised with its own text, or with invalid arguments: only the class leaves.
    "ConvergenceWarning.untemplated": ("ConvergenceWarning", _UNTEMPLATED),
    "UndefinedMetricWarning.untemplated": ("UndefinedMetricWarning", _UNTEMPLATED),
}


class TemplatedWarning(UserWarning):
    """A library warning whose message is rendered from `TEMPLATES`.

    ``template_id`` and ``template_args`` are None when the warning was made
    from a plain message, as ``warnings.warn(text, category)`` does.
    """

    template_id: str | None = None
    template_args: dict[str, int | float] | None = None

    @classmethod
    def from_template(cls, template_id: str, **arguments: int | float) -> TemplatedWarning:
        """Build the warning with the message of `template_id`, filled in with `arguments`.

        numpy numbers become Python ints and floats. Values are not range
        checked here, so building a warning never fails a fit. The monitor
        checks them, and for a value it rejects it sends only the class name.
        """
        category, text = TEMPLATES[template_id]
        if category != cls.__name__:
            raise ValueError(f"template {template_id!r} belongs to {category}, not {cls.__name__}")
        plain = {name: _plain_number(value) for name, value in arguments.items()}
        warning = cls(text.format(**plain))
        warning.template_id = template_id
        warning.template_args = plain
        return warning


def template_fields(template_id: str) -> set[str]:
    """Return the names of the numeric fields of a template."""
    _, text = TEMPLATES[template_id]
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def render_message(template_id: str, arguments: Mapping[str, Any]) -> str:
    """Render a template's message, or raise ValueError for an unknown id or an invalid argument.

    Each argument must be a finite int or float (not a bool) of magnitude at
    most `MAX_ARGUMENT_MAGNITUDE`, and the names must be exactly the
    template's fields.
    """
    if template_id not in TEMPLATES:
        raise ValueError(f"unknown warning template {template_id!r}")
    expected = template_fields(template_id)
    if set(arguments) != expected:
        raise ValueError(f"template {template_id!r} takes the arguments {sorted(expected)}, not {sorted(arguments)}")
    for name, value in arguments.items():
        _check_number(name, value)
    _, text = TEMPLATES[template_id]
    return text.format(**arguments)


def render_warning(template_id: str, arguments: Mapping[str, Any]) -> str:
    """Render ``"Category: message"``, the form in which a warning reaches the host."""
    category, _ = TEMPLATES.get(template_id, ("", ""))
    return f"{category}: {render_message(template_id, arguments)}"


def _plain_number(value: object) -> Any:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _check_number(name: str, value: object) -> None:
    if type(value) not in (int, float):
        raise ValueError(f"warning argument {name!r} must be an int or a float, not {type(value).__name__}")
    assert isinstance(value, (int, float))
    if not math.isfinite(value) or abs(value) > MAX_ARGUMENT_MAGNITUDE:
        raise ValueError(f"warning argument {name!r} must be finite and at most {MAX_ARGUMENT_MAGNITUDE:g} in magnitude")
