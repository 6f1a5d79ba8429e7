"""Decoding a frame in place (``copy=False``): one block viewing the buffer, with the general decoder as fallback."""

from __future__ import annotations

import mmap

import numpy as np
import pandas as pd
import pytest

from confidential_nb.errors import ProtocolError
from confidential_nb.frame_codec import decode_frame, encode_frame


def _in_mapping(blob: bytes) -> mmap.mmap:
    mapping = mmap.mmap(-1, len(blob))
    mapping[:] = blob
    return mapping


def _shares_buffer(frame: pd.DataFrame, mapping: mmap.mmap) -> bool:
    return any(np.shares_memory(block.values, np.frombuffer(mapping, np.uint8)) for block in frame._mgr.blocks)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int8", "uint16", "complex128"])
def test_uniform_frame_views_buffer(dtype):
    frame = pd.DataFrame(np.arange(72).reshape(24, 3).astype(dtype), columns=["a", "b", "c"])
    mapping = _in_mapping(encode_frame(frame))
    decoded = decode_frame(mapping, copy=False)
    pd.testing.assert_frame_equal(decoded, frame)
    assert _shares_buffer(decoded, mapping)
    assert len(decoded._mgr.blocks) == 1


def test_padded_columns_decode_by_copy():
    # 20 int8 values take 20 bytes, padded to 24, so the columns are not back to back.
    frame = pd.DataFrame(np.arange(60).reshape(20, 3).astype("int8"), columns=["a", "b", "c"])
    mapping = _in_mapping(encode_frame(frame))
    decoded = decode_frame(mapping, copy=False)
    pd.testing.assert_frame_equal(decoded, frame)
    assert not _shares_buffer(decoded, mapping)


def test_uniform_frame_with_index_and_labels():
    frame = pd.DataFrame(np.ones((4, 2)), columns=[7, 9], index=pd.Index([10, 20, 30, 40], name="key"))
    decoded = decode_frame(_in_mapping(encode_frame(frame)), copy=False)
    pd.testing.assert_frame_equal(decoded, frame)


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2]}),
    pd.DataFrame({"a": [True, False], "b": [False, True]}),
    pd.DataFrame({"a": ["x", None], "b": ["y", "z"]}),
    pd.DataFrame({"a": pd.array([1, None], dtype="Int64")}),
    pd.DataFrame({"a": pd.to_datetime(["2020-01-01", "2021-01-01"])}),
    pd.DataFrame({"a": pd.Categorical(["u", "v"])}),
    pd.DataFrame({"a": np.array([], dtype=float)}),
    pd.DataFrame({"a": [1.0, 2.0], "b": pd.array([1, None], dtype="Int64"), "c": [3, 4]}),
])
def test_other_frames_decode_by_copy(frame):
    mapping = _in_mapping(encode_frame(frame))
    decoded = decode_frame(mapping, copy=False)
    pd.testing.assert_frame_equal(decoded, frame)
    assert not _shares_buffer(decoded, mapping)


def test_copy_groups_columns_by_dtype():
    # pandas copies plain columns once, into one block per dtype, which later operations on the frame need.
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2], "c": [3.0, 4.0], "d": [5, 6], "e": [True, False]})
    mapping = _in_mapping(encode_frame(frame))
    decoded = decode_frame(mapping)
    pd.testing.assert_frame_equal(decoded, frame)
    assert len(decoded._mgr.blocks) == 3
    assert not _shares_buffer(decoded, mapping)


def test_view_write_reaches_buffer_and_copy_does_not():
    frame = pd.DataFrame(np.zeros((3, 2)), columns=["a", "b"])
    blob = encode_frame(frame)
    mapping = _in_mapping(blob)
    viewed = decode_frame(mapping, copy=False)
    viewed.iloc[0, 0] = 5.0
    assert bytes(mapping) != blob
    copied = decode_frame(blob)
    copied.iloc[0, 0] = 5.0
    assert decode_frame(blob).iloc[0, 0] == 0.0


def test_truncated_blob_rejected_without_copy():
    blob = encode_frame(pd.DataFrame(np.ones((10, 3))))
    with pytest.raises(ProtocolError):
        decode_frame(_in_mapping(blob[:-8]), copy=False)
