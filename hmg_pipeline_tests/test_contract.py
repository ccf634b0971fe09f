"""The raw-data contract, exercised through the raw assets."""

from __future__ import annotations

import json

import polars as pl
import pytest

from hmg_pipeline.core.schema import ContractError

from .conftest import VIEW_HEADER, TinyDataset, view, write_csv


def failure_text(dataset: TinyDataset, selection: list[str]) -> str:
    """Materialise expecting failure; return the text of the whole exception chain."""
    with pytest.raises(Exception) as excinfo:
        dataset.materialize(selection)
    texts: list[str] = []
    error: BaseException | None = excinfo.value
    while error is not None and len(texts) < 10:
        texts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(texts)


def test_missing_table_names_the_file(tiny: TinyDataset) -> None:
    (tiny.raw_dir / "contacts.csv").unlink()
    text = failure_text(tiny, ["raw_contacts"])
    assert "ContractError" in text
    assert "table 'contacts' is missing" in text
    assert str(tiny.raw_dir / "contacts.csv") in text


def test_missing_required_column_names_file_and_column(tiny: TinyDataset) -> None:
    write_csv(
        tiny.raw_dir / "views.csv", ("user_id", "image_id", "comment_text"), [("u1", "i1", "x")]
    )
    text = failure_text(tiny, ["raw_views"])
    assert "views.csv" in text
    assert "'emotion'" in text and "missing" in text


def test_optional_users_table_may_be_absent(tiny: TinyDataset) -> None:
    tiny.materialize(
        ["raw_users_table", "raw_views", "raw_contacts", "raw_group_members", "raw_users"]
    )
    assert tiny.table("raw.raw_users_table").height == 0
    users = tiny.table("raw.raw_users").sort("user_id")
    # u4 appears only as a group member, u3 only in contacts and views: both are users.
    assert users["user_id"].to_list() == ["u1", "u2", "u3", "u4"]
    assert users.filter(pl.col("user_id") == "u4")["in_groups"].item() is True
    assert users.filter(pl.col("user_id") == "u4")["in_views"].item() is False


def test_broken_quote_gives_file_and_row(tiny: TinyDataset) -> None:
    (tiny.raw_dir / "views.csv").write_text(
        ",".join(VIEW_HEADER) + '\nu1,i1,awe,,fine,,,,\nu2,i1,awe,,"this quote never closes,,,,\n',
        encoding="utf-8",
    )
    text = failure_text(tiny, ["raw_views"])
    assert "views.csv" in text
    assert "malformed CSV" in text and "data row 2" in text


def test_wrong_column_count_gives_file_and_row(tiny: TinyDataset) -> None:
    (tiny.raw_dir / "contacts.csv").write_text(
        "user_id,contact_id\nu1,u2\nu2,u3,extra\n", encoding="utf-8"
    )
    text = failure_text(tiny, ["raw_contacts"])
    assert "contacts.csv: data row 2 has 3 fields, the header has 2" in text


def test_non_utf8_file_gives_file_and_row(tiny: TinyDataset) -> None:
    (tiny.raw_dir / "groups.csv").write_bytes(
        b"group_id,name,description\ng1,ok,fine\ng2,caf\xe9,latin-1\n"
    )
    text = failure_text(tiny, ["raw_groups"])
    assert "groups.csv: line 3 (data row 2) is not valid UTF-8" in text


def test_utf8_comments_in_several_scripts_survive_the_round_trip(tiny: TinyDataset) -> None:
    texts = [
        "息をのむ美しさ 🌄",
        "захватывает дух",
        "à couper le souffle, ça m'a fait rire",
        "مذهل جدا",
        'quotes "inside", commas, and\na newline',
    ]
    tiny.write_views(
        [
            view("u1", f"i{1 + k % 2}", "awe", comment_id=f"c{k}", comment_text=t)
            for k, t in enumerate(texts)
        ]
        + [view("u2", "i1", "awe")]
    )
    tiny.materialize()
    stored = tiny.table("raw.raw_views").sort("source_row")["comment_text"].to_list()
    assert stored[: len(texts)] == texts
    clean = tiny.table("labels.clean_labels")
    assert set(texts) & set(clean["comment_text"].drop_nulls().to_list())


def test_parquet_tables_follow_the_same_contract(tiny: TinyDataset) -> None:
    csv_path = tiny.raw_dir / "views.csv"
    frame = pl.read_csv(csv_path, infer_schema=False)
    frame.with_columns(pl.col("valence").cast(pl.Float64)).write_parquet(
        tiny.raw_dir / "views.parquet"
    )
    csv_path.unlink()
    tiny.materialize()
    assert tiny.table("labels.clean_labels").height == 4


def test_both_csv_and_parquet_is_an_error(tiny: TinyDataset) -> None:
    pl.read_csv(tiny.raw_dir / "contacts.csv").write_parquet(tiny.raw_dir / "contacts.parquet")
    text = failure_text(tiny, ["raw_contacts"])
    assert "both" in text and "contacts.parquet" in text


def test_quarantine_raw_row_is_json_of_the_original(tiny: TinyDataset) -> None:
    tiny.write_views([view("u1", "i1", "joy", comment_text="日本語")])
    tiny.materialize()
    row = tiny.table("raw.quarantine").filter(pl.col("table") == "views").row(0, named=True)
    raw = json.loads(row["raw_row"])
    assert raw["emotion"] == "joy" and raw["comment_text"] == "日本語"


def test_contract_error_type_is_public() -> None:
    assert issubclass(ContractError, ValueError)
