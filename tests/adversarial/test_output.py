"""Output attacks: print the data outside debug mode.

Nothing may reach the notebook's standard streams (here, the test process's
file descriptors 1 and 2, captured by capfd), and the run reports how many
lines it withheld.
"""

from __future__ import annotations

import pandas as pd
import pytest

from confidential_nb import Enclave, Sealed

from .support import assert_usable


def test_print_frame_withheld(
    enclave: Enclave, sealed_secret: Sealed, secret: str, secret_frame: pd.DataFrame, capfd: pytest.CaptureFixture[str]
) -> None:
    run = enclave.run("print(data)\nresult = 1", inputs={"data": sealed_secret}, timeout=10)
    captured = capfd.readouterr()

    assert secret not in captured.out + captured.err
    assert run.withheld_lines == str(secret_frame).count("\n") + 1
    assert_usable(enclave)


def test_stderr_csv_withheld(
    enclave: Enclave, sealed_secret: Sealed, secret: str, secret_frame: pd.DataFrame, capfd: pytest.CaptureFixture[str]
) -> None:
    source = "import sys\nsys.stderr.write(data.to_csv())\nresult = 1"

    run = enclave.run(source, inputs={"data": sealed_secret}, timeout=10)
    captured = capfd.readouterr()

    assert secret not in captured.out + captured.err
    assert run.withheld_lines == secret_frame.to_csv().count("\n")
    assert_usable(enclave)


def test_descriptor_write_withheld(
    enclave: Enclave, sealed_secret: Sealed, secret: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # Writing to descriptors 1 and 2 bypasses sys.stdout and sys.stderr.
    source = "import os\ntext = data.to_csv().encode()\nos.write(1, text)\nos.write(2, text)\nresult = 1"

    enclave.run(source, inputs={"data": sealed_secret}, timeout=10)
    captured = capfd.readouterr()

    assert secret not in captured.out + captured.err
    assert_usable(enclave)


def test_original_stdout_withheld(
    enclave: Enclave, sealed_secret: Sealed, secret: str, capfd: pytest.CaptureFixture[str]
) -> None:
    source = "import sys\nsys.__stdout__.write(data.to_csv())\nsys.__stdout__.flush()\nresult = 1"

    enclave.run(source, inputs={"data": sealed_secret}, timeout=10)
    captured = capfd.readouterr()

    assert secret not in captured.out + captured.err
    assert_usable(enclave)
