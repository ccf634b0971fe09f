"""The cleaning rules, tested where they live: hmg_pipeline.core.cleaning.

Input frames are shaped like :func:`hmg_pipeline.core.schema.read_raw_table` returns them: every
contract column as a string plus ``source_row`` (Int64, 1-based).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from hmg_pipeline.core.cleaning import (
    DROP_RULES,
    DROP_SCHEMA,
    QUARANTINE_SCHEMA,
    ContactAccounting,
    build_quarantine,
    clean_contacts,
    clean_views,
    collect_users,
    deduplicate_edges,
    drop_gone_images,
    emotion_tokens,
    fill_fetched_texts,
    image_file_problem,
    image_problem,
    membership_problem,
    parse_number,
    parse_timestamp,
    quarantine_of,
    resolve_labels,
    typed_views,
    valid_rows,
    validate_groups,
    validate_images,
    validate_views,
    view_accounting,
    view_problem,
)
from hmg_pipeline.core.schema import (
    CONTACTS,
    GROUP_MEMBERS,
    GROUPS,
    IMAGES,
    SOURCE_ROW,
    USERS,
    VIEWS,
    TableSpec,
    empty_table,
)

from .helpers import VIEW_HEADER, jpeg_bytes, view

Row = Mapping[str, str | None]


def table(spec: TableSpec, rows: Sequence[Row | Sequence[str | None]]) -> pl.DataFrame:
    """A raw table as read by the contract; rows are dicts or tuples in the spec's column order.

    A dict row may carry its own ``source_row``; otherwise rows are numbered 1, 2, ...
    """
    records = []
    for number, row in enumerate(rows, start=1):
        values = row if isinstance(row, Mapping) else dict(zip(spec.columns, row, strict=True))
        records.append(
            {SOURCE_ROW: values.get(SOURCE_ROW, number), **{c: values.get(c) for c in spec.columns}}
        )
    return pl.DataFrame(
        records, schema={SOURCE_ROW: pl.Int64, **{column: pl.String for column in spec.columns}}
    )


def views(*rows: Sequence[object]) -> pl.DataFrame:
    """A raw views table from ``helpers.view`` tuples."""
    assert tuple(VIEW_HEADER) == VIEWS.columns
    return table(VIEWS, [tuple(None if v is None else str(v) for v in row) for row in rows])


def view_row(**changes: str | None) -> dict[str, str | None]:
    """A valid views row (as a dict) with ``changes`` applied."""
    base = view(
        "u1", "i1", "awe", comment_id="c1", commented_at="1400000000", valence="2.5", arousal="3"
    )
    return {**dict(zip(VIEW_HEADER, base, strict=True)), "dominance": "4", **changes}


def problems(quarantine: pl.DataFrame) -> dict[int, tuple[str, str]]:
    """source_row -> (column, reason) of one table's quarantine rows."""
    assert quarantine[SOURCE_ROW].is_unique().all(), "one quarantine row per raw row"
    return {r[SOURCE_ROW]: (r["column"], r["reason"]) for r in quarantine.iter_rows(named=True)}


def rules(drops: pl.DataFrame) -> dict[int, str]:
    return dict(drops.select(SOURCE_ROW, "rule").iter_rows())


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    """raw/img/a.jpg and raw/img/b.jpg, a file outside raw/ and a link inside raw/ to it."""
    raw = tmp_path / "raw"
    (raw / "img").mkdir(parents=True)
    (raw / "img" / "a.jpg").write_bytes(jpeg_bytes((200, 30, 30)))
    (raw / "img" / "b.jpg").write_bytes(jpeg_bytes((30, 30, 200)))
    (tmp_path / "outside.jpg").write_bytes(b"not inside the raw dir")
    (raw / "img" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (raw / "img" / "loop1.jpg").symlink_to(raw / "img" / "loop2.jpg")
    (raw / "img" / "loop2.jpg").symlink_to(raw / "img" / "loop1.jpg")
    os.mkfifo(raw / "img" / "fifo.jpg")
    return raw


# --- value parsers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2014-01-01T00:00:00Z", datetime(2014, 1, 1)),
        ("2014-05-13T16:53:20+02:00", datetime(2014, 5, 13, 14, 53, 20)),
        ("2014-05-13T10:53:20-04:00", datetime(2014, 5, 13, 14, 53, 20)),
        ("2014-05-13T14:53:20.25Z", datetime(2014, 5, 13, 14, 53, 20, 250000)),
        ("2014-05-13 14:53:20", datetime(2014, 5, 13, 14, 53, 20)),
        ("2014-01-01", datetime(2014, 1, 1)),
        (" 2014-01-01T00:00:00Z ", datetime(2014, 1, 1)),
        ("1400000000", datetime(2014, 5, 13, 16, 53, 20)),
        ("1400000000.5", datetime(2014, 5, 13, 16, 53, 20, 500000)),
        ("  1400000000 ", datetime(2014, 5, 13, 16, 53, 20)),
        ("0", datetime(1970, 1, 1)),
        ("-1", datetime(1969, 12, 31, 23, 59, 59)),
    ],
)
def test_parse_timestamp_gives_naive_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is None


