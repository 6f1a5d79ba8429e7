"""Read the CSV files people actually have into a DataFrame that can be sealed, reporting each guess.

pandas' own parser reads the file. Before it runs, a bounded sample from the
start of the file decides the encoding, the separator, the decimal and
thousands marks and whether the first row is a header. After it runs, the
frame is tidied (to_csv index columns, empty spreadsheet columns and rows,
numbers stored as text) and checked against the dtypes the frame codec can
seal. Every decision that was a guess is returned as a sentence in
``CsvImport.guesses`` and logged at INFO on the ``confidential_nb.csv_import``
logger, so a notebook or the command line can show it.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Literal

import pandas as pd

from .datasets import _read_csv_options
from .errors import CsvImportError, EncodingError
from .frame_codec import describe_type, encode_frame

logger = logging.getLogger("confidential_nb.csv_import")

SAMPLE_BYTES = 64 * 1024
"""Bytes read from the start of the file for sniffing, grown until it contains MIN_SAMPLE_RECORDS records."""

MAX_SAMPLE_BYTES = 16 * 1024 * 1024
"""Upper bound of the sniffing sample, reached only by files whose rows are hundreds of kilobytes long."""

MIN_SAMPLE_RECORDS = 3
MAX_SAMPLE_RECORDS = 500

CANDIDATE_SEPARATORS = ("\t", ";", "|", ",")
"""Separators tried, in order of preference when several split every record into the same number of fields.

A semicolon comes before the comma because European spreadsheets write
semicolons exactly when the comma is the decimal mark, so a file split evenly
by both is a semicolon file with decimal commas.
"""

MIN_CONSISTENT_SHARE = 0.9
"""Share of sampled records that must have the same field count for a separator to qualify."""

MAX_REPORTED_CLASSES = 20

MISSING_MARKERS = frozenset(
    ["?", "-", "--", ".", "na", "n.a.", "n/a", "none", "null", "nil", "missing",
     "#div/0!", "#value!", "#ref!", "#num!", "#name?", "#null!", "#n/a"]
)
"""Lower-case texts that spreadsheets and public data sets use for a missing number.

