"""Tests of read_csv on real files written the way spreadsheets, pandas and public data sets write them."""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from confidential_nb import csv_import
from confidential_nb.csv_import import CsvImport, CsvImportError
from confidential_nb.datasets import load_breast_cancer

CAPE_HEADER = "id,diagnosis,radius_mean,texture_mean,perimeter_mean"
CAPE_ROWS = [
    "842302,M,17.99,10.38,122.8",
    "842517,M,20.57,17.77,132.9",
    "8510426,B,13.54,14.36,87.46",
    "8510653,B,13.08,15.71,85.63",
    "8510824,B,9.504,12.44,60.34",
]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def read(path: Path, **options: Any) -> CsvImport:
    return confidential_nb.read_csv(path, **options)


def guesses_containing(result: CsvImport, word: str) -> list[str]:
    return [guess for guess in result.guesses if word in guess]


@pytest.fixture(scope="module")
def breast_cancer() -> pd.DataFrame:
    return load_breast_cancer()


# Encodings


def test_utf8_bom_not_in_first_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfname,age\nAnna,31\nBob,42\n")

    result = read(path)

    assert list(result.frame.columns) == ["name", "age"]
    assert result.encoding == "utf-8-sig"
    assert result.frame["age"].tolist() == [31, 42]


def test_cp1252_fallback_reported(tmp_path):
    path = write(tmp_path / "latin.csv", "name,city\nJosé,Zürich\nBob,Köln\n", encoding="cp1252")

    result = read(path)

    assert result.encoding == "cp1252"
    assert result.frame["name"].tolist() == ["José", "Bob"]
    assert guesses_containing(result, "not valid UTF-8")


def test_latin1_fallback_for_undefined_cp1252_byte(tmp_path):
    path = tmp_path / "latin1.csv"
    # 0x81 is undefined in cp1252, so only latin-1 decodes it.
    path.write_bytes(b"name,code\nA\x81,1\nB,2\n")

    result = read(path)

    assert result.encoding == "latin-1"
    assert result.frame["name"].tolist() == ["A\x81", "B"]
    assert guesses_containing(result, "latin-1")


def test_cp1252_after_sample_read_again(tmp_path):
    rows = "".join(f"row{i},{i}\n" for i in range(10_000))
    path = tmp_path / "late.csv"
    path.write_bytes(b"name,value\n" + rows.encode("ascii") + "Café,1\n".encode("cp1252"))
    assert path.stat().st_size > csv_import.SAMPLE_BYTES

    result = read(path)

    assert result.encoding == "cp1252"
    assert result.frame["name"].iloc[-1] == "Café"
    assert len(result.frame) == 10_001
    assert guesses_containing(result, "later byte")


def test_given_encoding_used(tmp_path):
    path = write(tmp_path / "utf16.csv", "a,b\n1,2\n", encoding="utf-16-le")

    result = read(path, encoding="utf-16-le")

    assert result.frame["b"].tolist() == [2]
    assert result.encoding == "utf-16-le"


def test_utf16_bom_detected(tmp_path):
    path = write(tmp_path / "utf16.csv", "a\tb\n1\t2\n3\t4\n", encoding="utf-16")

    result = read(path)

    assert result.encoding == "utf-16"
    assert result.sep == "\t"
    assert result.frame["a"].tolist() == [1, 3]


# European spreadsheets and number formats


def test_semicolon_with_decimal_comma(tmp_path):
    path = write(tmp_path / "excel.csv", "name;weight;height\nAnna;61,5;170\nBob;80,25;182\n")

    result = read(path)

    assert result.sep == ";"
    assert result.decimal == ","
    assert result.frame["weight"].tolist() == [61.5, 80.25]
    assert result.frame["height"].dtype == np.int64
    assert guesses_containing(result, "decimal mark")


def test_semicolon_without_header_decimal_comma(tmp_path):
    path = write(tmp_path / "excel.csv", "1,5;2,5;3\n4,5;5,5;6\n")

    result = read(path)

    assert result.sep == ";"
    assert list(result.frame.columns) == ["column_0", "column_1", "column_2"]
    assert result.frame["column_0"].tolist() == [1.5, 4.5]


def test_european_thousands_dot(tmp_path):
    path = write(tmp_path / "excel.csv", "item;price\nA;1.234,50\nB;12,00\nC;2.000.000,00\n")

    result = read(path)

    assert result.thousands == "."
    assert result.frame["price"].tolist() == [1234.5, 12.0, 2_000_000.0]


