"""Tests of the IPython magics through a real shell, and of the functions behind them."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from matplotlib.figure import Figure

from confidential_nb.errors import EnclaveError, EnclaveTimeoutError, EnclaveWarning, PolicyError
from confidential_nb.functions import cell_checksum
from confidential_nb.keys import ensure_keys, load_public_key
from confidential_nb.magics import (
    drop_variable,
    format_drop_report,
    format_status,
    key_fingerprint,
    register_figure_formatter,
    register_magics,
)
from confidential_nb.results import RunResult
from confidential_nb.sealing import Sealed, seal
from processes import wait_until_gone


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    ipython = InteractiveShell.instance()
    register_magics(ipython)
    return ipython


@pytest.fixture(autouse=True)
def clean_namespace(shell: InteractiveShell) -> Iterator[None]:
    """Give each test a namespace without the variables of earlier tests."""
    before = set(shell.user_ns)
    yield
    for name in set(shell.user_ns) - before:
        del shell.user_ns[name]


@pytest.fixture(scope="module")
def sealed_frame(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    """A frame sealed to a throwaway key, for checks that never reach an enclave."""
    home = tmp_path_factory.mktemp("throwaway-key-home")
    ensure_keys(home)
    return seal(pd.DataFrame({"x": [1.0, 2.0]}), key=load_public_key(home))


def run_cape(shell: InteractiveShell, line: str, cell: str = "result = 1\n") -> None:
    shell.run_cell_magic("cape", line, cell)


# %cape_seal usage errors


def test_cape_seal_missing_variable_raises(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="no variable named 'nope' in the notebook"):
        shell.run_line_magic("cape_seal", "nope")


def test_cape_seal_wrong_type_raises(shell: InteractiveShell) -> None:
    shell.user_ns["numbers"] = [1, 2, 3]

    with pytest.raises(UsageError, match="variable 'numbers' contains a value of type list.*DataFrame or bytes"):
        shell.run_line_magic("cape_seal", "numbers")


def test_cape_seal_without_name_raises(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="required: name"):
        shell.run_line_magic("cape_seal", "")


def test_cape_seal_unknown_flag_raises(shell: InteractiveShell) -> None:
    shell.user_ns["df"] = pd.DataFrame({"x": [1]})

    with pytest.raises(UsageError, match=r"unrecognized arguments: --dorp; run %cape_seal\? for the options"):
        shell.run_line_magic("cape_seal", "df --dorp")


def test_cape_seal_help_usage_names_line_magic(shell: InteractiveShell) -> None:
    usage = shell.find_line_magic("cape_seal").__doc__.split("::", 1)[1].strip()

    assert usage.startswith("%cape_seal [--drop] [--no-schema] [--allow-debug] name")


# %%cape usage errors


def test_cape_empty_cell_raises(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="the %%cape cell is empty"):
        run_cape(shell, "", "  \n\n")


def test_cape_missing_input_without_sealed_raises(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"--input 'nope': no variable.*no Sealed variables.*%cape_seal df"):
        run_cape(shell, "--input nope")


def test_cape_missing_input_lists_sealed(shell: InteractiveShell, sealed_frame: Sealed) -> None:
    shell.user_ns["train_sealed"] = sealed_frame
    shell.user_ns["test_sealed"] = sealed_frame

    with pytest.raises(UsageError, match=r"--input 'nope'.*Sealed variables in the notebook: test_sealed, train_sealed$"):
        run_cape(shell, "--input nope")


def test_cape_input_not_sealed_raises(shell: InteractiveShell) -> None:
    shell.user_ns["df"] = pd.DataFrame({"x": [1]})

    with pytest.raises(UsageError, match="--input 'df' contains a value of type DataFrame, not a Sealed input"):
        run_cape(shell, "--input df")


def test_cape_missing_param_raises(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="--param 'epochs': no variable of that name exists"):
        run_cape(shell, "--param epochs")


@pytest.mark.parametrize("value", ["abc", "-5", "0", "nan", "inf"])
def test_cape_invalid_timeout_raises(shell: InteractiveShell, value: str) -> None:
    with pytest.raises(UsageError, match=f"invalid --timeout '{value}': give a positive number of seconds"):
        run_cape(shell, f"--timeout {value}")


@pytest.mark.parametrize("value", ["lots", "4X", "0"])
def test_cape_invalid_memory_raises(shell: InteractiveShell, value: str) -> None:
    with pytest.raises(UsageError, match=f"invalid --memory: invalid size '{value}'"):
        run_cape(shell, f"--memory {value}")


def test_cape_invalid_out_raises(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="--out 'class' is not a valid Python variable name"):
        run_cape(shell, "--out class")


def test_cape_as_count_mismatch_raises(shell: InteractiveShell, sealed_frame: Sealed) -> None:
    shell.user_ns["first"] = sealed_frame
    shell.user_ns["second"] = sealed_frame

    with pytest.raises(UsageError, match="--as 'train' gives 1 names for 2 inputs"):
        run_cape(shell, "--input first --input second --as train")


def test_cape_as_invalid_name_raises(shell: InteractiveShell, sealed_frame: Sealed) -> None:
    shell.user_ns["sealed"] = sealed_frame

    with pytest.raises(UsageError, match="--as '2data' is not a valid Python variable name"):
        run_cape(shell, "--input sealed --as 2data")


def test_cape_as_duplicate_names_raises(shell: InteractiveShell, sealed_frame: Sealed) -> None:
    shell.user_ns["first"] = sealed_frame
    shell.user_ns["second"] = sealed_frame

    with pytest.raises(UsageError, match="inputs bound twice to data"):
        run_cape(shell, "--input first --input second --as data,data")


def test_cape_usage_error_shows_no_traceback(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = shell.run_cell("%%cape --input nope\nresult = 1\n")

    captured = capsys.readouterr()
    assert isinstance(outcome.error_in_exec, UsageError)
    assert "UsageError: --input 'nope'" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_cape_unknown_option_hints_help(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"^unrecognized arguments: --inptu sealed; run %%cape\? for the options$"):
        run_cape(shell, "--inptu sealed")


def test_cape_missing_option_value_hints_help(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"argument --input: expected one argument; run %%cape\? for the options"):
        run_cape(shell, "--input")


def test_cape_help_usage_names_cell_magic(shell: InteractiveShell) -> None:
    usage = shell.find_cell_magic("cape").__doc__.split("::", 1)[1].strip()

    assert usage.startswith("%%cape [--input NAME] [--as VAR]")


def test_cape_help_lists_param_types(shell: InteractiveShell) -> None:
    doc = " ".join(shell.find_cell_magic("cape").__doc__.split())

    assert "a plain value or an array" not in doc
    assert "None, a bool, number, str or bytes, a numeric numpy array or scalar, a pandas DataFrame or Series" in doc
    assert "or a list, tuple or dict (with str or int keys) of these" in doc


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 2.5, 1j, "text", b"raw", np.arange(3), np.float32(1.5), pd.DataFrame({"a": [1]}),
     pd.Series([1.0]), [1, np.arange(2)], (1, pd.Series([2])), {"a": 1, 2: [pd.DataFrame({"b": [3]})]}],
    ids=lambda value: type(value).__name__,
)
def test_param_help_types_encode(value: object) -> None:
    from confidential_nb.result_codec import decode_result, encode_result

    assert type(decode_result(encode_result(value, root="parameter 'value'"))) is type(value)


def test_cape_help_states_defaults(shell: InteractiveShell) -> None:
    # The help is wrapped to the terminal width, so compare with single spaces.
    doc = " ".join(shell.find_cell_magic("cape").__doc__.split())

    assert "default 600, that is 10 minutes" in doc
    assert "default 4.0 GiB or 4x the size of the sealed inputs" in doc
    assert "%%cape --input sealed --as data" in doc


# Figure display


def line_figure() -> Figure:
    figure = Figure(figsize=(2.0, 2.0))
    figure.subplots().plot([1, 2, 3])
    return figure


def test_load_ext_renders_figure_as_png(shell: InteractiveShell) -> None:
    formatter = shell.display_formatter.formatters["image/png"]
    formatter.pop("matplotlib.figure.Figure", None)
    shell.extension_manager.loaded.discard("confidential_nb")
    figure = line_figure()
    before, _ = shell.display_formatter.format(figure)

    shell.run_line_magic("load_ext", "confidential_nb")
    after, _ = shell.display_formatter.format(figure)

    assert "image/png" not in before
    assert after["image/png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert after["text/plain"] == before["text/plain"]


def test_register_figure_formatter_keeps_existing(shell: InteractiveShell) -> None:
    formatter = shell.display_formatter.formatters["image/png"]
    previous = formatter.pop("matplotlib.figure.Figure", None)
    formatter.for_type(Figure, lambda figure: b"existing")
    try:
        register_figure_formatter(shell)

        assert formatter(line_figure()) == b"existing"
    finally:
        formatter.pop(Figure)
        if previous is not None:
            formatter.for_type(Figure, previous)


def test_register_figure_formatter_without_formatter_logs(caplog: pytest.LogCaptureFixture) -> None:
    shell_without_display = types.SimpleNamespace(display_formatter=None)

    register_figure_formatter(shell_without_display)  # type: ignore[arg-type]

    assert "the shell has no display formatter" in caplog.text


def test_load_ext_leaves_matplotlib_unloaded() -> None:
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'confidential_nb')\n"
        "print('matplotlib' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert completed.stdout.strip() == "False"


# Plain functions


def test_drop_variable_clears_output_caches(shell: InteractiveShell) -> None:
    shell.run_cell("import pandas as pd\ndf = pd.DataFrame({'x': [1, 2]})", store_history=True)
    shell.run_cell("df", store_history=True)
    number = shell.execution_count - 1
    assert shell.user_ns["Out"][number] is shell.user_ns["df"]

    remaining = drop_variable(shell, "df")

    assert remaining == []
    assert "df" not in shell.user_ns
    assert number not in shell.user_ns["Out"]
    assert f"_{number}" not in shell.user_ns
    assert not isinstance(shell.user_ns.get("_"), pd.DataFrame)
    assert not isinstance(shell.user_ns_hidden.get(f"_{number}"), pd.DataFrame)
    assert not isinstance(shell.displayhook._, pd.DataFrame)


def test_drop_variable_reports_alias_and_container(shell: InteractiveShell) -> None:
    shell.run_cell("import pandas as pd\ndf = pd.DataFrame({'x': [1]})\nalias = df\nframes = [df]")

    remaining = drop_variable(shell, "df")

    assert remaining == ["variable 'alias'", "a list"]
    assert "alias" in shell.user_ns


def test_format_drop_report_counts_references() -> None:
    message = format_drop_report("df", ["variable 'alias'", "a list"])

    assert message.startswith("Dropped 'df' from the namespace and output history, but 2 other references")
    assert "references to this object remain (variable 'alias', a list)." in message
    assert message.endswith("Copies derived from it, such as df.head() or df.drop(...), are not tracked, so delete any that you made.")


def test_format_drop_report_without_references() -> None:
    message = format_drop_report("df", [])

    assert message == (
        "Dropped 'df' from the namespace and output history, and no other reference to this object remains. "
        "Copies derived from it, such as df.head() or df.drop(...), are not tracked, so delete any that you made."
    )
    assert "no other references to it remain" not in message


def test_format_status_nests_dicts() -> None:
    text = format_status({"running": True, "sandbox": {"network": "namespace", "layers": ["rlimits", "seccomp"]}})

    assert text.splitlines() == ["running: True", "sandbox:", "  network: namespace", "  layers: rlimits, seccomp"]


def test_key_fingerprint_of_public_key(tmp_path: Path) -> None:
    ensure_keys(tmp_path)
    public_key = load_public_key(tmp_path)

    assert key_fingerprint(public_key) == public_key.fingerprint


def test_cape_input_named_result_raises(shell: InteractiveShell, sealed_frame: Sealed) -> None:
    shell.user_ns["sealed"] = sealed_frame

    with pytest.raises(UsageError, match="'result' cannot name an input or a parameter"):
        run_cape(shell, "--input sealed --as result")


def test_cape_param_shadowing_input_raises(shell: InteractiveShell, sealed_frame: Sealed) -> None:
    shell.user_ns["sealed"] = sealed_frame
    shell.user_ns["data"] = 3

    with pytest.raises(UsageError, match="'data' names both an input and a --param"):
        run_cape(shell, "--input sealed --param data")


# End to end through the shared enclave


@pytest.fixture(scope="module")
def enclave_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the shared enclave at a fresh key home and stop it after the module."""
    from confidential_nb import client

    home = tmp_path_factory.mktemp("enclave-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONFIDENTIAL_NB_HOME", str(home))
        patch.setattr(client, "_defaults", {})
        yield home
        client.close_default_enclaves()


