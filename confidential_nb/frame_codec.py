"""Encode pandas DataFrames to bytes and back without pickle.

A format of our own, rather than Arrow IPC, keeps pyarrow out of the
dependencies and keeps details an Arrow round trip loses, such as whether a
missing value in an object column was None or NaN.

Layout of an encoded frame (all integers little-endian)::

    offset  size  field
    0       4     magic b"CNBF"
    4       2     format version (1)
    6       2     reserved, zero
    8       4     length J of the JSON schema in bytes
    12      J     JSON schema, UTF-8
    12+J    B     body: the raw buffers, each starting on an 8-byte boundary

The JSON schema is an object with these keys:

- ``rows``: the number of rows.
- ``body_length``: B, so a truncated or padded blob is detected.
- ``columns``: one descriptor per column, in order (see below), each with a
  ``name`` (str or int).
- ``column_labels``: ``{"kind": "range", "start", "stop", "step", "name"}`` for
  a RangeIndex of column labels, else ``{"kind": "labels", "dtype", "name"}``
  where ``dtype`` is the dtype of the column Index.
- ``index``: ``{"kind": "range", "start", "stop", "step", "name"}`` or
  ``{"kind": "array", "name", "array": descriptor}``.

An array descriptor has ``kind``, ``length`` and ``buffers`` (a mapping of
buffer role to ``[offset, length]`` within the body) plus fields per kind:

- ``numpy``: ``dtype`` (bool, int8..int64, uint8..uint64, float16..float64,
  complex64, complex128); buffer ``data`` contains the values.
- ``datetime``: ``unit`` (s, ms, us, ns), ``tz`` (a zone name or null) and
  ``tz_offset_seconds`` (a fixed UTC offset or null); buffer ``data`` contains
  int64 ticks since the epoch, NaT as the minimum int64.
- ``timedelta``: ``unit``; buffer ``data`` contains int64 ticks.
- ``masked``: ``dtype`` (Int8..Int64, UInt8..UInt64, Float32, Float64,
  boolean); buffers ``data`` (values, zero where missing) and ``mask``
  (one byte per row, 1 where missing).
- ``string``: ``dtype`` is object, str (a string dtype whose missing value
  is NaN) or string (one whose missing value is pd.NA), and ``storage`` is
  python, pyarrow, or null for object. Decoding pyarrow storage needs
  pyarrow. The buffers are ``offsets`` (int64, length + 1 byte
  offsets into ``data``), ``data`` (UTF-8, lone surrogates kept with
  ``surrogatepass``) and ``mask`` (one byte per row: 0 for a str, 1 for None,
  2 for NaN, 3 for pd.NA).
- ``category``: ``ordered``, ``codes_dtype`` and ``categories`` (a nested
  descriptor of any non-category kind); buffer ``codes``, -1 where missing.

Supported pandas versions: 2.2 and later. The tests pass on pandas 2.2.3
and 3.1.1, both with numpy 2.4.6 and pyarrow 26.0.1. pandas 2.3 and 3.0 are
untested. pandas 2.2 cannot decode a str column with python storage, which
needs pandas 2.3 or later, and pandas 3.1 uses pyarrow only from 16.0.
"""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import mmap
import re
import struct
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray

from confidential_nb.errors import EncodingError, ProtocolError

logger = logging.getLogger("confidential_nb.frame_codec")

MAGIC = b"CNBF"
VERSION = 1
_PREFIX = struct.Struct("<4sHHI")

# Limits checked on both encode and decode, so every frame that encodes also
# decodes. The schema limit bounds the memory json.loads may use.
MAX_SCHEMA_BYTES = 64 * 1024 * 1024
MAX_COLUMNS = 100_000
MAX_NAME_LENGTH = 4096
_ALIGNMENT = 8

NUMPY_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64", "complex128"]
)
MASKED_DTYPES = frozenset(
    ["Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
     "Float32", "Float64", "boolean"]
)
TIME_UNITS = frozenset(["s", "ms", "us", "ns"])
_LABEL_DTYPES = frozenset(["object", "str", "string"]) | {
    name for name in NUMPY_DTYPES if name.startswith(("int", "uint"))
}
_CODE_DTYPES = frozenset(["int8", "int16", "int32", "int64"])
_STRING_STORAGES = frozenset(["python", "pyarrow"])
# pandas 2.3 added StringDtype's na_value. pandas 2.2 has the NaN variant
# only as the storage "pyarrow_numpy", and none with python storage.
_STRING_DTYPE_HAS_NA_VALUE = "na_value" in inspect.signature(pd.StringDtype).parameters
_TZ_NAME = re.compile(r"[A-Za-z0-9_+\-/:]{1,64}")
_FREQ = re.compile(r"[A-Za-z0-9\-]{1,32}")
_MISSING_NONE, _MISSING_NAN, _MISSING_NA = 1, 2, 3


def frame_schema(df: pd.DataFrame) -> dict[str, Any]:
    """Describe a frame's columns, dtypes and row count as JSON-serializable data."""
    _check_frame(df)
    return {
        "columns": [_column_name(label) for label in df.columns],
        "dtypes": [str(dtype) for dtype in df.dtypes],
        "rows": len(df),
    }


