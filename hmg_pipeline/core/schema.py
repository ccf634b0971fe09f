"""The raw-data contract of shared/ARCHITECTURE.md, as code.

Every raw table is ``NAME.csv`` or ``NAME.parquet`` (UTF-8) in the raw directory. Tables are
read with every column as a string (ids are strings; times and numbers are parsed later by the
cleaning rules so that a bad value becomes a quarantine row, not a crash). Each frame gets a
``source_row`` column: the 1-based data row number in its file (the header is not counted).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

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


def read_raw_table(raw_dir: Path | str, spec: TableSpec) -> pl.DataFrame:
    """Read one raw table by the contract: all columns as strings plus ``source_row``.

    Optional columns absent from the file are added as nulls so that downstream code can rely
    on every contract column existing; columns outside the contract are not carried.
    A missing optional table yields an empty frame with the contract's columns.
    """
    raw_dir = Path(raw_dir)
    path = find_table_file(raw_dir, spec)
    if path is None:
        return empty_table(spec)
    frame = _read_csv(path) if path.suffix == ".csv" else _read_parquet(path)
    missing = [column for column in spec.required if column not in frame.columns]
    if missing:
        raise ContractError(
            f"{path}: required column(s) {', '.join(repr(c) for c in missing)} missing "
            f"(found: {', '.join(frame.columns) or 'no columns'})"
        )
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


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # polars raises several exception types for corrupt files
        raise ContractError(f"{path}: not a readable Parquet file ({error})") from error
    return frame.with_columns(pl.all().cast(pl.String))


def _read_csv(path: Path) -> pl.DataFrame:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ContractError(
            f"{path}: line {line} (data row {line - 1}) is not valid UTF-8 "
            f"(byte offset {error.start}); the contract requires UTF-8"
        ) from error
    _check_csv_structure(path, text)
    try:
        return pl.read_csv(io.StringIO(text), infer_schema=False)
    except Exception as error:
        raise ContractError(f"{path}: could not be parsed as CSV ({error})") from error


def _check_csv_structure(path: Path, text: str) -> None:
    """Find broken quoting or a wrong field count and name the file and data row.

    polars' own parse errors do not say which row is at fault, so the file is first walked with
    the standard ``csv`` module in strict mode.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ContractError(f"{path}: empty file, expected a header row")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ContractError(
                    f"{path}: data row {reader.line_num - 1} has {len(row)} fields, "
                    f"the header has {len(header)} ({', '.join(header)})"
                )
    except csv.Error as error:
        raise ContractError(
            f"{path}: malformed CSV near line {reader.line_num} "
            f"(data row {max(reader.line_num - 1, 1)}): {error}; check for an unclosed quote"
        ) from error
