"""The result guard's rules on encoded results and frames, without an enclave, and the policy fields behind them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from confidential_nb.enclave import rare_values
from confidential_nb.enclave.result_guard import EgressRejected, ResultLimits, SealedSource, first_path_with, guard_result
from confidential_nb.enclave.rare_values import find_rare_values
from confidential_nb.errors import PolicyError
from confidential_nb.frame_codec import encode_frame
from confidential_nb.keys import canonical_json
from confidential_nb.policy import Policy
from confidential_nb.result_codec import encode_result
from confidential_nb.training import History, LogisticRegression

VECTORS = Path(__file__).parent / "vectors" / "sealed_v2.json"


def _frame(rows: int = 200) -> pd.DataFrame:
    """Rows with a unique id, a few group names, small ints, a float measurement and a label."""
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "patient_id": [f"P-{number:06d}" for number in rng.permutation(rows)],
        "group": rng.choice(["north", "south", "east"], rows),
        "age": rng.integers(20, 90, rows),
        "x": rng.normal(size=rows),
        "label": rng.integers(0, 2, rows),
    })


def _source(frame: pd.DataFrame | None, **policy: object) -> SealedSource:
    return SealedSource("data", Policy.from_dict(policy), encode_frame(frame) if frame is not None else None)


def _rejection(value: object, *sources: SealedSource) -> str:
    with pytest.raises(EgressRejected) as caught:
        guard_result(encode_result(value), list(sources))
    return str(caught.value)


def _passes(value: object, *sources: SealedSource) -> None:
    guard_result(encode_result(value), list(sources))


# Policy fields


@pytest.mark.parametrize(("field", "value"), [
    ("max_items", 0), ("max_items", -5), ("max_items", True), ("max_items", "100"), ("max_items", 2.5),
    ("max_items", 10**12), ("max_text", 0), ("max_text", None), ("rare_k", 0), ("rare_k", 10**7),
])
def test_policy_egress_field_invalid(field, value):
    with pytest.raises(PolicyError) as caught:
        Policy.from_dict({field: value})
    assert f"invalid {field} {value!r}" in str(caught.value)
    assert "expected an integer from 1 to" in str(caught.value)


def test_policy_old_header_gets_defaults():
    old = {"allowed_functions": None, "max_result_bytes": 1000, "allow_debug": False, "expires": None, "schema_public": True}
    policy = Policy.from_dict(old)
    assert (policy.max_items, policy.max_text, policy.rare_k) == (100, 1_000, 3)
    assert policy.to_dict() == old


def test_policy_egress_fields_round_trip():
    policy = Policy.from_dict({"max_items": 500, "rare_k": 1})
    assert policy.to_dict()["max_items"] == 500
    assert policy.to_dict()["rare_k"] == 1
    assert "max_text" not in policy.to_dict()
    assert Policy.from_dict(policy.to_dict()) == policy


def test_policy_unknown_field_lists_egress_fields():
    with pytest.raises(PolicyError) as caught:
        Policy.from_dict({"max_rows": 5})
    assert "max_items, max_text, rare_k" in str(caught.value)


def test_policy_vector_digests_unchanged():
    # Receipts carry a digest of each input's canonical policy, so old sealed files must keep theirs.
    cases = json.loads(VECTORS.read_text())["cases"]
    assert cases
    for case in cases:
        assert canonical_json(Policy.from_dict(case["policy"]).to_dict()) == canonical_json(case["policy"])


# Item rule


def test_items_limit_boundary():
    source = _source(_frame(), max_items=10)
    _passes(list(range(9)), source)
    assert "result is a list of 10 items" in _rejection(list(range(10)), source)


def test_items_row_count_of_smallest_input():
    small, large = _source(_frame(8)), _source(_frame(300))
    _passes(list(range(7)), small, large)
    message = _rejection(list(range(8)), small, large)
    assert "fewer than 8 items (the row count of the smallest sealed DataFrame input)" in message


def test_items_strictest_policy_of_inputs():
    message = _rejection([0.5] * 60, _source(_frame(), max_items=50), _source(_frame(), max_items=150))
    assert "fewer than 50 items (the policy's max_items)" in message


def test_items_raised_limit_lets_longer_list():
    counts = [1] * 150
    assert "max_items" in _rejection(counts, _source(_frame()))
    _passes(counts, _source(_frame(), max_items=180))


def test_items_array_largest_dimension():
    # A transposed array has few rows but one long dimension.
    message = _rejection(np.zeros((3, 150)), _source(_frame()))
    assert "numpy array of shape (3, 150)" in message
    _passes(np.zeros((10, 10)), _source(_frame()))


def test_items_dict_judged_by_values():
    histogram = {f"bin_{position}": position % 7 for position in range(150)}
    _passes(histogram, _source(_frame()))
    assert "result['inner']['rows'] is a list of 150 items" in _rejection({"inner": {"rows": [0] * 150}}, _source(_frame()))


def test_items_library_objects_exempt():
    history = History()
    for epoch in range(150):
        history.record(0.01, loss=1.0 / (epoch + 1), accuracy=0.5)
    frame = _frame()
    model = LogisticRegression(epochs=5).fit(frame[["x", "age"]].to_numpy(), frame["label"].to_numpy())
    _passes({"history": history, "model": model}, _source(frame))


def test_items_no_inputs_no_limits():
    guard_result(encode_result({"rows": list(range(10_000)), "text": "x" * 100_000}), [])


# Text rule


def test_text_limit_boundary():
    source = _source(_frame(), max_text=20)
    _passes("a" * 20, source)
    assert "result['note'] is a str of 21 characters" in _rejection({"note": "a" * 21}, source)
    assert "result[0] is a bytes of 21 bytes" in _rejection([b"a" * 21], source)


def test_text_csv_dump_rejected():
    frame = _frame()
    assert "max_text" in _rejection(frame.to_csv(), _source(frame))


def test_text_long_key_rejected():
    message = _rejection({"k" * 2000: 1}, _source(_frame()))
    assert "the key of result[<key 0>] is a str of 2,000 characters" in message


def test_text_inside_frame_rejected():
    table = pd.DataFrame({"note": ["short", "y" * 1500]})
    assert "containing a text of 1,500 characters" in _rejection({"table": table}, _source(_frame()))


def test_text_bytes_input_only_text_rules():
    # A bytes input has no rows: the item rule uses max_items alone and the rare-value rule does not apply.
    source = SealedSource("blob", Policy(), None)
    _passes(list(range(99)), source)
    assert "max_items" in _rejection(list(range(100)), source)
    assert "max_text" in _rejection(b"z" * 1001, source)


# Paths


def test_path_keys_by_position_when_unsafe():
    source = _source(_frame(), max_items=5)
    value = {"plain": {"not an identifier": {"a" * 40: {7: [0] * 5}}}}
    assert _rejection(value, source).startswith("result['plain'][<key 0>][<key 0>][<key 0>] is a list")


def test_path_private_schema_positions_only():
    source = _source(_frame(), max_items=5, schema_public=False)
    message = _rejection({"first": [0], "rows": [1] * 5}, source)
    assert message.startswith("result[<key 1>] is a list,")
    assert "rows" not in message.split(",")[0]


def test_path_private_schema_hides_row_count():
    frame = _frame(40)
    message = _rejection(list(range(40)), _source(frame, schema_public=False))
    assert "40" not in message
    assert "fewer items than the smallest sealed DataFrame input has rows" in message


# Rare-value rule


def test_rare_head_rejected():
    frame = _frame()
    message = _rejection(frame.head(), _source(frame))
    assert "are rare values of input 'data' (its column 'patient_id' first)" in message
    assert "rare_k" in message


def test_rare_head_without_identifying_columns_passes():
    frame = _frame()
    # Group names and labels are common, and ages lie within 0 .. rows, so they count as possible counts.
    _passes(frame[["group", "age", "label"]].head(), _source(frame))


def test_rare_one_row_below_k_passes():
    # One row holds only two rare values (its id and x), fewer than rare_k = 3.
    frame = _frame()
    _passes(frame.iloc[0].to_dict(), _source(frame))


def test_rare_private_schema_no_column_or_key():
    frame = _frame()
    leak = {identifier: 1 for identifier in frame["patient_id"][:3]}
    message = _rejection(leak, _source(frame, schema_public=False))
    assert "result[<key 0>]" in message
    assert "patient_id" not in message
    assert "P-" not in message


def test_rare_aggregates_pass():
    frame = _frame()
    summary = {"mean_x": frame["x"].mean(), "std_x": frame["x"].std(), "median_age": frame["age"].median(),
               "groups": sorted(frame["group"].unique()), "by_group": frame.groupby("group")["x"].mean(),
               "counts": frame["group"].value_counts()}
    _passes(summary, _source(frame))


def test_rare_computed_floats_do_not_match():
    frame = _frame()
    derived = [float(value) + 1e-12 for value in frame["x"][:10]]
    assert frame["x"][:10].tolist() != derived
    _passes(derived, _source(frame))
    assert "rare values" in _rejection(frame["x"][:10].tolist(), _source(frame))


def test_rare_numpy_scalars_match():
    frame = pd.DataFrame({"reading": np.linspace(0.5, 99.5, 200, dtype=np.float32),
                          "account": np.arange(10_000_000, 10_000_200, dtype=np.int64)})
    copies = [frame["reading"].iloc[3], frame["reading"].iloc[4], frame["account"].iloc[5]]
    assert type(copies[0]) is np.float32
    assert type(copies[2]) is np.int64
    assert "rare values" in _rejection(copies, _source(frame))


def test_rare_fewer_than_k_rows():
    frame = pd.DataFrame({"word": ["once", "twice", "twice", "thrice", "thrice", "thrice"] + ["filler"] * 10})
    found = find_rare_values(encode_frame(frame), {"once", "twice", "thrice", "absent"}, 3).values
    assert found == {"once", "twice"}


def test_rare_nan_never_matches():
    frame = pd.DataFrame({"x": [np.nan, 1.5, 2.5] + [9.5] * 50})
    matches = find_rare_values(encode_frame(frame), {float("nan"), 1.5, 2.5}, 3)
    assert matches.values == {1.5, 2.5}


def test_rare_counts_within_rows_ignored():
    frame = pd.DataFrame({"serial": np.arange(200), "id": np.arange(5_000, 5_200)})
    assert find_rare_values(encode_frame(frame), {3, 150, 199, 200, 5_003, 5_004.0}, 3).values == {5_003, 5_004}


def test_rare_category_and_masked_columns():
    frame = pd.DataFrame({
        "city": pd.Categorical(["Oslo"] * 50 + ["Bergen"] * 50 + ["Tromsø", "Alta"]),
        "code": pd.array([None] * 2 + list(range(1_000, 1_100)), dtype="Int64"),
    })
    found = find_rare_values(encode_frame(frame), {"Oslo", "Tromsø", "Alta", 1_000, 1_050}, 3).values
    assert found == {"Tromsø", "Alta", 1_000, 1_050}


def test_rare_index_values_match():
    frame = pd.DataFrame({"x": [1] * 5}, index=pd.Index(["ann", "bo", "cy", "di", "ed"], name="person"))
    matches = find_rare_values(encode_frame(frame), {"bo", "cy", "zed"}, 3)
    assert matches.values == {"bo", "cy"}
    assert matches.first_column is None


def test_rare_file_matches_memory(tmp_path):
    frame = _frame()
    encoded = encode_frame(frame)
    path = tmp_path / "frame"
    path.write_bytes(encoded)
    candidates = set(frame["patient_id"][:4]) | set(frame["x"][:4]) | {"north", 0.25}
    assert find_rare_values(path, candidates, 3).values == find_rare_values(encoded, candidates, 3).values
    assert len(find_rare_values(path, candidates, 3).values) == 8


def test_rare_counts_span_blocks(monkeypatch):
    # Tiny blocks make each value's rows fall into different blocks.
    monkeypatch.setattr(rare_values, "BLOCK_BYTES", 64)
    frame = pd.DataFrame({"word": ["alpha", "beta"] * 100 + ["gamma"], "value": [0.5, 0.25] * 100 + [0.125]})
    encoded = encode_frame(frame)
    assert find_rare_values(encoded, {"alpha", "gamma", 0.5, 0.125}, 3).values == {"gamma", 0.125}
    assert find_rare_values(encoded, {"alpha", "gamma", 0.5, 0.125}, 101).values == {"alpha", "gamma", 0.5, 0.125}


def test_rare_batched_matches_column_scan(monkeypatch):
    # Plain numeric columns are counted several at a time, which must find what a scan of one column at a time finds.
    generator = np.random.default_rng(7)
    frame = pd.DataFrame({
        "small": generator.integers(1_000, 1_040, 300).astype(np.int32),
        "x": generator.choice([0.5, 1.25, 2.75, 3.5], 300),
        "word": generator.choice(["a", "b", "c"], 300),
        "id": np.arange(10_000, 10_300, dtype=np.uint64),
        "code": pd.array([None, *range(2_000, 2_299)], dtype="Int64"),
        "y": generator.normal(size=300),
    })
    encoded = encode_frame(frame)
    candidates = {1_003, 1_020, 0.5, 2.75, 10_005, 10_200, 2_007, float(frame["y"][4]), "a", 7.5}
    batched = find_rare_values(encoded, candidates, 12)
    assert {10_005, 10_200, 2_007, float(frame["y"][4])} <= batched.values
    assert 0.5 not in batched.values

    with monkeypatch.context() as patch:
        patch.setattr(rare_values, "_rare_in_plain_columns", lambda *arguments: {})
        column_by_column = find_rare_values(encoded, candidates, 12)
    assert batched.values == column_by_column.values
    assert batched.first_column == column_by_column.first_column

    # A block of one column's size makes each batch a single column.
    monkeypatch.setattr(rare_values, "BLOCK_BYTES", 300 * 8)
    assert find_rare_values(encoded, candidates, 12).values == batched.values


def test_rare_k_one_turns_rule_off():
    frame = _frame()
    _passes(frame.head(), _source(frame, rare_k=1))


def test_rare_first_path_found():
    frame = _frame()
    value = {"meta": {"n": 3}, "deep": [[{"id": frame["patient_id"][7]}]]}
    limits = ResultLimits.for_inputs([_source(frame)])
    assert first_path_with(value, {frame["patient_id"][7]}, limits) == "result['deep'][0][0]['id']"


# Malformed input


def test_guard_undecodable_result_rejected():
    message = _rejection_of_blob(b"CNBR" + bytes(100), _source(_frame()))
    assert "could not be decoded" in message


def _rejection_of_blob(blob: bytes, source: SealedSource) -> str:
    with pytest.raises(EgressRejected) as caught:
        guard_result(blob, [source])
    return str(caught.value)