def encode_frame(df: pd.DataFrame) -> bytes:
    """Encode a DataFrame to bytes in the format described in the module docstring."""
    return b"".join(encode_frame_parts(df))


def encode_frame_parts(df: pd.DataFrame) -> list[bytes | memoryview]:
    """Encode a DataFrame as the consecutive parts of `encode_frame`'s output, without joining them.

    A numeric column that is already contiguous and little-endian (every
    column of a single-dtype frame's block is) becomes a view of its
    buffer, not a copy, so the parts are valid only while `df` is unchanged.
    """
    _check_frame(df)
    writer = _BufferWriter()

    columns = []
    for position, label in enumerate(df.columns):
        name = _column_name(label)
        series = df.iloc[:, position]
        descriptor = _encode_array(series.array, series.dtype, f"column {name!r}", writer)
        descriptor["name"] = name
        columns.append(descriptor)

    index = _encode_index(df.index, writer)
    schema = {
        "rows": len(df),
        "body_length": writer.length,
        "columns": columns,
        "column_labels": _encode_column_labels(df.columns),
        "index": index,
    }
    schema_bytes = json.dumps(schema, ensure_ascii=True, allow_nan=False).encode("ascii")
    if len(schema_bytes) > MAX_SCHEMA_BYTES:
        raise EncodingError(
            f"the frame's schema takes {len(schema_bytes)} bytes, above the limit of "
            f"{MAX_SCHEMA_BYTES}: use fewer columns or shorter column names"
        )

    prefix = _PREFIX.pack(MAGIC, VERSION, 0, len(schema_bytes))
    logger.debug("encoded a frame of %d rows and %d columns into %d bytes", len(df), len(columns), len(prefix) + len(schema_bytes) + writer.length)
    return [prefix, schema_bytes, *writer.parts]


def decode_frame(data: bytes | memoryview | mmap.mmap, *, copy: bool = True) -> pd.DataFrame:
    """Decode bytes from `encode_frame`, raising ProtocolError on any malformed input.

    With ``copy=False``, a frame whose columns all have one numeric dtype and
    lie back to back in the body (as `encode_frame` writes a single-dtype
    frame) becomes one block that is a view of `data`, which must then stay
    unchanged while the frame lives. Writes to the frame go to `data`, so it
    must be writable or private to the caller. Other frames are copied.
    """
    view = memoryview(data).cast("B")
    schema, body = _split_blob(view)
    rows = _get_int(schema, "rows", "the schema")
    if _get_int(schema, "body_length", "the schema") != len(body):
        raise ProtocolError(
            f"the frame body is {len(body)} bytes but its schema declares a different "
            "length: the blob is truncated or padded"
        )

    descriptors = _get(schema, "columns", list, "the schema")
    if len(descriptors) > MAX_COLUMNS:
        raise ProtocolError(f"the frame declares {len(descriptors)} columns, above the limit of {MAX_COLUMNS}")
    names = [_decode_name(_get(d, "name", object, "a column"), "a column name", allow_none=False) for d in _as_mappings(descriptors)]

    block = None if copy else _uniform_block(_as_mappings(descriptors), body, rows)
    # Plain numeric columns come back as views of the body, and `_build_frame` copies them.
    arrays = [] if block is not None else [_decode_array(d, body, rows, nested=False, view=True)
                                           for d in _as_mappings(descriptors)]

    index = _decode_index(_get(schema, "index", dict, "the schema"), body, rows)
    labels = _decode_column_labels(_get(schema, "column_labels", dict, "the schema"), names)
    if block is not None:
        return pd.DataFrame(block.T, index=index, columns=labels, copy=False)
    return _build_frame(arrays, labels, index)


def _uniform_block(descriptors: list[Mapping[str, Any]], body: memoryview, rows: int) -> np.ndarray | None:
    """Return the columns as one (columns, rows) view of the body, or None unless they share a numeric dtype and lie back to back.

    None sends the caller to the general decoder, which also reports every
    malformed descriptor, so this function only recognizes the layout.
    """
    if not descriptors or rows == 0:
        return None
    dtype_name = descriptors[0].get("dtype")
    if dtype_name not in NUMPY_DTYPES or dtype_name == "bool":
        return None
    wire_dtype = np.dtype(dtype_name).newbyteorder("<")
    if wire_dtype != np.dtype(dtype_name):
        return None
    stride = rows * wire_dtype.itemsize
    start = _data_span(descriptors[0])
    if start is None:
        return None
    for position, descriptor in enumerate(descriptors):
        if descriptor.get("kind") != "numpy" or descriptor.get("dtype") != dtype_name or descriptor.get("length") != rows:
            return None
        if _data_span(descriptor) != (start[0] + position * stride, stride):
            return None
    if start[0] + len(descriptors) * stride > len(body):
        return None
    flat = np.frombuffer(body, dtype=wire_dtype, count=len(descriptors) * rows, offset=start[0])
    return flat.reshape(len(descriptors), rows)


