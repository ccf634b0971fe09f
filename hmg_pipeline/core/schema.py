"""The raw-data contract of shared/ARCHITECTURE.md, as code.

Every raw table is ``NAME.csv`` or ``NAME.parquet`` (UTF-8) in the raw directory. Tables are
read with every column as a string (ids are strings; times and numbers are parsed later by the
cleaning rules so that a bad value becomes a quarantine row, not a crash). Each frame gets a
``source_row`` column: the 1-based data row number in its file (the header is not counted).
In a CSV file a blank line after the header is a data row (polars reads it as all nulls), so
error messages count rows the same way and name the row that ``source_row`` would.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

SOURCE_ROW = "source_row"

MIKELS_EMOTIONS: tuple[str, ...] = (
    "amusement",
    "anger",
    "awe",
    "contentment",
    "disgust",
    "excitement",
    "fear",
    "sadness",
)
UNKNOWN_EMOTION = "unknown"
EMOTION_TOKENS: frozenset[str] = frozenset((*MIKELS_EMOTIONS, UNKNOWN_EMOTION))
EMOTION_SEPARATOR = "|"


class ContractError(ValueError):
    """A raw table breaks the contract: missing, unreadable, or lacking a required column."""


@dataclass(frozen=True)
class TableSpec:
    """One raw table: its name, required and optional columns, and whether it may be absent."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    table_optional: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


IMAGES = TableSpec("images", ("image_id",), ("owner_id", "url", "file", "posted_at"))
VIEWS = TableSpec(
    "views",
    ("user_id", "image_id", "emotion"),
    ("comment_id", "comment_text", "commented_at", "valence", "arousal", "dominance"),
)
CONTACTS = TableSpec("contacts", ("user_id", "contact_id"))
GROUPS = TableSpec("groups", ("group_id",), ("name", "description"))
GROUP_MEMBERS = TableSpec("group_members", ("group_id", "user_id"))
USERS = TableSpec("users", ("user_id",), table_optional=True)
# Pairs a user wants predictions for (the ``predictions`` asset); optional.
REQUESTS = TableSpec("requests", ("user_id", "image_id"), table_optional=True)


def find_table_file(raw_dir: Path, spec: TableSpec) -> Path | None:
    """Return the file holding ``spec`` (csv or parquet), None if absent and allowed to be."""
    if not raw_dir.is_dir():
        state = "is not a directory" if raw_dir.exists() else "does not exist"
        raise ContractError(f"raw directory {raw_dir} {state}")
    candidates = [raw_dir / f"{spec.name}.{ext}" for ext in ("csv", "parquet")]
    present = [path for path in candidates if path.is_file()]
    if len(present) > 1:
        raise ContractError(
            f"table '{spec.name}': both {present[0]} and {present[1]} exist; keep only one"
        )
    if present:
        return present[0]
    if spec.table_optional:
        return None
    raise ContractError(
        f"table '{spec.name}' is missing: expected {candidates[0]} or {candidates[1]} "
        f"(raw directory {raw_dir})"
    )


def read_raw_table(
    raw_dir: Path | str, spec: TableSpec, notes: list[str] | None = None
) -> pl.DataFrame:
    """Read one raw table by the contract: all columns as strings plus ``source_row``.

    Optional columns absent from the file are added as nulls so that downstream code can rely
    on every contract column existing; columns outside the contract are not carried.
    A missing optional table yields an empty frame with the contract's columns.
    What the reader changed on the user's behalf (trimmed column names, float ids written as
    integers) is appended to ``notes``, one line each, so that the caller can report it.
    """
    raw_dir = Path(raw_dir)
    notes = [] if notes is None else notes
    path = find_table_file(raw_dir, spec)
    if path is None:
        return empty_table(spec)
    frame = _read_csv(path) if path.suffix == ".csv" else _read_parquet(path)
    frame = _trim_column_names(path, frame, notes)
    missing = [column for column in spec.required if column not in frame.columns]
    if missing:
        raise ContractError(
            f"{path}: required column(s) {', '.join(repr(c) for c in missing)} missing "
            f"(found: {', '.join(frame.columns) or 'no columns'})"
        )
    _check_column_types(path, frame, spec)
    frame = _decimal_ids_as_integers(path, frame, spec, notes)
    frame = _float_ids_as_integers(path, frame, spec, notes)
    frame = _float_nan_as_null(frame, spec)
    frame = frame.with_columns(
        [pl.lit(None, dtype=pl.String).alias(c) for c in spec.optional if c not in frame.columns]
    )
    return frame.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(SOURCE_ROW),
        *[_normalise(pl.col(c).cast(pl.String), c) for c in spec.columns],
    )