pandas already reads some of them, such as "n/a" and "#N/A", as missing.
The others would keep a numeric column as text: "?" (used in files of the UCI
Machine Learning Repository), "-" and Excel's error values.
"""

_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_COMMA_DECIMAL = re.compile(r"[+-]?\d*,\d+")
_DOT_DECIMAL = re.compile(r"[+-]?\d*\.\d+([eE][+-]?\d+)?")
# Digit groups of three after a non-zero lead, with an optional fraction.
_COMMA_GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d+)?")
_DOT_GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(\.\d{3})+(,\d+)?")
_MARKED_NUMBERS = (_COMMA_DECIMAL, _DOT_DECIMAL, _COMMA_GROUPED, _DOT_GROUPED)
_UNNAMED = re.compile(r"Unnamed: \d+")
_ID_NAMES = frozenset(["id", "index", "row", "rowid", "row_id", "record_id"])
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_OWN_OPTIONS = {"header": "header=", "index_col": "index=", "filepath_or_buffer": "the first argument"}

IndexChoice = Literal["infer"] | str | int | None


@dataclass(frozen=True, eq=False)
class CsvImport:
    """A DataFrame read from CSV, with the format that was used and the guesses behind it.

    ``encoding`` is None when the input was an already decoded text buffer.
    ``guesses`` contains one English sentence per guess, in the order they
    were made. The other fields record the format in the terms of
    ``pandas.read_csv``, so the same read can be repeated with explicit
    options. ``target_classes`` maps each class label of the target column to
    its row count when ``target`` was given and has at most
    MAX_REPORTED_CLASSES distinct values.
    """

    frame: pd.DataFrame
    guesses: tuple[str, ...]
    encoding: str | None
    sep: str
    decimal: str
    thousands: str | None
    header: bool
    target_classes: dict[Any, int] | None = field(default=None)

    def __repr__(self) -> str:
        rows, columns = self.frame.shape
        lines = [f"CsvImport: {rows} rows x {columns} columns, encoding {self.encoding}, separator {self.sep!r}"]
        lines.extend(f"  guess: {guess}" for guess in self.guesses)
        return "\n".join(lines)


@dataclass
class _Sample:
    """The start of the file as text, split into records by the chosen separator."""

    text: str
    complete: bool
    encoding: str | None
    records: list[list[str]] = field(default_factory=list)


def read_csv(
    path_or_buffer: str | os.PathLike[str] | IO[bytes] | IO[str],
    *,
    target: str | None = None,
    header: bool | Literal["infer"] = "infer",
    index: IndexChoice = "infer",
    **pandas_options: Any,
) -> CsvImport:
    """Read a CSV file into a DataFrame that ``confidential_nb.seal`` accepts, guessing its format.

    ``header`` is True when the first row contains column names, False when it
    is data (columns are then named ``column_0``, ``column_1``, ...), or
    "infer". ``index`` is "infer" (an unnamed first column written by
    ``DataFrame.to_csv`` becomes the index or is dropped), None (keep every
    column), or the name or position of the column to use as the index.
    ``target`` names the label column, which must exist; its classes are
    reported. Other keyword arguments go to ``pandas.read_csv`` and override
    the guesses (``encoding``, ``sep``, ``decimal``, ``thousands``, ...).

    Raises CsvImportError when the file is empty, has a header but no data,
    cannot be parsed, lacks the target column or contains a column that
    cannot be sealed. The error names the column and the fix.
    """
    _check_options(pandas_options)
    # An identity check, because 0 == False and 1 == True would let pandas' row numbers through.
    if header is not True and header is not False and header != "infer":
        raise TypeError(f"header must be True, False or 'infer', got {header!r}")
    guesses: list[str] = []
    source = _Source(path_or_buffer)

    # NOTE: the sniffing reads the raw first lines, so skiprows= and comment= do not change the guesses.
    sample = _read_sample(source, pandas_options, guesses)
    sep = _choose_separator(sample, pandas_options, guesses)
    decimal, thousands = _choose_number_format(sample, sep, pandas_options, guesses)
    has_header = _choose_header(sample, header, decimal, thousands, pandas_options, guesses)

    options = {**_read_csv_options(), "sep": sep, "decimal": decimal, "thousands": thousands, "header": 0 if has_header else None}
    options.update({key: value for key, value in pandas_options.items() if key != "delimiter"})
    frame, encoding = _parse(source, sample.encoding, options, guesses)
    frame = _drop_trailing_empty_rows(frame, source, encoding, options, guesses)
    if not has_header and "names" not in pandas_options:
        frame = _name_columns(frame, header, guesses)

    frame = _drop_empty_columns(frame, has_header, guesses)
    frame = _apply_index(frame, index, guesses)
    frame = _convert_text_columns(frame, decimal, thousands, guesses)
    _check_sealable(frame)
    target_classes = _describe_target(frame, target, guesses)

    for guess in guesses:
        logger.info("read_csv: %s", guess)
    return CsvImport(frame, tuple(guesses), encoding, sep, decimal, thousands, has_header, target_classes)


def _check_options(pandas_options: dict[str, Any]) -> None:
    for name, replacement in _OWN_OPTIONS.items():
        if name in pandas_options:
            raise TypeError(f"read_csv() sets {name} itself: pass {replacement} instead")
    if "sep" in pandas_options and "delimiter" in pandas_options:
        raise TypeError("read_csv() got both sep and delimiter: pass only sep")
    if pandas_options.get("chunksize") is not None or pandas_options.get("iterator"):
        raise TypeError("read_csv() returns one DataFrame: chunksize and iterator are not supported")


class _Source:
    """A path or a file object that can be read from its start more than once."""

    def __init__(self, path_or_buffer: str | os.PathLike[str] | IO[bytes] | IO[str]) -> None:
        self.path: str | None = None
        self.buffer: IO[Any] | None = None
        self.start = 0
        if isinstance(path_or_buffer, (str, os.PathLike)):
            self.path = os.fspath(path_or_buffer)
            return

        buffer: IO[Any] = path_or_buffer
        if not (hasattr(buffer, "seekable") and buffer.seekable()):
            # A pipe or socket cannot be rewound, so its whole content is kept in memory.
            content = buffer.read()
            buffer = io.BytesIO(content) if isinstance(content, bytes) else io.StringIO(content)
        self.buffer = buffer
        self.start = buffer.tell()

    def read_start(self, size: int) -> bytes | str:
        """Read up to ``size`` bytes (characters for a text buffer) from the start."""
        if self.path is not None:
            try:
                with open(self.path, "rb") as stream:
                    return stream.read(size)
            except OSError as exc:
                raise CsvImportError(f"cannot read the CSV file {self.path}: {exc.strerror}") from exc
        assert self.buffer is not None
        self.buffer.seek(self.start)
        data: bytes | str = self.buffer.read(size)
        self.buffer.seek(self.start)
        return data

    def for_pandas(self) -> str | IO[Any]:
        if self.path is not None:
            return self.path
        assert self.buffer is not None
        self.buffer.seek(self.start)
        return self.buffer

    def describe(self) -> str:
        return f"the CSV file {self.path}" if self.path is not None else "the CSV data"


# Sniffing a sample


def _read_sample(source: _Source, pandas_options: dict[str, Any], guesses: list[str]) -> _Sample:
    """Read the start of the file, growing the sample until it contains a few complete records."""
    size = SAMPLE_BYTES
    while True:
        raw = source.read_start(size + 1)
        complete = len(raw) <= size
        raw = raw[:size]
        if complete or _count_lines(raw) > MIN_SAMPLE_RECORDS or size >= MAX_SAMPLE_BYTES:
            break
        size *= 4

    if isinstance(raw, str):
        text, encoding = raw, None
    else:
        _reject_compressed(raw, source)
        text, encoding = _decode_sample(raw, complete, pandas_options.get("encoding"), guesses)

    if not text.strip().strip(",;\t|"):
        raise CsvImportError(f"{source.describe()} is empty: it contains no header and no data rows")
    return _Sample(text, complete, encoding)


def _count_lines(raw: bytes | str) -> int:
    if isinstance(raw, str):
        return raw.count("\n")
    return raw.count(b"\n")


def _reject_compressed(raw: bytes, source: _Source) -> None:
    for magic, name in _COMPRESSED_MAGIC.items():
        if raw.startswith(magic):
            raise CsvImportError(f"{source.describe()} is compressed with {name}: decompress it first, then read the CSV file")


def _decode_sample(raw: bytes, complete: bool, encoding: str | None, guesses: list[str]) -> tuple[str, str]:
    """Decode the sample with the given encoding, or detect one: a BOM, then UTF-8, then cp1252, then latin-1."""
    if encoding is not None:
        try:
            return _decode(raw, encoding, complete), encoding
        except UnicodeDecodeError as exc:
            raise CsvImportError(f"the CSV data is not valid {encoding} at byte offset {exc.start}: pass the right encoding=") from exc
    if raw.startswith(codecs.BOM_UTF8):
        return _decode(raw, "utf-8-sig", complete), "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        guesses.append("the file starts with a UTF-16 byte order mark, so it is read as UTF-16")
        return _decode(raw, "utf-16", complete), "utf-16"

    try:
        return _decode(raw, "utf-8", complete), "utf-8"
    except UnicodeDecodeError as exc:
        fallback, text = _decode_legacy(raw, complete)
        guesses.append(_legacy_encoding_guess(fallback, exc.start))
        return text, fallback


def _decode(raw: bytes, encoding: str, complete: bool) -> str:
    # An incremental decoder tolerates a multi-byte character cut at the end of the sample.
    decoder = codecs.getincrementaldecoder(encoding)()
    return decoder.decode(raw, final=complete)


def _decode_legacy(raw: bytes, complete: bool) -> tuple[str, str]:
    try:
        return "cp1252", _decode(raw, "cp1252", complete)
    except UnicodeDecodeError:
        # latin-1 maps every byte, so it never fails.
        return "latin-1", _decode(raw, "latin-1", complete)


def _legacy_encoding_guess(encoding: str, offset: int) -> str:
    return (
        f"the file is not valid UTF-8 (the first invalid byte is at offset {offset}), so it is read as {encoding}: "
        "pass encoding= if accented letters come out wrong"
    )


def _split_records(text: str, complete: bool, sep: str) -> list[list[str]]:
    """Split sample text into records, dropping blank lines and the last record when the sample is cut."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    records: list[list[str]] = []
    try:
        for record in reader:
            records.append(record)
            if len(records) > MAX_SAMPLE_RECORDS:
                break
    except csv.Error:
        # A quoted field cut at the end of the sample, or a NUL byte, ends the sample early.
        # pandas reports the real errors when it parses the whole file.
        pass
    if not complete and records:
        records.pop()
    return [record for record in records if any(value.strip() for value in record)]


