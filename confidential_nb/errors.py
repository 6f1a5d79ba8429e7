"""Exceptions raised by confidential_nb, all under one base class."""

from __future__ import annotations


class ConfidentialNBError(Exception):
    """Base class of every error this package raises on purpose."""


class SealError(ConfidentialNBError):
    """A sealed blob failed authentication or has an invalid format."""


class WrongKeyError(SealError):
    """A sealed blob was sealed to a different enclave key than the one at hand."""


class AttestationError(ConfidentialNBError):
    """An attestation document or a run receipt failed verification."""


class EnclaveError(ConfidentialNBError):
    """Code running inside the enclave raised an exception, or the enclave failed.

    ``exception_type`` is the name of the exception class when the cell raised
    one, and ``line`` is its line number within the cell source (1-based), or
    ``None`` when unknown.
    """

    def __init__(self, message: str, *, exception_type: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.line = line


class EnclaveTimeoutError(EnclaveError):
    """A run exceeded its wall-clock timeout and was stopped."""


class RunCancelledError(EnclaveError):
    """A run was cancelled (`BackgroundRun.cancel`, or `Enclave.run`'s cancel event) and stopped."""


class EnclaveResourceError(EnclaveError):
    """A run exceeded a resource limit (memory, CPU time, file size, open files)."""


class PolicyError(ConfidentialNBError):
    """A sealed input's policy does not allow the requested run."""


class EgressError(ConfidentialNBError):
    """A run's result was withheld because it may not leave the enclave."""


class EncodingError(ConfidentialNBError, TypeError):
    """A value cannot be encoded in the result format (no pickle is used)."""


class ProtocolError(ConfidentialNBError):
    """A message between host and enclave processes was malformed or too large."""


class EnclaveWarning(UserWarning):
    """A library warning raised inside the enclave (such as a ConvergenceWarning), shown on the host."""


class KeyHomeError(ConfidentialNBError):
    """The key home is damaged, incomplete or has unsafe permissions."""


class CsvImportError(ConfidentialNBError, ValueError):
    """A CSV file cannot be read, or its data cannot be sealed."""


class BundleError(ConfidentialNBError):
    """A function bundle or a deployed function is invalid, too large, missing or damaged."""


class InputHandleError(EnclaveError):
    """A run named a cached input by a handle the enclave does not hold (evicted, released or from another enclave).

    `Enclave.run` and `Enclave.invoke` handle it by sending the sealed inputs again, once.
    """
