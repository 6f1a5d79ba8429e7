"""Find which of a result's values are rare values of a sealed DataFrame input.

A value is rare in an input when it occurs in at least one and fewer than
``k`` rows of one of its columns (or of its index). The monitor counts only
the result's own values (the candidates), and it reads the input straight
from the frame encoding of `confidential_nb.frame_codec`, one column at a
time in blocks of rows (short numeric columns several at a time, up to one
block), without building the DataFrame. So its extra memory is about one
block plus the candidates, whether the input is in memory or in a file in
the run's scratch directory.

Values are compared as they are stored:

- integers (Python int, numpy integers, and floats with an integral value)
  against the integer columns, exactly, without a detour through float;
- floats (and integers that a float64 represents exactly) against the
  float columns, exactly, so a mean or any other computed float rarely
  matches but a copied value always does. NaN and infinities never match;
- str values against str columns and str categories, byte for byte in UTF-8.

Integral values from 0 to the input's row count are never candidates,
because counts of rows, epochs and indices take those values. As a result
the check does not protect a column of sequential integer ids. bool,
complex, datetime and timedelta columns are not read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProtocolError
from ..frame_codec import _PREFIX, MAGIC, MAX_SCHEMA_BYTES, VERSION, _load_json

# Bytes of one column read at a time; it bounds the monitor's extra memory per block.
BLOCK_BYTES = 4 * 1024**2

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1
_FLOAT_DTYPES = frozenset({"float16", "float32", "float64", "Float32", "Float64"})
_SIGNED_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                            "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32"})
_UNSIGNED_64_DTYPES = frozenset({"uint64", "UInt64"})

Value = int | float | str


@dataclass
class Candidates:
    """The numbers and texts of a result, collected before they are looked up in the inputs."""

    integers: list[int] = field(default_factory=list)
    floats: list[float] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    texts: set[str] = field(default_factory=set)

    def add_number(self, value: object) -> None:
        """Add a Python or numpy int or float; other values are ignored."""
        if isinstance(value, (bool, np.bool_)):
            return
        if isinstance(value, (int, np.integer)):
            self.integers.append(int(value))
        elif isinstance(value, (float, np.floating)):
            self.floats.append(float(value))

    def add_array(self, array: np.ndarray) -> None:
        """Add the values of a numeric array; bool, complex and other arrays are ignored."""
        if array.dtype.kind in "iuf" and array.size:
            self.arrays.append(array.reshape(-1))

    def values(self) -> set[Value]:
        """Return the distinct candidate values, with 1 and 1.0 counted once as Python does."""
        collected: set[Value] = set(self.texts)
        collected.update(self.integers)
        collected.update(value for value in self.floats if np.isfinite(value))
        for array in self.arrays:
            unique = np.unique(array)
            if unique.dtype.kind == "f":
                unique = unique[np.isfinite(unique)]
            collected.update(unique.tolist())
        return collected


@dataclass
class _Lookup:
    """Candidate values of one input, sorted by comparison domain, and their counts in one column."""

    signed: np.ndarray
    unsigned: np.ndarray
    floats: np.ndarray
    texts: dict[bytes, int]
    text_lengths: np.ndarray
    text_values: list[str]

    @classmethod
    def build(cls, values: Iterable[Value], rows: int) -> _Lookup:
        signed: set[int] = set()
        unsigned: set[int] = set()
        floats: set[float] = set()
        texts: list[str] = []
        for value in values:
            if isinstance(value, str):
                texts.append(value)
            else:
                _sort_number(value, rows, signed, unsigned, floats)
        encoded = {text.encode("utf-8", "surrogatepass"): position for position, text in enumerate(texts)}
        lengths = np.unique(np.fromiter((len(raw) for raw in encoded), dtype=np.int64, count=len(encoded)))
        return cls(np.array(sorted(signed), dtype=np.int64), np.array(sorted(unsigned), dtype=np.uint64),
                   np.array(sorted(floats), dtype=np.float64), encoded, lengths, texts)

    def is_empty(self) -> bool:
        return not (self.signed.size or self.unsigned.size or self.floats.size or self.texts)


def _sort_number(value: int | float, rows: int, signed: set[int], unsigned: set[int], floats: set[float]) -> None:
    """File a number under each domain that can hold it exactly, unless it is an integral value in ``0 .. rows``."""
    if isinstance(value, float):
        if not np.isfinite(value):
            return
        if value.is_integer():
            if 0 <= value <= rows:
                return
            if _INT64_MIN <= value <= _INT64_MAX:
                signed.add(int(value))
        floats.add(value)
        return

    if 0 <= value <= rows:
        return
    if _INT64_MIN <= value <= _INT64_MAX:
        signed.add(value)
    if 0 <= value <= _UINT64_MAX:
        unsigned.add(value)
    if abs(value) <= 2**53 or (abs(value) < 2**1023 and float(value) == value):
        floats.add(float(value))


class _ColumnCounts:
    """Counts of the candidates in one column, kept per domain."""

    def __init__(self, lookup: _Lookup) -> None:
        self.lookup = lookup
        self.signed = np.zeros(lookup.signed.size, dtype=np.int64)
        self.unsigned = np.zeros(lookup.unsigned.size, dtype=np.int64)
        self.floats = np.zeros(lookup.floats.size, dtype=np.int64)
        self.texts = np.zeros(len(lookup.texts), dtype=np.int64)

    def add_numbers(self, block: np.ndarray, domain: str, weights: np.ndarray | None) -> None:
        sorted_candidates, counts = {"signed": (self.lookup.signed, self.signed),
                                     "unsigned": (self.lookup.unsigned, self.unsigned),
                                     "floats": (self.lookup.floats, self.floats)}[domain]
        if not sorted_candidates.size or not block.size:
            return
        hits = np.isin(block, sorted_candidates)
        positions = np.searchsorted(sorted_candidates, block[hits])
        np.add.at(counts, positions, 1 if weights is None else weights[hits])

    def add_text(self, raw: bytes, weight: int) -> None:
        position = self.lookup.texts.get(raw)
        if position is not None:
            self.texts[position] += weight

    def rare(self, k: int) -> set[Value]:
        """Return the candidates found in at least one and fewer than ``k`` rows."""
        found: set[Value] = set()
        for candidates, counts in ((self.lookup.signed, self.signed), (self.lookup.unsigned, self.unsigned),
                                   (self.lookup.floats, self.floats)):
            found.update(candidates[(counts >= 1) & (counts < k)].tolist())
        found.update(self.lookup.text_values[position] for position in np.flatnonzero((self.texts >= 1) & (self.texts < k)))
        return found


@dataclass
class RareMatches:
    """The result values that are rare in one input, and the first column (or the index) where one was found."""

    values: set[Value]
    first_column: str | int | None


class _Reader:
    """Random access to an encoded frame held in memory or in a file."""

    def __init__(self, read: Callable[[int, int], bytes | memoryview], size: int) -> None:
        self._read = read
        self.size = size

    def read(self, offset: int, length: int) -> bytes | memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ProtocolError("a buffer of the sealed frame lies outside the frame")
        data = self._read(offset, length)
        if len(data) != length:
            raise ProtocolError("the sealed frame's file is shorter than its schema declares")
        return data


def find_rare_values(frame: bytes | memoryview | Path, candidates: set[Value], k: int) -> RareMatches:
    """Return the candidates that occur in at least one and fewer than ``k`` rows of an encoded frame's columns or index.

    ``frame`` is the frame's encoding in memory, or the path of a file that
    contains it. Raises ProtocolError when the encoding is malformed.
    """
    if isinstance(frame, Path):
        descriptor = os.open(frame, os.O_RDONLY | os.O_CLOEXEC)
        try:
            reader = _Reader(lambda offset, length: _pread_exactly(descriptor, length, offset), os.fstat(descriptor).st_size)
            return _scan_frame(reader, candidates, k)
        finally:
            os.close(descriptor)
    view = memoryview(frame).cast("B")
    return _scan_frame(_Reader(lambda offset, length: view[offset:offset + length], len(view)), candidates, k)


def frame_rows(frame: bytes | memoryview | Path) -> int:
    """Return the row count of an encoded frame in memory or in a file, reading only its schema."""
    if isinstance(frame, Path):
        descriptor = os.open(frame, os.O_RDONLY | os.O_CLOEXEC)
        try:
            reader = _Reader(lambda offset, length: _pread_exactly(descriptor, length, offset), os.fstat(descriptor).st_size)
            schema, _ = _read_schema(reader)
        finally:
            os.close(descriptor)
    else:
        view = memoryview(frame).cast("B")
        schema, _ = _read_schema(_Reader(lambda offset, length: view[offset:offset + length], len(view)))
    return _int_field(schema, "rows")


def _pread_exactly(descriptor: int, length: int, offset: int) -> bytes:
    parts = []
    while length:
        part = os.pread(descriptor, length, offset)
        if not part:
            break
        parts.append(part)
        length -= len(part)
        offset += len(part)
    return b"".join(parts)


def _read_schema(reader: _Reader) -> tuple[dict[str, Any], int]:
    """Parse the frame's prefix and JSON schema; return the schema and the offset of the body."""
    magic, version, _reserved, schema_length = _PREFIX.unpack(bytes(reader.read(0, _PREFIX.size)))
    if magic != MAGIC or version != VERSION or schema_length > MAX_SCHEMA_BYTES:
        raise ProtocolError("the sealed input is not an encoded frame of a version this library reads")
    schema = dict(_load_json(bytes(reader.read(_PREFIX.size, schema_length))))
    body = _PREFIX.size + schema_length
    if _int_field(schema, "body_length") != reader.size - body:
        raise ProtocolError("the sealed frame's body length differs from its schema")
    return schema, body


