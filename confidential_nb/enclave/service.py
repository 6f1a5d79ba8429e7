"""Service-account mode: the monitor gives up root for its own account once the sandbox is up.

Started as root, the monitor loads the keys, hands the private key files to
the service account (mode 0600), starts the sandbox, which needs root, and
then switches to that account for good. From then on neither the notebook's
account, unless it is root, nor the runners' account can read the private
keys, and the monitor is not dumpable, so neither can read its memory.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pwd
from dataclasses import dataclass

from ..errors import KeyHomeError
from ..keys import SERVICE_USER_VARIABLE

_PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class ServiceAccount:
    """The account the monitor runs as in service-account mode."""

    uid: int
    gid: int
    name: str


def resolve_service_account(value: str) -> ServiceAccount:
    """Return the account named by a user name or a numeric uid; raise `KeyHomeError` when it is unusable."""
    entry = _password_entry(value)
    if entry is not None:
        account = ServiceAccount(entry.pw_uid, entry.pw_gid, entry.pw_name)
    elif value.isdigit():
        uid = int(value)
        account = ServiceAccount(uid, uid, f"uid {uid}")
    else:
        raise KeyHomeError(f"service account {value!r} in {SERVICE_USER_VARIABLE} is not a user on this machine; "
                           "create it (for example: useradd --system confidential-nb) or give a numeric uid")
    if account.uid == 0:
        raise KeyHomeError(f"service account {value!r} in {SERVICE_USER_VARIABLE} is root, which would keep every "
                           "privilege; name an unprivileged account")
    if os.geteuid() != 0:
        raise KeyHomeError(f"service-account mode ({SERVICE_USER_VARIABLE}={value}) needs the enclave to start as root, "
                           f"so that it can switch accounts, but it runs as uid {os.geteuid()}; unset the variable")
    return account


def _password_entry(value: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
    except KeyError:
        return None


# Modules the monitor imports lazily while it serves requests; see `preload_monitor_modules`.
# NOTE: a lazily imported module missing here fails after the switch where the account cannot read the
# interpreter; tests/test_service_account.py runs inputs, exceptions, warnings and the result guard to catch that.
_MONITOR_MODULES = (
    "importlib.metadata", "numpy", "numpy.exceptions", "numpy.linalg", "pandas", "pandas.errors",
    "cryptography.exceptions", "cryptography.hazmat.primitives.hpke", "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.asymmetric.ed25519", "confidential_nb.platform", "confidential_nb.frame_codec",
    "confidential_nb.result_codec", "confidential_nb.library_warnings", "confidential_nb.errors",
    "confidential_nb.training.exceptions", "confidential_nb.enclave.result_guard", "confidential_nb.enclave.rare_values",
)


def preload_monitor_modules() -> None:
    """Import every module the monitor loads lazily, and compute the cached measurements, while still root.

    The service account may not be able to read the interpreter's files at
    all (pyenv under /root, mode 0700), so the monitor must not import or
    read package files after the switch.
    """
    from ..attestation import dependency_measurement, runtime_measurement

    for name in _MONITOR_MODULES:
        importlib.import_module(name)
    runtime_measurement()
    dependency_measurement()


def become_service_account(account: ServiceAccount, runner_gid: int) -> None:
    """Switch this process to `account` for good, keeping the runners' group to hand scratch files over.

    The kernel clears every capability with the switch from root. The
    process is made non-dumpable again afterwards, because the switch
    resets that flag.
    """
    os.setgroups([runner_gid])
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
