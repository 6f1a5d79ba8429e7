"""Result attacks: code that runs on decode, a huge or deeply nested result, and the raw rows.

The raw-row attacks run on an input sealed with a 256-byte result budget,
which an aggregate fits, so the egress guard and not a broken input is what
stops them.
"""

from __future__ import annotations

import builtins
import time

import pandas as pd
import pytest

from confidential_nb import Enclave, Sealed
from confidential_nb.errors import EgressError, EncodingError

from .support import assert_usable, assert_usable_with

# Set on the host only if the host ran code chosen by the cell.
DECODE_MARKER = "confidential_nb_adversarial_decoded"


def test_reduce_object_not_run(enclave: Enclave) -> None:
    source = f"""
class Payload:
    def __reduce__(self):
        return (exec, ("import builtins; builtins.{DECODE_MARKER} = True",))

result = Payload()
"""

    with pytest.raises(EncodingError):
        enclave.run(source, timeout=10)

    assert not hasattr(builtins, DECODE_MARKER)
    assert_usable(enclave)


def test_lambda_result_refused(enclave: Enclave) -> None:
    source = f"result = lambda: exec('import builtins; builtins.{DECODE_MARKER} = True')"

    with pytest.raises(EncodingError):
        enclave.run(source, timeout=10)

    assert not hasattr(builtins, DECODE_MARKER)
    assert_usable(enclave)


def test_huge_result_refused(enclave: Enclave) -> None:
    # Without inputs the monitor still bounds a result at 1 GiB, and this one is a byte over.
    started = time.monotonic()

    with pytest.raises(EgressError):
        enclave.run("result = bytes(1024**3 + 1)", timeout=60)

    assert time.monotonic() - started < 30
    assert_usable(enclave)


def test_nested_result_refused(enclave: Enclave) -> None:
    source = "value = []\nfor _ in range(100_000):\n    value = [value]\nresult = value"

    with pytest.raises(EncodingError):
        enclave.run(source, timeout=10)

    assert_usable(enclave)


@pytest.mark.parametrize(
    "expression", ["data", "data.head()", "data['name']", "data.to_csv()"], ids=["frame", "head", "column", "csv"]
)
def test_raw_rows_withheld(
    enclave: Enclave, sealed_secret: Sealed, secret: str, secret_frame: pd.DataFrame, expression: str
) -> None:
    with pytest.raises(EgressError) as caught:
        enclave.run(f"result = {expression}", inputs={"data": sealed_secret}, timeout=10)

    assert secret not in str(caught.value)
    assert_usable_with(enclave, sealed_secret, float(secret_frame["x"].sum()))