@pytest.mark.parametrize(
    "text",
    ["yesterday", "", "   ", "2014-13-01", "Z", "1e9", "13 May 2014", "nan", "99999999999999"],
)
def test_parse_timestamp_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize("seconds", ["1" + "0" * 30, "1e20", "-99999999999"])
def test_out_of_range_unix_seconds_are_quarantined_not_a_crash(seconds: str) -> None:
    problem = view_problem(view_row(commented_at=seconds), {"i1"}, {})
    assert problem is not None and problem.column == "commented_at"
    assert repr(seconds) in problem.reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2.5", 2.5), (" -3 ", -3.0), ("1e3", 1000.0), ("0", 0.0), ("+.5", 0.5)],
)
def test_parse_number(text: str, expected: float) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    "text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "high", "", " ", "2,5"]
)
def test_parse_number_rejects_non_finite_and_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("awe", ["awe"]),
        ("Amusement ", ["amusement"]),
        (" awe | Fear |AWE", ["awe", "fear"]),
        ("sadness|awe", ["sadness", "awe"]),
        (" UNKNOWN |unknown", ["unknown"]),
        ("joy|awe", ["joy", "awe"]),
        ("awe||fear|", ["awe", "fear"]),
        ("", []),
        (" | ", []),
    ],
)
def test_emotion_tokens(cell: str, expected: list[str]) -> None:
    assert emotion_tokens(cell) == expected


# --- per-row validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "fragment"),
    [
        ("img/a.jpg", None),
        (" img/a.jpg ", None),
        ("img/../img/b.jpg", None),
        ("{raw}/img/a.jpg", "is absolute"),
        ("/img/a.jpg", "is absolute"),
        ("\\img\\a.jpg", "is absolute"),
        ("../outside.jpg", "escapes the raw directory"),
        ("img/../../outside.jpg", "escapes the raw directory"),
        ("img/link.jpg", "escapes the raw directory"),
        ("img/missing.jpg", "does not exist"),
        ("img", "is a directory"),
        ("img/loop1.jpg", "symlink loop"),
        ("img/" + "x" * 300 + ".jpg", "has a name of 304 bytes (the file system allows 255)"),
        ("img/" + "é" * 130 + ".jpg", "has a name of 264 bytes"),
        ("img/a.jpg\x00.png", "contains a NUL byte"),
        ("img/fifo.jpg", "is not a regular file (a FIFO)"),
    ],
)
def test_image_file_problem(raw_dir: Path, file: str, fragment: str | None) -> None:
    file = file.format(raw=raw_dir)
    reason = image_file_problem(raw_dir, file)
    if fragment is None:
        assert reason is None
    else:
        assert reason is not None and fragment in reason and repr(file) in reason


IMAGE_ROW = {"image_id": "i1", "owner_id": "u9", "url": None, "file": "img/a.jpg"}


@pytest.mark.parametrize(
    ("changes", "column", "fragment"),
    [
        ({}, None, None),
        ({"file": None}, None, None),
        ({"posted_at": "1400000000"}, None, None),
        ({"image_id": None}, "image_id", "missing required value in 'image_id'"),
        ({"image_id": "  "}, "image_id", "missing required value in 'image_id'"),
        ({"posted_at": "soon"}, "posted_at", "unparseable time 'soon'"),
        ({"image_id": "i0"}, "image_id", "duplicate image_id, first defined at row 7"),
        ({"file": "img/missing.jpg"}, "file", "does not exist"),
        ({"file": "../outside.jpg"}, "file", "escapes the raw directory"),
        ({"file": "/abs.jpg"}, "file", "is absolute"),
        # the first failing column is named
        ({"image_id": None, "posted_at": "soon", "file": "/abs.jpg"}, "image_id", "missing"),
        ({"image_id": "i0", "file": "img/missing.jpg"}, "image_id", "duplicate"),
    ],
)
def test_image_problem(
    raw_dir: Path, changes: Row, column: str | None, fragment: str | None
) -> None:
    first_row_of = {"i0": 7}
    problem = image_problem({**IMAGE_ROW, "posted_at": None, **changes}, raw_dir, first_row_of)
    if column is None:
        assert problem is None
    else:
        assert problem is not None
        assert (problem.column, fragment in problem.reason) == (column, True), problem
    assert first_row_of == {"i0": 7}


QUARANTINED_IMAGES = {"i2": "images row 2: file path '../x.jpg' escapes the raw directory"}