def _normalise(column: pl.Expr, name: str) -> pl.Expr:
    """Ids are trimmed and an empty id becomes null; other values are kept verbatim."""
    if not name.endswith("_id"):
        return column
    trimmed = column.str.strip_chars()
    return pl.when(trimmed == "").then(None).otherwise(trimmed).alias(name)


def empty_table(spec: TableSpec) -> pl.DataFrame:
    """An empty frame with ``source_row`` and all contract columns of ``spec``."""
    return pl.DataFrame(
        schema={SOURCE_ROW: pl.Int64, **{column: pl.String for column in spec.columns}}
    )


def _check_unique_names(path: Path, names: list[str]) -> None:
    """Refuse column names that clash ignoring case and surrounding spaces.

    polars would rename a repeated name (CSV) or refuse the file (Parquet), and the values under
    the second name would be lost. Empty names are not compared: they name no contract column
    and spreadsheets often leave several (trailing commas).
    """
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(names, start=1):
        key = name.strip().casefold()
        if key:
            positions.setdefault(key, []).append(position)
    clashes = [
        " and ".join(f"{names[p - 1]!r} (column {p})" for p in group)
        for group in positions.values()
        if len(group) > 1
    ]
    if clashes:
        raise ContractError(
            f"{path}: duplicate column names {'; '.join(clashes)}; column names must be unique, "
            "ignoring case and surrounding spaces"
        )


def _trim_column_names(path: Path, frame: pl.DataFrame, notes: list[str]) -> pl.DataFrame:
    """Strip surrounding spaces from column names, so that `` image_id`` meets the contract.

    Safe because names were checked to be unique after trimming.
    """
    renames = {name: name.strip() for name in frame.columns if name.strip() not in ("", name)}
    if renames:
        notes.append(
            f"{path}: surrounding spaces removed from column name(s) "
            + ", ".join(f"{old!r} -> {new!r}" for old, new in renames.items())
        )
    return frame.rename(renames)


def _is_text_like(dtype: pl.DataType) -> bool:
    """Whether a stored Parquet type casts faithfully to text: text, numbers, booleans, times.

    Binary is text-like too, when its bytes are UTF-8 (checked by :func:`_check_binary`)."""
    if isinstance(dtype, pl.Duration):
        return False
    return (
        dtype.is_numeric()
        or dtype.is_temporal()
        or isinstance(dtype, (pl.String, pl.Boolean, pl.Categorical, pl.Enum, pl.Null, pl.Binary))
    )


def _check_column_types(path: Path, frame: pl.DataFrame, spec: TableSpec) -> None:
    """Refuse a contract column whose stored type has no faithful text form (list, struct,
    duration, binary that is not UTF-8), naming the file and column: polars' cast error would
    name neither. Columns outside the contract are not read, so any type is fine there."""
    for name in spec.columns:
        if name not in frame.columns:
            continue
        dtype = frame.schema[name]
        if not _is_text_like(dtype):
            raise ContractError(
                f"{path}: column {name!r} has type {dtype}; contract columns must be text, "
                "numbers, booleans or times"
            )
        if isinstance(dtype, pl.Binary):
            _check_binary(path, frame[name])


def _check_binary(path: Path, column: pl.Series) -> None:
    """A Binary column is read as text only when every value is UTF-8; else name the first
    data row that is not."""
    for index, value in enumerate(column):
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ContractError(
                f"{path}: data row {index + 1}, column {column.name!r} is binary and not valid "
                f"UTF-8 (byte offset {error.start}); the contract requires UTF-8 text"
            ) from None


# A Decimal rendered as text with an all-zero fractional part: ``5001091309.00``.
_INTEGRAL_DECIMAL = re.compile(r"^([+-]?\d+)(\.0*)?$")


def _decimal_ids_as_integers(
    path: Path, frame: pl.DataFrame, spec: TableSpec, notes: list[str]
) -> pl.DataFrame:
    """Read Decimal id columns as integer strings: ``5001091309.00`` becomes ``'5001091309'``.

    A Decimal with a scale prints its zeros (``'5001091309.00'``), which would never match the
    same id written elsewhere; as for float ids, a value with a fractional part is not an id
    (ContractError naming row and column) and each converted column adds a note.
    """
    for name in spec.columns:
        if not (name.endswith("_id") and name in frame.columns):
            continue
        column = frame[name]
        if not column.dtype.is_decimal():
            continue
        texts = column.cast(pl.String)
        ids = texts.str.extract(_INTEGRAL_DECIMAL.pattern, 1)
        bad = (texts.is_not_null() & ids.is_null()).arg_true()
        if bad.len():
            index = int(bad[0])
            raise ContractError(
                f"{path}: data row {index + 1}, column {name!r}: id {texts[index]!r} is a "
                "decimal with a fractional part; write ids as strings or int64"
            )
        notes.append(_converted_id_note(path, column, ids.rename(name)))
        frame = frame.with_columns(ids.rename(name))
    return frame


