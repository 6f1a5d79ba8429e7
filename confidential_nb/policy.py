"""The data owner's policy, carried in a sealed file's authenticated header."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from .errors import PolicyError

DEFAULT_MAX_RESULT_BYTES = 64 * 1024**2
_CHECKSUM = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Policy:
    """The data owner's rules for a sealed input: which code may run on it and what may come back.

    ``allowed_functions`` is a list of hex SHA-256 function checksums, or None
    for any code. ``max_result_bytes`` bounds the encoded result of a run.
    ``expires`` is an aware ISO 8601 time after which the enclave rejects the
    input. ``schema_public`` controls whether column names, dtypes and the row
    count are written in clear into the sealed header.
    """

    allowed_functions: tuple[str, ...] | None = None
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    allow_debug: bool = False
    expires: str | None = None
    schema_public: bool = True

    def __post_init__(self) -> None:
        if self.allowed_functions is not None:
            for checksum in self.allowed_functions:
                if not isinstance(checksum, str) or not _CHECKSUM.match(checksum):
                    raise PolicyError(f"invalid function checksum {checksum!r} in policy: expected 64 lowercase hex digits")
        if isinstance(self.max_result_bytes, bool) or not isinstance(self.max_result_bytes, int) or self.max_result_bytes <= 0:
            raise PolicyError(f"invalid max_result_bytes {self.max_result_bytes!r}: expected a positive integer")
        if self.expires is not None:
            _parse_time(self.expires)

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed_functions": list(self.allowed_functions) if self.allowed_functions is not None else None,
            "max_result_bytes": self.max_result_bytes,
            "allow_debug": self.allow_debug,
            "expires": self.expires,
            "schema_public": self.schema_public,
        }

    @classmethod
    def from_dict(cls, data: object) -> Policy:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise PolicyError(f"policy must be a dict, got {type(data).__name__}")
        unknown = set(data) - {"allowed_functions", "max_result_bytes", "allow_debug", "expires", "schema_public"}
        if unknown:
            raise PolicyError(f"unknown policy fields {sorted(unknown)}; allowed: allowed_functions, max_result_bytes, allow_debug, expires, schema_public")
        functions = data.get("allowed_functions")
        if functions is not None and not isinstance(functions, (list, tuple)):
            raise PolicyError("policy field allowed_functions must be a list of checksums or null")
        return cls(
            allowed_functions=tuple(functions) if functions is not None else None,
            max_result_bytes=data.get("max_result_bytes", DEFAULT_MAX_RESULT_BYTES),
            allow_debug=bool(data.get("allow_debug", False)),
            expires=data.get("expires"),
            schema_public=bool(data.get("schema_public", True)),
        )

    def check_run(self, function_checksum: str, *, debug: bool, now: dt.datetime | None = None) -> None:
        """Raise `PolicyError` unless this policy allows the run."""
        if self.expires is not None and (now or dt.datetime.now(dt.timezone.utc)) >= _parse_time(self.expires):
            raise PolicyError(f"the sealed input expired at {self.expires}; ask the data owner to seal it again")
        if debug and not self.allow_debug:
            raise PolicyError("the sealed input's policy does not allow debug runs; run without --debug in the normal "
                              "enclave, or ask the data owner to seal it again with allow_debug=True")
        if self.allowed_functions is not None and function_checksum not in self.allowed_functions:
            raise PolicyError(
                f"function checksum {function_checksum} is not in the sealed input's allowed functions; "
                "ask the data owner to approve this code"
            )


def _parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"invalid expiry time {text!r}: use ISO 8601 with a UTC offset, such as 2027-01-31T00:00:00+00:00") from exc
    if moment.tzinfo is None:
        raise PolicyError(f"invalid expiry time {text!r}: add a UTC offset, such as +00:00")
    return moment