def _data_span(descriptor: Mapping[str, Any]) -> tuple[int, int] | None:
    buffers = descriptor.get("buffers")
    span = buffers.get("data") if isinstance(buffers, dict) else None
    if not isinstance(span, list) or len(span) != 2 or not all(type(item) is int and item >= 0 for item in span):
        return None
    return span[0], span[1]


_OUTSIDE_CLASS = "an instance of a class defined outside confidential_nb, numpy, pandas and Python"
_OUTSIDE_ARRAY_CLASS = "an instance of a numpy.ndarray subclass defined outside confidential_nb, numpy, pandas and Python"
_IMMUTABLE_TYPE = 1 << 8
"""Py_TPFLAGS_IMMUTABLETYPE, set on static C types and some C heap types. Python code cannot assign their ``__module__``."""


def describe_type(value: object) -> str:
    """Name a value's type for an error message without revealing user-defined names.

    Types from the standard library, numpy, pandas and confidential_nb get
    their qualified name. Any other class could be named after data, so it is
    described only as defined outside confidential_nb. A class defined in
    Python sets its own ``__module__`` and ``__qualname__``, so it counts as
    one of those types only when the named module exports that exact class.
    """
    kind = type(value)
    module = kind.__module__ if type(kind.__module__) is str else ""
    top = module.split(".")[0]
    known = module == "builtins" or top in ("numpy", "pandas", "confidential_nb") or top in sys.stdlib_module_names
    if not known or not _is_genuine_class(kind, module):
        return _OUTSIDE_ARRAY_CLASS if isinstance(value, np.ndarray) else _OUTSIDE_CLASS

    name = kind.__qualname__ if module == "builtins" else f"{_public_module(kind, module)}.{kind.__qualname__}"
    if isinstance(value, np.ndarray):
        return f"{name} of {_describe_dtype(value.dtype)}"
    return name


def _is_genuine_class(kind: type, module: str) -> bool:
    """Check that ``kind`` is the class its module and qualified name lead to."""
    if kind.__flags__ & _IMMUTABLE_TYPE:
        return True
    # NOTE: code in the same process can still add its class to a module
    # under a matching name, which this check cannot tell apart.
    target: object = sys.modules.get(module)
    for part in kind.__qualname__.split("."):
        # vars() rather than getattr(), so no module __getattr__ or descriptor runs.
        namespace = vars(target) if hasattr(target, "__dict__") else {}
        target = namespace.get(part)
    return target is kind


def _public_module(kind: type, module: str) -> str:
    """Return "pandas" for a class that pandas exports at its top level, else ``module``.

    pandas 3 sets ``__module__`` to "pandas" on those classes, but pandas 2.2
    keeps the defining module, e.g. pandas._libs.tslibs.timestamps. Naming
    both "pandas.Timestamp" keeps messages, and the advice keyed on them, the
    same across versions.
    """
    if module.startswith("pandas.") and vars(pd).get(kind.__qualname__) is kind:
        return "pandas"
    return module


def _describe_dtype(dtype: np.dtype[Any]) -> str:
    # A structured dtype's str lists its field names, which may come from data.
    if dtype.names is None:
        return f"dtype {dtype}"
    count = len(dtype.names)
    return f"a structured dtype with {count} field{'' if count == 1 else 's'}"


class _BufferWriter:
    """Collects the body buffers and hands out their offsets."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.length = 0

    def add(self, array: np.ndarray) -> list[int]:
        """Append an array's bytes in little-endian order and return ``[offset, length]``."""
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        return self.add_bytes(np.ascontiguousarray(little).reshape(-1).view(np.uint8).data)

    def add_bytes(self, raw: bytes | memoryview) -> list[int]:
        """Append raw bytes, padded to the alignment, and return ``[offset, length]``."""
        offset = self.length
        self.parts.append(raw)
        padding = -len(raw) % _ALIGNMENT
        if padding:
            self.parts.append(b"\0" * padding)
        self.length += len(raw) + padding
        return [offset, len(raw)]


# Encoding


def _check_frame(df: object) -> None:
    if not isinstance(df, pd.DataFrame):
        raise EncodingError(f"expected a pandas DataFrame, got {type(df).__module__}.{type(df).__qualname__}")
    if df.columns.nlevels != 1:
        raise EncodingError(
            f"the frame's columns are a MultiIndex with {df.columns.nlevels} levels: "
            "flatten them to str labels, e.g. with '_'.join"
        )
    if df.columns.has_duplicates:
        raise EncodingError("the frame has duplicate column names: rename the columns so each name is unique")
    if df.shape[1] > MAX_COLUMNS:
        raise EncodingError(f"the frame has {df.shape[1]} columns, above the limit of {MAX_COLUMNS}: split it")


def _column_name(label: object) -> str | int:
    if isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_)):
        return int(label)
    if isinstance(label, str):
        if len(label) > MAX_NAME_LENGTH:
            raise EncodingError(
                f"a column name has {len(label)} characters, above the limit of {MAX_NAME_LENGTH}: shorten it"
            )
        return str(label)
    raise EncodingError(
        f"a column name has type {type(label).__qualname__}: column names must be str or int, "
        "so rename the column, e.g. with df.rename(columns=str)"
    )


