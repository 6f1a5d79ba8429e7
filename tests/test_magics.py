"""Tests of the IPython magics through a real shell, and of the functions behind them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from confidential_nb.keys import ensure_keys, load_public_key
from confidential_nb.magics import (
    drop_variable,
    format_drop_report,
    format_status,
    key_fingerprint,
    register_magics,
)
from confidential_nb.sealing import Sealed, seal


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

    with pytest.raises(UsageError, match="variable 'numbers' holds a value of type list.*DataFrame or bytes"):
        shell.run_line_magic("cape_seal", "numbers")


def test_cape_seal_without_name_raises(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="required: name"):
        shell.run_line_magic("cape_seal", "")


def test_cape_seal_unknown_flag_raises(shell: InteractiveShell) -> None:
    shell.user_ns["df"] = pd.DataFrame({"x": [1]})

    with pytest.raises(UsageError, match="unrecognized arguments: --dorp"):
        shell.run_line_magic("cape_seal", "df --dorp")


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

    with pytest.raises(UsageError, match="--input 'df' holds a value of type DataFrame, not a Sealed input"):
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


def test_cape_help_states_defaults(shell: InteractiveShell) -> None:
    # The help is wrapped to the terminal width, so compare with single spaces.
    doc = " ".join(shell.find_cell_magic("cape").__doc__.split())

    assert "default 600, that is 10 minutes" in doc
    assert "default 4.0 GiB or 4x the size of the sealed inputs" in doc
    assert "%%cape --input sealed --as data" in doc


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
    assert "(variable 'alias', a list)" in message


def test_format_drop_report_without_references() -> None:
    assert format_drop_report("df", []).endswith("no other references to it remain.")


def test_format_status_nests_dicts() -> None:
    text = format_status({"running": True, "sandbox": {"network": "namespace", "layers": ["rlimits", "seccomp"]}})

    assert text.splitlines() == ["running: True", "sandbox:", "  network: namespace", "  layers: rlimits, seccomp"]


def test_key_fingerprint_of_public_key(tmp_path: Path) -> None:
    ensure_keys(tmp_path)
    public_key = load_public_key(tmp_path)

    assert key_fingerprint(public_key) == public_key.fingerprint