@pytest.fixture()
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(80, 2))
    target = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(np.int64)
    return pd.DataFrame({"a": features[:, 0], "b": features[:, 1], "target": target})


@pytest.fixture()
def sealed_in_shell(shell: InteractiveShell, enclave_home: Path, frame: pd.DataFrame) -> Sealed:
    shell.user_ns["df"] = frame
    sealed = shell.run_line_magic("cape_seal", "df")
    shell.user_ns["sealed"] = sealed
    return sealed


TRAINING_CELL = """\
from confidential_nb.training import LogisticRegression, train_test_split
X = data.drop(columns="target")
X_train, X_test, y_train, y_test = train_test_split(X, data["target"], test_size=0.25, random_state=0)
model = LogisticRegression(epochs=epochs).fit(X_train, y_train, validation_data=(X_test, y_test))
result = {"accuracy": model.score(X_test, y_test), "model": model}
"""


def test_cape_seal_returns_sealed_with_schema(sealed_in_shell: Sealed, enclave_home: Path) -> None:
    assert isinstance(sealed_in_shell, Sealed)
    assert sealed_in_shell.schema is not None
    assert sealed_in_shell.schema["columns"] == ["a", "b", "target"]
    assert sealed_in_shell.recipient == load_public_key(enclave_home).fingerprint