def _choose_separator(sample: _Sample, pandas_options: dict[str, Any], guesses: list[str]) -> str:
    given = pandas_options.get("sep", pandas_options.get("delimiter"))
    if given is not None:
        sample.records = _split_records(sample.text, sample.complete, given) if len(given) == 1 else []
        return str(given)

    best, best_share = ",", 0.0
    for sep in CANDIDATE_SEPARATORS:
        records = _split_records(sample.text, sample.complete, sep)
        share = _consistent_share(records)
        if share >= MIN_CONSISTENT_SHARE:
            best, best_share = sep, share
            break
        if share > best_share:
            best, best_share = sep, share

    sample.records = _split_records(sample.text, sample.complete, best)
    if best != ",":
        guesses.append(f"the separator is {best!r}, which splits the sampled rows most evenly: pass sep= to override")
    return best


def _consistent_share(records: list[list[str]]) -> float:
    """Return the share of records having the most common field count, or 0 when that count is 1."""
    if not records:
        return 0.0
    count, frequency = Counter(len(record) for record in records).most_common(1)[0]
    if count < 2:
        return 0.0
    return frequency / len(records)


def _choose_number_format(sample: _Sample, sep: str, pandas_options: dict[str, Any], guesses: list[str]) -> tuple[str, str | None]:
    """Choose the decimal and thousands marks from the numbers in the sample's data rows."""
    tokens = [value.strip() for record in sample.records[1:] for value in record]
    evidence = _NumberEvidence(tokens)
    decimal = pandas_options.get("decimal") or evidence.decimal(sep, guesses)
    if "thousands" in pandas_options:
        return decimal, pandas_options["thousands"]

    thousands = evidence.thousands(decimal)
    if thousands is not None:
        guesses.append(f"numbers use {thousands!r} to group thousands, so it is removed from them: pass thousands=None to keep them as text")
    return decimal, thousands