def test_quoted_us_thousands_comma(tmp_path):
    path = write(tmp_path / "us.csv", 'item,price\nA,"1,234.50"\nB,"12.00"\nC,"2,000,000"\n')

    result = read(path)

    assert result.sep == ","
    assert result.thousands == ","
    assert result.frame["price"].tolist() == [1234.5, 12.0, 2_000_000.0]
    assert guesses_containing(result, "thousands")


def test_quoted_plain_numbers_are_numbers(tmp_path):
    path = write(tmp_path / "quoted.csv", 'a,b\n"1.5","2"\n"3.5","4"\n')

    result = read(path)

    assert result.frame["a"].dtype == np.float64
    assert result.frame["b"].tolist() == [2, 4]
    assert result.thousands is None


def test_ambiguous_comma_grouping_reported(tmp_path):
    path = write(tmp_path / "ambiguous.csv", "a;b\n1,234;x\n5,678;y\n")

    result = read(path)

    assert result.decimal == ","
    assert result.frame["a"].tolist() == [1.234, 5.678]
    assert guesses_containing(result, "could use ','")


def test_mixed_decimal_marks_keep_point(tmp_path):
    path = write(tmp_path / "mixed.csv", "a;b\n1,5;2.5\n3,5;4.5\n")

    result = read(path)

    assert result.decimal == "."
    assert result.frame["b"].tolist() == [2.5, 4.5]
    assert guesses_containing(result, "mix decimal commas")


def test_given_separator_and_decimal_win(tmp_path):
    path = write(tmp_path / "pipe.csv", "a|b\n1,5|2\n3,5|4\n")

    result = read(path, sep="|", decimal=",")

    assert result.frame["a"].tolist() == [1.5, 3.5]
    assert not guesses_containing(result, "separator")


def test_trailing_empty_columns_and_rows_dropped(tmp_path):
    path = write(tmp_path / "excel.csv", "a;b;;\n1;x;;\n2;y;;\n;;;\n;;;\n")

    result = read(path)

    assert list(result.frame.columns) == ["a", "b"]
    assert len(result.frame) == 2
    # Without the second read, the empty rows would have made this column float.
    assert result.frame["a"].dtype == np.int64
    assert guesses_containing(result, "empty rows")
    assert guesses_containing(result, "empty columns")


def test_named_empty_column_kept(tmp_path):
    path = write(tmp_path / "named.csv", "a,notes\n1,\n2,\n")

    result = read(path)

    assert list(result.frame.columns) == ["a", "notes"]


# Index columns written by DataFrame.to_csv


def test_breast_cancer_to_csv_round_trip(tmp_path, breast_cancer):
    path = tmp_path / "breast_cancer.csv"
    breast_cancer.to_csv(path)

    result = read(path, target="target")

    pd.testing.assert_frame_equal(result.frame, breast_cancer)
    assert result.target_classes == {0: 357, 1: 212}
    assert guesses_containing(result, "unnamed first column")


def test_to_csv_filtered_index_kept_as_index(tmp_path):
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5, 4.5]}).iloc[[0, 2, 3]]
    path = tmp_path / "filtered.csv"
    frame.to_csv(path)

    result = read(path)

    assert list(result.frame.columns) == ["x"]
    assert result.frame.index.tolist() == [0, 2, 3]


def test_to_csv_named_index_stays_column(tmp_path):
    frame = pd.DataFrame({"x": [1.5, 2.5]}, index=pd.Index([10, 11], name="patient"))
    path = tmp_path / "named.csv"
    frame.to_csv(path)

    result = read(path)

    assert list(result.frame.columns) == ["patient", "x"]


def test_index_argument_sets_column(tmp_path):
    frame = pd.DataFrame({"x": [1.5, 2.5]}, index=pd.Index([10, 11], name="patient"))
    path = tmp_path / "named.csv"
    frame.to_csv(path)

    result = read(path, index="patient")

    pd.testing.assert_frame_equal(result.frame, frame)


def test_index_none_keeps_unnamed_column(tmp_path):
    path = tmp_path / "indexed.csv"
    pd.DataFrame({"x": [1.5, 2.5]}).to_csv(path)

    result = read(path, index=None)

    assert list(result.frame.columns) == ["Unnamed: 0", "x"]


def test_index_argument_missing_column(tmp_path):
    path = write(tmp_path / "a.csv", "a,b\n1,2\n")

    with pytest.raises(CsvImportError, match="index column 'c' not found: the columns are 'a', 'b'"):
        read(path, index="c")


def test_unnamed_repeated_first_column_kept(tmp_path):
    path = write(tmp_path / "a.csv", ",b\n1,2\n1,3\n")

    result = read(path)

    assert list(result.frame.columns) == ["Unnamed: 0", "b"]
    assert guesses_containing(result, "repeats values")


