"""The raw-data contract reader, tested where it lives: hmg_pipeline.core.schema."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
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
            r"malformed CSV at data row 2 \(line 3\).*unclosed quote",
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
            r"data row 2 \(line 3\), column 'name' is not valid UTF-8",
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


def test_row_named_in_an_error_counts_records_not_lines(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text('user_id,contact_id\nu1,"u\n2"\nu3,u4,extra\n', encoding="utf-8")
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, CONTACTS)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "data row 2 has 3 fields" in message and "line 4" in message
    # The row named is the source_row the same row gets once it is fixed.
    path.write_text('user_id,contact_id\nu1,"u\n2"\nu3,u4\n', encoding="utf-8")
    assert read_raw_table(tmp_path, CONTACTS).filter(pl.col("user_id") == "u3")[
        SOURCE_ROW
    ].to_list() == [2]


def test_csv_field_longer_than_the_csv_module_limit_is_read_intact(tmp_path: Path) -> None:
    limit_before = csv.field_size_limit()
    text = "x" * 200_000 + ', "quoted"\nline'
    path = tmp_path / "views.csv"
    path.write_text(
        csv_text(
            ("user_id", "image_id", "emotion", "comment_text"),
            [("u1", "i1", "awe", text), ("u2", "i1", "fear", "short")],
        ),
        encoding="utf-8",
    )
    frame = read_raw_table(tmp_path, VIEWS)
    assert frame["comment_text"].to_list() == [text, "short"]
    assert frame[SOURCE_ROW].to_list() == [1, 2]
    assert csv.field_size_limit() == limit_before  # no process-wide change left behind


def write_names(path: Path, names: list[str]) -> None:
    """A one-row table with these column names; Parquet through pyarrow, which keeps repeats."""
    values = [f"v{k}" for k in range(len(names))]
    if path.suffix == ".parquet":
        pq.write_table(pa.table([pa.array([v]) for v in values], names=names), path)
    else:
        encoding = "utf-8-sig" if path.stem.endswith("bom") else "utf-8"
        path.with_name("images.csv").write_text(csv_text(tuple(names), [tuple(values)]), encoding)


@pytest.mark.parametrize("file", ["images.csv", "images_bom.csv", "images.parquet"])
@pytest.mark.parametrize(
    "clash", ["image_id", "Image_ID", " image_id "], ids=["exact", "case", "spaces"]
)
def test_duplicate_column_names_are_refused(tmp_path: Path, file: str, clash: str) -> None:
    write_names(tmp_path / file, ["image_id", "url", clash])
    path = tmp_path / ("images.parquet" if file.endswith(".parquet") else "images.csv")
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, IMAGES)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "duplicate column names" in message
    assert "'image_id' (column 1)" in message and f"{clash!r} (column 3)" in message
    assert "'url'" not in message


@pytest.mark.parametrize("file", ["images.csv", "images_bom.csv", "images.parquet"])
def test_column_names_are_trimmed_to_meet_the_contract(tmp_path: Path, file: str) -> None:
    write_names(tmp_path / file, [" image_id", "url ", "\textra\t"])
    notes: list[str] = []
    frame = read_raw_table(tmp_path, IMAGES, notes=notes)
    assert frame.select(SOURCE_ROW, "image_id", "url").rows() == [(1, "v0", "v1")]
    [note] = notes
    assert "' image_id' -> 'image_id'" in note and "'url ' -> 'url'" in note


def test_empty_column_names_may_repeat(tmp_path: Path) -> None:
    """Spreadsheets leave unnamed columns (trailing commas); they name no contract column."""
    (tmp_path / "images.csv").write_text("image_id,,\ni1,,\ni2,x,y\n", encoding="utf-8")
    assert read_raw_table(tmp_path, IMAGES)["image_id"].to_list() == ["i1", "i2"]


@pytest.mark.parametrize(
    "later_row",
    ["u105,u106", 'u105,"quoted"'],
    ids=["runs-to-end-of-file", "stopped-by-a-later-quote"],
)
def test_unclosed_quote_is_named_at_the_row_where_it_starts(tmp_path: Path, later_row: str) -> None:
    rows = [f"u{k},u{k + 1}" for k in range(1, 111)]
    rows[99] = 'u100,"never closes'
    rows[104] = later_row
    path = tmp_path / "contacts.csv"
    path.write_text("user_id,contact_id\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, CONTACTS)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "data row 100 (line 101)" in message
    assert "unclosed quote" in message
    assert not re.search(r"data row (?!100\b)\d+|line (?!101\b)\d+", message), message


def test_blank_lines_are_rows_in_errors_as_in_source_row(tmp_path: Path) -> None:
    """polars skips blank lines before the header but reads each one after it as a row of
    nulls; the row an error names must be the source_row that row gets once fixed."""
    path = tmp_path / "contacts.csv"
    body = 'u1,"multi\nline"\n\nu2,u3\n\n\n'
    path.write_text("\n\nuser_id,contact_id\n" + body + "u4,u5,extra\n", encoding="utf-8")
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, CONTACTS)
    assert "data row 6 has 3 fields" in str(error.value)
    assert "line 10" in str(error.value)
    path.write_text("\n\nuser_id,contact_id\n" + body + "u4,u5\n", encoding="utf-8")
    frame = read_raw_table(tmp_path, CONTACTS)
    assert frame.rows() == [
        (1, "u1", "multi\nline"),
        (2, None, None),
        (3, "u2", "u3"),
        (4, None, None),
        (5, None, None),
        (6, "u4", "u5"),
    ]


def write_float_ids(path: Path, image_ids: list[float | None], dtype: pa.DataType) -> None:
    """An images table whose ids are floats, as pandas writes an int column holding a NaN."""
    columns = {
        "image_id": pa.array(image_ids, dtype),
        "owner_id": pa.array(["u1"] * len(image_ids)),
        "url": pa.array([1.5] * len(image_ids), pa.float64()),
    }
    pq.write_table(pa.table(columns), path)


def test_integral_float_ids_become_integer_strings_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "images.parquet"
    write_float_ids(path, [5_000_000_000.0, float("nan"), None, 2.0**53, -3.0], pa.float64())
    notes: list[str] = []
    frame = read_raw_table(tmp_path, IMAGES, notes=notes)
    assert frame["image_id"].to_list() == ["5000000000", None, None, "9007199254740992", "-3"]
    assert frame["url"].to_list() == ["1.5"] * 5  # not an id: kept as written
    [note] = notes
    assert str(path) in note and "'image_id'" in note and "Float64" in note
    assert "3 value(s)" in note and "2 NaN/null" in note and "'5000000000'" in note
    assert "strings or int64" in note
    assert read_raw_table(tmp_path, IMAGES)["image_id"].to_list()[0] == "5000000000"


@pytest.mark.parametrize(
    ("ids", "dtype", "fragment"),
    [
        ([1.0, 1.5], pa.float64(), r"data row 2, column 'image_id': id 1\.5 .*fractional"),
        ([2.0**53 + 2, 1.0], pa.float64(), r"data row 1, column 'image_id': .*beyond 2\*\*53"),
        ([1.0, None, -(2.0**60)], pa.float64(), r"data row 3, column 'image_id'.*2\*\*53"),
        ([1.0, 2.0**24 + 2], pa.float32(), r"data row 2, column 'image_id'.*2\*\*24"),
        ([float("inf")], pa.float64(), r"data row 1, column 'image_id': id inf"),
    ],
    ids=["fractional", "above-2**53", "below-minus-2**53", "float32-above-2**24", "infinite"],
)
def test_float_ids_that_are_not_exact_integers_are_refused(
    tmp_path: Path, ids: list[float | None], dtype: pa.DataType, fragment: str
) -> None:
    path = tmp_path / "images.parquet"
    write_float_ids(path, ids, dtype)
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, IMAGES)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert re.search(fragment, message), message
    assert "write ids as strings or int64" in message


def test_a_file_read_as_written_adds_no_note(tmp_path: Path) -> None:
    write_csv(tmp_path)
    notes: list[str] = ["kept"]
    read_raw_table(tmp_path, VIEWS, notes=notes)
    assert notes == ["kept"]


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


def views_parquet(path: Path, **columns: pa.Array) -> None:
    """A two-row views table in Parquet whose columns ``columns`` replace or add to the
    required ones."""
    table = {
        "user_id": pa.array(["u1", "u2"]),
        "image_id": pa.array(["i1", "i2"]),
        "emotion": pa.array(["awe", "fear"]),
        **columns,
    }
    pq.write_table(pa.table(table), path)


@pytest.mark.parametrize(
    ("column", "values", "shown"),
    [
        ("comment_text", pa.array([["a", "b"], None], pa.list_(pa.string())), "List(String)"),
        ("user_id", pa.array([["u1"], ["u2"]], pa.list_(pa.string())), "List(String)"),
        ("valence", pa.array([{"v": 1.0}, {"v": 2.0}]), "Struct"),
        ("commented_at", pa.array([1, 2], pa.duration("us")), "Duration"),
    ],
    ids=["list-text", "list-id", "struct", "duration"],
)
def test_parquet_contract_column_without_a_text_form_is_refused(
    tmp_path: Path, column: str, values: pa.Array, shown: str
) -> None:
    path = tmp_path / "views.parquet"
    views_parquet(path, **{column: values})
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, VIEWS)
    message = str(error.value)
    assert message.startswith(f"{path}: column {column!r} has type {shown}"), message
    assert "\n" not in message
    assert message.endswith("contract columns must be text, numbers, booleans or times")


def test_parquet_columns_outside_the_contract_may_have_any_type(tmp_path: Path) -> None:
    views_parquet(
        tmp_path / "views.parquet",
        tags=pa.array([["a"], []], pa.list_(pa.string())),
        extra=pa.array([{"x": 1}, {"x": 2}]),
        wait=pa.array([1, 2], pa.duration("s")),
        blob=pa.array([b"\xff\xfe", None], pa.binary()),
    )
    assert read_raw_table(tmp_path, VIEWS)["user_id"].to_list() == ["u1", "u2"]


def test_parquet_binary_is_read_as_text_only_when_it_is_utf8(tmp_path: Path) -> None:
    path = tmp_path / "views.parquet"
    views_parquet(path, comment_text=pa.array(["日本".encode(), None], pa.binary()))
    assert read_raw_table(tmp_path, VIEWS)["comment_text"].to_list() == ["日本", None]
    views_parquet(path, comment_text=pa.array([b"fine", b"caf\xe9"], pa.binary()))
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, VIEWS)
    message = str(error.value)
    assert message.startswith(f"{path}: data row 2, column 'comment_text' is binary and not")
    assert "valid UTF-8 (byte offset 3)" in message and "\n" not in message


def test_integral_decimal_ids_become_integer_strings_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "images.parquet"
    decimals = pa.array([Decimal("5001091309.00"), None, Decimal("-7.0")], pa.decimal128(20, 2))
    pq.write_table(pa.table({"image_id": decimals, "url": decimals}), path)
    notes: list[str] = []
    frame = read_raw_table(tmp_path, IMAGES, notes=notes)
    assert frame["image_id"].to_list() == ["5001091309", None, "-7"]
    assert frame["url"].to_list() == ["5001091309.00", None, "-7.00"]  # not an id: as written
    [note] = notes
    assert str(path) in note and "'image_id'" in note and "Decimal" in note
    assert "2 value(s)" in note and "'5001091309'" in note


def test_decimal_ids_with_a_fraction_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "images.parquet"
    decimals = pa.array([Decimal("1.00"), Decimal("2.50")], pa.decimal128(10, 2))
    pq.write_table(pa.table({"image_id": decimals}), path)
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, IMAGES)
    message = str(error.value)
    assert message.startswith(f"{path}: data row 2, column 'image_id': id '2.50' is a decimal")
    assert "write ids as strings or int64" in message


def test_float_nan_in_parquet_is_missing_but_text_nan_in_csv_is_kept(tmp_path: Path) -> None:
    nan = float("nan")
    views_parquet(
        tmp_path / "views.parquet",
        valence=pa.array([nan, 2.5]),
        arousal=pa.array([1.0, nan], pa.float32()),
        commented_at=pa.array([nan, 1400000000.0]),
    )
    frame = read_raw_table(tmp_path, VIEWS)
    assert frame["valence"].to_list() == [None, "2.5"]
    assert frame["arousal"].to_list() == ["1.0", None]
    assert frame["commented_at"].to_list() == [None, "1400000000.0"]
    (tmp_path / "views.parquet").unlink()
    (tmp_path / "views.csv").write_text(
        "user_id,image_id,emotion,valence\nu1,i1,awe,nan\n", encoding="utf-8"
    )
    assert read_raw_table(tmp_path, VIEWS)["valence"].to_list() == ["nan"]


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [("utf-16-le", "NUL bytes in the header"), ("utf-16", "a UTF-16 byte order mark")],
)
def test_utf16_csv_is_named_as_such(tmp_path: Path, encoding: str, reason: str) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes("user_id,contact_id\nu1,u2\n".encode(encoding))
    with pytest.raises(ContractError) as error:
        read_raw_table(tmp_path, CONTACTS)
    assert str(error.value) == (
        f"{path}: looks like UTF-16 ({reason}); the contract requires UTF-8"
    )


def test_a_raw_directory_that_is_missing_or_a_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ContractError, match=f"^raw directory {re.escape(str(missing))} does not"):
        read_raw_table(missing, VIEWS)
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(ContractError, match=r"is not a directory$"):
        find_table_file(afile, USERS)