class _NumberEvidence:
    """The numbers in the sample that contain a comma or a point, and what their spellings show about the decimal mark."""

    def __init__(self, tokens: list[str]) -> None:
        numbers = [token for token in tokens if any(pattern.fullmatch(token) for pattern in _MARKED_NUMBERS)]
        self.comma_tokens = [token for token in numbers if "," in token]
        self.dot_tokens = [token for token in numbers if "." in token]

        # "1,5" or "0,125" can only be a decimal comma, and "1.234,5" or "1.234.567" only European grouping.
        self.comma_decimal = any(
            (_COMMA_DECIMAL.fullmatch(token) and not _COMMA_GROUPED.fullmatch(token)) or _is_grouped(token, _DOT_GROUPED, ",")
            for token in self.comma_tokens + self.dot_tokens
        )
        self.dot_decimal = any(
            (_DOT_DECIMAL.fullmatch(token) and not _DOT_GROUPED.fullmatch(token)) or _is_grouped(token, _COMMA_GROUPED, ".")
            for token in self.comma_tokens + self.dot_tokens
        )
        # "1,234" contains either a decimal comma or a thousands comma, and the token alone cannot show which.
        self.ambiguous_comma = any(_COMMA_GROUPED.fullmatch(token) for token in self.comma_tokens)

    def decimal(self, sep: str, guesses: list[str]) -> str:
        if sep == "," or not self.comma_decimal and not self.ambiguous_comma:
            return "."
        if self.comma_decimal and self.dot_decimal:
            guesses.append(
                "the numbers mix decimal commas and decimal points, so the decimal mark stays '.' and numbers with a comma stay text: "
                "pass decimal=',' to read those instead"
            )
            return "."
        if self.comma_decimal:
            guesses.append("numbers use ',' as the decimal mark, as European spreadsheets write them: pass decimal='.' to override")
            return ","
        if self.dot_decimal:
            return "."
        guesses.append(
            "numbers such as '1,234' could use ',' as a decimal mark or to group thousands, and the separator is not a comma, "
            "so ',' is read as the decimal mark: pass decimal='.', thousands=',' if they are thousands"
        )
        return ","

    def thousands(self, decimal: str) -> str | None:
        """Return the grouping mark when every number that contains it groups digits by three."""
        mark, pattern, tokens = ((".", _DOT_GROUPED, self.dot_tokens) if decimal == "," else (",", _COMMA_GROUPED, self.comma_tokens))
        if not tokens:
            return None
        if all(pattern.fullmatch(token) for token in tokens):
            return mark
        return None