@pytest.mark.parametrize(
    ("changes", "column", "fragment"),
    [
        ({}, None, None),
        ({"emotion": "unknown"}, None, None),
        ({"emotion": " AWE | fear "}, None, None),
        ({"comment_text": "", "commented_at": None, "valence": " ", "dominance": ""}, None, None),
        ({"commented_at": "2014-05-13T16:53:20+02:00"}, None, None),
        ({"user_id": None}, "user_id", "missing required value in 'user_id'"),
        ({"image_id": "   "}, "image_id", "missing required value in 'image_id'"),
        ({"emotion": ""}, "emotion", "missing required value in 'emotion'"),
        ({"emotion": " | "}, "emotion", "missing required value in 'emotion'"),
        ({"emotion": "joy"}, "emotion", "emotion token 'joy' is not one of"),
        ({"emotion": "awe|rage|joy"}, "emotion", "emotion token 'rage'"),
        ({"commented_at": "yesterday"}, "commented_at", "unparseable time 'yesterday'"),
        ({"valence": "high"}, "valence", "unparseable number 'high'"),
        ({"arousal": "nan"}, "arousal", "unparseable number 'nan'"),
        ({"dominance": "inf"}, "dominance", "unparseable number 'inf'"),
        ({"image_id": "i9"}, "image_id", "image_id 'i9' is not in the images table"),
        ({"image_id": "i2"}, "image_id", f"image is quarantined ({QUARANTINED_IMAGES['i2']})"),
        # the first failing column is named
        ({"user_id": None, "image_id": None, "emotion": "joy"}, "user_id", "missing"),
        ({"image_id": None, "emotion": None}, "image_id", "missing"),
        ({"emotion": "joy", "commented_at": "x"}, "emotion", "'joy'"),
        ({"commented_at": "x", "valence": "x"}, "commented_at", "unparseable time"),
        ({"valence": "x", "dominance": "x"}, "valence", "unparseable number"),
        ({"arousal": "nan", "dominance": "x"}, "arousal", "unparseable number"),
        ({"dominance": "x", "image_id": "i9"}, "dominance", "unparseable number"),
        ({"emotion": "joy", "image_id": "i2"}, "emotion", "'joy'"),
    ],
)
def test_view_problem(changes: Row, column: str | None, fragment: str | None) -> None:
    problem = view_problem(view_row(**changes), {"i1"}, QUARANTINED_IMAGES)
    if column is None:
        assert problem is None
    else:
        assert problem is not None
        assert (problem.column, fragment in problem.reason) == (column, True), problem


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ({"group_id": "g1", "user_id": "u1"}, None, None),
        ({"group_id": None, "user_id": "u1"}, "group_id", "missing required value"),
        ({"group_id": "g1", "user_id": " "}, "user_id", "missing required value"),
        ({"group_id": "g9", "user_id": "u1"}, "group_id", "'g9' is not in the groups table"),
        ({"group_id": None, "user_id": None}, "group_id", "missing required value"),
        ({"group_id": "g9", "user_id": None}, "user_id", "missing required value"),
    ],
)
def test_membership_problem(row: Row, column: str | None, fragment: str | None) -> None:
    problem = membership_problem(dict(row), {"g1", "g2"})
    if column is None:
        assert problem is None
    else:
        assert problem is not None
        assert (problem.column, fragment in problem.reason) == (column, True), problem


# --- per-table validation and the quarantine -----------------------------------------------------


def test_validate_images_names_the_first_valid_row_of_a_duplicate(raw_dir: Path) -> None:
    images = table(
        IMAGES,
        [
            ("i1", "u9", None, "img/a.jpg", None),  # 1 valid
            ("i2", "u9", None, "../outside.jpg", None),  # 2 escapes
            ("i1", "u9", None, "img/b.jpg", None),  # 3 duplicate of 1
            ("i2", "u9", None, "img/b.jpg", None),  # 4 valid: row 2 defined nothing
            ("i2", "u9", None, "img/a.jpg", None),  # 5 duplicate of 4
            (None, "u9", None, "img/a.jpg", None),  # 6 no id
            ("i3", "u9", "https://example.org/3.jpg", None, "soon"),  # 7 bad time
            ("i4", "u9", "https://example.org/4.jpg", None, None),  # 8 valid, no file
        ],
    )
    quarantine = validate_images(images, raw_dir)
    assert quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert set(quarantine["table"]) == {"images"}
    found = problems(quarantine)
    assert set(found) == {2, 3, 5, 6, 7}
    assert found[2][0] == "file" and "escapes" in found[2][1]
    assert found[3] == ("image_id", "duplicate image_id, first defined at row 1")
    assert found[5] == ("image_id", "duplicate image_id, first defined at row 4")
    assert found[6][0] == "image_id" and found[7][0] == "posted_at"


def test_validate_views_names_the_row_of_a_quarantined_image(raw_dir: Path) -> None:
    images = table(
        IMAGES,
        [
            ("i1", "u9", None, "img/a.jpg", None),  # 1 valid
            ("i2", "u9", None, "../outside.jpg", None),  # 2 escapes
            ("i3", "u9", None, "img/a.jpg", "soon"),  # 3 bad time
            ("i3", "u9", None, "img/missing.jpg", None),  # 4 also bad: row 3 is named
            ("i4", "u9", None, "img/b.jpg", None),  # 5 valid
            ("i4", "u9", None, "img/a.jpg", None),  # 6 duplicate: i4 stays valid
        ],
    )
    images_quarantine = validate_images(images, raw_dir)
    image_reasons = problems(images_quarantine)
    raw_views = views(
        view("u1", "i1", "awe"),
        view("u1", "i2", "awe"),
        view("u1", "i3", "fear"),
        view("u1", "i4", "awe"),
        view("u1", "i9", "awe"),
        view("u1", "i2", "joy"),  # its own problem comes first
    )
    found = problems(validate_views(raw_views, images, images_quarantine))
    assert set(found) == {2, 3, 5, 6}
    assert found[2] == ("image_id", f"image is quarantined (images row 2: {image_reasons[2][1]})")
    assert found[3] == ("image_id", f"image is quarantined (images row 3: {image_reasons[3][1]})")
    assert found[5] == ("image_id", "image_id 'i9' is not in the images table")
    assert found[6][0] == "emotion"


