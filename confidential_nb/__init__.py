"""Train models in Jupyter on data you may not see: seal, run in an enclave, get results.

Heavy modules load on first use, so ``%load_ext confidential_nb`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from .errors import ConfidentialNBError

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from .client import Enclave, default_enclave
    from .csv_import import read_csv
    from .policy import Policy
    from .results import RunResult
    from .sdk import Client
    from .sealing import Sealed, seal

__version__ = "0.1.0"
__all__ = ["Client", "ConfidentialNBError", "Enclave", "Policy", "RunResult", "Sealed", "compare", "default_enclave", "read_csv", "seal", "load_ipython_extension"]

logging.getLogger("confidential_nb").addHandler(logging.NullHandler())

if not sys.platform.startswith("linux"):
    logging.getLogger("confidential_nb").warning(
        "confidential_nb supports Linux only: the enclave sandbox needs Linux namespaces and resource limits"
    )

_LAZY = {
    "Client": "sdk",
    "Enclave": "client",
    "default_enclave": "client",
    "Policy": "policy",
    "RunResult": "results",
    "Sealed": "sealing",
    "compare": "comparison",
    "read_csv": "csv_import",
    "seal": "sealing",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'confidential_nb' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module_name}", __name__), name)


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register the ``%cape_seal``, ``%%cape``, ``%cape_status`` and ``%cape_key`` magics."""
    from .magics import register_magics

    register_magics(ipython)
