"""Tests for confidential_nb.result_codec: exact round trips, rejected values, hostile bytes."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal, assert_series_equal

from confidential_nb import result_codec
from confidential_nb.errors import EncodingError, ProtocolError
from confidential_nb.result_codec import MAX_DEPTH, _registered_types, decode_result, encode_result
from confidential_nb.training import History, LogisticRegression, train_test_split

PREFIX = struct.Struct("<4sHHI")
CANONICAL_NAN_BITS = struct.unpack("<Q", struct.pack("<d", np.nan))[0]


def round_trip(value: object) -> object:
    return decode_result(encode_result(value))


def assert_same(actual: object, expected: object) -> None:
    """Assert equal values of identical types all the way down, comparing floats bit for bit."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, float):
        if math.isnan(expected):
            assert struct.pack("<d", actual) == struct.pack("<d", np.nan)  # type: ignore[arg-type]
        else:
            assert struct.pack("<d", actual) == struct.pack("<d", expected)  # type: ignore[arg-type]
    elif isinstance(expected, complex):
        assert_same(actual.real, expected.real)  # type: ignore[attr-defined]
        assert_same(actual.imag, expected.imag)  # type: ignore[attr-defined]
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)  # type: ignore[arg-type]
        for left, right in zip(actual, expected):  # type: ignore[call-overload]
            assert_same(left, right)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)  # type: ignore[call-overload]
        for key in expected:
            assert [type(k) for k in actual if k == key] == [type(key)]  # type: ignore[attr-defined]
            assert_same(actual[key], expected[key])  # type: ignore[index]
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype  # type: ignore[attr-defined]
        assert actual.shape == expected.shape  # type: ignore[attr-defined]
        assert actual.flags.c_contiguous  # type: ignore[attr-defined]
        assert np.array_equal(actual, expected, equal_nan=expected.dtype.kind in "fc")  # type: ignore[arg-type]
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype  # type: ignore[attr-defined]
        assert np.array_equal(actual, expected, equal_nan=expected.dtype.kind in "fc")  # type: ignore[arg-type]
    elif isinstance(expected, pd.DataFrame):
        assert_frame_equal(actual, expected, check_exact=True)  # type: ignore[arg-type]
    elif isinstance(expected, pd.Series):
        assert_series_equal(actual, expected, check_exact=True)  # type: ignore[arg-type]
    else:
        assert actual == expected


AWKWARD_VALUES = [
    None,
    True,
    False,
    0,
    -(2**63),
    2**63 - 1,
    2**63,
    -(2**64) - 1,
    10**5000,
    1.5,
    -0.0,
    math.inf,
    -math.inf,
    5e-324,
    1 + 2j,
    complex(-0.0, math.inf),
    "",
    "ünï©ødé \U0001F600",
    "lone surrogate \ud800",
    b"",
    bytes(range(256)),
    [],
    (),
    (1,),
    ((), [()], {}),
    {},
    {"a": 1, 2: "b", -(2**70): None},
    {1: "int key", "1": "str key"},
    [True, 1, 1.0, 1 + 0j],
    [[[[[]]]]],
    np.float32(1.5),
    np.float16(-0.0),
    np.float64(2.5),
    np.int8(-3),
    np.uint64(2**64 - 1),
    np.bool_(True),
    np.complex64(1 - 1j),
    np.array(3.0),
    np.array([], dtype=np.int32),
    np.zeros((0, 3), dtype=np.uint8),
    np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    np.array([[True, False], [False, True]]),
    np.array([1.0, np.inf, -0.0, np.nan], dtype=np.float32),
    np.array([1 + 1j, complex(np.nan, 1)], dtype=np.complex128),
    pd.DataFrame({"a": [1, 2], "b": ["x", None]}, index=pd.Index(["r", "s"], name="row")),
    pd.DataFrame(),
    pd.Series([1.5, np.nan], name="loss"),
    pd.Series(["a", "b"], index=pd.Index([10, 20], name="id")),
    pd.Series([], dtype="Int64", name=3),
]