def _is_grouped(token: str, pattern: re.Pattern[str], decimal: str) -> bool:
    """Check for a grouped number that cannot be read another way: with a fraction, or with two or more groups."""
    if not pattern.fullmatch(token):
        return False
    mark = "." if decimal == "," else ","
    return decimal in token or token.count(mark) >= 2


def _choose_header(sample: _Sample, header: bool | Literal["infer"], decimal: str, thousands: str | None, pandas_options: dict[str, Any], guesses: list[str]) -> bool:
    if header is True or header is False:
        return header
    if "names" in pandas_options:
        return False
    if len(sample.records) < 2:
        return True
    return not _first_record_is_data(sample.records, decimal, thousands)


def _first_record_is_data(records: list[list[str]], decimal: str, thousands: str | None) -> bool:
    """Guess whether the first record is data rather than column names.

    It is data when every column whose later values are all numbers also has
    a number in the first record. Without such columns, it is data when one
    of its values appears again further down its column, which a column name
    rarely does.
    """
    first, rest = records[0], records[1:]
    numeric_columns = [
        position for position in range(len(first))
        if _column_values(rest, position) and all(_is_number(value, decimal, thousands) for value in _column_values(rest, position))
    ]
    if numeric_columns:
        return all(_is_number(first[position].strip(), decimal, thousands) for position in numeric_columns)
    return any(value.strip() and value.strip() in _column_values(rest, position) for position, value in enumerate(first))


def _column_values(records: list[list[str]], position: int) -> list[str]:
    return [record[position].strip() for record in records if position < len(record) and record[position].strip()]


def _is_number(value: str, decimal: str, thousands: str | None) -> bool:
    if thousands:
        value = value.replace(thousands, "")
    return bool(_PLAIN_NUMBER.fullmatch(value.replace(decimal, ".")))


# Parsing


def _parse(source: _Source, encoding: str | None, options: dict[str, Any], guesses: list[str]) -> tuple[pd.DataFrame, str | None]:
    """Parse the whole file with pandas, falling back to cp1252 or latin-1 when UTF-8 fails after the sample."""
    encoding = options.pop("encoding", encoding)
    try:
        return _parse_with(source, encoding, options), encoding
    except UnicodeDecodeError as exc:
        if encoding not in ("utf-8", "utf-8-sig"):
            raise CsvImportError(f"{source.describe()} is not valid {encoding}: pass the right encoding= ({exc.reason})") from exc

    # The sample decoded as UTF-8 but a later byte did not, so this second read is needed.
    for fallback in ("cp1252", "latin-1"):
        try:
            frame = _parse_with(source, fallback, options)
        except UnicodeDecodeError:
            continue
        guesses.append(
            f"the start of the file is valid UTF-8 but a later byte is not, so the file is read as {fallback}: "
            "pass encoding= if accented letters come out wrong"
        )
        return frame, fallback
    raise AssertionError("latin-1 decodes every byte")


def _parse_with(source: _Source, encoding: str | None, options: dict[str, Any]) -> pd.DataFrame:
    if encoding is not None:
        options = {**options, "encoding": encoding}
    try:
        frame = pd.read_csv(source.for_pandas(), **options)
    except pd.errors.EmptyDataError as exc:
        raise CsvImportError(f"{source.describe()} is empty: it contains no header and no data rows") from exc
    except pd.errors.ParserError as exc:
        raise CsvImportError(f"{source.describe()} cannot be parsed as CSV: {exc}. Pass sep= or quotechar= if the guessed format is wrong") from exc

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"pandas.read_csv returned {type(frame).__name__}, not a DataFrame: remove chunksize and iterator")
    return frame


# Tidying the frame


def _is_unnamed(label: object) -> bool:
    return isinstance(label, str) and (label == "" or bool(_UNNAMED.fullmatch(label)))


def _drop_empty_columns(frame: pd.DataFrame, has_header: bool, guesses: list[str]) -> pd.DataFrame:
    """Drop the all-empty columns that spreadsheets export: unnamed ones, or trailing ones in a file without a header."""
    empty = [label for label in frame.columns if frame[label].isna().all()]
    if has_header:
        dropped = [label for label in empty if _is_unnamed(label)]
    else:
        dropped = []
        for label in reversed(frame.columns):
            if label not in empty:
                break
            dropped.append(label)
    if not dropped or len(dropped) == frame.shape[1]:
        return frame

    guesses.append(f"dropped {_count(len(dropped), 'empty column')} without a name, as spreadsheets export them")
    return frame.drop(columns=dropped)