def test_validate_groups() -> None:
    groups = table(
        GROUPS,
        [
            ("g1", "Night", None),
            ("g2", None, None),
            ("g1", "Again", None),
            (None, "x", None),
            ("  ", "blank", None),
        ],
    )
    found = problems(validate_groups(groups))
    assert found == {
        3: ("group_id", "duplicate group_id, first defined at row 1"),
        4: ("group_id", "missing required value in 'group_id'"),
        5: ("group_id", "missing required value in 'group_id'"),
    }


def test_build_quarantine_one_row_per_bad_raw_row(raw_dir: Path) -> None:
    raw = {
        "images": table(
            IMAGES,
            [("i1", "u9", None, "img/a.jpg", None), ("i2", "u9", None, "/abs.jpg", "soon")],
        ),
        "views": views(
            view("u1", "i1", "awe", comment_text="日本語"),
            view(None, "i1", "joy", commented_at="x"),  # three problems, one row
            view("u2", "i2", "awe"),  # image quarantined
            view("u2", "i1", "joy", comment_text='日本語 "quoted", comma'),
        ),
        "contacts": table(CONTACTS, [("u1", "u2"), (None, "u2"), ("u1", " "), ("u3", "u3")]),
        "groups": table(GROUPS, [("g1", None, None), ("g1", None, None), (None, None, None)]),
        "group_members": table(GROUP_MEMBERS, [("g1", "u1"), ("g9", "u2"), ("g1", None)]),
        "users": table(USERS, [("u1",), (None,)]),
    }
    quarantine = build_quarantine(**raw, raw_dir=raw_dir)
    assert quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    bad = {(table, row) for table, row in quarantine.select("table", SOURCE_ROW).iter_rows()}
    assert bad == {
        ("images", 2),
        ("views", 2),
        ("views", 3),
        ("views", 4),
        ("contacts", 2),
        ("contacts", 3),
        ("groups", 2),
        ("groups", 3),
        ("group_members", 2),
        ("group_members", 3),
        ("users", 2),
    }
    assert quarantine.height == len(bad)
    assert problems(quarantine_of(quarantine, "views"))[2][0] == "user_id"
    assert problems(quarantine_of(quarantine, "images"))[2][0] == "posted_at"
    for record in quarantine.iter_rows(named=True):
        original = raw[record["table"]].filter(pl.col(SOURCE_ROW) == record[SOURCE_ROW])
        expected = original.drop(SOURCE_ROW).row(0, named=True)
        assert json.loads(record["raw_row"]) == expected
    view_4 = quarantine.filter((pl.col("table") == "views") & (pl.col(SOURCE_ROW) == 4))
    assert "日本語" in view_4["raw_row"].item()  # stored as text, not \u escapes


def test_valid_rows_and_quarantine_of() -> None:
    raw_views = views(*(view(f"u{k}", "i1", "awe") for k in range(1, 5)))
    quarantine = pl.DataFrame(
        [
            {"table": "views", SOURCE_ROW: 2, "column": "c", "reason": "r", "raw_row": "{}"},
            {"table": "images", SOURCE_ROW: 3, "column": "c", "reason": "r", "raw_row": "{}"},
            {"table": "views", SOURCE_ROW: 4, "column": "c", "reason": "r", "raw_row": "{}"},
        ],
        schema=QUARANTINE_SCHEMA,
    )
    views_quarantine = quarantine_of(quarantine, "views")
    assert views_quarantine[SOURCE_ROW].to_list() == [2, 4]
    assert quarantine_of(quarantine, "contacts").height == 0
    valid = valid_rows(raw_views, views_quarantine)
    assert sorted(valid[SOURCE_ROW]) == [1, 3]
    assert valid.columns == raw_views.columns


# --- label rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "policy", "expected"),
    [
        ("awe", "first", "awe"),
        ("Amusement ", "first", "amusement"),
        (" FEAR ", "drop", "fear"),
        ("unknown|Fear", "first", "fear"),
        ("unknown|Fear", "drop", "fear"),
        ("awe|AWE", "drop", "awe"),
        ("sadness|awe", "first", "sadness"),
        ("sadness|unknown|awe", "first", "sadness"),
        ("sadness|awe", "drop", ("multi_label",)),
        ("unknown", "first", ("unknown",)),
        (" UNKNOWN |unknown", "first", ("unknown",)),
        ("Unknown", "drop", ("unknown",)),
    ],
)
def test_resolve_labels(cell: str, policy: str, expected: str | tuple[str]) -> None:
    frame = views(view("u1", "i1", "awe"), view("u2", "i1", cell))
    labelled, drops = resolve_labels(frame, policy)  # type: ignore[arg-type]
    assert drops.schema == pl.Schema(DROP_SCHEMA)
    if isinstance(expected, str):
        assert labelled.select(SOURCE_ROW, "emotion").rows() == [(1, "awe"), (2, expected)]
        assert drops.height == 0
    else:
        assert labelled.select(SOURCE_ROW, "emotion").rows() == [(1, "awe")]
        assert drops.rows() == [(2, expected[0], cell)]  # the detail is the raw cell
    assert labelled.columns == frame.columns


def edges(times: Sequence[str | None], pair: tuple[str, str] = ("u1", "i1")) -> pl.DataFrame:
    """Labelled, typed edges of one (user, image) pair, one per time, in file order."""
    rows = [view(*pair, "awe", commented_at=t) for t in times]
    return typed_views(views(*rows))