@pytest.mark.parametrize("value", AWKWARD_VALUES, ids=lambda value: type(value).__name__)
def test_decode_result_round_trips_awkward_value(value: object) -> None:
    assert_same(round_trip(value), value)


def test_decode_result_round_trips_nested_result() -> None:
    value = {"metrics": {"accuracy": 0.9, "curve": [0.5, 0.25]}, "weights": np.ones((2, 2)), "pair": (1, "x")}

    assert_same(round_trip(value), value)


def test_decode_result_makes_nan_canonical() -> None:
    payload_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000BAD))[0]
    array = np.array([payload_nan, 1.0])

    result = round_trip([payload_nan, np.float64(payload_nan), array])

    assert struct.pack("<d", result[0]) == struct.pack("<d", np.nan)  # type: ignore[index]
    assert result[1].view(np.uint64) == CANONICAL_NAN_BITS  # type: ignore[index]
    assert result[2].view(np.uint64)[0] == CANONICAL_NAN_BITS  # type: ignore[index]
    assert array.view(np.uint64)[0] == 0xFFF8000000000BAD


def test_decode_result_returns_c_order_native_array() -> None:
    fortran = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    big_endian = np.arange(4, dtype=">i4")

    result = round_trip([fortran, big_endian])

    assert result[0].flags.c_contiguous  # type: ignore[index]
    assert np.array_equal(result[0], fortran)  # type: ignore[index]
    assert result[1].dtype == np.dtype("int32")  # type: ignore[index]
    assert result[1].dtype.isnative  # type: ignore[index]
    assert result[1].tolist() == [0, 1, 2, 3]  # type: ignore[index]


def test_decode_result_returns_writable_array() -> None:
    result = round_trip(np.zeros(3))

    result[0] = 1.0  # type: ignore[index]

    assert result.tolist() == [1.0, 0.0, 0.0]  # type: ignore[attr-defined]


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(allow_nan=True),
    st.text(),
    st.binary(max_size=20),
)
json_keys = st.one_of(st.text(max_size=8), st.integers(min_value=-(2**70), max_value=2**70))
nested_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(json_keys, children, max_size=4),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(nested_values)
def test_decode_result_round_trips_generated_values(value: object) -> None:
    assert_same(round_trip(value), value)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["bool", "int8", "uint16", "int64", "uint64", "float16", "float32", "float64", "complex128"]),
    st.lists(st.integers(min_value=0, max_value=3), max_size=3),
    st.binary(min_size=16 * 27, max_size=16 * 27),
)
def test_decode_result_round_trips_generated_arrays(dtype_name: str, shape: list[int], raw: bytes) -> None:
    dtype = np.dtype(dtype_name)
    count = math.prod(shape)
    array = np.frombuffer(raw[: count * dtype.itemsize], dtype=dtype).reshape(shape) if dtype != bool else (
        np.frombuffer(raw[:count], dtype=np.uint8).reshape(shape) % 2 == 1
    )

    assert_same(round_trip(array), array)


class Counter:
    """A library-style class with to_state and from_state, registered only in tests."""

    def __init__(self, count: int) -> None:
        self.count = count

    def to_state(self) -> dict[str, object]:
        return {"count": self.count, "steps": np.arange(self.count)}

    @classmethod
    def from_state(cls, state: object) -> Counter:
        if not isinstance(state, dict) or type(state.get("count")) is not int:
            raise ValueError("Counter state needs an int 'count'.")
        return cls(state["count"])


@pytest.fixture
def counter_type() -> Iterator[None]:
    with _registered_types({"Counter": Counter}):
        yield


def test_decode_result_rebuilds_registered_type(counter_type: None) -> None:
    result = round_trip({"c": Counter(4)})

    assert type(result["c"]) is Counter  # type: ignore[index]
    assert result["c"].count == 4  # type: ignore[index]


def test_encode_result_rejects_unregistered_type() -> None:
    with pytest.raises(EncodingError, match="result is an instance of a class defined outside confidential_nb, numpy, pandas and Python") as info:
        encode_result(Counter(1))

    assert "Counter" not in str(info.value)