def _index_name(name: object, location: str) -> str | int | None:
    if name is None:
        return None
    try:
        return _column_name(name)
    except EncodingError:
        raise EncodingError(
            f"the name of {location} has type {type(name).__qualname__}: it must be str, int or None, "
            "so rename it, e.g. with df.rename_axis(str(name))"
        ) from None


def _encode_column_labels(columns: pd.Index) -> dict[str, Any]:
    name = _index_name(columns.name, "the column index")
    if isinstance(columns, pd.RangeIndex):
        return {"kind": "range", "start": columns.start, "stop": columns.stop, "step": columns.step, "name": name}

    # NOTE: string labels keep their missing-value kind (str or string) but
    # not their storage, so they decode with the receiver's default storage.
    dtype = str(columns.dtype)
    if dtype not in _LABEL_DTYPES:
        raise EncodingError(
            f"the column index has dtype {dtype}: column labels must be str or int, "
            "so convert them, e.g. with df.columns = df.columns.astype(str)"
        )
    return {"kind": "labels", "dtype": dtype, "name": name}


def _encode_index(index: pd.Index, writer: _BufferWriter) -> dict[str, Any]:
    if isinstance(index, pd.MultiIndex):
        raise EncodingError(
            f"the frame's index is a MultiIndex with {index.nlevels} levels: "
            "move the levels into columns with df.reset_index()"
        )
    name = _index_name(index.name, "the index")
    if isinstance(index, pd.RangeIndex):
        return {"kind": "range", "start": index.start, "stop": index.stop, "step": index.step, "name": name}

    descriptor = {"kind": "array", "name": name, "array": _encode_array(index.array, index.dtype, "the index", writer)}
    freq = getattr(index, "freqstr", None)
    if freq is not None:
        if not _FREQ.fullmatch(freq):
            raise EncodingError(f"the index has the frequency {freq!r}, which the frame codec cannot rebuild: drop it with index.freq = None")
        descriptor["freq"] = freq
    return descriptor


def _encode_array(values: Any, dtype: Any, location: str, writer: _BufferWriter) -> dict[str, Any]:
    """Describe one column, index or category array and add its buffers to the writer."""
    length = len(values)
    if isinstance(dtype, np.dtype) and dtype.name in NUMPY_DTYPES:
        data = writer.add(np.asarray(values, dtype=dtype))
        return {"kind": "numpy", "dtype": dtype.name, "length": length, "buffers": {"data": data}}
    if isinstance(dtype, (np.dtype, pd.DatetimeTZDtype)) and dtype.kind == "M":
        return _encode_datetime(values, dtype, location, writer)
    if isinstance(dtype, np.dtype) and dtype.kind == "m":
        ticks = np.asarray(values).view("int64")
        unit = np.datetime_data(dtype)[0]
        return {"kind": "timedelta", "unit": unit, "length": length, "buffers": {"data": writer.add(ticks)}}
    if str(dtype) in MASKED_DTYPES:
        return _encode_masked(values, dtype, writer)
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, np.dtype) and dtype == object):
        return _encode_strings(values, dtype, location, writer)
    if isinstance(dtype, pd.CategoricalDtype) and not location.startswith("the categories"):
        return _encode_category(values, dtype, location, writer)
    raise _unsupported_dtype(dtype, location)


def _encode_datetime(values: Any, dtype: Any, location: str, writer: _BufferWriter) -> dict[str, Any]:
    unit: str
    tz_name, tz_offset = None, None
    if isinstance(dtype, pd.DatetimeTZDtype):
        unit = dtype.unit
        tz_name, tz_offset = _describe_tz(dtype, location)
        ticks = np.asarray(values.asi8 if hasattr(values, "asi8") else values.view("int64"), dtype="int64")
    else:
        unit = np.datetime_data(dtype)[0]
        ticks = np.asarray(values).view("int64")
    if unit not in TIME_UNITS:
        raise _unsupported_dtype(dtype, location)

    return {
        "kind": "datetime",
        "unit": unit,
        "tz": tz_name,
        "tz_offset_seconds": tz_offset,
        "length": len(values),
        "buffers": {"data": writer.add(ticks)},
    }


def _describe_tz(dtype: pd.DatetimeTZDtype, location: str) -> tuple[str | None, int | None]:
    """Return a zone name or a fixed offset in seconds that rebuilds the dtype's time zone exactly."""
    tz = dtype.tz
    if isinstance(tz, datetime.timezone) and tz is not datetime.timezone.utc:
        offset = tz.utcoffset(None)
        return None, int(offset.total_seconds())

    name = str(tz)
    if _TZ_NAME.fullmatch(name) and pd.DatetimeTZDtype(dtype.unit, name) == dtype:
        return name, None
    raise EncodingError(
        f"{location} has dtype {dtype}, whose time zone cannot be rebuilt from its name: "
        "convert it to UTC with .dt.tz_convert('UTC')"
    )


