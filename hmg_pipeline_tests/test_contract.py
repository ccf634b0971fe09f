"""The raw-data contract wired into the raw assets through Dagster's ``materialize``.

The contract reader itself is tested where it lives, in test_schema.py.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest
from dagster import AssetSelection

from .helpers import TinyDataset, view


def remove_contacts(dataset: TinyDataset) -> None:
    (dataset.raw_dir / "contacts.csv").unlink()


def break_contacts(dataset: TinyDataset) -> None:
    (dataset.raw_dir / "contacts.csv").write_text(
        "user_id,contact_id\nu1,u2\nu2,u3,extra\n", encoding="utf-8"
    )


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (remove_contacts, "table 'contacts' is missing"),
        (break_contacts, "data row 2 has 3 fields"),
    ],
    ids=["missing-table", "wrong-field-count"],
)
def test_contract_error_fails_the_run_naming_the_file(
    tiny: TinyDataset, damage: Callable[[TinyDataset], None], fragment: str
) -> None:
    damage(tiny)
    result = tiny.materialize(["raw_contacts"], raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None
    text = error.to_string()
    assert "ContractError" in text
    assert str(tiny.raw_dir / "contacts.csv") in text
    assert fragment in text


def test_parquet_views_with_non_ascii_texts_reach_clean_labels(tiny: TinyDataset) -> None:
    texts = [
        "息をのむ美しさ 🌄",
        "захватывает дух",
        "à couper le souffle, ça m'a fait rire",
        "مذهل جدا",
        'quotes "inside", commas, and\na newline',
    ]
    tiny.write_views(
        [
            view(f"u{k}", "i1", "awe" if k % 2 else "fear", comment_id=f"c{k}", comment_text=t)
            for k, t in enumerate(texts)
        ]
    )
    csv_path = tiny.raw_dir / "views.csv"
    frame = pl.read_csv(csv_path, infer_schema=False)
    frame.with_columns(pl.col("valence").cast(pl.Float64)).write_parquet(
        tiny.raw_dir / "views.parquet"
    )
    csv_path.unlink()
    tiny.materialize(AssetSelection.assets("clean_labels").upstream())
    stored = tiny.table("raw.raw_views").sort("source_row")
    assert stored["comment_text"].to_list() == texts
    clean = tiny.table("labels.clean_labels").sort("source_row")
    assert clean["comment_text"].to_list() == texts
    assert set(clean["comment_source"]) == {"raw"}


def test_reader_notes_reach_the_raw_asset_metadata(tiny: TinyDataset) -> None:
    """A float id column read as integers is reported in the asset's metadata, not silently."""
    csv_path = tiny.raw_dir / "images.csv"
    frame = pl.read_csv(csv_path, infer_schema=False).with_columns(
        owner_id=pl.Series([5_000_000_000.0, None, float("nan")])
    )
    frame.write_parquet(tiny.raw_dir / "images.parquet")
    csv_path.unlink()
    result = tiny.materialize(["raw_images"])
    [materialization] = result.asset_materializations_for_node("raw_images")
    [note] = materialization.metadata["notes"].value
    assert str(tiny.raw_dir / "images.parquet") in note and "'owner_id'" in note
    assert tiny.table("raw.raw_images")["owner_id"].to_list() == ["5000000000", None, None]