def test_decode_result_rejects_type_once_unregistered() -> None:
    with _registered_types({"Counter": Counter}):
        blob = encode_result(Counter(2))

    with pytest.raises(ProtocolError, match="names a type that is not in the allowed table"):
        decode_result(blob)


def test_decode_result_reports_invalid_state(counter_type: None) -> None:
    blob = rewrite_document(encode_result(Counter(2)), lambda doc: doc["value"]["state"]["items"][0].__setitem__(1, "two"))

    with pytest.raises(ProtocolError, match=r"object state in the result is invalid for Counter \(ValueError\)"):
        decode_result(blob)


@pytest.fixture(scope="module")
def fitted_model() -> LogisticRegression:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 3))
    frame = pd.DataFrame(features, columns=["a", "b", "c"])
    frame["target"] = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(int)
    X_train, X_test, y_train, y_test = train_test_split(frame, target="target", test_size=0.25, random_state=0)
    return LogisticRegression().fit(X_train, y_train, validation_data=(X_test, y_test))


def test_decode_result_round_trips_logistic_regression(fitted_model: LogisticRegression) -> None:
    result = round_trip({"model": fitted_model, "accuracy": 0.5})
    model = result["model"]  # type: ignore[index]

    assert type(model) is LogisticRegression
    assert np.array_equal(model.coef_, fitted_model.coef_)
    assert np.array_equal(model.intercept_, fitted_model.intercept_)
    assert model.classes_.tolist() == fitted_model.classes_.tolist()
    assert model.get_params() == fitted_model.get_params()
    assert model.n_iter_ == fitted_model.n_iter_
    assert model.history_ == fitted_model.history_
    assert_same(model.history_.to_state(), fitted_model.history_.to_state())


def test_decode_result_round_trips_history(fitted_model: LogisticRegression) -> None:
    history = fitted_model.history_

    result = round_trip(history)

    assert type(result) is History
    assert result == history
    assert_same(result.to_state(), history.to_state())  # type: ignore[attr-defined]


def test_encode_result_rejects_subclass_of_library_model() -> None:
    class MyModel(LogisticRegression):
        pass

    with pytest.raises(EncodingError, match=r"result\['m'\] is an instance of a class defined outside confidential_nb, numpy, pandas and Python"):
        encode_result({"m": MyModel()})


def test_decode_result_rejects_forged_model_state(fitted_model: LogisticRegression) -> None:
    def corrupt(document: dict[str, Any]) -> None:
        items = document["value"]["state"]["items"]
        items[:] = [item for item in items if item[0] != "coef"]

    blob = rewrite_document(encode_result(fitted_model), corrupt)

    with pytest.raises(ProtocolError, match=r"invalid for LogisticRegression \(ValueError\)"):
        decode_result(blob)


def make_generator() -> Iterator[int]:
    yield 1


