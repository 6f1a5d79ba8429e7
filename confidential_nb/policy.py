"""The data owner's policy, carried in a sealed file's authenticated header."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from .errors import PolicyError

DEFAULT_MAX_RESULT_BYTES = 64 * 1024**2
DEFAULT_MAX_ITEMS = 100
DEFAULT_MAX_TEXT = 1_000
DEFAULT_RARE_K = 3

# Valid ranges of the egress guard's fields, inclusive.
MAX_ITEMS_RANGE = (1, 1_000_000_000)
MAX_TEXT_RANGE = (1, 1_000_000_000)
RARE_K_RANGE = (1, 1_000_000)

_CHECKSUM = re.compile(r"^[0-9a-f]{64}$")
_CORE_FIELDS = ("allowed_functions", "max_result_bytes", "allow_debug", "expires", "schema_public")
# Written only when they differ from these defaults, so a policy without them
# keeps the canonical form and receipt digest it had before they existed.
_EGRESS_DEFAULTS = {"max_items": DEFAULT_MAX_ITEMS, "max_text": DEFAULT_MAX_TEXT, "rare_k": DEFAULT_RARE_K}
_RANGES = {"max_items": MAX_ITEMS_RANGE, "max_text": MAX_TEXT_RANGE, "rare_k": RARE_K_RANGE}


@dataclass(frozen=True)
class Policy:
    """The data owner's rules for a sealed input: which code may run on it and what may come back.

    ``allowed_functions`` is a list of hex SHA-256 function checksums, or None
    for any code. ``max_result_bytes`` bounds the encoded result of a run.
    ``expires`` is an aware ISO 8601 time after which the enclave rejects the
    input. ``schema_public`` controls whether column names, dtypes and the row
    count are written in clear into the sealed header.

    The egress guard in the monitor reads the last three fields. A list,
    tuple, array, Series or DataFrame in the result may have fewer than
    ``max_items`` items (and fewer than the input's rows). A str or bytes
    value may have at most ``max_text`` characters or bytes. A result may
    contain fewer than ``rare_k`` distinct values that occur in fewer than
    ``rare_k`` rows of the input; ``rare_k=1`` turns that check off.
    """

    allowed_functions: tuple[str, ...] | None = None
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    allow_debug: bool = False
    expires: str | None = None
    schema_public: bool = True
    max_items: int = DEFAULT_MAX_ITEMS
    max_text: int = DEFAULT_MAX_TEXT
    rare_k: int = DEFAULT_RARE_K

    def __post_init__(self) -> None:
        if self.allowed_functions is not None:
            for checksum in self.allowed_functions:
                if not isinstance(checksum, str) or not _CHECKSUM.match(checksum):
                    raise PolicyError(f"invalid function checksum {checksum!r} in policy: expected 64 lowercase hex digits")
        if isinstance(self.max_result_bytes, bool) or not isinstance(self.max_result_bytes, int) or self.max_result_bytes <= 0:
            raise PolicyError(f"invalid max_result_bytes {self.max_result_bytes!r}: expected a positive integer")
        if self.expires is not None:
            _parse_time(self.expires)
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise PolicyError(f"invalid {name} {value!r}: expected an integer from {low:,} to {high:,}")

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as written in a sealed header: the egress fields only where they differ from the defaults."""
        data: dict[str, Any] = {
            "allowed_functions": list(self.allowed_functions) if self.allowed_functions is not None else None,
            "max_result_bytes": self.max_result_bytes,
            "allow_debug": self.allow_debug,
            "expires": self.expires,
            "schema_public": self.schema_public,
        }
        for name, default in _EGRESS_DEFAULTS.items():
            if getattr(self, name) != default:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: object) -> Policy:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise PolicyError(f"policy must be a dict, got {type(data).__name__}")
        known = (*_CORE_FIELDS, *_EGRESS_DEFAULTS)
        unknown = set(data) - set(known)
        if unknown:
            raise PolicyError(f"unknown policy fields {sorted(unknown)}; allowed: {', '.join(known)}")
        functions = data.get("allowed_functions")
        if functions is not None and not isinstance(functions, (list, tuple)):
            raise PolicyError("policy field allowed_functions must be a list of checksums or null")
        return cls(
            allowed_functions=tuple(functions) if functions is not None else None,
            max_result_bytes=data.get("max_result_bytes", DEFAULT_MAX_RESULT_BYTES),
            allow_debug=bool(data.get("allow_debug", False)),
            expires=data.get("expires"),
            schema_public=bool(data.get("schema_public", True)),
            max_items=data.get("max_items", DEFAULT_MAX_ITEMS),
            max_text=data.get("max_text", DEFAULT_MAX_TEXT),
            rare_k=data.get("rare_k", DEFAULT_RARE_K),
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
