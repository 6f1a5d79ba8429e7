"""Function identities: the checksum a data owner approves in a policy."""

from __future__ import annotations

import hashlib


def cell_checksum(source: str) -> str:
    """Return the hex SHA-256 of a cell's source with line endings normalised to ``\\n``.

    The same cell text gives the same checksum whether it was typed on
    Windows or Linux, so a data owner can approve it ahead of time.
    """
    normalised = source.replace("\r\n", "\n").replace("\r", "\n")
    return hashlib.sha256(b"confidential_nb cell v1\x00" + normalised.encode("utf-8")).hexdigest()