class UserSecretThing:
    pass


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"f": lambda x: x}, r"result\['f'\] is a function, which cannot cross the enclave boundary: return the values it computes"),
        ({"s": {1, 2}}, r"result\['s'\] is a set, which cannot cross the enclave boundary: convert it to a list"),
        ([frozenset()], r"result\[0\] is a frozenset, .* convert it to a list"),
        ({"g": make_generator()}, r"result\['g'\] is a generator, .* convert it to a list"),
        ({"x": [1, [2, {"deep": UserSecretThing()}]]}, r"result\['x'\]\[1\]\[1\]\['deep'\] is an instance of a class defined outside confidential_nb, numpy, pandas and Python"),
        ({"a": np.array(["x"], dtype=object)}, r"result\['a'\] is a numpy.ndarray of dtype object, .* convert it to a numeric dtype"),
        ({"a": np.array(["2020"], dtype="datetime64[ns]")}, r"numpy.ndarray of dtype datetime64\[ns\]"),
        ({"a": np.array(["ab"])}, r"numpy.ndarray of dtype <U2"),
        ({"t": pd.Timestamp("2020-01-01")}, r"result\['t'\] is a pandas.*Timestamp, .* convert it to a str with .isoformat\(\)"),
        ({"n": np.str_("x")}, r"result\['n'\] is a numpy.str_, .* with .item\(\)"),
        ({"n": np.longdouble(1)}, r"numpy.longdouble, .* with .item\(\)"),
        (bytearray(b"x"), r"result is a bytearray, .* convert it to bytes"),
        ([range(3)], r"result\[0\] is a range, .* convert it to a list"),
        ({"m": np.ma.masked_array([1])}, r"result\['m'\] is a numpy.ma.MaskedArray of dtype int64, .* with numpy.asarray\(\)"),
        ((1, object()), r"result\[1\] is an object, which cannot cross the enclave boundary: convert it to None, bool"),
        ({"e": ValueError("x")}, r"result\['e'\] is a ValueError"),
    ],
    ids=[
        "lambda", "set", "frozenset", "generator", "nested-user-object", "object-array", "datetime-array", "str-array",
        "timestamp", "numpy-str", "longdouble", "bytearray", "range", "masked-array", "object", "exception",
    ],
)
def test_encode_result_rejects_unsupported_value(value: object, message: str) -> None:
    with pytest.raises(EncodingError, match=message) as info:
        encode_result(value)

    assert "UserSecretThing" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (type("alice_secret", (), {"__module__": "builtins"})(), "is an instance of a class defined outside"),
        (np.zeros(2).view(type("alice_secret", (np.ndarray,), {})), "is an instance of a numpy.ndarray subclass defined outside"),
        (np.zeros(1, dtype=[("alice_secret", "f8")]), "is a numpy.ndarray of a structured dtype with 1 field"),
    ],
    ids=["forged-builtins-class", "ndarray-subclass", "structured-array"],
)
def test_encode_result_hides_data_derived_type_names(value: object, message: str) -> None:
    with pytest.raises(EncodingError, match=message) as info:
        encode_result({"x": value})

    assert "alice_secret" not in str(info.value)


