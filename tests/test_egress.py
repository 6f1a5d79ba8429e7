from __future__ import annotations

import pytest

from confidential_nb.enclave.egress import (
    GENERIC_EXCEPTION,
    MAX_TEXT_CHARS,
    MAX_WITHHELD_LINES,
    bounded_count,
    cell_line,
    guard_failure,
    guarded_warnings,
    verified_exception_name,
)


@pytest.mark.parametrize("name", ["ValueError", "KeyboardInterrupt", "numpy.linalg.LinAlgError",
                                  "pandas.errors.ParserError", "confidential_nb.errors.EncodingError"])
def test_exception_name_real_classes_kept(name):
    assert verified_exception_name(name) == name


@pytest.mark.parametrize("name", ["alice-secret", "alice_secret", "print", "numpy.pi", "os.error",
                                  "numpy.no_such_module.Error", "confidential_nb.enclave.runner.serve",
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


def test_warnings_only_library_categories():
    kept = guarded_warnings(["ConvergenceWarning: more epochs", "UserWarning: secret", "secret", 5], text_allowed=True)
    assert kept == ["ConvergenceWarning: more epochs"]


def test_warnings_text_withheld_for_private_schema():
    kept = guarded_warnings(["ConvergenceWarning: secret"], text_allowed=False)
    assert kept == ["ConvergenceWarning: its message is withheld because an input's schema is private"]


def test_warnings_not_a_list():
    assert guarded_warnings("ConvergenceWarning: x", text_allowed=True) == []


def test_failure_exception_rebuilt():
    header = {"ok": False, "kind": "exception", "exception_type": "secret", "line": 99, "message": "m" * 10_000, "extra": "secret"}
    guarded = guard_failure(header, "x = 1", text_allowed=True)
    assert guarded == {"ok": False, "kind": "exception", "exception_type": GENERIC_EXCEPTION, "line": None,
                       "message": "m" * MAX_TEXT_CHARS}


def test_failure_message_withheld_for_private_schema():
    header = {"ok": False, "kind": "exception", "exception_type": "ValueError", "line": 1, "message": "secret"}
    assert guard_failure(header, "x", text_allowed=False)["message"] is None


def test_failure_encoding_details_withheld_for_private_schema():
    guarded = guard_failure({"ok": False, "kind": "encoding", "message": "result['secret'] is a set"}, "x", text_allowed=False)
    assert "secret" not in guarded["message"]
    assert "withheld" in guarded["message"]


@pytest.mark.parametrize("header", [{"ok": False, "kind": "timeout"}, {"ok": False, "kind": "resource", "resource": "secret"},
                                    {"ok": False}, {"ok": "yes"}])
def test_failure_unknown_kind_internal(header):
    guarded = guard_failure(header, "x", text_allowed=True)
    assert guarded["kind"] == "internal"
    assert guarded["message"] == "the runner sent a malformed reply and was stopped"


def test_warnings_undefined_metric_kept():
    kept = guarded_warnings(["UndefinedMetricWarning: precision is ill-defined"], text_allowed=True)
    assert kept == ["UndefinedMetricWarning: precision is ill-defined"]