@pytest.mark.parametrize(
    ("times", "kept"),
    [
        (["2015-01-01", "2014-01-01"], 1),
        (["2014-01-01", "2015-01-01"], 2),
        ([None, "1970-01-01"], 2),
        (["1970-01-01", None], 1),
        (["1400000000", "2014-05-13T18:53:20+02:00"], 2),
        ([None, None], 2),
        (["2014-01-01", "2016-01-01", "2014-01-01"], 2),
        (["2014-01-01", None, "2014-01-01", None], 3),
    ],
    ids=lambda value: repr(value) if isinstance(value, list) else f"kept={value}",
)
def test_deduplicate_edges(times: list[str | None], kept: int) -> None:
    labelled = edges(times)
    clean, dropped = deduplicate_edges(labelled)
    assert clean[SOURCE_ROW].to_list() == [kept]
    assert sorted(dropped[SOURCE_ROW]) == [r for r in range(1, len(times) + 1) if r != kept]
    assert set(dropped["rule"]) <= {"duplicate"}
    assert set(dropped["detail"]) <= {f"same user_id and image_id as row {kept}, which was kept"}


def test_deduplicate_edges_groups_by_user_and_image_and_sorts_by_row() -> None:
    labelled = typed_views(
        views(
            view("u1", "i1", "awe", commented_at="2014-01-01"),  # 1 dropped for 4
            view("u1", "i2", "awe"),  # 2 alone
            view("u2", "i1", "fear"),  # 3 alone
            view("u1", "i1", "fear", commented_at="2015-01-01"),  # 4 kept
        )
    )
    shuffled = labelled[[3, 1, 0, 2]]
    clean, dropped = deduplicate_edges(shuffled)
    assert clean[SOURCE_ROW].to_list() == [2, 3, 4]
    assert dropped.rows() == [
        (1, "duplicate", "same user_id and image_id as row 4, which was kept")
    ]


def test_typed_views_parses_times_numbers_and_blank_texts() -> None:
    raw = views(
        view("u1", "i1", "awe", comment_text=" wow ", commented_at="1400000000", valence="2.5"),
        view("u2", "i1", "fear", comment_text="  ", commented_at="2014-05-13T16:53:20+02:00"),
        view("u3", "i1", "awe", comment_text="", commented_at=" ", arousal="-1e1", dominance="3"),
    )
    typed = typed_views(raw)
    assert typed.schema["commented_at"] == pl.Datetime("us")
    assert all(typed.schema[c] == pl.Float64 for c in ("valence", "arousal", "dominance"))
    for before, after in zip(raw.iter_rows(named=True), typed.iter_rows(named=True), strict=True):
        time = before["commented_at"]
        assert after["commented_at"] == (parse_timestamp(time) if time.strip() else None)
        for column in ("valence", "arousal", "dominance"):
            value = before[column]
            assert after[column] == (None if value is None else parse_number(value))
        text = before["comment_text"]
        assert after["comment_text"] == (text if text.strip() else None)
        for column in ("user_id", "image_id", "emotion", "comment_id", SOURCE_ROW):
            assert after[column] == before[column]


def fetched(*rows: tuple[str | None, str | None, str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"comment_id": pl.String, "status": pl.String, "text": pl.String},
        orient="row",
    )


@pytest.mark.parametrize(
    ("raw_text", "fetch", "text", "source"),
    [
        ("wow", None, "wow", "raw"),
        ("wow", ("ok", "other"), "wow", "raw"),
        (None, ("ok", "from flickr"), "from flickr", "flickr"),
        (None, ("gone", "stale"), None, None),
        (None, ("private", None), None, None),
        (None, ("error", None), None, None),
        (None, ("ok", "   "), None, None),
        (None, ("ok", None), None, None),
    ],
)
def test_fill_fetched_texts(
    raw_text: str | None,
    fetch: tuple[str, str | None] | None,
    text: str | None,
    source: str | None,
) -> None:
    frame = typed_views(
        views(
            view("u1", "i1", "awe", comment_id="c1", comment_text=raw_text),
            view("u2", "i1", "awe", comment_id="c2"),
        )
    )
    answers = fetched(("c9", "ok", "someone else's"), *([("c1", *fetch)] if fetch else []))
    filled = fill_fetched_texts(frame, answers).sort(SOURCE_ROW)
    assert filled.select("comment_text", "comment_source").rows() == [(text, source), (None, None)]
    assert filled.drop("comment_text", "comment_source").equals(frame.drop("comment_text"))


@pytest.mark.parametrize("answers", [None, fetched()], ids=["none", "empty"])
def test_fill_fetched_texts_without_answers(answers: pl.DataFrame | None) -> None:
    frame = typed_views(
        views(view("u1", "i1", "awe", comment_text="wow"), view("u2", "i1", "awe", comment_id="c"))
    )
    filled = fill_fetched_texts(frame, answers)
    assert filled.select("comment_text", "comment_source").rows() == [("wow", "raw"), (None, None)]


def test_drop_gone_images() -> None:
    frame = views(
        view("u1", "i1", "awe"),
        view("u1", "i2", "awe"),
        view("u2", "i1", "fear"),
        view("u3", "i3", "awe"),
    )
    gone = {"i1", "i9"}
    alive, drops = drop_gone_images(frame, gone)
    expected_gone = [r[SOURCE_ROW] for r in frame.iter_rows(named=True) if r["image_id"] in gone]
    assert drops.schema == pl.Schema(DROP_SCHEMA)
    assert drops[SOURCE_ROW].to_list() == expected_gone
    assert set(drops["rule"]) == {"image_gone"}
    assert all("image i1 is gone" in detail for detail in drops["detail"])
    assert alive[SOURCE_ROW].to_list() == [r for r in frame[SOURCE_ROW] if r not in expected_gone]

    alive, drops = drop_gone_images(frame, ())
    assert alive.equals(frame) and drops.height == 0