def test_encode_result_rejects_open_file(tmp_path: Any) -> None:
    with open(tmp_path / "data.txt", "w") as handle:
        with pytest.raises(EncodingError, match=r"result\['log'\] is a _io.TextIOWrapper, .* return the file's contents"):
            encode_result({"log": handle})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({("a", 1): 2}, r"result has a key of type tuple: dict keys must be str or int"),
        ({"outer": {True: 1}}, r"result\['outer'\] has a key of type bool"),
        ({np.int64(1): 1}, r"result has a key of type numpy.int64"),
        ({None: 1}, r"result has a key of type NoneType"),
    ],
    ids=["tuple", "bool", "numpy-int", "none"],
)
def test_encode_result_rejects_bad_key(value: object, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        encode_result(value)


def test_encode_result_omits_string_values_from_message() -> None:
    with pytest.raises(EncodingError) as info:
        encode_result({"patient": ["Jane Roe, 1970-01-01", {1, 2}]})

    assert "Jane" not in str(info.value)
    assert "result['patient'][1] is a set" in str(info.value)


def test_encode_result_shortens_long_key_in_path() -> None:
    key = "k" * 100

    with pytest.raises(EncodingError, match=r"result\['k{40}'\.\.\.\] is a set") as info:
        encode_result({key: {1}})

    assert key not in str(info.value)


def test_encode_result_rejects_cycle() -> None:
    loop: list[object] = [1]
    loop.append(loop)

    with pytest.raises(EncodingError, match=r"result\[1\] is a list that contains itself: a cycle cannot be encoded"):
        encode_result(loop)


def test_encode_result_rejects_dict_cycle() -> None:
    loop: dict[str, object] = {}
    loop["self"] = [loop]

    with pytest.raises(EncodingError, match=r"result\['self'\]\[0\] is a dict that contains itself"):
        encode_result(loop)


def test_encode_result_accepts_shared_container() -> None:
    shared = [1, 2]

    assert round_trip([shared, shared]) == [[1, 2], [1, 2]]


def nest(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_encode_result_accepts_max_depth() -> None:
    assert round_trip(nest(MAX_DEPTH)) == nest(MAX_DEPTH)


def test_encode_result_rejects_excess_depth() -> None:
    with pytest.raises(EncodingError, match=f"is nested more than {MAX_DEPTH} levels deep: flatten the result"):
        encode_result(nest(MAX_DEPTH + 1))


def test_encode_result_rejects_exponential_sharing(monkeypatch: pytest.MonkeyPatch) -> None:
    # A lower limit keeps the test fast. The walk stops at the limit either way.
    monkeypatch.setattr(result_codec, "MAX_NODES", 5000)
    value: list[object] = []
    for _ in range(40):
        value = [value, value]

    with pytest.raises(EncodingError, match=r"the result has more than 5000 parts \(reached at result\[0\]"):
        encode_result(value)


def test_encode_result_prefixes_frame_error_with_path() -> None:
    series = pd.Series(pd.period_range("2020", periods=2, freq="M"))

    with pytest.raises(EncodingError, match=r"result\['p'\]: column 0 has dtype period\[M\]"):
        encode_result({"p": series})


def test_encode_result_rejects_series_with_tuple_name() -> None:
    with pytest.raises(EncodingError, match=r"result is a pandas Series whose name has type tuple"):
        encode_result(pd.Series([1], name=("a", "b")))


# Decoding hostile bytes


def rewrite_document(blob: bytes, change: Any) -> bytes:
    """Return the blob with its JSON document edited by ``change`` and the prefix length updated."""
    magic, version, reserved, length = PREFIX.unpack_from(blob)
    document = json.loads(blob[PREFIX.size:PREFIX.size + length])
    change(document)
    text = json.dumps(document).encode("ascii")
    return PREFIX.pack(magic, version, reserved, len(text)) + text + blob[PREFIX.size + length:]


def blob_with_value(node: object, buffers: list[list[int]] | None = None, body: bytes = b"") -> bytes:
    text = json.dumps({"value": node, "buffers": buffers or [], "body_length": len(body)}).encode("ascii")
    return PREFIX.pack(b"CNBR", 1, 0, len(text)) + text + body


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"CNB", "shorter than its 12-byte prefix"),
        (PREFIX.pack(b"NOPE", 1, 0, 0), "does not start with the result magic"),
        (PREFIX.pack(b"CNBR", 2, 0, 0), "format version is 2, but this library reads version 1"),
        (PREFIX.pack(b"CNBR", 1, 0, 100) + b"{}", "declares a 100-byte JSON document, longer than the blob"),
        (PREFIX.pack(b"CNBR", 1, 0, 3) + b"{x}", r"JSON document is invalid \(JSONDecodeError\)"),
        (PREFIX.pack(b"CNBR", 1, 0, 3) + b"NaN", "non-standard constant NaN"),
        (PREFIX.pack(b"CNBR", 1, 0, 2) + b"[]", "JSON document is not an object"),
        (blob_with_value(None) + b"x", "truncated or padded"),
        (PREFIX.pack(b"CNBR", 1, 0, 2) + b"{}", "missing the key 'value'"),
        (blob_with_value({"t": "pickle"}), "missing or unknown tag"),
        (blob_with_value({"t": ["int"]}), "missing or unknown tag"),
        (blob_with_value({}), "missing or unknown tag"),
        (blob_with_value({"t": "int", "hex": "12g"}), "does not contain a hexadecimal number"),
        (blob_with_value({"t": "float", "v": "NaN"}), "not nan, inf or -inf"),
        (blob_with_value({"t": "complex", "re": 1, "im": 0.0}), "has a part that is not a float"),
        (blob_with_value({"t": "tuple"}), "no list of items"),
        (blob_with_value({"t": "dict", "items": [["a", 1], ["a", 2]]}), "duplicate key"),
        (blob_with_value({"t": "dict", "items": [[True, 1]]}), "key in the result is not a str or an int"),
        (blob_with_value({"t": "dict", "items": [["a"]]}), r"not a \[key, value\] pair"),
        (blob_with_value({"t": "bytes", "buffer": 0}), "refers to a buffer that does not exist"),
        (blob_with_value({"t": "bytes", "buffer": 0}, [[0, 5]], b"abc"), "runs past the end of the 3-byte body"),
        (blob_with_value({"t": "bytes", "buffer": 0}, [[-1, 1]], b"abc"), "not \\[offset, length\\] of non-negative ints"),
        (
            blob_with_value({"t": "ndarray", "dtype": "float64", "shape": [10**9, 10**9], "buffer": 0}, [[0, 8]], bytes(8)),
            "declares 1000000000000000000 items of float64, which do not fill its 8-byte buffer",
        ),
        (
            blob_with_value({"t": "ndarray", "dtype": "float64", "shape": [0, 2**70], "buffer": 0}, [[0, 0]]),
            "dimension that is not a non-negative int",
        ),
        (
            blob_with_value({"t": "ndarray", "dtype": "float64", "shape": [1] * 40, "buffer": 0}, [[0, 8]], bytes(8)),
            "no shape list of at most 32 dimensions",
        ),
        (blob_with_value({"t": "ndarray", "dtype": "object", "shape": [1], "buffer": 0}, [[0, 8]], bytes(8)), "missing or unsupported dtype"),
        (blob_with_value({"t": "ndarray", "dtype": "bool", "shape": [2], "buffer": 0}, [[0, 2]], b"\x01\x02"), "byte other than 0 or 1"),
        (blob_with_value({"t": "scalar", "dtype": "float32", "hex": "00"}), "does not contain its dtype's bytes"),
        (blob_with_value({"t": "scalar", "dtype": "int8", "hex": "zz"}), "contains invalid hexadecimal"),
        (blob_with_value({"t": "frame", "buffer": 0}, [[0, 3]], b"abc"), "shorter than its 12-byte prefix"),
        (blob_with_value({"t": "series", "name": [1], "buffer": 0}, [[0, 0]]), "name that is not a str, int or null"),
        (blob_with_value({"t": "object", "type": "os.system", "state": {"t": "dict", "items": []}}), "not in the allowed table"),
        (blob_with_value({"t": "object", "type": "History", "state": {}}), "has no state dict"),
        (blob_with_value({"t": "object", "type": "History", "state": {"t": "dict", "items": [[1, 2]]}}), "key that is not a str"),
        (blob_with_value({"t": "object", "type": "History", "state": {"t": "dict", "items": []}}), r"invalid for History \(ValueError\)"),
        (blob_with_value(nest(MAX_DEPTH + 1)), f"nested more than {MAX_DEPTH} levels deep"),
        (PREFIX.pack(b"CNBR", 1, 0, 200_000) + b"[" * 100_000 + b"]" * 100_000, r"invalid \(RecursionError\)"),
    ],
)
def test_decode_result_rejects_malformed_blob(blob: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_result(blob)


def test_decode_result_rejects_excess_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result_codec, "MAX_NODES", 5000)

    # The list itself is a node, so 4999 items make 5000 nodes.
    assert decode_result(blob_with_value([0] * 4999)) == [0] * 4999
    with pytest.raises(ProtocolError, match="the result has more than 5000 nodes, the limit encode_result enforces"):
        decode_result(blob_with_value([0] * 5000))


