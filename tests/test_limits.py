from __future__ import annotations

import pytest

from confidential_nb.limits import (
    DEFAULT_MEMORY_BYTES,
    format_size,
    memory_limit_for,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4G", 4 * 1024**3),
        ("512MiB", 512 * 1024**2),
        ("2GB", 2 * 1000**3),
        ("1.5g", int(1.5 * 1024**3)),
        (" 100 k ", 100 * 1024),
        ("1000000", 1_000_000),
        (4096, 4096),
    ],
)
def test_parse_size_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "4X", "-1G", "", "G", "1e9"])
def test_parse_size_invalid_text(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("value", [0, -5])
def test_parse_size_non_positive_integer(value):
    with pytest.raises(ValueError, match="positive number of bytes"):
        parse_size(value)


def test_format_size_binary_units():
    assert format_size(512) == "512 B"
    assert format_size(4 * 1024**3) == "4.0 GiB"
    assert format_size(1536 * 1024) == "1.5 MiB"


def test_memory_limit_default_for_small_inputs():
    assert memory_limit_for(10 * 1024**2) == DEFAULT_MEMORY_BYTES


def test_memory_limit_four_times_large_inputs():
    assert memory_limit_for(2 * 1024**3) == 8 * 1024**3


def test_memory_limit_request_wins():
    assert memory_limit_for(2 * 1024**3, requested=1024**3) == 1024**3