def _encode_masked(values: Any, dtype: Any, writer: _BufferWriter) -> dict[str, Any]:
    numpy_dtype = dtype.numpy_dtype
    # Filling the missing slots with zero keeps whatever the array held there
    # before (possibly an unrelated value) out of the encoded bytes.
    data = values.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0))
    mask = np.asarray(values.isna(), dtype=np.uint8)
    return {
        "kind": "masked",
        "dtype": str(dtype),
        "length": len(values),
        "buffers": {"data": writer.add(data), "mask": writer.add(mask)},
    }


def _encode_strings(values: Any, dtype: Any, location: str, writer: _BufferWriter) -> dict[str, Any]:
    objects = np.asarray(values, dtype=object)
    mask = _string_mask(objects, dtype, location)
    encoded = [
        value.encode("utf-8", "surrogatepass") if flag == 0 else b""
        for value, flag in zip(objects.tolist(), mask.tolist())
    ]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])

    dtype_name, storage = _describe_string_dtype(dtype)
    buffers = {
        "offsets": writer.add(offsets),
        "data": writer.add_bytes(b"".join(encoded)),
        "mask": writer.add(mask),
    }
    return {"kind": "string", "dtype": dtype_name, "storage": storage, "length": len(encoded), "buffers": buffers}


def _describe_string_dtype(dtype: Any) -> tuple[str, str | None]:
    """Return the wire ``dtype`` and ``storage`` of an object or string dtype.

    The wire names are those of pandas 2.3 and later: ``str`` for a string
    dtype whose missing value is NaN, ``string`` for one whose missing value
    is pd.NA. pandas 2.2 names both ``string`` and spells the NaN variant as
    the storage ``pyarrow_numpy``.
    """
    if isinstance(dtype, np.dtype):
        return "object", None
    name = "string" if dtype.na_value is pd.NA else "str"
    storage = "pyarrow" if dtype.storage == "pyarrow_numpy" else dtype.storage
    return name, storage


def _string_mask(objects: np.ndarray, dtype: Any, location: str) -> np.ndarray:
    """Classify each value as a str (0) or a kind of missing value, rejecting anything else."""
    is_str = np.fromiter((type(value) is str for value in objects), dtype=bool, count=len(objects))
    mask = np.zeros(len(objects), dtype=np.uint8)
    for position in np.flatnonzero(~is_str):
        mask[position] = _missing_code(objects[position], dtype, location, int(position))
    return mask


def _missing_code(value: object, dtype: Any, location: str, position: int) -> int:
    if value is None:
        return _MISSING_NONE
    if value is pd.NA:
        return _MISSING_NA
    if isinstance(value, float) and np.isnan(value):
        return _MISSING_NAN
    description = describe_type(value)
    if not description.startswith("an instance"):
        description = f"a value of type {description}"
    raise EncodingError(
        f"{location} has dtype {dtype} and contains {description} at row position {position}; "
        "only str values and missing values (None, NaN, pd.NA) are supported: "
        "convert the column with .astype(str) or to a numeric dtype"
    )


def _encode_category(values: Any, dtype: pd.CategoricalDtype, location: str, writer: _BufferWriter) -> dict[str, Any]:
    categories = dtype.categories
    nested = _encode_array(categories.array, categories.dtype, f"the categories of {location}", writer)
    codes = np.asarray(values.codes)
    return {
        "kind": "category",
        "ordered": bool(dtype.ordered),
        "codes_dtype": codes.dtype.name,
        "categories": nested,
        "length": len(values),
        "buffers": {"codes": writer.add(codes)},
    }


def _unsupported_dtype(dtype: Any, location: str) -> EncodingError:
    name = str(dtype)
    if name.startswith("interval"):
        advice = "split it into two numeric columns with .array.left and .array.right"
    elif name.startswith("period"):
        advice = "convert it to timestamps with .dt.to_timestamp()"
    elif name.startswith("Sparse"):
        advice = "convert it to a dense column with .sparse.to_dense()"
    elif name.startswith("category"):
        advice = "convert the categories to a plain dtype with .astype(categories.dtype)"
    else:
        advice = "convert it to a numeric, bool, datetime64, timedelta64, str or category dtype with .astype()"
    return EncodingError(f"{location} has dtype {name}, which the frame codec does not support: {advice}")


# Decoding


def _split_blob(view: memoryview) -> tuple[Mapping[str, Any], memoryview]:
    if len(view) < _PREFIX.size:
        raise ProtocolError(f"the frame blob is {len(view)} bytes, shorter than its {_PREFIX.size}-byte prefix")
    magic, version, _reserved, schema_length = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise ProtocolError("the blob does not start with the frame magic b'CNBF': it is not an encoded frame")
    if version != VERSION:
        raise ProtocolError(f"the frame format version is {version}, but this library reads version {VERSION}")
    if schema_length > MAX_SCHEMA_BYTES or schema_length > len(view) - _PREFIX.size:
        raise ProtocolError(
            f"the frame declares a {schema_length}-byte schema, larger than the limit of "
            f"{MAX_SCHEMA_BYTES} or than the blob"
        )

    schema_end = _PREFIX.size + schema_length
    schema = _load_json(bytes(view[_PREFIX.size:schema_end]))
    return schema, view[schema_end:]


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"the frame schema contains the non-standard JSON constant {name}")


