"""What leaves a runner in normal and in debug runs, and the separate debug enclave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pandas as pd
import pytest

import confidential_nb
from confidential_nb import Enclave, Sealed
from confidential_nb.attestation import Pins, Receipt, load_pins, save_pins
from confidential_nb.enclave.egress import GENERIC_EXCEPTION, MAX_DEBUG_OUTPUT_CHARS
from confidential_nb.errors import AttestationError, EnclaveError, EnclaveWarning, PolicyError

SECRET = "alice-secret"

CONVERGENCE_CELL = """\
from confidential_nb.training import LogisticRegression
LogisticRegression(epochs=2).fit(data[["x"]], data["target"])
1
"""
CONVERGENCE_TEXT = (
    "ConvergenceWarning: LogisticRegression did not converge in 2 epochs (tol=0.03): "
    "increase epochs or use a larger learning_rate (now 0.1)."
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"name": [SECRET, "bob", "carol", "dan"], "x": [1.0, 2.0, 3.0, 4.0], "target": [0, 1, 0, 1]})


@pytest.fixture(scope="module")
def public() -> Sealed:
    """The frame with its schema public and debug runs not allowed."""
    return confidential_nb.seal(_frame())


@pytest.fixture(scope="module")
def debuggable() -> Sealed:
    """The frame with a policy that allows debug runs."""
    return confidential_nb.seal(_frame(), policy={"allow_debug": True})


# Normal runs: printed output, exception messages and other warnings stay in the runner.


def test_normal_print_withheld_and_counted(enclave, public, capfd):
    run = enclave.run("print(data['name'][0])\nprint('a\\nb')\n1", inputs={"data": public})
    captured = capfd.readouterr()
    assert run.withheld_lines == 3
    assert run.output is None
    assert run.debug is False
    assert SECRET not in captured.out + captured.err


def test_normal_exception_message_withheld(enclave, public):
    with pytest.raises(EnclaveError) as caught:
        enclave.run("print('x')\nraise ValueError(data['name'][0])", inputs={"data": public})
    assert SECRET not in str(caught.value)
    assert caught.value.exception_type == "ValueError"
    assert caught.value.line == 2
    assert "1 line of output was withheld; rerun with %%cape --debug" in str(caught.value)


def test_normal_class_named_like_builtin_generic(enclave, public):
    source = "class KeyError(Exception):\n    pass\nraise KeyError(data['name'][0])"
    with pytest.raises(EnclaveError) as caught:
        enclave.run(source, inputs={"data": public})
    assert caught.value.exception_type == GENERIC_EXCEPTION
    assert SECRET not in str(caught.value)


def test_normal_subclass_of_builtin_generic(enclave):
    with pytest.raises(EnclaveError) as caught:
        enclave.run("class Mine(ValueError):\n    pass\nraise Mine()")
    assert caught.value.exception_type == GENERIC_EXCEPTION


def test_normal_numpy_internal_class_named_by_base(enclave):
    with pytest.raises(EnclaveError) as caught:
        enclave.run("import numpy as np\nnp.add(np.array(['a']), 1)")
    assert caught.value.exception_type == "TypeError"


def test_normal_custom_warning_never_leaves(enclave, public):
    source = (
        "import warnings\n"
        "class Leak(UserWarning):\n"
        "    pass\n"
        "warnings.warn(data['name'][0], Leak)\n"
        "1\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", EnclaveWarning)
        run = enclave.run(source, inputs={"data": public})
    assert run.warnings == []
    assert run.withheld_lines == 1


def test_normal_convergence_warning_from_template(enclave, public):
    with pytest.warns(EnclaveWarning) as caught:
        run = enclave.run(CONVERGENCE_CELL, inputs={"data": public})
    assert run.warnings == [CONVERGENCE_TEXT]
    assert [str(warning.message) for warning in caught] == [CONVERGENCE_TEXT]


def test_normal_library_warning_own_text_class_only(enclave, public):
    source = (
        "import warnings\n"
        "from confidential_nb.training import ConvergenceWarning\n"
        "warnings.warn(data['name'][0], ConvergenceWarning)\n"
        "1\n"
    )
    with pytest.warns(EnclaveWarning):
        run = enclave.run(source, inputs={"data": public})
    assert len(run.warnings) == 1
    assert run.warnings[0].startswith("ConvergenceWarning: raised with a message that the enclave cannot render")
    assert SECRET not in run.warnings[0]


def test_normal_library_warning_text_arguments_class_only(enclave, public):
    source = (
        "import warnings\n"
        "from confidential_nb.training import ConvergenceWarning\n"
        "warning = ConvergenceWarning.from_template('logistic.gd', epochs=data['name'][0], tol=0.1, learning_rate=0.1)\n"
        "warnings.warn(warning)\n"
        "1\n"
    )
    with pytest.warns(EnclaveWarning):
        run = enclave.run(source, inputs={"data": public})
    assert run.warnings[0].startswith("ConvergenceWarning: raised with a message that the enclave cannot render")
    assert SECRET not in run.warnings[0]


def test_normal_warning_repeats_counted(enclave, public):
    source = "from confidential_nb.training import roc_auc_score\n[roc_auc_score([1, 1], [0.2, 0.3]) for _ in range(3)]\n1"
    with pytest.warns(EnclaveWarning):
        run = enclave.run(source, inputs={"data": public})
    assert run.warnings == ["UndefinedMetricWarning: y_true contains one class only, so ROC AUC is undefined "
                            "and set to NaN. (raised 3 times)"]


# The debug enclave and its runs.


def test_normal_enclave_rejects_debug_run(enclave, debuggable):
    with pytest.raises(PolicyError, match="not a debug enclave.*--debug.*separate debug enclave"):
        enclave.run("1", inputs={"data": debuggable}, debug=True)
    assert enclave.run("1").value == 1


def test_debug_input_without_allow_debug_rejected(debug_enclave, public):
    with pytest.raises(PolicyError, match="input 'data'.*does not allow debug runs.*allow_debug=True"):
        debug_enclave.run("1", inputs={"data": public})


def test_debug_print_text_returned(debug_enclave, debuggable, capfd):
    run = debug_enclave.run("print(data['name'][0])\nimport sys\nsys.stderr.write('to stderr\\n')\n1",
                            inputs={"data": debuggable})
    captured = capfd.readouterr()
    assert run.output == f"{SECRET}\nto stderr\n"
    assert run.withheld_lines == 0
    assert run.debug is True
    assert SECRET not in captured.out + captured.err


def test_debug_output_bounded(debug_enclave, debuggable):
    run = debug_enclave.run("for i in range(100000):\n    print(i)\n1", inputs={"data": debuggable})
    assert len(run.output) == MAX_DEBUG_OUTPUT_CHARS
    assert run.output.startswith("0\n1\n2\n")
    assert run.withheld_lines > 80000


def test_debug_output_counted_against_budget(debug_enclave):
    sealed = confidential_nb.seal(_frame(), policy={"allow_debug": True, "max_result_bytes": 200})
    run = debug_enclave.run("print('y' * 1000)\n7", inputs={"data": sealed})
    assert run.value == 7
    assert 0 < len(run.output.encode()) < 200


def test_debug_exception_message_and_output(debug_enclave, debuggable):
    with pytest.raises(EnclaveError) as caught:
        debug_enclave.run("print('before')\nraise ValueError(data['name'][0])", inputs={"data": debuggable})
    assert f"ValueError at line 2 of the cell: {SECRET}" in str(caught.value)
    assert "output of the debug run:\nbefore" in str(caught.value)


def test_debug_other_warnings_in_output(debug_enclave, debuggable):
    source = "import warnings\nclass Mine(UserWarning):\n    pass\nwarnings.warn('look here', Mine)\n1"
    run = debug_enclave.run(source, inputs={"data": debuggable})
    assert "Mine: look here" in run.output
    assert run.warnings == []


def test_debug_attestation_flag_and_pcr2(enclave, debug_enclave):
    normal, debug = enclave.attestation(), debug_enclave.attestation()
    assert debug.debug is True
    assert normal.debug is False
    assert debug.measurements["2"] != normal.measurements["2"]
    assert debug.measurements["0"] == normal.measurements["0"]
    assert debug.body["sandbox"]["debug_output"] is True
    assert debug_enclave.status()["debug"] is True


def test_debug_attestation_rejected_by_default(debug_enclave, key_home):
    pins = load_pins(key_home)
    document = debug_enclave.attest("ab" * 32)
    with pytest.raises(AttestationError, match="debug enclave"):
        document.verify(nonce="ab" * 32, platform_fingerprint=pins.platform_fingerprint, expected=pins.debug_measurements)
    key = document.verify(nonce="ab" * 32, platform_fingerprint=pins.platform_fingerprint,
                          expected=pins.debug_measurements, allow_debug=True)
    assert key.fingerprint == debug_enclave.public_key().fingerprint


def test_debug_receipt_marked_and_verified(debug_enclave, debuggable):
    receipt = debug_enclave.run("1", inputs={"data": debuggable}).receipt
    assert receipt.debug is True
    assert receipt.body["debug"] is True
    with pytest.raises(AttestationError, match="debug run.*allow_debug=True"):
        receipt.verify()
    assert receipt.verify(allow_debug=True) is True


def test_normal_receipt_not_debug(enclave):
    receipt = enclave.run("1").receipt
    assert receipt.debug is False
    assert receipt.verify() is True


def test_debug_receipt_flag_edit_fails(debug_enclave, debuggable):
    receipt = debug_enclave.run("1", inputs={"data": debuggable}).receipt
    body = dict(receipt.body, debug=False)
    edited = Receipt(body=body, signature=receipt.signature)
    with pytest.raises(AttestationError):
        edited.verify()


def test_debug_pins_kept_apart(tmp_path):
    home = tmp_path / "home"
    with Enclave(home) as normal:
        normal_pcrs = normal.attestation().measurements
    assert load_pins(home).debug_measurements is None

    with Enclave(home, debug=True) as debug:
        debug_pcrs = debug.attestation().measurements
    pins = load_pins(home)
    assert pins.measurements == normal_pcrs
    assert pins.debug_measurements == debug_pcrs

    # A moved debug pin stops only the debug enclave.
    save_pins(home, Pins(pins.platform_fingerprint, pins.measurements, dict(debug_pcrs, **{"2": "0" * 63 + "1"})))
    with pytest.raises(AttestationError, match=r"PCR 2 \(sandbox configuration\)"):
        Enclave(home, debug=True).start()
    with Enclave(home) as normal:
        assert normal.run("1").value == 1


def test_cli_verify_says_debug_run(tmp_path, key_home, debug_enclave, debuggable):
    debug_enclave.run("1", inputs={"data": debuggable}).receipt.save(tmp_path / "receipt.json")
    completed = subprocess.run(
        [sys.executable, "-m", "confidential_nb.cli", "verify", str(tmp_path / "receipt.json")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "CONFIDENTIAL_NB_HOME": str(key_home)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("receipt verified: run ")
    assert "DEBUG RUN: this receipt is from the debug enclave" in completed.stdout
    assert json.loads((tmp_path / "receipt.json").read_text())["receipt"]["debug"] is True