# --- clean_views: the rules after validation, in order ------------------------------------------

ALL_RULES_VIEWS = (
    view("u1", "i1", "awe"),  # 1 clean
    view("u1", "i2", "unknown"),  # 2 dropped: unknown
    view("u2", "i2", " UNKNOWN |unknown"),  # 3 dropped: unknown
    view("u2", "i1", "unknown|Fear"),  # 4 clean: fear
    view("u3", "i1", "sadness|awe"),  # 5 clean (first) / dropped (drop)
    view("u3", "i2", "awe", commented_at="1400000000"),  # 6 duplicate of 7, older
    view("u3", "i2", "fear", commented_at="2015-01-01T00:00:00Z"),  # 7 clean
    view("u1", "i3", "anger"),  # 8 no time: earliest
    view("u1", "i3", "excitement", commented_at="1300000000"),  # 9 clean
    view("u2", "i3", "anger", commented_at="1400000000"),  # 10 tie with 11
    view("u2", "i3", "disgust", commented_at="1400000000"),  # 11 clean (later row)
    view("u4", "i4", "awe"),  # 12 image gone
)


@pytest.mark.parametrize("policy", ["first", "drop"])
def test_clean_views_every_rule(policy: str) -> None:
    valid = views(*ALL_RULES_VIEWS)
    clean, drops = clean_views(valid, policy, gone_images=["i4"])  # type: ignore[arg-type]
    expected_drops = {2: "unknown", 3: "unknown", 6: "duplicate", 8: "duplicate"}
    expected_drops |= {10: "duplicate", 12: "image_gone"}
    expected_labels = {1: "awe", 4: "fear", 7: "fear", 9: "excitement", 11: "disgust"}
    if policy == "first":
        expected_labels[5] = "sadness"
    else:
        expected_drops[5] = "multi_label"
    assert rules(drops) == expected_drops
    assert dict(clean.select(SOURCE_ROW, "emotion").iter_rows()) == expected_labels
    assert drops[SOURCE_ROW].to_list() == sorted(expected_drops)
    assert clean[SOURCE_ROW].to_list() == sorted(expected_labels)
    assert clean.schema["commented_at"] == pl.Datetime("us")
    assert "comment_source" in clean.columns


def test_clean_views_fills_fetched_texts() -> None:
    valid = views(
        view("u1", "i1", "awe", comment_id="c1"),
        view("u2", "i1", "awe", comment_id="c2", comment_text="mine"),
        view("u3", "i1", "awe", comment_id="c3"),
    )
    answers = fetched(("c1", "ok", "fetched"), ("c2", "ok", "not used"), ("c3", "gone", None))
    clean, drops = clean_views(valid, fetched_comments=answers)
    assert drops.height == 0
    assert clean.select(SOURCE_ROW, "comment_text", "comment_source").rows() == [
        (1, "fetched", "flickr"),
        (2, "mine", "raw"),
        (3, None, None),
    ]


@pytest.mark.parametrize(
    ("rows", "policy", "gone", "expected_drops", "kept"),
    [
        # a gone image's view is image_gone, whatever its label
        ([view("u1", "i1", "unknown")], "first", ["i1"], {1: "image_gone"}, []),
        ([view("u1", "i1", "awe|fear")], "drop", ["i1"], {1: "image_gone"}, []),
        # ... and its views are never duplicates of each other
        (
            [view("u1", "i1", "awe"), view("u1", "i1", "fear")],
            "first",
            ["i1"],
            {1: "image_gone", 2: "image_gone"},
            [],
        ),
        # the later row is dropped by the label rules, so the earlier one is no duplicate
        (
            [
                view("u1", "i1", "awe", commented_at="1400000000"),
                view("u1", "i1", "unknown", commented_at="1500000000"),
            ],
            "first",
            [],
            {2: "unknown"},
            [1],
        ),
        (
            [
                view("u1", "i1", "awe", commented_at="1400000000"),
                view("u1", "i1", "awe|fear", commented_at="1500000000"),
            ],
            "drop",
            [],
            {2: "multi_label"},
            [1],
        ),
    ],
    ids=["gone-unknown", "gone-multi", "gone-duplicates", "unknown-first", "multi-label-first"],
)
def test_clean_views_rule_order(
    rows: list[tuple[object, ...]],
    policy: str,
    gone: list[str],
    expected_drops: dict[int, str],
    kept: list[int],
) -> None:
    clean, drops = clean_views(views(*rows), policy, gone_images=gone)  # type: ignore[arg-type]
    assert rules(drops) == expected_drops
    assert clean[SOURCE_ROW].to_list() == kept


def test_clean_views_places_every_valid_row_once() -> None:
    valid = views(*ALL_RULES_VIEWS)
    clean, drops = clean_views(valid, "drop", gone_images=["i4"])
    placed = clean[SOURCE_ROW].to_list() + drops[SOURCE_ROW].to_list()
    assert sorted(placed) == valid[SOURCE_ROW].to_list()


# --- view accounting -----------------------------------------------------------------------------