def _load_json(raw: bytes) -> Mapping[str, Any]:
    try:
        schema = json.loads(raw.decode("ascii"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"the frame schema is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(schema, dict):
        raise ProtocolError("the frame schema is not a JSON object")
    return schema


def _get(mapping: object, key: str, expected: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(mapping, dict):
        raise ProtocolError(f"{where} in the frame schema is not a JSON object")
    if key not in mapping:
        raise ProtocolError(f"{where} in the frame schema is missing the key {key!r}")
    value = mapping[key]
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ProtocolError(f"the key {key!r} of {where} in the frame schema has type {type(value).__name__}")
    return value


def _get_int(mapping: object, key: str, where: str, minimum: int | None = 0) -> int:
    value: int = _get(mapping, key, int, where)
    if minimum is not None and value < minimum:
        raise ProtocolError(f"the key {key!r} of {where} in the frame schema is {value}, below {minimum}")
    if abs(value) >= 2**63:
        raise ProtocolError(f"the key {key!r} of {where} in the frame schema does not fit in 64 bits")
    return value


def _get_choice(mapping: object, key: str, choices: frozenset[str], where: str) -> str:
    value: str = _get(mapping, key, str, where)
    if value not in choices:
        raise ProtocolError(f"the key {key!r} of {where} in the frame schema has an unknown value")
    return value


def _as_mappings(items: list[Any]) -> list[Mapping[str, Any]]:
    for item in items:
        if not isinstance(item, dict):
            raise ProtocolError("a column descriptor in the frame schema is not a JSON object")
    return items


def _decode_name(value: object, location: str, allow_none: bool = True) -> str | int | None:
    if (value is None and allow_none) or (isinstance(value, str) and len(value) <= MAX_NAME_LENGTH):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ProtocolError(f"{location} in the frame schema is not a str or int of at most {MAX_NAME_LENGTH} characters")


def _buffer(descriptor: Mapping[str, Any], role: str, body: memoryview) -> memoryview:
    buffers = _get(descriptor, "buffers", dict, "an array descriptor")
    span = _get(buffers, role, list, "a buffer table")
    if len(span) != 2:
        raise ProtocolError(f"the {role} buffer reference in the frame schema is not [offset, length]")
    offset = _get_int({"offset": span[0]}, "offset", f"the {role} buffer")
    length = _get_int({"length": span[1]}, "length", f"the {role} buffer")
    if offset + length > len(body):
        raise ProtocolError(
            f"the {role} buffer spans bytes {offset} to {offset + length}, past the end of the "
            f"{len(body)}-byte body"
        )
    return body[offset:offset + length]


def _read_array(descriptor: Mapping[str, Any], role: str, body: memoryview, dtype: str, count: int,
                view: bool = False) -> np.ndarray:
    """Copy a buffer into a native-order array after checking it contains exactly ``count`` items.

    With `view`, a buffer already in native byte order comes back as a
    view of `body` instead of a copy.
    """
    raw = _buffer(descriptor, role, body)
    wire_dtype = np.dtype(dtype).newbyteorder("<")
    if len(raw) != count * wire_dtype.itemsize:
        raise ProtocolError(
            f"the {role} buffer is {len(raw)} bytes, but {count} items of {dtype} take "
            f"{count * wire_dtype.itemsize}"
        )
    array = np.frombuffer(raw, dtype=wire_dtype, count=count)
    if not view or wire_dtype != np.dtype(dtype):
        array = array.astype(np.dtype(dtype))
    if array.dtype == bool:
        _check_bytes_are_flags(raw, role)
    return array


def _check_bytes_are_flags(raw: memoryview, role: str) -> None:
    flags = np.frombuffer(raw, dtype=np.uint8)
    if flags.size and flags.max() > 1:
        raise ProtocolError(f"the {role} buffer contains a bool byte other than 0 or 1")


def _decode_array(descriptor: Mapping[str, Any], body: memoryview, expected_length: int, nested: bool,
                  view: bool = False) -> Any:
    """Rebuild a numpy array or pandas extension array from its descriptor.

    With `view`, a plain numeric array may be a view of `body`.
    """
    length = _get_int(descriptor, "length", "an array descriptor")
    if length != expected_length:
        raise ProtocolError(f"an array in the frame schema has {length} items but {expected_length} were expected")
    kinds = frozenset(["numpy", "datetime", "timedelta", "masked", "string"] + ([] if nested else ["category"]))
    kind = _get_choice(descriptor, "kind", kinds, "an array descriptor")

    if kind == "numpy":
        dtype = _get_choice(descriptor, "dtype", NUMPY_DTYPES, "a numpy array descriptor")
        return _read_array(descriptor, "data", body, dtype, length, view=view)
    if kind == "datetime":
        return _decode_datetime(descriptor, body, length)
    if kind == "timedelta":
        unit = _get_choice(descriptor, "unit", TIME_UNITS, "a timedelta descriptor")
        return _read_array(descriptor, "data", body, "int64", length).view(f"timedelta64[{unit}]")
    if kind == "masked":
        return _decode_masked(descriptor, body, length)
    if kind == "string":
        return _decode_strings(descriptor, body, length)
    return _decode_category(descriptor, body, length)


def _decode_datetime(descriptor: Mapping[str, Any], body: memoryview, length: int) -> Any:
    unit = _get_choice(descriptor, "unit", TIME_UNITS, "a datetime descriptor")
    ticks = _read_array(descriptor, "data", body, "int64", length)
    naive = ticks.view(f"datetime64[{unit}]")
    tz = _decode_tz(descriptor)
    if tz is None:
        return naive

    # The ticks of a tz-aware column count from the epoch in UTC.
    return pd.DatetimeIndex(naive).tz_localize("UTC").tz_convert(tz).array


def _decode_tz(descriptor: Mapping[str, Any]) -> datetime.tzinfo | str | None:
    name = _get(descriptor, "tz", (str, type(None)), "a datetime descriptor")
    offset = _get(descriptor, "tz_offset_seconds", (int, type(None)), "a datetime descriptor")
    if name is not None and offset is not None:
        raise ProtocolError("a datetime descriptor in the frame schema has both a zone name and an offset")
    if offset is not None:
        if isinstance(offset, bool) or not -86400 < offset < 86400:
            raise ProtocolError("a datetime descriptor in the frame schema has a UTC offset outside one day")
        return datetime.timezone(datetime.timedelta(seconds=offset))
    if name is None:
        return None

    if not _TZ_NAME.fullmatch(name):
        raise ProtocolError("a datetime descriptor in the frame schema has an invalid time zone name")
    try:
        return pd.DatetimeTZDtype("ns", name).tz
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise ProtocolError(f"a time zone name in the frame schema is unknown ({type(exc).__name__})") from None


def _decode_masked(descriptor: Mapping[str, Any], body: memoryview, length: int) -> Any:
    dtype: Any = pd.api.types.pandas_dtype(_get_choice(descriptor, "dtype", MASKED_DTYPES, "a masked array descriptor"))
    data = _read_array(descriptor, "data", body, dtype.numpy_dtype.name, length)
    mask = _read_array(descriptor, "mask", body, "bool", length)
    return dtype.construct_array_type()(data, mask)


def _decode_strings(descriptor: Mapping[str, Any], body: memoryview, length: int) -> Any:
    dtype_name = _get_choice(descriptor, "dtype", frozenset(["object", "str", "string"]), "a string descriptor")
    offsets = _read_array(descriptor, "offsets", body, "int64", length + 1)
    data = bytes(_buffer(descriptor, "data", body))
    mask = _read_array(descriptor, "mask", body, "uint8", length)
    _check_offsets(offsets, len(data))

    values = np.empty(length, dtype=object)
    missing = {0: None, _MISSING_NONE: None, _MISSING_NAN: np.nan, _MISSING_NA: pd.NA}
    try:
        for position, (start, stop, flag) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), mask.tolist())):
            values[position] = data[start:stop].decode("utf-8", "surrogatepass") if flag == 0 else missing[flag]
    except UnicodeDecodeError:
        raise ProtocolError("a string in the frame is not valid UTF-8") from None
    except KeyError:
        raise ProtocolError("a string mask byte in the frame is not 0, 1, 2 or 3") from None

    if dtype_name == "object":
        return values
    return _string_array(descriptor, dtype_name, values)