def _scan_frame(reader: _Reader, candidates: set[Value], k: int) -> RareMatches:
    schema, body = _read_schema(reader)
    rows = _int_field(schema, "rows")
    lookup = _Lookup.build(candidates, rows)
    matches = RareMatches(set(), None)
    if lookup.is_empty():
        return matches

    arrays = list(_arrays(schema))
    batched = _rare_in_plain_columns(reader, body, arrays, rows, lookup, k)
    for position, (label, descriptor) in enumerate(arrays):
        found = batched.get(position)
        if found is None:
            counts = _ColumnCounts(lookup)
            _count_array(reader, body, descriptor, rows, counts, None)
            found = counts.rare(k)
        if found and not matches.values:
            matches.first_column = label
        matches.values |= found
    return matches


def _rare_in_plain_columns(reader: _Reader, body: int, arrays: list[tuple[str | int | None, dict[str, Any]]], rows: int,
                           lookup: _Lookup, k: int) -> dict[int, set[Value]]:
    """Count the candidates in the plain numeric columns several at a time; return each one's rare values by position.

    Columns of one comparison domain are converted and looked up together,
    as many as fit in one block, because a lookup per column of a small
    frame costs more in calls than in work. Columns with a mask, larger
    than a block, or of another kind are left out, for `_count_array`.
    """
    if not rows or rows * 8 > BLOCK_BYTES:
        return {}
    groups: dict[str, list[int]] = {}
    for position, (_, descriptor) in enumerate(arrays):
        domain = _plain_domain(descriptor)
        if domain is not None:
            groups.setdefault(domain, []).append(position)

    found: dict[int, set[Value]] = {}
    per_batch = BLOCK_BYTES // (rows * 8)
    for domain, positions in groups.items():
        for start in range(0, len(positions), per_batch):
            batch = positions[start:start + per_batch]
            found.update(zip(batch, _rare_in_batch(reader, body, [arrays[p][1] for p in batch], rows, lookup, domain, k)))
    return found


