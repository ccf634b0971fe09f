"""The raw-data contract reader, tested where it lives: hmg_pipeline.core.schema."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from hmg_pipeline.core.schema import (
    CONTACTS,
    GROUP_MEMBERS,
    GROUPS,
    IMAGES,
    SOURCE_ROW,
    USERS,
    VIEWS,
    ContractError,
    TableSpec,
    empty_table,
    find_table_file,
    read_raw_table,
)

REQUIRED_TABLES = [IMAGES, VIEWS, CONTACTS, GROUPS, GROUP_MEMBERS]
ALL_TABLES = [*REQUIRED_TABLES, USERS]

# A views file with an extra column and without the optional 'dominance' and 'comment_id'.
HEADER = ("user_id", "image_id", "emotion", "comment_text", "commented_at", "valence", "extra")
ROWS = [
    (" u1 ", "007", " Awe ", "  spaced  ", "1400000000", "2.50", "x"),
    ("u2", "", "fear|awe", "", "", "", ""),
    ("", "i2", "sadness", '日本語, "quoted"\nand a newline', "2014-01-01T00:00:00Z", "-1", "y"),
]
# What the contract makes of ROWS: strings only, ids trimmed and blank ids null, other values
# verbatim (an empty CSV field is null), missing optional columns null, the extra column gone.
EXPECTED = pl.DataFrame(
    {
        SOURCE_ROW: [1, 2, 3],
        "user_id": ["u1", "u2", None],
        "image_id": ["007", None, "i2"],
        "emotion": [" Awe ", "fear|awe", "sadness"],
        "comment_id": [None, None, None],
        "comment_text": ["  spaced  ", None, '日本語, "quoted"\nand a newline'],
        "commented_at": ["1400000000", None, "2014-01-01T00:00:00Z"],
        "valence": ["2.50", None, "-1"],
        "arousal": [None, None, None],
        "dominance": [None, None, None],
    },
    schema={SOURCE_ROW: pl.Int64, **{column: pl.String for column in VIEWS.columns}},
)


def csv_text(header: tuple[str, ...], rows: list[tuple[str, ...]], newline: str = "\n") -> str:
    def cell(value: str) -> str:
        needs_quotes = any(ch in value for ch in ',"\n')
        return '"' + value.replace('"', '""') + '"' if needs_quotes else value

    return "".join(",".join(cell(v) for v in row) + newline for row in [header, *rows])


def write_csv(raw: Path) -> None:
    (raw / "views.csv").write_text(csv_text(HEADER, ROWS), encoding="utf-8")


def write_csv_bom(raw: Path) -> None:
    (raw / "views.csv").write_text(csv_text(HEADER, ROWS), encoding="utf-8-sig")


def write_csv_crlf(raw: Path) -> None:
    (raw / "views.csv").write_bytes(csv_text(HEADER, ROWS, "\r\n").encode("utf-8"))


def write_parquet(raw: Path) -> None:
    """The same table in Parquet, where an empty CSV field is a null."""
    frame = pl.DataFrame(ROWS, schema=list(HEADER), orient="row")
    frame.with_columns(pl.all().replace("", None)).write_parquet(raw / "views.parquet")


WRITERS: dict[str, Callable[[Path], None]] = {
    "csv": write_csv,
    "csv-bom": write_csv_bom,
    "csv-crlf": write_csv_crlf,
    "parquet": write_parquet,
}


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_reads_contract_columns_as_strings_with_source_row(
    tmp_path: Path, write: Callable[[Path], None]
) -> None:
    write(tmp_path)
    frame = read_raw_table(tmp_path, VIEWS)
    assert frame.schema == EXPECTED.schema
    assert frame.equals(EXPECTED), frame


def test_typed_parquet_columns_become_strings(tmp_path: Path) -> None:
    pl.DataFrame(
        {"user_id": [7, 8], "image_id": ["i1", "i2"], "emotion": ["awe", None]},
        schema={"user_id": pl.Int64, "image_id": pl.String, "emotion": pl.String},
    ).with_columns(valence=pl.Series([2.5, None])).write_parquet(tmp_path / "views.parquet")
    frame = read_raw_table(str(tmp_path), VIEWS)
    assert frame.select(SOURCE_ROW, "user_id", "emotion", "valence").rows() == [
        (1, "7", "awe", "2.5"),
        (2, "8", None, None),
    ]
    assert all(dtype == pl.String for name, dtype in frame.schema.items() if name != SOURCE_ROW)


@pytest.mark.parametrize("spec", REQUIRED_TABLES, ids=lambda spec: spec.name)
def test_missing_required_table_names_the_file(tmp_path: Path, spec: TableSpec) -> None:
    for call in (find_table_file, read_raw_table):
        with pytest.raises(ContractError) as error:
            call(tmp_path, spec)
        message = str(error.value)
        assert f"table '{spec.name}' is missing" in message
        assert str(tmp_path / f"{spec.name}.csv") in message
        assert str(tmp_path / f"{spec.name}.parquet") in message


def test_optional_table_absent_is_an_empty_table(tmp_path: Path) -> None:
    assert find_table_file(tmp_path, USERS) is None
    frame = read_raw_table(tmp_path, USERS)
    assert frame.equals(empty_table(USERS))
    assert frame.columns == [SOURCE_ROW, "user_id"]


@pytest.mark.parametrize("spec", ALL_TABLES, ids=lambda spec: spec.name)
def test_empty_table_has_the_spec_columns(spec: TableSpec) -> None:
    frame = empty_table(spec)
    assert frame.height == 0
    assert frame.schema == pl.Schema(
        {SOURCE_ROW: pl.Int64, **{column: pl.String for column in spec.columns}}
    )


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_optional_table_present_is_read(tmp_path: Path, suffix: str) -> None:
    frame = pl.DataFrame({"user_id": ["u1", " u2 "]})
    if suffix == "csv":
        frame.write_csv(tmp_path / "users.csv")
    else:
        frame.write_parquet(tmp_path / "users.parquet")
    assert find_table_file(tmp_path, USERS) == tmp_path / f"users.{suffix}"
    assert read_raw_table(tmp_path, USERS).rows() == [(1, "u1"), (2, "u2")]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_missing_required_column_names_file_and_columns(tmp_path: Path, suffix: str) -> None:
    frame = pl.DataFrame({"user_id": ["u1"], "comment_text": ["x"]})
    path = tmp_path / f"views.{suffix}"
    if suffix == "csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, VIEWS)
    message = str(error.value)
    assert str(path) in message
    assert "'image_id', 'emotion'" in message and "missing" in message
    assert "found: user_id, comment_text" in message


@pytest.mark.parametrize(
    ("file", "content", "fragment"),
    [
        (
            "views.csv",
            'user_id,image_id,emotion,comment_text\nu1,i1,awe,fine\nu2,i1,awe,"never closes\n',
            r"malformed CSV near line 3 \(data row 2\).*unclosed quote",
        ),
        (
            "contacts.csv",
            "user_id,contact_id\nu1,u2\nu2,u3,extra\n",
            r"data row 2 has 3 fields, the header has 2 \(user_id, contact_id\)",
        ),
        (
            "contacts.csv",
            "user_id,contact_id\nu1,u2\nu2,u3\nu4\n",
            r"data row 3 has 1 fields, the header has 2",
        ),
        (
            "groups.csv",
            b"group_id,name,description\ng1,ok,fine\ng2,caf\xe9,latin-1\n",
            r"line 3 \(data row 2\) is not valid UTF-8",
        ),
        ("group_members.csv", "", r"empty file, expected a header row"),
        ("images.parquet", b"PAR1 not really parquet", r"not a readable Parquet file"),
    ],
    ids=["broken-quote", "too-many-fields", "too-few-fields", "not-utf8", "empty", "bad-parquet"],
)
def test_unreadable_file_names_file_and_row(
    tmp_path: Path, file: str, content: str | bytes, fragment: str
) -> None:
    path = tmp_path / file
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    spec = {spec.name: spec for spec in ALL_TABLES}[file.split(".")[0]]
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, spec)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert re.search(fragment, message), message


@pytest.mark.xfail(
    strict=True,
    reason="BUG: schema._check_csv_structure reports reader.line_num - 1 as the data row, which "
    "counts physical lines: after a quoted field with a newline, the row named is one too high",
)
def test_row_named_in_an_error_counts_records_not_lines(tmp_path: Path) -> None:
    (tmp_path / "contacts.csv").write_text(
        'user_id,contact_id\nu1,"u\n2"\nu3,u4,extra\n', encoding="utf-8"
    )
    with pytest.raises(ContractError, match="data row 2 has 3 fields"):
        read_raw_table(tmp_path, CONTACTS)


def test_csv_and_parquet_both_present_is_an_error(tmp_path: Path) -> None:
    frame = pl.DataFrame({"user_id": ["u1"], "contact_id": ["u2"]})
    frame.write_csv(tmp_path / "contacts.csv")
    frame.write_parquet(tmp_path / "contacts.parquet")
    for call in (find_table_file, read_raw_table):
        with pytest.raises(ContractError) as error:
            call(tmp_path, CONTACTS)
        message = str(error.value)
        assert "both" in message and "keep only one" in message
        assert str(tmp_path / "contacts.csv") in message
        assert str(tmp_path / "contacts.parquet") in message


def test_contract_error_is_a_value_error() -> None:
    assert issubclass(ContractError, ValueError)
