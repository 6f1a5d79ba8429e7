"""Opening a run's sealed inputs in the monitor: authenticate, decrypt, check the policy.

An input arrives either as bytes in the request or, for a file-backed
`Sealed`, as the path of its file on this machine. A file is decrypted one
chunk at a time into the run's private scratch directory, so the monitor's
memory does not grow with its size. The runner then reads the plaintext from
there, and the directory is removed after the run.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import PolicyError, SealError, WrongKeyError
from ..keys import EnclaveKeys
from ..policy import Policy
from ..sealing import Header, input_digest, parse_header, read_header, unseal_bytes, unseal_file

log = logging.getLogger("confidential_nb.enclave")


@dataclass
class OpenedInput:
    """One authenticated input: its plaintext in memory, or the name of its plaintext file in the scratch directory."""

    name: str
    kind: str
    policy: Policy
    digest: str
    plaintext_length: int
    payload: bytes | None = None
    file: str | None = None


class InputRejected(Exception):
    """An input failed to open; `kind` and `message` form the reply to the host."""

    def __init__(self, kind: str, message: str, name: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name


def open_inputs(keys: EnclaveKeys, specs: list[dict[str, Any]], attachments: list[bytes], checksum: str,
                debug: bool, scratch: Path) -> list[OpenedInput]:
    """Open every input in order, or raise `InputRejected` for the first that fails."""
    opened = []
    in_memory = iter(attachments)
    for index, spec in enumerate(specs):
        name = str(spec["name"])
        try:
            if "path" in spec:
                item = _open_file(keys, name, Path(str(spec["path"])), scratch / f"input-{index}")
            else:
                item = _open_bytes(keys, name, next(in_memory))
            item.policy.check_run(checksum, debug=debug)
        except WrongKeyError as exc:
            raise InputRejected("wrong_key", f"input {name!r}: {exc}", name) from None
        except SealError as exc:
            log.warning("input %r failed to unseal", name)
            raise InputRejected("seal", f"input {name!r}: {exc}", name) from None
        except PolicyError as exc:
            raise InputRejected("policy", f"input {name!r}: {exc}", name) from None
        except PermissionError:
            # A service-account monitor reads sealed files as that account, not as the notebook's user.
            raise InputRejected("seal", f"input {name!r}: cannot read its file: permission denied for the enclave's "
                                        f"uid {os.geteuid()}; make the sealed file and its directories readable "
                                        "by that uid", name) from None
        except OSError as exc:
            raise InputRejected("seal", f"input {name!r}: cannot read its file ({exc.strerror})", name) from None
        opened.append(item)
    return opened


def _key_pair(keys: EnclaveKeys, recipient: str) -> tuple[Any, Any]:
    pair = keys.for_recipient(recipient)
    if pair is None:
        raise WrongKeyError(f"the input was sealed to key {recipient[:16]}, which this enclave does not hold "
                            f"(its current key is {keys.public.fingerprint[:16]}); seal the data again with this enclave's key")
    return pair


def _open_bytes(keys: EnclaveKeys, name: str, blob: bytes) -> OpenedInput:
    public, private = _key_pair(keys, parse_header(blob).recipient)
    header, payload = unseal_bytes(blob, private, public)
    return OpenedInput(name, header.content_type, _policy(header), input_digest(blob), len(payload), payload=payload)


def _open_file(keys: EnclaveKeys, name: str, path: Path, target: Path) -> OpenedInput:
    # One open file for the decryption and the digest, so a file renamed over the path midway changes neither.
    with _open_regular_file(path) as reader:
        public, private = _key_pair(keys, read_header(reader).recipient)
        # Decrypting first authenticates the header's lengths before the digest trusts them.
        header = unseal_file(f"/proc/self/fd/{reader.fileno()}", target, private, public)
        reader.seek(0)
        digest = input_digest(reader)
    os.chmod(target, 0o600)
    return OpenedInput(name, header.content_type, _policy(header), digest, header.plaintext_length, file=target.name)


def _open_regular_file(path: Path) -> BinaryIO:
    """Open `path` for reading only if it is a regular file, without blocking on a FIFO or device."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise SealError(f"{path} is not a regular file; pass the sealed file itself")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _policy(header: Header) -> Policy:
    return Policy.from_dict(header.metadata.get("policy"))