def placed(rows: Sequence[int]) -> pl.DataFrame:
    return pl.DataFrame({SOURCE_ROW: list(rows)}, schema={SOURCE_ROW: pl.Int64})


def accounting_frames(
    clean_rows: Sequence[int], quarantined_rows: Sequence[int], drops: Mapping[int, str]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Five raw views; the quarantine also holds an images row numbered like a view row."""
    raw_views = views(*(view(f"u{k}", "i1", "awe") for k in range(1, 6)))
    quarantine = pl.DataFrame(
        [{"table": "views", SOURCE_ROW: r, "column": "c", "reason": "r"} for r in quarantined_rows]
        + [{"table": "images", SOURCE_ROW: 1, "column": "c", "reason": "r"}],
        schema={k: v for k, v in QUARANTINE_SCHEMA.items() if k != "raw_row"},
    )
    drop_frame = pl.DataFrame(
        [{SOURCE_ROW: r, "rule": rule, "detail": ""} for r, rule in drops.items()],
        schema=DROP_SCHEMA,
    )
    return raw_views, placed(clean_rows), quarantine, drop_frame


def test_view_accounting_closes() -> None:
    drops = {4: "unknown", 5: "duplicate"}
    accounting = view_accounting(*accounting_frames([1, 2], [3], drops))
    assert accounting.closes
    assert (accounting.raw, accounting.clean, accounting.quarantined) == (5, 2, 1)
    assert accounting.dropped == {rule: list(drops.values()).count(rule) for rule in DROP_RULES}
    assert accounting.unaccounted_rows == [] and accounting.double_counted_rows == []


@pytest.mark.parametrize(
    ("clean_rows", "quarantined_rows", "drops", "unaccounted", "double"),
    [
        ([1, 2], [3], {4: "unknown"}, [5], []),
        ([1, 2], [3], {2: "unknown", 4: "unknown", 5: "duplicate"}, [], [2]),
        ([1, 2], [2, 3], {4: "image_gone", 5: "duplicate"}, [], [2]),
        # the totals match, yet row 5 is missing and row 2 is counted twice
        ([1, 2], [3], {2: "unknown", 4: "duplicate"}, [5], [2]),
    ],
    ids=["unaccounted", "dropped-and-clean", "quarantined-and-clean", "totals-match"],
)
def test_view_accounting_detects_misplaced_rows(
    clean_rows: list[int],
    quarantined_rows: list[int],
    drops: dict[int, str],
    unaccounted: list[int],
    double: list[int],
) -> None:
    accounting = view_accounting(*accounting_frames(clean_rows, quarantined_rows, drops))
    assert not accounting.closes
    assert accounting.unaccounted_rows == unaccounted
    assert accounting.double_counted_rows == double


# --- contacts and users --------------------------------------------------------------------------


def test_clean_contacts_merges_reversed_and_duplicate_pairs() -> None:
    rows = [
        {SOURCE_ROW: 4, "user_id": "u2", "contact_id": "u1"},
        {SOURCE_ROW: 2, "user_id": "u3", "contact_id": "u3"},
        {SOURCE_ROW: 7, "user_id": "u1", "contact_id": "u2"},
        {SOURCE_ROW: 3, "user_id": "u2", "contact_id": "u1"},
        {SOURCE_ROW: 5, "user_id": "u3", "contact_id": "u1"},
        {SOURCE_ROW: 9, "user_id": "u2", "contact_id": "u3"},
        {SOURCE_ROW: 8, "user_id": "u10", "contact_id": "u2"},
        {SOURCE_ROW: 1, "user_id": "u4", "contact_id": "u4"},
    ]
    valid = table(CONTACTS, rows)
    pairs, accounting = clean_contacts(valid)

    expected: dict[tuple[str, str], int] = {}
    for row in rows:
        if row["user_id"] != row["contact_id"]:
            key = (min(row["user_id"], row["contact_id"]), max(row["user_id"], row["contact_id"]))
            expected[key] = min(expected.get(key, row[SOURCE_ROW]), row[SOURCE_ROW])
    loops = sum(row["user_id"] == row["contact_id"] for row in rows)
    assert pairs.columns == ["user_id", "contact_id", SOURCE_ROW]
    assert {(u, c): r for u, c, r in pairs.iter_rows()} == expected
    assert pairs.height == len(expected) == 4
    assert all(u < c for u, c in pairs.select("user_id", "contact_id").iter_rows())
    assert accounting == ContactAccounting(
        valid=len(rows), self_loops=loops, merged=len(rows) - loops - len(expected), pairs=4
    )
    assert (accounting.self_loops, accounting.merged) == (2, 2)
    assert accounting.closes


@pytest.mark.parametrize(
    "rows", [[], [("u1", "u1"), ("u2", "u2")], [("u1", "u2")]], ids=["empty", "loops", "one"]
)
def test_clean_contacts_small_inputs(rows: list[tuple[str, str]]) -> None:
    valid = table(CONTACTS, rows) if rows else empty_table(CONTACTS)
    pairs, accounting = clean_contacts(valid)
    loops = sum(u == c for u, c in rows)
    assert pairs.height == len(rows) - loops == accounting.pairs
    assert accounting.self_loops == loops and accounting.valid == len(rows)
    assert accounting.closes


def test_contact_accounting_closes_only_when_it_adds_up() -> None:
    assert ContactAccounting(valid=5, self_loops=1, merged=2, pairs=2).closes
    assert not ContactAccounting(valid=5, self_loops=1, merged=2, pairs=1).closes


@pytest.mark.parametrize("with_optional", [True, False], ids=["all-tables", "no-members-or-users"])
def test_collect_users_flags_each_source(with_optional: bool) -> None:
    raw_views = views(view("u1", "i1", "awe"), view("u2", "i1", "awe"), view(None, "i1", "awe"))
    contacts = table(CONTACTS, [("u1", "u3"), ("u5", "u2"), (None, "u6")])
    members = table(GROUP_MEMBERS, [("g1", "u4"), ("g2", "u1"), ("g2", None)])
    users = table(USERS, [("u7",), ("u1",)])
    images = table(IMAGES, [("i1", "u8", None, None, None), ("i2", "u1", None, None, None)])
    if not with_optional:
        members, users = empty_table(GROUP_MEMBERS), empty_table(USERS)
        images = empty_table(IMAGES)

    found = collect_users(
        views=raw_views, contacts=contacts, group_members=members, users=users, images=images
    )

    sources = {
        "in_views": set(raw_views["user_id"].drop_nulls()),
        "in_contacts": set(contacts["user_id"].drop_nulls())
        | set(contacts["contact_id"].drop_nulls()),
        "in_groups": set(members["user_id"].drop_nulls()),
        "in_users_table": set(users["user_id"].drop_nulls()),
        "in_images": set(images["owner_id"].drop_nulls()),
    }
    everyone = sorted(set().union(*sources.values()))
    assert found.columns == ["user_id", *sources]
    assert found["user_id"].to_list() == everyone
    for row in found.iter_rows(named=True):
        assert {flag: row[flag] for flag in sources} == {
            flag: row["user_id"] in ids for flag, ids in sources.items()
        }
    assert all(found.schema[flag] == pl.Boolean for flag in sources)


# --- issue 11: adversarial inputs ----------------------------------------------------------------


OUT_OF_UTC = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "99999999999999"]


@pytest.mark.parametrize("text", OUT_OF_UTC)
def test_times_beyond_utc_are_quarantined_as_out_of_range(raw_dir: Path, text: str) -> None:
    problem = view_problem(view_row(commented_at=text), {"i1"}, {})
    assert problem is not None and problem.column == "commented_at"
    assert problem.reason.startswith(f"unparseable time {text!r}: ")
    assert "out of range" in problem.reason
    image = image_problem({**IMAGE_ROW, "posted_at": text}, raw_dir, {})
    assert image is not None and image.column == "posted_at"
    assert "out of range" in image.reason


def test_quarantine_of_out_of_range_times_keeps_every_other_row(raw_dir: Path) -> None:
    images = table(IMAGES, [("i1", "u9", None, "img/a.jpg", OUT_OF_UTC[0]), {"image_id": "i2"}])
    raw_views = views(view("u1", "i2", "awe", commented_at=OUT_OF_UTC[1]), view("u2", "i2", "fear"))
    empty = {spec.name: empty_table(spec) for spec in (CONTACTS, GROUPS, GROUP_MEMBERS, USERS)}
    quarantine = build_quarantine(images=images, views=raw_views, raw_dir=raw_dir, **empty)
    assert {(t, r, c) for t, r, c in quarantine.select("table", SOURCE_ROW, "column").rows()} == {
        ("images", 1, "posted_at"),
        ("views", 1, "commented_at"),
    }


@pytest.mark.parametrize(
    "text", ["1_000", "1__0", "0x10", "١٢", "1e", "e5", "1.2.3", "--1", "1e999", "Infinity"]
)
def test_parse_number_takes_only_plain_decimal_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)
    problem = view_problem(view_row(valence=text), {"i1"}, {})
    assert problem is not None and problem.reason == f"unparseable number {text!r}"


@pytest.mark.parametrize(("text", "expected"), [("5.", 5.0), ("-1.5E-3", -0.0015), ("1e+2", 100.0)])
def test_parse_number_takes_scientific_notation(text: str, expected: float) -> None:
    assert parse_number(text) == expected


def test_a_symlinked_folder_to_outside_names_the_symlink(raw_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "images"
    elsewhere.mkdir(parents=True)
    (elsewhere / "x.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    (raw_dir / "images").symlink_to(elsewhere)
    assert image_file_problem(raw_dir, "images/x.jpg") == (
        "file path 'images/x.jpg' escapes the raw directory (it resolves outside it through "
        f"symlink 'images' -> {str(elsewhere)!r})"
    )
    # A link to a file, deeper down, is named with its path inside the raw directory.
    reason = image_file_problem(raw_dir, "img/link.jpg")
    assert reason is not None and "through symlink 'img/link.jpg' -> " in reason
    # No symlink on the way: '..' is what escapes.
    assert image_file_problem(raw_dir, "img/../../outside.jpg") == (
        "file path 'img/../../outside.jpg' escapes the raw directory"
    )


def test_the_symlink_named_is_the_one_that_leads_outside(raw_dir: Path, tmp_path: Path) -> None:
    (raw_dir / "alias").symlink_to(raw_dir / "img")  # inside: harmless
    reason = image_file_problem(raw_dir, "alias/link.jpg")
    assert reason is not None and "through symlink 'alias/link.jpg' -> " in reason
    assert image_file_problem(raw_dir, "alias/a.jpg") is None