def test_cape_seal_no_schema_hides_columns(shell: InteractiveShell, enclave_home: Path, frame: pd.DataFrame) -> None:
    shell.user_ns["df"] = frame

    sealed = shell.run_line_magic("cape_seal", "df --no-schema")

    assert sealed.schema is None
    assert sealed.policy.schema_public is False


def test_cape_seal_drop_removes_name_and_outputs(
    shell: InteractiveShell, enclave_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_cell("import pandas as pd\ndf = pd.DataFrame({'x': [1.0, 2.0]})", store_history=True)
    shell.run_cell("df", store_history=True)
    number = shell.execution_count - 1
    capsys.readouterr()

    outcome = shell.run_cell("sealed = %cape_seal df --drop", store_history=True)

    assert outcome.error_in_exec is None
    assert isinstance(shell.user_ns["sealed"], Sealed)
    assert "df" not in shell.user_ns
    assert number not in shell.user_ns["Out"]
    assert f"_{number}" not in shell.user_ns
    assert "no other reference to this object remains. Copies derived from it" in capsys.readouterr().out


def test_cape_seal_drop_reports_remaining_alias(
    shell: InteractiveShell, enclave_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_cell("import pandas as pd\ndf = pd.DataFrame({'x': [1.0]})\nbackup = df")
    capsys.readouterr()

    shell.run_line_magic("cape_seal", "df --drop")

    assert "1 other reference to this object remains (variable 'backup'). Delete it to remove" in capsys.readouterr().out


def test_cape_runs_cell_on_sealed_frame(shell: InteractiveShell, sealed_in_shell: Sealed, frame: pd.DataFrame) -> None:
    run_cape(shell, "--input sealed", "result = {'rows': len(data), 'total': float(data['a'].sum())}\n")

    result = shell.user_ns["result"]
    assert isinstance(result, RunResult)
    assert result.value == {"rows": 80, "total": float(frame["a"].sum())}
    assert result.receipt_status == "verified"
    assert result.history is None


def test_cape_binds_several_inputs_by_name(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    shell.user_ns["other"] = sealed_in_shell

    run_cape(shell, "--input sealed --input other", "result = len(sealed) + len(other)\n")

    assert shell.user_ns["result"].value == 160


def test_cape_as_renames_input(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    run_cape(shell, "--input sealed --as patients", "result = list(patients.columns)\n")

    assert shell.user_ns["result"].value == ["a", "b", "target"]


def test_cape_param_and_out(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    shell.user_ns["factor"] = 3
    shell.user_ns["weights"] = np.array([1.0, 2.0])

    run_cape(shell, "--input sealed --param factor --param weights --out run", "result = factor * float(weights.sum())\n")

    assert shell.user_ns["run"].value == 9.0
    assert "result" not in shell.user_ns


def test_cape_reports_withheld_lines(
    shell: InteractiveShell, sealed_in_shell: Sealed, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cape(shell, "--input sealed", "print(data.head())\nprint('done')\nresult = 1\n")

    out = capsys.readouterr().out
    assert shell.user_ns["result"].withheld_lines > 1
    assert f"{shell.user_ns['result'].withheld_lines} lines of output were withheld; rerun with %%cape --debug" in out
    assert "on inputs whose policy allows debug to see them" in out
    assert "target" not in out


def test_cape_without_print_outputs_receipt_line_only(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    with capture_output() as captured:
        run_cape(shell, "--input sealed", "result = 1\n")

    assert captured.stdout == f"receipt verified (function {cell_checksum('result = 1' + chr(10))[:12]})\n"
    assert captured.outputs == []


def test_cape_displays_training_curves(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    shell.user_ns["epochs"] = 30

    # Thirty epochs stop short of convergence, so the enclave's warning is expected here.
    with capture_output() as captured, pytest.warns(EnclaveWarning, match="did not converge in 30 epochs"):
        run_cape(shell, "--input sealed --param epochs", TRAINING_CELL)

    result = shell.user_ns["result"]
    assert result.history is not None
    assert result.history.epoch == list(range(1, 31))
    assert set(result.history.keys()) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(captured.outputs) == 1
    assert captured.outputs[0].data["image/png"].startswith(b"\x89PNG")
    assert [ax.get_title() for ax in result.plot().axes] == ["Loss", "Accuracy"]


def test_cape_cell_error_names_type_and_line(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    with pytest.raises(EnclaveError, match=r"ZeroDivisionError at line 2 of the cell \(line 3 counting the %%cape line\)") as caught:
        run_cape(shell, "--input sealed", "x = len(data)\ny = x / 0\nresult = y\n")

    assert caught.value.exception_type == "ZeroDivisionError"
    assert caught.value.line == 2


def test_cape_works_after_cell_error(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    outcome = shell.run_cell("%%cape --input sealed\nraise KeyError('a')\n")
    assert isinstance(outcome.error_in_exec, EnclaveError)

    run_cape(shell, "--input sealed", "result = len(data)\n")

    assert shell.user_ns["result"].value == 80


def test_cape_timeout_raises(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    with pytest.raises(EnclaveTimeoutError):
        run_cape(shell, "--input sealed --timeout 1", "while True:\n    pass\n")

    run_cape(shell, "--input sealed", "result = 2\n")
    assert shell.user_ns["result"].value == 2


def test_cape_status_prints_layers(
    shell: InteractiveShell, enclave_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("cape_status", "")

    out = capsys.readouterr().out
    assert "running: True" in out
    assert f"home: {enclave_home}" in out
    assert "layers:\n" in out


def test_cape_key_prints_fingerprint(
    shell: InteractiveShell, enclave_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("cape_key", "")

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == load_public_key(enclave_home).fingerprint
    assert lines[1] == "kem: MLKEM768_X25519"
    assert [line.split(":")[0] for line in lines[2:]] == ["PCR 0", "PCR 1", "PCR 2"]


def test_run_result_repr_shows_failed_receipt(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    run_cape(shell, "--input sealed", "result = 1\n")
    receipt = shell.user_ns["result"].receipt
    forged = dataclasses.replace(receipt, body={**receipt.body, "result_digest": "0" * 64})

    text = repr(RunResult(value=1, receipt=forged))

    assert "receipt: failed:" in text
    assert "receipt: verified" in repr(RunResult(value=1, receipt=receipt))


# %%cape --debug: the shared debug enclave


def test_cape_debug_shows_printed_text(
    shell: InteractiveShell, enclave_home: Path, frame: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.user_ns["df"] = frame
    shell.user_ns["debuggable"] = shell.run_line_magic("cape_seal", "df --allow-debug")
    capsys.readouterr()

    run_cape(shell, "--input debuggable --debug --out run", "print(data.columns[0])\nprint('done')\nresult = 1\n")

    out = capsys.readouterr().out
    run = shell.user_ns["run"]
    assert run.debug is True
    assert run.output == "a\ndone\n"
    assert "debug run receipt verified" in out
    assert "a\ndone\n" in out
    assert "withheld" not in out
    assert "receipt: verified (debug run)" in repr(run)


def test_cape_debug_enclave_kept_apart(shell: InteractiveShell, enclave_home: Path, frame: pd.DataFrame) -> None:
    from confidential_nb.client import default_enclave

    shell.user_ns["df"] = frame
    shell.user_ns["debuggable"] = shell.run_line_magic("cape_seal", "df --allow-debug")
    run_cape(shell, "--input debuggable --debug", "result = 1\n")
    debug_monitor = default_enclave(debug=True).status()["monitor_pid"]
    run_cape(shell, "--input debuggable --debug", "result = 2\n")

    assert default_enclave(debug=True).status()["monitor_pid"] == debug_monitor
    assert default_enclave().status()["monitor_pid"] != debug_monitor
    assert default_enclave(debug=True).status()["debug"] is True
    assert default_enclave().status()["debug"] is False


def test_cape_debug_without_allow_debug_raises(shell: InteractiveShell, sealed_in_shell: Sealed) -> None:
    with pytest.raises(PolicyError, match="input 'data'.*does not allow debug runs.*allow_debug=True"):
        run_cape(shell, "--input sealed --debug", "result = 1\n")


def test_close_default_enclaves_stops_both(shell: InteractiveShell, enclave_home: Path, frame: pd.DataFrame) -> None:
    from confidential_nb.client import close_default_enclaves, default_enclave

    shell.user_ns["df"] = frame
    shell.user_ns["debuggable"] = shell.run_line_magic("cape_seal", "df --allow-debug")
    run_cape(shell, "--input debuggable", "result = 1\n")
    run_cape(shell, "--input debuggable --debug", "result = 1\n")
    monitors = [default_enclave(debug=flag).status()["monitor_pid"] for flag in (False, True)]

    close_default_enclaves()

    assert all(wait_until_gone(pid) for pid in monitors)
    run_cape(shell, "--input debuggable --debug", "result = 3\n")
    assert shell.user_ns["result"].value == 3


def test_cape_start_starts_the_enclave_once(
    shell: InteractiveShell, enclave_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from confidential_nb.client import close_default_enclaves, default_enclave

    close_default_enclaves()
    shell.run_line_magic("cape_start", "")
    first = capsys.readouterr().out
    assert default_enclave().running
    assert re.fullmatch(r"enclave started in \d+\.\d\d s: key [0-9a-f]{16}, (\d+) of \1 sandbox layers active, "
                        r"up to \d+ runs at once\n", first), first

    shell.run_line_magic("cape_start", "")
    assert "enclave was already running" in capsys.readouterr().out


def test_cape_start_rejects_unknown_option(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="%cape_start"):
        shell.run_line_magic("cape_start", "--now")


def test_cape_background_binds_a_background_run(
    shell: InteractiveShell, enclave_home: Path, frame: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    from confidential_nb.background import BackgroundRun

    shell.user_ns["df"] = frame
    shell.user_ns["sealed"] = shell.run_line_magic("cape_seal", "df")
    run_cape(shell, "--input sealed --background --out job", "import time\ntime.sleep(1)\nresult = float(data['a'].sum())\n")

    assert "job.result() waits for the RunResult" in capsys.readouterr().out
    job = shell.user_ns["job"]
    assert isinstance(job, BackgroundRun)
    assert job.result(timeout=60).value == pytest.approx(float(frame["a"].sum()))


def test_cape_background_checks_the_line_before_starting(shell: InteractiveShell, sealed_frame: Sealed) -> None:
    shell.user_ns["sealed"] = sealed_frame
    with pytest.raises(UsageError, match="timeout"):
        run_cape(shell, "--input sealed --background --timeout never")
    assert "result" not in shell.user_ns