def test_decode_result_rejects_excess_nodes_at_real_limit() -> None:
    with pytest.raises(ProtocolError, match=f"more than {result_codec.MAX_NODES} nodes"):
        decode_result(blob_with_value([[]] * result_codec.MAX_NODES))


def node_limit_value(fitted_model: LogisticRegression) -> object:
    return {
        2**70: [1 + 2j, complex(math.nan, math.inf), (None, b"ab")],
        "array": np.zeros((2, 3)),
        "scalar": np.float32(1.5),
        "frame": pd.DataFrame({"a": [1]}),
        "series": pd.Series([1.0], name="s"),
        "model": fitted_model,
    }


def test_decode_result_counts_nodes_as_encoder(monkeypatch: pytest.MonkeyPatch, fitted_model: LogisticRegression) -> None:
    value = node_limit_value(fitted_model)
    encoder = result_codec._Encoder()
    encoder.encode(value, "result", 0)
    blob = encode_result(value)

    monkeypatch.setattr(result_codec, "MAX_NODES", encoder.nodes)
    assert type(decode_result(blob)) is dict
    monkeypatch.setattr(result_codec, "MAX_NODES", encoder.nodes - 1)
    with pytest.raises(ProtocolError, match=f"more than {encoder.nodes - 1} nodes"):
        decode_result(blob)