# Header detection


def test_numeric_file_without_header(tmp_path, breast_cancer):
    path = tmp_path / "no_header.csv"
    breast_cancer.to_csv(path, header=False, index=False)

    result = read(path)

    assert result.header is False
    assert result.frame.shape == (569, 31)
    assert result.frame.columns[0] == "column_0"
    np.testing.assert_array_equal(result.frame.to_numpy(), breast_cancer.to_numpy())
    assert guesses_containing(result, "looks like data")


def test_cape_rows_without_header(tmp_path):
    path = write(tmp_path / "cape.csv", "\n".join(CAPE_ROWS) + "\n")

    result = read(path)

    assert result.header is False
    assert result.frame["column_1"].tolist() == ["M", "M", "B", "B", "B"]


def test_text_rows_without_header(tmp_path):
    path = write(tmp_path / "words.csv", "red,small\nblue,large\nred,large\n")

    result = read(path)

    assert result.header is False
    assert len(result.frame) == 3


def test_text_header_detected(tmp_path):
    path = write(tmp_path / "words.csv", "colour,size\nred,small\nblue,large\n")

    result = read(path)

    assert result.header is True
    assert list(result.frame.columns) == ["colour", "size"]


def test_header_argument_overrides(tmp_path):
    path = write(tmp_path / "numbers.csv", "1,2\n3,4\n5,6\n")

    with_header = read(path, header=True)
    without_header = read(path, header=False)

    assert list(with_header.frame.columns) == ["1", "2"]
    assert len(with_header.frame) == 2
    assert len(without_header.frame) == 3
    assert not guesses_containing(without_header, "looks like data")


def test_invalid_header_argument(tmp_path):
    path = write(tmp_path / "a.csv", "a\n1\n")

    with pytest.raises(TypeError, match="header must be True, False or 'infer'"):
        read(path, header=0)


def test_own_options_rejected(tmp_path):
    path = write(tmp_path / "a.csv", "a\n1\n")

    with pytest.raises(TypeError, match="pass index= instead"):
        read(path, index_col=0)


# Targets and class labels


def test_cape_csv_string_labels(tmp_path):
    path = write(tmp_path / "cape.csv", CAPE_HEADER + "\n" + "\n".join(CAPE_ROWS) + "\n")

    result = read(path, target="diagnosis")

    assert result.frame["diagnosis"].tolist() == ["M", "M", "B", "B", "B"]
    assert pd.api.types.is_string_dtype(result.frame["diagnosis"].dtype)
    assert result.frame["radius_mean"].dtype == np.float64
    assert result.target_classes == {"B": 3, "M": 2}
    assert guesses_containing(result, "'B' (3 rows), 'M' (2 rows)")
    assert guesses_containing(result, "row identifier")


def test_missing_target_names_columns(tmp_path):
    path = write(tmp_path / "cape.csv", CAPE_HEADER + "\n" + CAPE_ROWS[0] + "\n")

    with pytest.raises(CsvImportError, match="target column 'label' not found: the columns are 'id', 'diagnosis'"):
        read(path, target="label")


def test_target_missing_labels_reported(tmp_path):
    path = write(tmp_path / "labels.csv", "x,y\n1,a\n2,\n3,b\n")

    result = read(path, target="y")

    assert guesses_containing(result, "1 row without a label")
    assert result.target_classes == {"a": 1, "b": 1}


# Conversions and sealable dtypes


def test_missing_markers_read_as_missing(tmp_path):
    path = write(tmp_path / "uci.csv", "a,b\n1,?\n2,3.5\n3,-\n4,#DIV/0!\n")

    result = read(path)

    values = result.frame["b"]
    assert values.dtype == np.float64
    assert values.isna().tolist() == [True, False, True, True]
    assert values.iloc[1] == 3.5
    assert guesses_containing(result, "'?' (1 row)")


def test_text_column_stays_text(tmp_path):
    path = write(tmp_path / "text.csv", "a,b\n1,x\n2,-\n")

    result = read(path)

    assert result.frame["b"].tolist() == ["x", "-"]


def test_booleans_with_missing_become_nullable(tmp_path):
    path = write(tmp_path / "flags.csv", "a,flag\n1,True\n2,\n3,False\n")

    result = read(path)

    assert str(result.frame["flag"].dtype) == "boolean"
    assert result.frame["flag"].isna().tolist() == [False, True, False]


def test_unsealable_values_name_column(tmp_path):
    path = write(tmp_path / "a.csv", "a,b\n1,x\n2,y\n")

    with pytest.raises(CsvImportError, match="column 'b' has dtype object and contains a value of type tuple at row position 0"):
        read(path, converters={"b": lambda value: (value, value)})