def _plain_domain(descriptor: dict[str, Any]) -> str | None:
    """Return the comparison domain of an unmasked numeric column, or None for any other array."""
    dtype = str(descriptor.get("dtype"))
    if descriptor.get("kind") != "numpy":
        return None
    if dtype in _FLOAT_DTYPES:
        return "floats"
    if dtype in _UNSIGNED_64_DTYPES:
        return "unsigned"
    if dtype in _SIGNED_DTYPES:
        return "signed"
    return None


def _rare_in_batch(reader: _Reader, body: int, descriptors: list[dict[str, Any]], rows: int, lookup: _Lookup,
                   domain: str, k: int) -> list[set[Value]]:
    """Return the rare candidates of each column in `descriptors`, which all compare in `domain`."""
    candidates = {"floats": lookup.floats, "unsigned": lookup.unsigned, "signed": lookup.signed}[domain]
    if not candidates.size:
        return [set() for _ in descriptors]
    target = {"floats": np.float64, "unsigned": np.uint64, "signed": np.int64}[domain]
    values = np.concatenate([
        _read_block(reader, body, descriptor, "data", np.dtype(str(descriptor["dtype"]).lower()).newbyteorder("<"),
                    0, rows).astype(target)
        for descriptor in descriptors
    ])

    # Each hit is keyed by its column and its candidate, so the counts take memory by hits, not columns x candidates.
    hits = np.flatnonzero(np.isin(values, candidates))
    keys = (hits // rows) * candidates.size + np.searchsorted(candidates, values[hits])
    found_keys, counts = np.unique(keys, return_counts=True)
    rare = found_keys[counts < k]
    found: list[set[Value]] = [set() for _ in descriptors]
    for column, position in zip((rare // candidates.size).tolist(), (rare % candidates.size).tolist()):
        found[column].add(candidates[position].item())
    return found


def _arrays(schema: dict[str, Any]) -> Iterator[tuple[str | int | None, dict[str, Any]]]:
    """Yield each column's name and descriptor, then the index's (named None) when it is an array."""
    columns = schema.get("columns")
    if not isinstance(columns, list):
        raise ProtocolError("the sealed frame's schema has no list of columns")
    for descriptor in columns:
        if not isinstance(descriptor, dict):
            raise ProtocolError("a column descriptor of the sealed frame is not an object")
        yield descriptor.get("name"), descriptor
    index = schema.get("index")
    if isinstance(index, dict) and index.get("kind") == "array" and isinstance(index.get("array"), dict):
        yield None, index["array"]


def _count_array(reader: _Reader, body: int, descriptor: dict[str, Any], length: int,
                 counts: _ColumnCounts, weights: np.ndarray | None) -> None:
    """Count the candidates in one array, each row counting once or by its weight (for categories)."""
    kind = descriptor.get("kind")
    dtype = str(descriptor.get("dtype"))
    if kind in ("numpy", "masked") and dtype in _SIGNED_DTYPES | _UNSIGNED_64_DTYPES | _FLOAT_DTYPES:
        domain = "signed"
        if dtype in _FLOAT_DTYPES:
            domain = "floats"
        elif dtype in _UNSIGNED_64_DTYPES:
            domain = "unsigned"
        wire = np.dtype(dtype.lower()).newbyteorder("<")
        for start, stop in _blocks(length, wire.itemsize):
            block = _read_block(reader, body, descriptor, "data", wire, start, stop)
            keep = _present(reader, body, descriptor, start, stop) if kind == "masked" else None
            _add_numbers(counts, block, domain, keep, None if weights is None else weights[start:stop])
    elif kind == "string":
        _count_strings(reader, body, descriptor, length, counts, weights)
    elif kind == "category" and weights is None:
        _count_category(reader, body, descriptor, length, counts)


def _add_numbers(counts: _ColumnCounts, block: np.ndarray, domain: str, keep: np.ndarray | None,
                 weights: np.ndarray | None) -> None:
    target = {"floats": np.float64, "unsigned": np.uint64, "signed": np.int64}[domain]
    values = block.astype(target)
    if keep is not None:
        values = values[keep]
        weights = None if weights is None else weights[keep]
    counts.add_numbers(values, domain, weights)


def _count_strings(reader: _Reader, body: int, descriptor: dict[str, Any], length: int,
                   counts: _ColumnCounts, weights: np.ndarray | None) -> None:
    lookup = counts.lookup
    if not lookup.texts:
        return
    offset_dtype, mask_dtype = np.dtype("<i8"), np.dtype("u1")
    data_offset, data_length = _span(descriptor, "data")
    # A block is sized at 64 bytes a row, because the list of offsets takes about 36 bytes a row as Python ints.
    # A block of long texts reads more.
    for start, stop in _blocks(length, 64):
        offsets = _read_block(reader, body, descriptor, "offsets", offset_dtype, start, stop + 1).astype(np.int64)
        missing = _read_block(reader, body, descriptor, "mask", mask_dtype, start, stop)
        if offsets[0] < 0 or offsets[-1] > data_length or np.any(np.diff(offsets) < 0):
            raise ProtocolError("the string offsets of the sealed frame are out of order")
        selected = np.flatnonzero((missing == 0) & np.isin(np.diff(offsets), lookup.text_lengths))
        if not selected.size:
            continue

        data = bytes(reader.read(body + data_offset + int(offsets[0]), int(offsets[-1] - offsets[0])))
        relative = (offsets - offsets[0]).tolist()
        for position in selected.tolist():
            weight = 1 if weights is None else int(weights[start + position])
            counts.add_text(data[relative[position]:relative[position + 1]], weight)


def _count_category(reader: _Reader, body: int, descriptor: dict[str, Any], length: int, counts: _ColumnCounts) -> None:
    """Count each category's rows from the codes, then count the candidates among the categories with those weights."""
    categories = descriptor.get("categories")
    codes_dtype = str(descriptor.get("codes_dtype"))
    if not isinstance(categories, dict) or codes_dtype not in ("int8", "int16", "int32", "int64"):
        raise ProtocolError("a category column of the sealed frame has no categories or codes")
    category_count = _int_field(categories, "length")

    rows_per_category = np.zeros(category_count, dtype=np.int64)
    wire = np.dtype(codes_dtype).newbyteorder("<")
    for start, stop in _blocks(length, wire.itemsize):
        codes = _read_block(reader, body, descriptor, "codes", wire, start, stop).astype(np.int64)
        codes = codes[codes >= 0]
        if codes.size and codes.max() >= category_count:
            raise ProtocolError("a category code of the sealed frame is out of range")
        rows_per_category += np.bincount(codes, minlength=category_count)
    _count_array(reader, body, categories, category_count, counts, rows_per_category)


def _present(reader: _Reader, body: int, descriptor: dict[str, Any], start: int, stop: int) -> np.ndarray:
    return _read_block(reader, body, descriptor, "mask", np.dtype("u1"), start, stop) == 0


def _blocks(length: int, item_bytes: int) -> Iterator[tuple[int, int]]:
    step = max(1, BLOCK_BYTES // max(1, item_bytes))
    for start in range(0, length, step):
        yield start, min(length, start + step)


def _span(descriptor: dict[str, Any], role: str) -> tuple[int, int]:
    buffers = descriptor.get("buffers")
    span = buffers.get(role) if isinstance(buffers, dict) else None
    if not isinstance(span, list) or len(span) != 2 or any(type(n) is not int or n < 0 for n in span):
        raise ProtocolError(f"an array of the sealed frame has no valid {role} buffer")
    return span[0], span[1]


def _read_block(reader: _Reader, body: int, descriptor: dict[str, Any], role: str, dtype: np.dtype[Any],
                start: int, stop: int) -> np.ndarray:
    """Read items ``start .. stop`` of one buffer of an array descriptor."""
    offset, length = _span(descriptor, role)
    if stop * dtype.itemsize > length:
        raise ProtocolError(f"the {role} buffer of a sealed frame's array is shorter than its length")
    raw = reader.read(body + offset + start * dtype.itemsize, (stop - start) * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype)


def _int_field(mapping: dict[str, Any], key: str) -> int:
    value = mapping.get(key)
    if type(value) is not int or value < 0:
        raise ProtocolError(f"the sealed frame's schema has no valid {key!r}")
    return value