def _check_offsets(offsets: np.ndarray, data_length: int) -> None:
    if offsets[0] != 0 or offsets[-1] != data_length or np.any(np.diff(offsets) < 0):
        raise ProtocolError(
            f"the string offsets in the frame do not run in order from 0 to the {data_length}-byte data buffer"
        )


def _string_array(descriptor: Mapping[str, Any], dtype_name: str, values: np.ndarray) -> Any:
    storage = _get_choice(descriptor, "storage", _STRING_STORAGES, "a string descriptor")
    try:
        dtype = _string_dtype(dtype_name, storage)
    except ImportError as exc:
        raise ProtocolError(f"the frame has a string column stored with {storage}: install {storage} ({exc})") from None
    try:
        return pd.array(values, dtype=dtype)
    except UnicodeEncodeError:
        # Python storage keeps lone surrogates, but pyarrow accepts only valid UTF-8.
        raise ProtocolError(f"a string column stored with {storage} in the frame contains a lone surrogate") from None


def _string_dtype(dtype_name: str, storage: Any) -> pd.StringDtype:
    """Build the string dtype for a wire ``dtype`` and ``storage``, raising ImportError when pyarrow is missing."""
    if dtype_name == "string":
        return pd.StringDtype(storage)
    if _STRING_DTYPE_HAS_NA_VALUE:
        return pd.StringDtype(storage, na_value=np.nan)
    if storage == "pyarrow":
        # Typed as Any because the pandas 3 stubs no longer list this storage.
        legacy_storage: Any = "pyarrow_numpy"
        return pd.StringDtype(legacy_storage)
    raise ProtocolError(
        f"the frame has a str column with python storage, which pandas {pd.__version__} cannot build: "
        "install pandas 2.3 or later"
    )


