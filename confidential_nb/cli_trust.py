"""Command-line subcommands for keys, attestation, receipts and pinned measurements."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_trust_commands(commands: Any) -> None:
    """Register ``key``, ``attest``, ``verify`` and ``measurements`` on the CLI's subparsers."""
    key = commands.add_parser(
        "key", help="show the enclave's attested public key; 'key rotate' and 'key list' manage keys",
        description="Start the enclave, verify a fresh attestation against the pins, and print the public sealing "
                    "key's fingerprint, the platform fingerprint and the measurements.",
        epilog="Example:\n"
               "  confidential-nb key --out enclave-key.json   # send the file and the fingerprint to a data owner\n"
               "  confidential-nb key rotate --kem MLKEM768_X25519",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    key.add_argument("action", nargs="?", choices=["show", "rotate", "list"], default="show",
                     help="show (default): print the current key and measurements; rotate: make a new sealing key; "
                          "list: print every key with its date")
    key.add_argument("--kem", choices=["MLKEM768_X25519", "X25519"], default="MLKEM768_X25519",
                     help="KEM of the new key for 'rotate' (default: the post-quantum hybrid MLKEM768_X25519)")
    key.add_argument("--out", type=Path, metavar="FILE",
                     help="also write the public key to FILE as the project's JSON key document, which "
                          "'confidential-nb encrypt --key' reads; a hybrid ML-KEM-768+X25519 key has no standard "
                          "PEM form, so no PEM is written")
    key.add_argument("--json", action="store_true", help="print JSON instead of text")
    key.set_defaults(handler=_key)

    attest = commands.add_parser("attest", help="request a fresh attestation document, verify it and print it",
                                 epilog="Example:\n  confidential-nb attest --out attestation.json",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    attest.add_argument("--out", type=Path, help="also write the document (JSON) to this path")
    attest.set_defaults(handler=_attest)

    verify = commands.add_parser("verify", help="verify a saved run receipt offline",
                                 epilog="Example:\n  confidential-nb verify receipt.json --platform-fingerprint 9b1d...",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("receipt", type=Path, help="receipt file written by RunResult.receipt.save()")
    verify.add_argument("--platform-fingerprint", metavar="HEX",
                        help="SHA-256 of the platform certificate to require (default: the one pinned in the key home)")
    verify.set_defaults(handler=_verify)

    measurements = commands.add_parser("measurements", help="export, import or reset the pinned enclave measurements",
                                       epilog="Example:\n  confidential-nb measurements export pins.json",
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    measurements.add_argument("action", choices=["show", "export", "import", "reset"],
                              help="show: print the pins; export FILE: write them; import FILE: pin a data owner's "
                                   "values; reset: pin again on the next enclave start")
    measurements.add_argument("file", nargs="?", type=Path, help="the file for export or import")
    measurements.set_defaults(handler=_measurements)


def _service_owner() -> int | None:
    """Return the uid of the configured service account, which owns the private key files, or None."""
    import os

    from .enclave.service import resolve_service_account
    from .keys import SERVICE_USER_VARIABLE

    value = os.environ.get(SERVICE_USER_VARIABLE)
    return resolve_service_account(value).uid if value else None


def _key(arguments: argparse.Namespace) -> int:
    from .client import Enclave
    from .keys import home_dir, list_keys, rotate_keys
    from .platform import certificate_fingerprint

    home = home_dir()
    if arguments.action == "rotate":
        public = rotate_keys(home, arguments.kem, owner=_service_owner())
        print(f"new current key: {public.fingerprint} ({public.kem})")
        print("older keys stay in the key home and keep opening data sealed to them")
        return 0
    if arguments.action == "list":
        for info in list_keys(home):
            print(f"{'*' if info.current else ' '} {info.fingerprint}  {info.kem:<16} created {info.created}")
        return 0

    # Starting the enclave verifies a fresh attestation (a new nonce) against the pinned platform and measurements.
    with Enclave(home) as enclave:
        key = enclave.public_key()
        document = enclave.attestation()
    pcrs = document.measurements
    platform = certificate_fingerprint(document.certificate)
    if arguments.out is not None:
        arguments.out.write_text(json.dumps(key.to_dict(), indent=2) + "\n")
    if arguments.json:
        print(json.dumps({"key": key.to_dict(), "platform_fingerprint": platform, "measurements": pcrs}, indent=2))
        return 0
    print(f"fingerprint: {key.fingerprint}")
    print(f"kem: {key.kem}")
    print(f"platform fingerprint: {platform}")
    for index, value in sorted(pcrs.items()):
        print(f"PCR {index}: {value}")
    return 0


def _attest(arguments: argparse.Namespace) -> int:
    import secrets

    from .attestation import load_pins
    from .client import Enclave
    from .errors import AttestationError
    from .keys import home_dir

    home = home_dir()
    nonce = secrets.token_hex(32)
    with Enclave(home) as enclave:
        document = enclave.attest(nonce)
    pins = load_pins(home)
    if pins is None:
        raise AttestationError(f"no pins in {home}; start an enclave once to pin the platform and measurements")
    document.verify(nonce=nonce, platform_fingerprint=pins.platform_fingerprint, expected=pins.measurements)
    text = json.dumps(document.to_dict(), indent=2, sort_keys=True)
    if arguments.out is not None:
        arguments.out.write_text(text + "\n")
    print(text)
    print("attestation verified: signature, nonce, freshness and measurements match the pins")
    return 0


def _verify(arguments: argparse.Namespace) -> int:
    from .attestation import Receipt, load_pins
    from .errors import AttestationError
    from .keys import home_dir

    receipt = Receipt.load(arguments.receipt)
    platform = arguments.platform_fingerprint
    if platform is None:
        pins = load_pins(home_dir())
        if pins is None:
            raise AttestationError("no pinned platform in the key home; pass --platform-fingerprint HEX")
        platform = pins.platform_fingerprint
    # A debug receipt is verified too, and the output states that it records a debug run.
    receipt.verify(platform_fingerprint=platform.lower(), allow_debug=True)
    print(f"receipt verified: run {receipt.run_id}, function {receipt.function_checksum}, "
          f"result {receipt.result_digest}, platform {platform.lower()[:16]}")
    if receipt.debug:
        print("DEBUG RUN: this receipt is from the debug enclave, which returned the run's printed output and "
              "exception messages; it ran only because every input's policy allowed debug runs")
    return 0


def _measurements(arguments: argparse.Namespace) -> int:
    from .attestation import Pins, load_pins, pins_from_json, save_pins
    from .errors import AttestationError
    from .keys import home_dir

    home = home_dir()
    pins = load_pins(home)
    if arguments.action in ("export", "import") and arguments.file is None:
        print(f"error: 'measurements {arguments.action}' needs a FILE argument")
        return 2

    if arguments.action == "import":
        try:
            imported = pins_from_json(arguments.file.read_text())
        except AttestationError as exc:
            raise AttestationError(f"invalid pin file {arguments.file}: {exc}; export one with 'confidential-nb measurements export FILE'") from None
        save_pins(home, imported)
        print(f"pinned the measurements and platform from {arguments.file}")
        return 0
    if pins is None:
        raise AttestationError(f"no pins in {home} yet; start an enclave once to pin them")
    if arguments.action == "reset":
        save_pins(home, Pins(pins.platform_fingerprint, None, None))
        print("the normal and debug enclave measurements will be pinned again on each one's next start; "
              "the platform pin is kept")
    elif arguments.action == "export":
        arguments.file.write_text(json.dumps(pins.to_dict(), indent=2, sort_keys=True) + "\n")
        print(f"wrote the pins to {arguments.file}")
    else:
        print(json.dumps(pins.to_dict(), indent=2, sort_keys=True))
    return 0