def test_unsealable_dtype_names_column(tmp_path):
    pytest.importorskip("pyarrow")
    path = write(tmp_path / "a.csv", "a,b\n1,x\n2,y\n")

    with pytest.raises(CsvImportError, match="column 'a' has dtype int64\\[pyarrow\\]"):
        read(path, dtype_backend="pyarrow")


# Empty, compressed and large files


def test_empty_file_rejected(tmp_path):
    path = write(tmp_path / "empty.csv", "")

    with pytest.raises(CsvImportError, match="is empty"):
        read(path)


def test_bom_and_blank_lines_only_rejected(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_bytes(b"\xef\xbb\xbf\n\n;;\n")

    with pytest.raises(CsvImportError, match="is empty"):
        read(path)


def test_header_only_file_rejected(tmp_path):
    path = write(tmp_path / "header.csv", "a,b,c\n")

    with pytest.raises(CsvImportError, match="header row but no data rows"):
        read(path)


def test_missing_file_rejected(tmp_path):
    with pytest.raises(CsvImportError, match="cannot read the CSV file"):
        read(tmp_path / "absent.csv")


def test_gzip_file_rejected(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n"))

    with pytest.raises(CsvImportError, match="compressed with gzip"):
        read(path)


def test_long_file_parsed_once(tmp_path, monkeypatch):
    path = tmp_path / "long.csv"
    pd.DataFrame({"a": np.arange(50_000), "b": np.arange(50_000) / 3}).to_csv(path, index=False)
    calls = []
    original = pd.read_csv

    def counting_read_csv(*args: Any, **kwargs: Any) -> pd.DataFrame:
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(csv_import.pd, "read_csv", counting_read_csv)
    result = read(path)

    assert len(calls) == 1
    assert len(result.frame) == 50_000


def test_wide_file_sample_grows(tmp_path):
    columns = [f"feature_{i}" for i in range(20_000)]
    rows = np.arange(3 * len(columns), dtype=np.float64).reshape(3, -1) / 7
    frame = pd.DataFrame(rows, columns=columns)
    path = tmp_path / "wide.csv"
    frame.to_csv(path, index=False)
    assert len(columns[0]) * len(columns) > csv_import.SAMPLE_BYTES

    result = read(path)

    assert result.header is True
    assert result.frame.shape == (3, 20_000)


# Buffers and sealing


def test_text_buffer_read(tmp_path):
    result = confidential_nb.read_csv(io.StringIO("a;b\n1,5;2\n"))

    assert result.encoding is None
    assert result.frame["a"].tolist() == [1.5]


def test_binary_buffer_read_from_current_position():
    buffer = io.BytesIO(b"junk\na,b\n1,2\n")
    buffer.seek(5)

    result = confidential_nb.read_csv(buffer)

    assert list(result.frame.columns) == ["a", "b"]


def test_guesses_logged(tmp_path, caplog):
    path = write(tmp_path / "excel.csv", "a;b\n1,5;2\n")

    with caplog.at_level(logging.INFO, logger="confidential_nb"):
        result = read(path)

    logged = [record.getMessage() for record in caplog.records if record.name == "confidential_nb.csv_import"]
    assert logged == [f"read_csv: {guess}" for guess in result.guesses]
    assert logged


def test_repr_lists_guesses(tmp_path):
    path = write(tmp_path / "excel.csv", "a;b\n1,5;2\n")

    text = repr(read(path))

    assert "1 rows x 2 columns" in text
    assert "guess: the separator is ';'" in text


def test_read_frame_seals_and_unseals(tmp_path, enclave):
    path = write(tmp_path / "cape.csv", CAPE_HEADER + "\n" + "\n".join(CAPE_ROWS) + "\n")
    frame = read(path, target="diagnosis").frame

    sealed = confidential_nb.seal(frame)
    source = "import pandas as pd\npd.testing.assert_frame_equal(data, original)\nlen(data)"
    run = enclave.run(source, inputs={"data": sealed}, params={"original": frame})

    assert run.value == len(CAPE_ROWS)


def test_european_frame_seals(tmp_path):
    path = write(tmp_path / "excel.csv", "name;weight;flag;;\nJosé;61,5;True;;\nBob;?;;;\n;;;;\n", encoding="cp1252")
    frame = read(path).frame

    sealed = confidential_nb.seal(frame)

    assert sealed.schema is not None
    assert sealed.schema["columns"] == ["name", "weight", "flag"]
    assert sealed.schema["rows"] == 2