def _float_nan_as_null(frame: pl.DataFrame, spec: TableSpec) -> pl.DataFrame:
    """NaN in a float contract column becomes null, i.e. missing: pandas writes a missing
    number as NaN, and read as the text ``'NaN'`` it would quarantine the row. Only stored
    floats are changed; the text ``nan`` in a CSV file is text, not a float's missing value,
    and stays an unparseable number."""
    floats = [name for name in spec.columns if name in frame.columns]
    floats = [name for name in floats if frame.schema[name].is_float()]
    return frame.with_columns(pl.col(floats).fill_nan(None)) if floats else frame


def _float_ids_as_integers(
    path: Path, frame: pl.DataFrame, spec: TableSpec, notes: list[str]
) -> pl.DataFrame:
    """Read float id columns as integer strings: ``5000000000.0`` becomes ``'5000000000'``.

    pandas stores an integer column holding a NaN as float64, so such ids are common in
    Parquet; read as text they would never match the same id elsewhere. Each converted column
    adds a note.
    """
    for name in spec.columns:
        if name.endswith("_id") and name in frame.columns and frame.schema[name].is_float():
            column = frame[name]
            ids = _integral_ids(path, column)
            notes.append(_converted_id_note(path, column, ids))
            frame = frame.with_columns(ids)
    return frame


def _integral_ids(path: Path, column: pl.Series) -> pl.Series:
    """The float ids of ``column`` as integer strings, NaN and null as null.

    A fractional id, or one beyond the range where the float holds every integer exactly
    (2**53 for float64, 2**24 for float32), is not a faithful id: ContractError.
    """
    values = column.fill_nan(None)
    limit_bits = 24 if column.dtype == pl.Float32 else 53
    too_large = (values.abs() > 2**limit_bits).fill_null(False)
    fractional = (values != values.floor()).fill_null(False)
    bad = too_large | fractional
    if bad.any():
        index = int(bad.arg_true()[0])
        reason = (
            f"beyond 2**{limit_bits}, where {column.dtype} no longer holds every integer exactly"
            if too_large[index]
            else "with a fractional part"
        )
        raise ContractError(
            f"{path}: data row {index + 1}, column {column.name!r}: id {values[index]!r} is a "
            f"float {reason}; write ids as strings or int64"
        )
    return values.cast(pl.Int64).cast(pl.String)


def _converted_id_note(path: Path, column: pl.Series, ids: pl.Series) -> str:
    """One line saying that a float or decimal id column was read as integers, with an
    example."""
    present = ids.is_not_null()
    example = ""
    if present.any():
        index = int(present.arg_true()[0])
        example = f" (e.g. {column[index]!r} -> {ids[index]!r})"
    return (
        f"{path}: id column {column.name!r} is stored as {column.dtype}; "
        f"{int(present.sum())} value(s) read as integer strings{example}, "
        f"{ids.null_count()} NaN/null read as null; write ids as strings or int64"
    )


def _read_parquet(path: Path) -> pl.DataFrame:
    """The Parquet file with its stored types; names are checked first, with pyarrow, since
    polars refuses a file with a repeated name without saying which columns clash."""
    try:
        names = pq.read_schema(path).names
    except Exception as error:  # pyarrow raises several exception types for corrupt files
        raise ContractError(f"{path}: not a readable Parquet file ({_one_line(error)})") from error
    _check_unique_names(path, names)
    try:
        return pl.read_parquet(path)
    except Exception as error:  # polars raises several exception types for corrupt files
        raise ContractError(f"{path}: not a readable Parquet file ({_one_line(error)})") from error


