"""Side-channel attacks: leak a value through an exception type name, a warning message or NaN payload bits.

The input's schema is private, so no free text may leave a run at all. A
float64 NaN has 51 spare payload bits and a sign bit, and the cells pack bytes
of the secret into them. The host must receive only the canonical quiet NaN.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from confidential_nb import Enclave, Sealed
from confidential_nb.errors import EnclaveError

from .support import assert_usable

# Bit patterns of the canonical quiet NaN (numpy.nan with its sign bit cleared).
CANONICAL_NAN_64 = 0x7FF8000000000000
CANONICAL_NAN_32 = 0x7FC00000

# Cell prelude: `payload(bits)` packs the first bytes of the secret into an integer of at most `bits` bits.
PAYLOAD = """
import numpy as np

def payload(bits):
    secret = data['name'][0].encode()
    return int.from_bytes(secret[: bits // 8], 'big') | 1
"""

NAN_CELLS = {
    "float64_array": PAYLOAD + "result = np.array([0xFFF8000000000000 | payload(48)], dtype=np.uint64).view(np.float64)",
    "float32_array": PAYLOAD + "result = np.array([0xFFC00000 | payload(16)], dtype=np.uint32).view(np.float32)",
    "float64_scalar": PAYLOAD + "result = np.array([0xFFF8000000000000 | payload(48)], dtype=np.uint64).view(np.float64)[0]",
    "python_float": PAYLOAD + "result = float(np.array([0xFFF8000000000000 | payload(48)], dtype=np.uint64).view(np.float64)[0])",
}


def _nan_bits(value: object) -> list[int]:
    """Return the raw bit patterns of every element of a float result."""
    if isinstance(value, float) and not isinstance(value, np.floating):
        return [struct.unpack("<Q", struct.pack("<d", value))[0]]
    array = np.asarray(value)
    unsigned = np.uint64 if array.dtype == np.float64 else np.uint32
    return [int(bits) for bits in array.reshape(-1).view(unsigned)]


def test_exception_class_named_like_value(enclave: Enclave, sealed_secret: Sealed, secret: str) -> None:
    with pytest.raises(EnclaveError) as caught:
        enclave.run("raise type(data['name'][0], (Exception,), {})()", inputs={"data": sealed_secret}, timeout=10)

    assert secret not in str(caught.value)
    assert secret not in str(caught.value.exception_type)
    assert_usable(enclave)


def test_exception_class_forged_builtin(enclave: Enclave, sealed_secret: Sealed, secret: str) -> None:
    source = "raise type(data['name'][0], (Exception,), {'__module__': 'builtins'})()"

    with pytest.raises(EnclaveError) as caught:
        enclave.run(source, inputs={"data": sealed_secret}, timeout=10)

    assert secret not in str(caught.value)
    assert secret not in str(caught.value.exception_type)
    assert_usable(enclave)


def test_warning_message_withheld(
    enclave: Enclave, sealed_secret: Sealed, secret: str, recwarn: pytest.WarningsRecorder
) -> None:
    source = "import warnings\nwarnings.warn(data['name'][0])\nresult = 1"

    run = enclave.run(source, inputs={"data": sealed_secret}, timeout=10)

    assert run.value == 1
    assert not any(secret in text for text in run.warnings)
    assert not any(secret in str(warning.message) for warning in recwarn)
    assert run.withheld_lines == 1


def test_library_warning_message_withheld(
    enclave: Enclave, sealed_secret: Sealed, secret: str, recwarn: pytest.WarningsRecorder
) -> None:
    # A library category passes the guard, but with a private schema its text must not.
    source = (
        "import warnings\n"
        "from confidential_nb.training import ConvergenceWarning\n"
        "warnings.warn(data['name'][0], ConvergenceWarning)\n"
        "result = 1\n"
    )

    run = enclave.run(source, inputs={"data": sealed_secret}, timeout=10)

    assert run.value == 1
    assert not any(secret in text for text in run.warnings)
    assert not any(secret in str(warning.message) for warning in recwarn)


@pytest.mark.parametrize("kind", sorted(NAN_CELLS))
def test_nan_payload_canonical(enclave: Enclave, sealed_secret: Sealed, kind: str) -> None:
    value = enclave.run(NAN_CELLS[kind], inputs={"data": sealed_secret}, timeout=10).value
    canonical = CANONICAL_NAN_32 if np.asarray(value).dtype == np.float32 else CANONICAL_NAN_64

    assert _nan_bits(value) == [canonical]
    assert_usable(enclave)