def test_decode_result_rejects_excess_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result_codec, "MAX_CONTAINERS", 100)

    # The document object, the buffer list and the value list take 3.
    assert decode_result(blob_with_value([[]] * 97)) == [[]] * 97
    with pytest.raises(ProtocolError, match="has more than 100 arrays and objects"):
        decode_result(blob_with_value([[]] * 98))


def test_decode_result_ignores_brackets_in_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result_codec, "MAX_CONTAINERS", 100)
    text = '\\"[{' * 100

    assert decode_result(encode_result({text: [text]})) == {text: [text]}


def test_encode_result_stays_within_container_bound(fitted_model: LogisticRegression) -> None:
    # Dict values with int keys beyond 64 bits and complex parts that are
    # float nodes take the most arrays and objects per node.
    worst = {2**70 + i: complex(math.nan, math.inf) for i in range(50)}
    value = [worst, {2**70: {"a": np.zeros(1)}}, node_limit_value(fitted_model)]
    encoder = result_codec._Encoder()
    encoder.encode(value, "result", 0)

    blob = encode_result(value)
    length = PREFIX.unpack_from(blob)[3]

    containers = result_codec._count_containers(blob[PREFIX.size:PREFIX.size + length])
    assert containers <= 5 * encoder.nodes + 2


def test_decode_result_rejects_series_of_two_columns() -> None:
    from confidential_nb.frame_codec import encode_frame

    frame = encode_frame(pd.DataFrame({"a": [1], "b": [2]}))

    with pytest.raises(ProtocolError, match="contains a frame of 2 columns instead of 1"):
        decode_result(blob_with_value({"t": "series", "name": None, "buffer": 0}, [[0, len(frame)]], frame))


def sample_blob() -> bytes:
    return encode_result({
        "accuracy": 0.75,
        "n": 2**70,
        "labels": ("a", "b"),
        3: [None, True, math.nan, 1j, b"\x01"],
        "w": np.arange(4, dtype=np.float32),
        "s": np.int16(7),
        "frame": pd.DataFrame({"x": [1.5, 2.5], "y": ["p", None]}),
    })


def test_decode_result_truncated_raises_only_protocol_error() -> None:
    blob = sample_blob()

    for length in range(len(blob)):
        with pytest.raises(ProtocolError):
            decode_result(blob[:length])


def test_decode_result_flipped_byte_raises_only_protocol_error() -> None:
    blob = sample_blob()
    decoded = 0

    for position in range(len(blob)):
        for mask in (0x01, 0x20, 0x80):
            damaged = bytearray(blob)
            damaged[position] ^= mask
            try:
                decode_result(bytes(damaged))
            except ProtocolError:
                continue
            decoded += 1

    # Flips inside numbers and buffers still decode, so both outcomes ran.
    assert decoded > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=32), st.integers(min_value=0, max_value=3000))
def test_decode_result_spliced_bytes_raise_only_protocol_error(noise: bytes, position: int) -> None:
    blob = sample_blob()
    damaged = blob[:position] + noise + blob[position + len(noise):]

    try:
        decode_result(damaged)
    except ProtocolError:
        pass


def test_result_codec_import_leaves_training_unloaded() -> None:
    code = "import sys, confidential_nb.result_codec; print('confidential_nb.training' in sys.modules)"

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)

    assert completed.stdout.strip() == "False"
