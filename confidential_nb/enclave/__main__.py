"""Entry point of the monitor process: ``python -I -m confidential_nb.enclave``.

``--init-keys`` creates the key home if needed and exits (the one-shot
enclave that `seal` starts on first use). ``--fd N`` serves the host on
the inherited socket N until the host closes it.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import socket
import sys
from pathlib import Path

from ..keys import ensure_keys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confidential_nb.enclave")
    parser.add_argument("--home", type=Path, required=True, help="key home directory")
    parser.add_argument("--fd", type=int, help="inherited socket to serve the host on")
    parser.add_argument("--init-keys", action="store_true", help="create the keys if missing, then exit")
    arguments = parser.parse_args(argv)

    home: Path = arguments.home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _configure_logging(home)
    keys = ensure_keys(home)
    if arguments.init_keys or arguments.fd is None:
        return 0

    # The kernel's interrupt reaches its process group, not ours; a dying host ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    from .monitor import Monitor

    monitor = Monitor(keys, home, socket.socket(fileno=arguments.fd))
    try:
        monitor.serve()
    finally:
        monitor.close()
    return 0


def _configure_logging(home: Path) -> None:
    handler = logging.FileHandler(home / "enclave.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("confidential_nb")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
