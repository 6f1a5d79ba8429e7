"""Entry point of the monitor process: ``python -I -m confidential_nb.enclave``.

``--init-keys`` creates the key home if needed and exits (the one-shot
enclave that `seal` starts on first use). ``--fd N`` serves the host on
the inherited socket N until the host closes it. ``--debug`` makes it a
debug enclave.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import sys
import threading
from pathlib import Path

from ..errors import ConfidentialNBError
from ..keys import ensure_keys
from ..limits import raise_open_file_limit
from ..protocol import send_message
from .service import become_service_account, preload_monitor_modules, resolve_service_account


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confidential_nb.enclave")
    parser.add_argument("--home", type=Path, required=True, help="key home directory")
    parser.add_argument("--fd", type=int, help="inherited socket to serve the host on")
    parser.add_argument("--host-pid", type=int, help="process whose end ends this enclave (default: the parent)")
    parser.add_argument("--no-audit-hook", action="store_true", help="run cells without the runtime audit hook")
    parser.add_argument("--service-user", help="user name or uid to run the monitor as after it loads the keys "
                                               "(service-account mode; the enclave must start as root)")
    parser.add_argument("--init-keys", action="store_true", help="create the keys if missing, then exit")
    parser.add_argument("--debug", action="store_true",
                        help="serve debug runs only, which return printed output and exception messages; "
                             "attestation documents then carry debug=true and their own sandbox measurement")
    parser.add_argument("--input-cache-bytes", type=int, default=None,
                        help="bound in bytes of the cache of opened inputs (default: a quarter of physical memory, "
                             "at most 4 GiB; 0 turns caching off)")
    arguments = parser.parse_args(argv)

    home: Path = arguments.home
    channel = socket.socket(fileno=arguments.fd) if arguments.fd is not None else None
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _configure_logging(home)
        account = resolve_service_account(arguments.service_user) if arguments.service_user else None
        keys = ensure_keys(home, owner=account.uid if account else None)
    except (ConfidentialNBError, OSError) as exc:
        # The host shows this message; it names a file and a fix, never key material.
        message = str(exc) if isinstance(exc, ConfidentialNBError) else f"cannot use the key home {home}: {exc}"
        if channel is not None:
            send_message(channel, {"ok": False, "kind": "key_home", "message": message})
        else:
            sys.stderr.write(message + "\n")
        return 2
    if arguments.init_keys or channel is None:
        return 0
    send_message(channel, {"ok": True})
    raise_open_file_limit()

    # The kernel's interrupt reaches its process group, not ours; a dying host ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    watch_host(arguments.host_pid if arguments.host_pid is not None else os.getppid())

    from .monitor import Monitor

    monitor = Monitor(keys, home, channel, debug=arguments.debug, audit_hook=not arguments.no_audit_hook,
                      service_account=account, input_cache_bytes=arguments.input_cache_bytes)
    try:
        if account is not None:
            preload_monitor_modules()
            become_service_account(account, monitor.runner_gid)
            logging.getLogger("confidential_nb.enclave").info("monitor now runs as the service account %s", account.name)
        monitor.serve()
    finally:
        # A SIGTERM that arrives while closing must not cut the cleanup of the sandbox short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        monitor.close()
    return 0


def watch_host(pid: int) -> None:
    """End this enclave, through its SIGTERM handler, when process `pid` ends, however it ends.

    A parent-death signal would not do: the kernel sends it when the host
    thread that started the enclave ends, and a notebook may start the
    enclave from a worker thread. A pidfd refers to the process, and it
    stays usable after a switch to the service account.
    """
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def wait() -> None:
        select.select([descriptor], [], [])
        logging.getLogger("confidential_nb.enclave").info("host process %d ended; shutting down", pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="confidential_nb-host-watch", daemon=True).start()


def _configure_logging(home: Path) -> None:
    handler = logging.FileHandler(home / "enclave.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("confidential_nb")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
