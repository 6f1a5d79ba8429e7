from __future__ import annotations

import sys

import pytest

from confidential_nb.enclave.egress import (
    GENERIC_EXCEPTION,
    MAX_DEBUG_MESSAGE_CHARS,
    MAX_DEBUG_OUTPUT_CHARS,
    MAX_WARNINGS,
    MAX_WITHHELD_LINES,
    bounded_count,
    cell_line,
    fit_text_to_budget,
    guard_failure,
    guarded_output,
    guarded_warnings,
    text_size,
    verified_exception_name,
)


@pytest.mark.parametrize("name", ["ValueError", "KeyboardInterrupt", "numpy.linalg.LinAlgError",
                                  "pandas.errors.ParserError", "confidential_nb.errors.EncodingError",
                                  "numpy.exceptions.AxisError", "confidential_nb.training.exceptions.NotFittedError"])
def test_exception_name_real_classes_kept(name):
    assert verified_exception_name(name) == name


@pytest.mark.parametrize("name", ["alice-secret", "alice_secret", "print", "numpy.pi", "os.error",
                                  "numpy.no_such_module.Error", "confidential_nb.enclave.runner.serve",
                                  "numpy._core._exceptions.UFuncTypeError", "pandas.core.frame.DataFrame",
                                  "confidential_nb.enclave.inputs.InputRejected", "builtins.object",
                                  "x" * 300, None, 42, "ValueError\nsecret"])
def test_exception_name_forged_replaced(name):
    assert verified_exception_name(name) == GENERIC_EXCEPTION


@pytest.mark.parametrize(("value", "expected"), [(7, 7), (-3, 0), (10**30, MAX_WITHHELD_LINES), ("9", 0), (True, 0), (2.5, 0)])
def test_bounded_count(value, expected):
    assert bounded_count(value) == expected


def test_cell_line_within_cell():
    source = "a = 1\nb = 2\nc = 3"
    assert cell_line(2, source) == 2
    assert cell_line(4, source) is None
    assert cell_line(0, source) is None
    assert cell_line("2", source) is None


def test_exception_name_module_not_imported(capsys):
    # Importing the module "this" prints to stdout, so an import would show.
    assert verified_exception_name("this.Error") == GENERIC_EXCEPTION
    assert "this" not in sys.modules
    assert capsys.readouterr().out == ""


def test_warnings_rendered_from_template():
    entry = {"template": "logistic.gd", "args": {"epochs": 5, "tol": 0.03, "learning_rate": 0.1}, "count": 1}
    kept = guarded_warnings([entry])
    assert kept == ["ConvergenceWarning: LogisticRegression did not converge in 5 epochs (tol=0.03): "
                    "increase epochs or use a larger learning_rate (now 0.1)."]


def test_warnings_repeat_count_shown():
    entry = {"template": "metrics.roc_auc_one_class", "args": {}, "count": 3}
    assert guarded_warnings([entry]) == ["UndefinedMetricWarning: y_true contains one class only, so ROC AUC "
                                         "is undefined and set to NaN. (raised 3 times)"]


@pytest.mark.parametrize("entry", [
    "ConvergenceWarning: secret",
    {"template": "secret", "args": {}},
    {"template": None, "args": {}},
    {"args": {"epochs": 1}},
    5,
])
def test_warnings_unknown_template_dropped(entry):
    assert guarded_warnings([entry]) == []


@pytest.mark.parametrize("arguments", [
    {"epochs": "secret", "tol": 0.1, "learning_rate": 0.1},
    {"epochs": 5, "tol": 0.1},
    {"epochs": 5, "tol": 0.1, "learning_rate": 0.1, "secret": 1},
    {"epochs": True, "tol": 0.1, "learning_rate": 0.1},
    {"epochs": 10**30, "tol": 0.1, "learning_rate": 0.1},
    "secret",
])
def test_warnings_invalid_arguments_class_only(arguments):
    kept = guarded_warnings([{"template": "logistic.gd", "args": arguments}])
    assert len(kept) == 1
    assert kept[0].startswith("ConvergenceWarning: raised with a message that the enclave cannot render")
    assert "secret" not in kept[0]


def test_warnings_not_a_list():
    assert guarded_warnings("ConvergenceWarning: x") == []


def test_warnings_bounded_in_number():
    entry = {"template": "metrics.roc_auc_one_class", "args": {}}
    assert len(guarded_warnings([entry] * 1000)) == MAX_WARNINGS


def test_failure_exception_rebuilt_in_debug():
    header = {"ok": False, "kind": "exception", "exception_type": "secret", "line": 99, "message": "m" * 10_000,
              "extra": "secret", "output": "o" * 10**6, "withheld_lines": 4}
    guarded = guard_failure(header, "x = 1", debug=True)
    assert guarded == {"ok": False, "kind": "exception", "exception_type": GENERIC_EXCEPTION, "line": None,
                       "message": "m" * MAX_DEBUG_MESSAGE_CHARS, "output": "o" * MAX_DEBUG_OUTPUT_CHARS,
                       "withheld_lines": 4}


def test_failure_message_withheld_outside_debug():
    header = {"ok": False, "kind": "exception", "exception_type": "ValueError", "line": 1, "message": "secret",
              "output": "secret"}
    guarded = guard_failure(header, "x", debug=False)
    assert guarded["message"] is None
    assert "output" not in guarded


def test_failure_encoding_details_withheld_outside_debug():
    guarded = guard_failure({"ok": False, "kind": "encoding", "message": "result['secret'] is a set"}, "x", debug=False)
    assert "secret" not in guarded["message"]
    assert "--debug" in guarded["message"]


def test_output_withheld_outside_debug():
    assert guarded_output({"output": "secret", "withheld_lines": 2}, debug=False) == {"withheld_lines": 2}


def test_text_size_counts_utf8_bytes():
    assert text_size({"message": "é", "output": "ab", "warnings": ["c"]}) == 5


def test_fit_text_to_budget_shortens_output():
    header = {"ok": False, "message": "m" * 10, "output": "o" * 100}
    fitted = fit_text_to_budget(header, 30)
    assert text_size(fitted) <= 30
    assert fitted["output"] == "o" * 20
    assert fitted["output_truncated"] is True


@pytest.mark.parametrize("header", [{"ok": False, "kind": "timeout"}, {"ok": False, "kind": "resource", "resource": "secret"},
                                    {"ok": False}, {"ok": "yes"}])
def test_failure_unknown_kind_internal(header):
    guarded = guard_failure(header, "x", debug=True)
    assert guarded["kind"] == "internal"
    assert guarded["message"] == "the runner sent a malformed reply and was stopped"