def _drop_trailing_empty_rows(frame: pd.DataFrame, source: _Source, encoding: str | None, options: dict[str, Any], guesses: list[str]) -> pd.DataFrame:
    """Drop the all-empty rows at the end of the frame, as spreadsheets export them.

    An empty row turns the integer columns into float columns, so the file is
    read again without those rows. This second read happens only when such
    rows exist.
    """
    filled = frame.notna().any(axis=1).to_numpy()
    kept = int(filled.nonzero()[0][-1]) + 1 if filled.any() else 0
    if kept == 0:
        raise CsvImportError(f"{source.describe()} contains a header row but no data rows: add data, or pass header=False if the first row is data")
    if kept == len(frame):
        return frame

    guesses.append(f"dropped {_count(len(frame) - kept, 'empty row')} at the end of the file")
    return _parse_with(source, encoding, {**options, "nrows": kept})


def _name_columns(frame: pd.DataFrame, header: bool | Literal["infer"], guesses: list[str]) -> pd.DataFrame:
    frame.columns = pd.Index([f"column_{position}" for position in range(frame.shape[1])])
    if header == "infer":
        guesses.append(
            f"the first row looks like data, not column names, so the columns are named column_0 to column_{frame.shape[1] - 1}: "
            "pass header=True if it is a header"
        )
    return frame


def _apply_index(frame: pd.DataFrame, index: IndexChoice, guesses: list[str]) -> pd.DataFrame:
    if index is None:
        return frame
    if index != "infer":
        return _set_index(frame, index)

    first = frame.columns[0]
    if frame.shape[1] < 2 or not _is_unnamed(first):
        _report_id_columns(frame, guesses)
        return frame

    values = frame[first]
    if pd.api.types.is_integer_dtype(values.dtype) and _is_contiguous_range(values):
        guesses.append(
            f"dropped the unnamed first column, which numbers the rows {values.iloc[0]} to {values.iloc[-1]} as DataFrame.to_csv writes the index: "
            "pass index=None to keep it"
        )
        return frame.drop(columns=first).reset_index(drop=True)
    if values.notna().all() and values.is_unique:
        guesses.append(
            "the unnamed first column has a unique value on every row, as DataFrame.to_csv writes the index, "
            "so it is the frame's index: pass index=None to keep it as a column"
        )
        return frame.set_index(first).rename_axis(None)

    guesses.append(f"the first column has no name and repeats values, so it stays a column named {first!r}")
    return frame


def _set_index(frame: pd.DataFrame, index: str | int) -> pd.DataFrame:
    if isinstance(index, int) and not isinstance(index, bool) and index not in frame.columns:
        if not -frame.shape[1] <= index < frame.shape[1]:
            raise CsvImportError(f"index={index} is out of range for {frame.shape[1]} columns: pass a column name or a position from 0 to {frame.shape[1] - 1}")
        index = frame.columns[index]
    if index not in frame.columns:
        raise CsvImportError(f"index column {index!r} not found: {_list_columns(frame)}. Pass one of them as index=, or index=None")
    return frame.set_index(index)


def _is_contiguous_range(values: pd.Series) -> bool:
    if values.isna().any() or len(values) == 0:
        return False
    first = int(values.iloc[0])
    return bool((values.to_numpy() == pd.RangeIndex(first, first + len(values)).to_numpy()).all())


def _report_id_columns(frame: pd.DataFrame, guesses: list[str]) -> None:
    for label in frame.columns:
        if isinstance(label, str) and label.strip().lower() in _ID_NAMES and frame[label].is_unique and len(frame) > 1:
            guesses.append(
                f"column {label!r} has a unique value on every row and looks like a row identifier; it stays a column, "
                f"so drop it before training or pass index={label!r}"
            )


def _convert_text_columns(frame: pd.DataFrame, decimal: str, thousands: str | None, guesses: list[str]) -> pd.DataFrame:
    """Convert text columns that contain only numbers and missing-value markers, or only booleans and missing values."""
    frame = frame.copy(deep=False)
    for label in frame.columns:
        series = frame[label]
        if not (pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype)):
            continue
        kind = pd.api.types.infer_dtype(series, skipna=True)
        if kind == "boolean":
            frame[label] = series.astype("boolean")
            guesses.append(f"column {label!r} contains True/False with missing values, so it is read as the nullable boolean dtype")
        elif kind == "string":
            converted = _text_to_numbers(series, decimal, thousands)
            if converted is not None:
                numbers, markers = converted
                frame[label] = numbers
                listed = ", ".join(f"{marker!r} ({_count(count, 'row')})" for marker, count in markers.items())
                guesses.append(f"column {label!r} contains numbers and the missing-value markers {listed}, so it is read as numbers with those missing")
    return frame