def _read_csv(path: Path) -> pl.DataFrame:
    """The CSV file, every column as a string, after its structure was checked row by row."""
    data = path.read_bytes()
    _check_not_utf16(path, data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _not_utf8_error(path, data, error) from error
    data_rows = _check_csv_structure(path, text)
    try:
        frame = pl.read_csv(io.StringIO(text), infer_schema=False)
    except Exception as error:
        raise ContractError(f"{path}: could not be parsed as CSV ({_one_line(error)})") from error
    if frame.height != data_rows:
        raise ContractError(
            f"{path}: polars read {frame.height} data rows where the csv module counts "
            f"{data_rows}, so row numbers would not match the file; use \\n or \\r\\n line endings"
        )
    return frame


def _check_not_utf16(path: Path, data: bytes) -> None:
    """Refuse a UTF-16 (or UTF-32) file with a message that says so: without a byte order
    mark its ASCII text is valid UTF-8 with a NUL after each letter, and the csv walk would
    report a puzzling field count instead. A NUL byte never belongs in a UTF-8 header."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        reason = "a UTF-16 byte order mark"
    elif b"\x00" in data.split(b"\n", 1)[0]:
        reason = "NUL bytes in the header"
    else:
        return
    raise ContractError(f"{path}: looks like UTF-16 ({reason}); the contract requires UTF-8")


def _check_csv_structure(path: Path, text: str) -> int:
    """Find broken quoting, repeated column names or a wrong field count, naming the file and
    data row; return the number of data rows.

    polars' own parse errors do not say which row is at fault, so the file is first walked with
    the standard ``csv`` module in strict mode.
    """
    header: list[str] | None = None
    data_rows = 0
    with _csv_field_limit(len(text)):
        for data_row, line, fields in _csv_records(path, text):
            if header is None:
                header = fields
                _check_unique_names(path, header)
            elif fields and len(fields) != len(header):
                raise ContractError(
                    f"{path}: data row {data_row} has {len(fields)} fields, "
                    f"the header has {len(header)} ({', '.join(header)}); "
                    f"the row starts at line {line}"
                )
            data_rows = data_row
    if header is None:
        raise ContractError(f"{path}: empty file, expected a header row")
    return data_rows


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, int, list[str]]]:
    """Yield ``(data_row, line, fields)`` for each CSV record; data row 0 is the header and
    ``line`` the physical line where the record starts.

    Records are counted, not lines, so a quoted field spanning lines shifts no row number.
    Blank lines before the header are skipped and blank lines after it are data rows, as polars
    reads them (a row of nulls), so ``data_row`` is the ``source_row`` of the same row. Broken
    quoting raises ContractError naming the record where it starts: the csv module notices it
    only at a later quote or at the end of the file.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    data_row, line = -1, 1
    try:
        for fields in reader:
            if fields or data_row >= 0:
                data_row += 1
                yield data_row, line, fields
            line = reader.line_num + 1
    except csv.Error as error:
        raise ContractError(
            f"{path}: malformed CSV at {_position(data_row + 1, line)}: {error}; "
            "check that row for an unclosed quote"
        ) from error


_CSV_LIMIT_LOCK = threading.Lock()


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Let the csv module read fields of up to ``limit`` characters, then restore its limit.

    The limit is process-global (131,072 characters by default) while a valid CSV field may be
    of any length. It is only ever raised, and only for the duration of one walk, so other code
    never sees a lower one; the lock keeps concurrent walks from restoring it under each other.
    """
    with _CSV_LIMIT_LOCK:
        previous = csv.field_size_limit()
        csv.field_size_limit(max(previous, limit + 1))
        try:
            yield
        finally:
            csv.field_size_limit(previous)


# How ``errors="surrogateescape"`` decodes a byte that is not UTF-8.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _not_utf8_error(path: Path, data: bytes, error: UnicodeDecodeError) -> ContractError:
    """The error for a file that is not UTF-8, naming the data row and column of the first bad
    byte (rows counted in CSV records, as everywhere else)."""
    text = data.decode("utf-8-sig", errors="surrogateescape")
    header: list[str] = []
    with _csv_field_limit(len(text)):
        for data_row, line, fields in _csv_records(path, text):
            header = header or fields
            bad = [index for index, field in enumerate(fields) if _ESCAPED_BYTE.search(field)]
            if bad:
                column = ""
                if data_row and bad[0] < len(header):
                    column = f", column {header[bad[0]]!r}"
                return ContractError(
                    f"{path}: {_position(data_row, line)}{column} is not valid UTF-8 "
                    f"(byte offset {error.start}); the contract requires UTF-8"
                )
    return ContractError(
        f"{path}: byte offset {error.start} is not valid UTF-8; the contract requires UTF-8"
    )


def _position(data_row: int, line: int) -> str:
    """Where a CSV record is, for messages: its data row (or the header) and first line."""
    return f"the header (line {line})" if data_row == 0 else f"data row {data_row} (line {line})"


def _one_line(error: Exception) -> str:
    """A library's error message on one line, to quote inside ours."""
    return " ".join(str(error).split())