def _decode_category(descriptor: Mapping[str, Any], body: memoryview, length: int) -> Any:
    ordered = _get(descriptor, "ordered", bool, "a category descriptor")
    codes_dtype = _get_choice(descriptor, "codes_dtype", _CODE_DTYPES, "a category descriptor")
    nested = _get(descriptor, "categories", dict, "a category descriptor")
    count = _get_int(nested, "length", "a categories descriptor")
    categories = _as_index(_decode_array(nested, body, count, nested=True), None)
    codes = _read_array(descriptor, "codes", body, codes_dtype, length)

    try:
        dtype = pd.CategoricalDtype(categories, ordered=ordered)
        return pd.Categorical.from_codes(codes, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"a category column in the frame has invalid categories or codes ({type(exc).__name__})") from None


def _as_index(array: Any, name: str | int | None) -> pd.Index:
    dtype = array.dtype if isinstance(array, np.ndarray) else None
    return pd.Index(array, dtype=dtype, name=name, copy=False)


def _decode_range(description: Mapping[str, Any], where: str) -> pd.RangeIndex:
    start = _get_int(description, "start", where, minimum=None)
    stop = _get_int(description, "stop", where, minimum=None)
    step = _get_int(description, "step", where, minimum=None)
    if step == 0:
        raise ProtocolError(f"{where} in the frame schema is a range with step 0")
    name = _decode_name(description.get("name"), f"the name of {where}")
    return pd.RangeIndex(start, stop, step, name=name)


def _decode_index(description: Mapping[str, Any], body: memoryview, rows: int) -> pd.Index:
    kind = _get_choice(description, "kind", frozenset(["range", "array"]), "the index")
    if kind == "range":
        index = _decode_range(description, "the index")
        if len(index) != rows:
            raise ProtocolError(f"the frame's range index has {len(index)} items but the frame has {rows} rows")
        return index

    name = _decode_name(description.get("name"), "the name of the index")
    array = _decode_array(_get(description, "array", dict, "the index"), body, rows, nested=False)
    array_index = _as_index(array, name)
    if "freq" in description:
        return _with_freq(array_index, _get(description, "freq", str, "the index"))
    return array_index


def _with_freq(index: pd.Index, freq: str) -> pd.Index:
    if not isinstance(index, (pd.DatetimeIndex, pd.TimedeltaIndex)) or not _FREQ.fullmatch(freq):
        raise ProtocolError("the frame's index has a frequency but is not a datetime or timedelta index")
    try:
        return type(index)(index, freq=freq)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"the frame's index does not match its frequency ({type(exc).__name__})") from None


def _decode_column_labels(description: Mapping[str, Any], names: list[str | int | None]) -> pd.Index:
    kind = _get_choice(description, "kind", frozenset(["range", "labels"]), "the column labels")
    if kind == "range":
        labels: pd.Index = _decode_range(description, "the column labels")
        if list(labels) != names:
            raise ProtocolError("the frame's column range does not match its column names")
        return labels

    dtype = _get_choice(description, "dtype", _LABEL_DTYPES, "the column labels")
    name = _decode_name(description.get("name"), "the name of the column labels")
    try:
        labels = pd.Index(names, dtype=dtype, name=name)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"the frame's column names do not fit their dtype ({type(exc).__name__})") from None
    if labels.has_duplicates:
        raise ProtocolError("the frame schema has duplicate column names")
    return labels


def _build_frame(arrays: list[Any], labels: pd.Index, index: pd.Index) -> pd.DataFrame:
    """Build the frame from decoded columns, where plain numeric ones may be views of the encoded body.

    Without extension arrays, pandas copies the columns once into one block
    per dtype: 0.45 ms for the 31 columns of the breast-cancer frame, against
    0.75 ms for one block per column, and ``to_numpy`` then needs no joining
    of blocks. pandas would copy extension arrays again, so a frame with any
    keeps one block per column and only its views are copied.
    """
    if any(isinstance(array, ExtensionArray) for array in arrays):
        columns = {
            position: pd.Series(array.copy() if _is_view(array) else array, index=index, dtype=array.dtype, copy=False)
            for position, array in enumerate(arrays)
        }
        frame = pd.DataFrame(columns, index=index, copy=False)
    else:
        # An object array goes in as a Series of dtype object, because pandas infers the str dtype for a bare one.
        columns = {
            position: pd.Series(array, index=index, dtype=object, copy=False) if array.dtype == object else array
            for position, array in enumerate(arrays)
        }
        frame = pd.DataFrame(columns, index=index, copy=True)
    frame.columns = labels
    return frame


def _is_view(array: Any) -> bool:
    """Return True for a numpy array whose memory belongs to a buffer outside numpy, such as the encoded body."""
    if not isinstance(array, np.ndarray):
        return False
    base = array.base
    while isinstance(base, np.ndarray):
        base = base.base
    return base is not None