def _text_to_numbers(series: pd.Series, decimal: str, thousands: str | None) -> tuple[pd.Series, dict[str, int]] | None:
    """Return the column as numbers, and the count of each missing-value marker, when every value is one of the two."""
    present = series.dropna().astype(object).map(str).str.strip()
    if present.empty:
        return None
    is_marker = present.str.lower().isin(MISSING_MARKERS)
    if is_marker.all() or not is_marker.any():
        # Without markers, pandas would have read a column of numbers as numbers already, so this column contains other text.
        return None

    numbers = present[~is_marker]
    if thousands:
        numbers = numbers.str.replace(thousands, "", regex=False)
    numbers = numbers.str.replace(decimal, ".", regex=False)
    if not numbers.map(lambda value: bool(_PLAIN_NUMBER.fullmatch(value))).all():
        return None

    markers = {str(marker): int(count) for marker, count in present[is_marker].value_counts().items()}
    values = pd.to_numeric(numbers.astype(object), errors="raise").astype("float64")
    return values.reindex(series.index), markers


def _check_sealable(frame: pd.DataFrame) -> None:
    """Raise CsvImportError naming the first column whose dtype or values the frame codec cannot seal."""
    try:
        # An empty slice checks the column names and dtypes without copying any data.
        encode_frame(frame.iloc[:0])
    except EncodingError as exc:
        raise CsvImportError(f"the CSV data cannot be sealed: {exc}") from exc

    for label in frame.columns:
        _check_text_values(frame[label].array, frame[label].dtype, f"column {label!r}")
    _check_text_values(frame.index.array, frame.index.dtype, "the index")


def _check_text_values(values: Any, dtype: Any, location: str) -> None:
    if not pd.api.types.is_object_dtype(dtype):
        return
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return

    position, value = next(
        (position, value) for position, value in enumerate(values)
        if not isinstance(value, str) and not _is_missing(value)
    )
    raise CsvImportError(
        f"the CSV data cannot be sealed: {location} has dtype object and contains a value of type {describe_type(value)} "
        f"at row position {position}, but an object column can be sealed only with text and missing values: "
        "convert the column, for example with pd.to_datetime(frame[column], utc=True) for dates with mixed time zones, "
        "or read it as text with dtype=str"
    )


def _is_missing(value: object) -> bool:
    # pd.isna would return an array for a list or tuple value.
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _describe_target(frame: pd.DataFrame, target: str | None, guesses: list[str]) -> dict[Any, int] | None:
    if target is None:
        return None
    if target not in frame.columns:
        raise CsvImportError(
            f"target column {target!r} not found: {_list_columns(frame)}. Pass one of them as target=, "
            "or header=True or header=False if the header row was guessed wrong"
        )

    labels = frame[target]
    missing = int(labels.isna().sum())
    if missing:
        guesses.append(f"target column {target!r} has {_count(missing, 'row')} without a label")
    counts = labels.value_counts(dropna=True).sort_index()
    is_text = pd.api.types.is_object_dtype(labels.dtype) or pd.api.types.is_string_dtype(labels.dtype)
    if len(counts) > MAX_REPORTED_CLASSES:
        if is_text:
            guesses.append(f"target column {target!r} contains {len(counts)} distinct text values, too many for class labels: check that it is the right column")
        return None

    classes = {_plain(label): int(count) for label, count in counts.items()}
    if is_text:
        listed = ", ".join(f"{label!r} ({_count(count, 'row')})" for label, count in classes.items())
        guesses.append(f"target column {target!r} contains text class labels, kept as text: {listed}")
    return classes


def _plain(label: Any) -> Any:
    # value_counts returns numpy scalars; callers compare and print plain Python values.
    return label.item() if hasattr(label, "item") else label


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _list_columns(frame: pd.DataFrame) -> str:
    shown = [repr(label) for label in frame.columns[:MAX_REPORTED_CLASSES]]
    more = frame.shape[1] - len(shown)
    return "the columns are " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
