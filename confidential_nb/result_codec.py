"""Encode run results and run parameters to bytes and back without pickle.

Layout of an encoded result (all integers little-endian)::

    offset  size  field
    0       4     magic b"CNBR"
    4       2     format version (1)
    6       2     reserved, zero
    8       4     length J of the JSON document in bytes
    12      J     JSON document, ASCII
    12+J    B     body: the binary buffers, back to back

The JSON document is ``{"value": NODE, "buffers": [[offset, length], ...],
"body_length": B}``. A NODE is a JSON null, bool, str, int (up to 64 bits) or
finite float standing for itself, a JSON array standing for a list, or an
object with a tag ``t``:

- ``{"t": "int", "hex": "-1f"}``: an int too large for 64 bits.
- ``{"t": "float", "v": "nan" | "inf" | "-inf"}``: a non-finite float.
- ``{"t": "complex", "re": NODE, "im": NODE}``.
- ``{"t": "tuple", "items": [NODE, ...]}``.
- ``{"t": "dict", "items": [[KEY, NODE], ...]}`` where KEY is a str, an int
  or an int node, so str and int keys keep their type.
- ``{"t": "bytes", "buffer": i}``: the bytes of buffer ``i``.
- ``{"t": "ndarray", "dtype": name, "shape": [...], "buffer": i}``: C-order,
  little-endian values.
- ``{"t": "scalar", "dtype": name, "hex": "..."}``: a numpy scalar's
  little-endian bytes.
- ``{"t": "frame", "buffer": i}``: a DataFrame encoded by `encode_frame`.
- ``{"t": "series", "name": str | int | null, "buffer": i}``: a Series as the
  only column of an encoded frame.
- ``{"t": "object", "type": name, "state": NODE}``: a library object rebuilt
  with ``from_state`` from a fixed table of type names.

Every NaN, in a float, a numpy scalar or an array, comes back as the canonical
quiet NaN (``numpy.nan``) with its sign bit cleared.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from confidential_nb.errors import ConfidentialNBError, EncodingError, ProtocolError
from confidential_nb.frame_codec import decode_frame, describe_type, encode_frame

logger = logging.getLogger("confidential_nb.result_codec")

MAGIC = b"CNBR"
VERSION = 1
_PREFIX = struct.Struct("<4sHHI")

MAX_DEPTH = 100
# Bounds the work of encoding a value that shares one container many times
# over, e.g. ``a = [a, a]`` repeated, which has no cycle but grows exponentially.
MAX_NODES = 1_000_000
# Each encoded node takes at most 5 JSON arrays or objects. Up to 3 are its own
# (an object node's tag, state and items), and up to 2 are in its parent (a
# dict item's [key, value] pair and an int key). A node with a buffer has at most 2
# of its own, so its [offset, length] span keeps it within 5. The document
# object and its buffer list add 2. Counting them before json.loads bounds the
# memory that the parsed tree takes.
MAX_CONTAINERS = 5 * MAX_NODES + 2
MAX_NDIM = 32
_KEY_PREVIEW = 40

ARRAY_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64", "complex128"]
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_HEX_INT = re.compile(r"-?[0-9a-f]+")
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')

# Types added by tests through `_registered_types`, never by decoded data.
_EXTRA_TYPES: dict[str, type] = {}


def encode_result(value: object, *, root: str = "result") -> bytes:
    """Encode a result or parameter value, raising EncodingError naming the first unsupported part.

    ``root`` is the name error messages give the value, such as ``result``
    or ``parameter 'weights'``.
    """
    encoder = _Encoder()
    tree = encoder.encode(value, root, 0)
    document = {"value": tree, "buffers": encoder.spans, "body_length": encoder.length}
    text = json.dumps(document, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
    logger.debug("encoded a result into %d bytes with %d buffers", _PREFIX.size + len(text) + encoder.length, len(encoder.spans))
    return b"".join([_PREFIX.pack(MAGIC, VERSION, 0, len(text)), text, *encoder.parts])


def decode_result(data: bytes) -> object:
    """Decode bytes from `encode_result`, raising ProtocolError on any malformed input.

    The input is treated as hostile: every length is checked against the
    bytes at hand before anything is allocated, and only the types listed in
    the module docstring are built.
    """
    view = memoryview(data).cast("B")
    document, body = _split_blob(view)
    if "value" not in document:
        raise ProtocolError("the result's JSON document is missing the key 'value'")
    decoder = _Decoder(body, _buffer_spans(document, len(body)))
    return decoder.decode(document["value"], 0)


@contextlib.contextmanager
def _registered_types(extra: Mapping[str, type]) -> Iterator[None]:
    """Accept more library-style classes (with to_state/from_state) for the duration; for tests."""
    _EXTRA_TYPES.update(extra)
    try:
        yield
    finally:
        for name in extra:
            _EXTRA_TYPES.pop(name, None)


def _object_types() -> dict[str, type]:
    """Return the fixed table of type names to the library classes a result may contain."""
    # Imported here so that importing the codec does not import training.
    from confidential_nb.training import History, LogisticRegression
    from confidential_nb.training.mlp import MLPClassifier
    from confidential_nb.training.svm import LinearSVC

    return {
        "History": History,
        "LinearSVC": LinearSVC,
        "LogisticRegression": LogisticRegression,
        "MLPClassifier": MLPClassifier,
        **_EXTRA_TYPES,
    }


# Encoding


class _Encoder:
    """Walks a value depth-first, building the JSON tree and the list of binary buffers."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.spans: list[list[int]] = []
        self.length = 0
        self.nodes = 0
        self.open_containers: set[int] = set()

    def add_buffer(self, raw: bytes | memoryview) -> int:
        self.parts.append(raw)
        self.spans.append([self.length, len(raw)])
        self.length += len(raw)
        return len(self.spans) - 1

    def encode(self, value: object, path: str, depth: int) -> Any:
        self._count(path, depth)
        kind = type(value)

        if value is None or kind is bool or kind is str:
            return value
        if kind is int:
            return _encode_int(value)  # type: ignore[arg-type]
        if kind is float:
            return _encode_float(value)  # type: ignore[arg-type]
        if kind is complex:
            return {"t": "complex", "re": _encode_float(value.real), "im": _encode_float(value.imag)}  # type: ignore[attr-defined]
        if kind is bytes:
            return {"t": "bytes", "buffer": self.add_buffer(value)}  # type: ignore[arg-type]
        if kind in (list, tuple, dict):
            return self._encode_container(value, path, depth)
        return self._encode_other(value, path, depth)

    def _count(self, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise EncodingError(
                f"{path} is nested more than {MAX_DEPTH} levels deep: flatten the result, "
                "e.g. into a dict of lists"
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise EncodingError(
                f"the result has more than {MAX_NODES} parts (reached at {path}): return fewer, "
                "larger parts such as numpy arrays or DataFrames"
            )

    def _encode_container(self, value: Any, path: str, depth: int) -> Any:
        if id(value) in self.open_containers:
            raise EncodingError(
                f"{path} is a {type(value).__name__} that contains itself: a cycle cannot be encoded, "
                "so return a copy without the self-reference"
            )
        self.open_containers.add(id(value))
        try:
            if type(value) is dict:
                return self._encode_dict(value, path, depth)
            items = [self.encode(item, f"{path}[{position}]", depth + 1) for position, item in enumerate(value)]
            return items if type(value) is list else {"t": "tuple", "items": items}
        finally:
            self.open_containers.discard(id(value))

    def _encode_dict(self, value: dict[Any, Any], path: str, depth: int) -> Any:
        items = []
        for key, item in value.items():
            if type(key) is not str and type(key) is not int:
                raise EncodingError(
                    f"{path} has a key of type {describe_type(key)}: dict keys must be str or int, "
                    "so convert the key, e.g. join the parts of a tuple key into a str"
                )
            items.append([_encode_int(key) if type(key) is int else key, self.encode(item, _key_path(path, key), depth + 1)])
        return {"t": "dict", "items": items}

    def _encode_other(self, value: object, path: str, depth: int) -> Any:
        if type(value) is np.ndarray:
            return self._encode_ndarray(value, path)
        if isinstance(value, np.generic) and type(value) is value.dtype.type and value.dtype.name in ARRAY_DTYPES:
            raw = _canonical_nan(np.asarray(value)).astype(value.dtype.newbyteorder("<")).tobytes()
            return {"t": "scalar", "dtype": value.dtype.name, "hex": raw.hex()}
        if type(value) is pd.DataFrame:
            return {"t": "frame", "buffer": self.add_buffer(_encode_frame_at(value, path))}
        if type(value) is pd.Series:
            return self._encode_series(value, path)
        if type(value) in _EXTRA_TYPES.values() or type(value).__module__.startswith("confidential_nb."):
            return self._encode_object(value, path, depth)
        raise _unsupported(value, path)

    def _encode_ndarray(self, array: np.ndarray, path: str) -> Any:
        if array.dtype.name not in ARRAY_DTYPES:
            raise _unsupported(array, path)
        little = _canonical_nan(array).astype(array.dtype.newbyteorder("<"), order="C", copy=False)
        raw = np.ascontiguousarray(little).reshape(-1).view(np.uint8).data
        return {"t": "ndarray", "dtype": array.dtype.name, "shape": list(array.shape), "buffer": self.add_buffer(raw)}

    def _encode_series(self, series: pd.Series, path: str) -> Any:
        name = series.name
        if name is not None and type(name) is not str and type(name) is not int:
            raise EncodingError(
                f"{path} is a pandas Series whose name has type {describe_type(name)}: "
                "the name must be str, int or None, so rename it with .rename()"
            )
        frame = series.to_frame(name=0)
        return {"t": "series", "name": name, "buffer": self.add_buffer(_encode_frame_at(frame, path))}

    def _encode_object(self, value: object, path: str, depth: int) -> Any:
        names = {cls: name for name, cls in _object_types().items()}
        name = names.get(type(value))
        if name is None:
            raise _unsupported(value, path)
        state = value.to_state()  # type: ignore[attr-defined]
        if type(state) is not dict:
            raise EncodingError(f"{path} is a {describe_type(value)} whose to_state() did not return a dict")

        items = []
        for key, item in state.items():
            if type(key) is not str:
                raise EncodingError(f"{path} is a {describe_type(value)} whose state has a key that is not a str")
            items.append([key, self.encode(item, f"{path}.{key}", depth + 1)])
        return {"t": "object", "type": name, "state": {"t": "dict", "items": items}}


def _encode_int(value: int) -> Any:
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    # Hexadecimal, because Python limits decimal conversion of huge ints.
    return {"t": "int", "hex": format(value, "x")}


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return {"t": "float", "v": "nan"}
    return {"t": "float", "v": "inf" if value > 0 else "-inf"}


def _canonical_nan(array: np.ndarray) -> np.ndarray:
    """Return the array with every NaN replaced by numpy.nan, copying only if one is present."""
    if array.dtype.kind not in "fc":
        return array
    parts = [array] if array.dtype.kind == "f" else [array.real, array.imag]
    if not any(np.isnan(part).any() for part in parts):
        return array

    array = array.copy()
    parts = [array] if array.dtype.kind == "f" else [array.real, array.imag]
    for part in parts:
        part[np.isnan(part)] = np.nan
    return array


def _encode_frame_at(frame: pd.DataFrame, path: str) -> bytes:
    try:
        return encode_frame(frame)
    except EncodingError as exc:
        raise EncodingError(f"{path}: {exc}") from None


def _key_path(path: str, key: str | int) -> str:
    if type(key) is str and len(key) > _KEY_PREVIEW:
        return f"{path}[{key[:_KEY_PREVIEW]!r}...]"
    return f"{path}[{key!r}]"


_ADVICE = {
    "set": "convert it to a list, e.g. sorted(value)",
    "frozenset": "convert it to a list, e.g. sorted(value)",
    "bytearray": "convert it to bytes",
    "memoryview": "convert it to bytes",
    "range": "convert it to a list",
    "generator": "convert it to a list",
    "function": "return the values it computes instead of the function",
    "builtin_function_or_method": "return the values it computes instead of the function",
    "pandas.Timestamp": "convert it to a str with .isoformat()",
    "pandas.Timedelta": "convert it to a float of seconds with .total_seconds()",
    "decimal.Decimal": "convert it to a float or a str",
    "datetime.datetime": "convert it to a str with .isoformat()",
    "datetime.date": "convert it to a str with .isoformat()",
}
_DEFAULT_ADVICE = (
    "convert it to None, bool, int, float, complex, str, bytes, a list, tuple or dict, "
    "a numeric numpy array, or a pandas DataFrame or Series"
)


def _unsupported(value: object, path: str) -> EncodingError:
    description = describe_type(value)
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
        advice = "convert it to a plain array with numpy.asarray()"
    elif isinstance(value, np.ndarray):
        advice = "convert it to a numeric dtype with .astype(), or to a list with .tolist()"
    elif isinstance(value, np.generic):
        advice = "convert it to a Python value with .item()"
    elif hasattr(value, "read") and hasattr(value, "close"):
        advice = "return the file's contents as str or bytes, not the open file"
    else:
        advice = _ADVICE.get(description, _DEFAULT_ADVICE)
    return EncodingError(f"{path} is {_article(description)}, which cannot cross the enclave boundary: {advice}")


def _article(description: str) -> str:
    if description.startswith("an instance"):
        return description
    return f"{'an' if description[0] in 'aeiou' else 'a'} {description}"


# Decoding


def _split_blob(view: memoryview) -> tuple[dict[str, Any], memoryview]:
    if len(view) < _PREFIX.size:
        raise ProtocolError(f"the result blob is {len(view)} bytes, shorter than its {_PREFIX.size}-byte prefix")
    magic, version, _reserved, text_length = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise ProtocolError("the blob does not start with the result magic b'CNBR': it is not an encoded result")
    if version != VERSION:
        raise ProtocolError(f"the result format version is {version}, but this library reads version {VERSION}")
    if text_length > len(view) - _PREFIX.size:
        raise ProtocolError(f"the result declares a {text_length}-byte JSON document, longer than the blob")

    text_end = _PREFIX.size + text_length
    text = bytes(view[_PREFIX.size:text_end])
    if _count_containers(text) > MAX_CONTAINERS:
        raise ProtocolError(
            f"the result's JSON document has more than {MAX_CONTAINERS} arrays and objects, "
            f"more than {MAX_NODES} encoded nodes can take: it was not made by encode_result"
        )
    try:
        document = json.loads(text.decode("ascii"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"the result's JSON document is invalid ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise ProtocolError("the result's JSON document is not an object")
    return document, view[text_end:]


def _count_containers(text: bytes) -> int:
    """Count the JSON arrays and objects in ``text``, ignoring brackets inside strings."""
    count = text.count(b"[") + text.count(b"{")
    if count <= MAX_CONTAINERS:
        return count
    # Only a document over the limit pays for the exact count outside strings.
    outside_strings = _JSON_STRING.sub(b"", text)
    return outside_strings.count(b"[") + outside_strings.count(b"{")


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"the result's JSON document contains the non-standard constant {name}")


def _buffer_spans(document: dict[str, Any], body_length: int) -> list[tuple[int, int]]:
    if document.get("body_length") != body_length:
        raise ProtocolError(
            f"the result body is {body_length} bytes but its document declares a different length: "
            "the blob is truncated or padded"
        )
    spans = document.get("buffers")
    if type(spans) is not list:
        raise ProtocolError("the result's buffer table is missing or not a list")

    checked = []
    for span in spans:
        if type(span) is not list or len(span) != 2 or any(type(n) is not int or n < 0 for n in span):
            raise ProtocolError("a buffer reference in the result is not [offset, length] of non-negative ints")
        if span[0] + span[1] > body_length:
            raise ProtocolError(f"a buffer in the result runs past the end of the {body_length}-byte body")
        checked.append((span[0], span[1]))
    return checked


class _Decoder:
    """Rebuilds a value from the JSON tree, checking every node against the format."""

    def __init__(self, body: memoryview, spans: list[tuple[int, int]]) -> None:
        self.body = body
        self.spans = spans
        self.nodes = 0

    def buffer(self, node: dict[str, Any]) -> memoryview:
        index = node.get("buffer")
        if type(index) is not int or not 0 <= index < len(self.spans):
            raise ProtocolError("a node in the result refers to a buffer that does not exist")
        offset, length = self.spans[index]
        return self.body[offset:offset + length]

    def decode(self, node: Any, depth: int) -> object:
        if depth > MAX_DEPTH:
            raise ProtocolError(f"the result is nested more than {MAX_DEPTH} levels deep")
        # Counted as the encoder counts, so every encoded result decodes.
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ProtocolError(
                f"the result has more than {MAX_NODES} nodes, the limit encode_result enforces: "
                "it was not made by encode_result"
            )
        if node is None or type(node) in (bool, str, int, float):
            return node
        if type(node) is list:
            return [self.decode(item, depth + 1) for item in node]
        if type(node) is not dict:
            raise ProtocolError("a node in the result has an invalid JSON type")

        handler = _TAG_HANDLERS.get(_str_field(node, "t"))
        if handler is None:
            raise ProtocolError("a node in the result has a missing or unknown tag")
        return handler(self, node, depth)

    def items(self, node: dict[str, Any]) -> list[Any]:
        items = node.get("items")
        if type(items) is not list:
            raise ProtocolError("a container node in the result has no list of items")
        return items


def _str_field(node: dict[str, Any], key: str) -> str:
    value = node.get(key)
    return value if type(value) is str else ""


def _decode_int(decoder: _Decoder, node: dict[str, Any], depth: int) -> int:
    text = node.get("hex")
    if type(text) is not str or not _HEX_INT.fullmatch(text):
        raise ProtocolError("an int node in the result does not contain a hexadecimal number")
    return int(text, 16)


def _decode_float(decoder: _Decoder, node: dict[str, Any], depth: int) -> float:
    value = _NON_FINITE.get(_str_field(node, "v"))
    if value is None:
        raise ProtocolError("a float node in the result is not nan, inf or -inf")
    return value


def _as_float(decoder: _Decoder, node: Any) -> float:
    if type(node) is float:
        return node
    if type(node) is dict and node.get("t") == "float":
        return _decode_float(decoder, node, 0)
    raise ProtocolError("a complex node in the result has a part that is not a float")


def _decode_complex(decoder: _Decoder, node: dict[str, Any], depth: int) -> complex:
    return complex(_as_float(decoder, node.get("re")), _as_float(decoder, node.get("im")))


def _decode_tuple(decoder: _Decoder, node: dict[str, Any], depth: int) -> tuple[object, ...]:
    return tuple(decoder.decode(item, depth + 1) for item in decoder.items(node))


def _decode_key(decoder: _Decoder, key: Any) -> str | int:
    if type(key) is str or type(key) is int:
        return key
    if type(key) is dict and key.get("t") == "int":
        return _decode_int(decoder, key, 0)
    raise ProtocolError("a dict key in the result is not a str or an int")


def _decode_dict(decoder: _Decoder, node: dict[str, Any], depth: int) -> dict[str | int, object]:
    result: dict[str | int, object] = {}
    for pair in decoder.items(node):
        if type(pair) is not list or len(pair) != 2:
            raise ProtocolError("a dict item in the result is not a [key, value] pair")
        key = _decode_key(decoder, pair[0])
        if key in result:
            raise ProtocolError("a dict in the result has a duplicate key")
        result[key] = decoder.decode(pair[1], depth + 1)
    return result


def _decode_bytes(decoder: _Decoder, node: dict[str, Any], depth: int) -> bytes:
    return bytes(decoder.buffer(node))


def _array_dtype(node: dict[str, Any]) -> np.dtype[Any]:
    name = node.get("dtype")
    if type(name) is not str or name not in ARRAY_DTYPES:
        raise ProtocolError("a numpy node in the result has a missing or unsupported dtype")
    return np.dtype(name)


def _array_shape(node: dict[str, Any]) -> tuple[int, ...]:
    shape = node.get("shape")
    if type(shape) is not list or len(shape) > MAX_NDIM:
        raise ProtocolError(f"an array node in the result has no shape list of at most {MAX_NDIM} dimensions")
    if any(type(n) is not int or not 0 <= n <= _INT64_MAX for n in shape):
        raise ProtocolError("an array node in the result has a dimension that is not a non-negative int")
    return tuple(shape)


def _from_le_bytes(raw: memoryview | bytes, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    """Copy little-endian bytes into a new native-order array after checking the size matches."""
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            f"an array node in the result declares {count} items of {dtype.name}, "
            f"which do not fill its {len(raw)}-byte buffer"
        )
    if dtype == bool and len(raw) and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise ProtocolError("a bool array in the result contains a byte other than 0 or 1")
    try:
        flat = np.frombuffer(raw, dtype=dtype.newbyteorder("<"), count=count)
        return flat.astype(dtype).reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise ProtocolError(f"an array node in the result has an invalid shape ({type(exc).__name__})") from None


def _decode_ndarray(decoder: _Decoder, node: dict[str, Any], depth: int) -> np.ndarray:
    return _canonical_nan(_from_le_bytes(decoder.buffer(node), _array_dtype(node), _array_shape(node)))


def _decode_scalar(decoder: _Decoder, node: dict[str, Any], depth: int) -> object:
    dtype = _array_dtype(node)
    text = node.get("hex")
    if type(text) is not str or len(text) != 2 * dtype.itemsize:
        raise ProtocolError("a numpy scalar node in the result does not contain its dtype's bytes")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ProtocolError("a numpy scalar node in the result contains invalid hexadecimal") from None
    return _canonical_nan(_from_le_bytes(raw, dtype, ()))[()]


def _decode_frame_node(decoder: _Decoder, node: dict[str, Any], depth: int) -> pd.DataFrame:
    return decode_frame(bytes(decoder.buffer(node)))


def _decode_series(decoder: _Decoder, node: dict[str, Any], depth: int) -> pd.Series:
    name = node.get("name")
    if name is not None and type(name) is not str and type(name) is not int:
        raise ProtocolError("a Series node in the result has a name that is not a str, int or null")
    frame = decode_frame(bytes(decoder.buffer(node)))
    if frame.shape[1] != 1:
        raise ProtocolError(f"a Series node in the result contains a frame of {frame.shape[1]} columns instead of 1")
    return frame.iloc[:, 0].rename(name)


def _decode_object(decoder: _Decoder, node: dict[str, Any], depth: int) -> object:
    cls = _object_types().get(_str_field(node, "type"))
    if cls is None:
        raise ProtocolError("an object node in the result names a type that is not in the allowed table")
    state = node.get("state")
    if type(state) is not dict or state.get("t") != "dict":
        raise ProtocolError("an object node in the result has no state dict")
    # The state dict is the object's own level, as on encode.
    decoded = _decode_dict(decoder, state, depth)
    if any(type(key) is not str for key in decoded):
        raise ProtocolError("an object state in the result has a key that is not a str")

    try:
        return cls.from_state(decoded)  # type: ignore[attr-defined]
    except (ConfidentialNBError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise ProtocolError(f"an object state in the result is invalid for {cls.__name__} ({type(exc).__name__})") from None


_TAG_HANDLERS: dict[str, Any] = {
    "int": _decode_int,
    "float": _decode_float,
    "complex": _decode_complex,
    "tuple": _decode_tuple,
    "dict": _decode_dict,
    "bytes": _decode_bytes,
    "ndarray": _decode_ndarray,
    "scalar": _decode_scalar,
    "frame": _decode_frame_node,
    "series": _decode_series,
    "object": _decode_object,
}
