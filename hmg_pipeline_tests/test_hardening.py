"""Bad input fed through the assets a user runs: a quarantine row or one clear error, never a
traceback from a single bad row, and the view accounting still closes."""

from __future__ import annotations

import os

import polars as pl
import pytest
from dagster import AssetSelection

from .helpers import TinyDataset, view

LABELS = AssetSelection.assets("clean_labels", "label_drops").upstream()


def failure_messages(result) -> list[str]:
    return [
        event.event_specific_data.error.to_string()
        for event in result.all_events
        if getattr(event.event_specific_data, "error", None) is not None
    ]


def test_unusable_image_paths_are_quarantined_with_the_real_reason(tiny: TinyDataset) -> None:
    img = tiny.raw_dir / "img"
    (img / "loop1.jpg").symlink_to(img / "loop2.jpg")
    (img / "loop2.jpg").symlink_to(img / "loop1.jpg")
    os.mkfifo(img / "pipe.jpg")
    (img / "folder.jpg").mkdir()
    files = {
        "i4": "img/loop1.jpg",
        "i5": "img/" + "x" * 300 + ".jpg",
        "i6": "img/a\x00.jpg",
        "i7": "img/folder.jpg",
        "i8": "img/pipe.jpg",
    }
    tiny.write_images(
        [("i1", "u9", None, "img/a.jpg", None)]
        + [(image, "u9", None, file, None) for image, file in files.items()]
    )
    tiny.write_views(
        [view("u1", "i1", "awe"), view("u2", "i1", "fear")]
        + [view("u3", image, "awe") for image in files]
    )
    result = tiny.materialize(LABELS)
    assert result.success

    quarantine = tiny.table("raw.quarantine")
    images = quarantine.filter(pl.col("table") == "images")
    reasons = dict(images.select("source_row", "reason").iter_rows())
    assert set(images["column"]) == {"file"}
    assert "symlink loop" in reasons[2]
    assert "has a name of 304 bytes" in reasons[3]
    assert "NUL byte" in reasons[4]
    assert "is a directory" in reasons[5]
    assert "not a regular file (a FIFO)" in reasons[6]
    views = quarantine.filter(pl.col("table") == "views")
    assert views.height == len(files)
    assert all("image is quarantined (images row" in r for r in views["reason"])
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["clean_labels_accounting_closes"] is True


def test_header_only_views_stop_the_main_path_with_a_clear_error(tiny: TinyDataset) -> None:
    tiny.write_views([])
    result = tiny.materialize(LABELS, raise_on_error=False)
    assert not result.success
    messages = failure_messages(result)
    assert any("clean_labels: the views table has no data rows" in m for m in messages)
    # what was decided on the way is still stored, and the accounting closes
    assert tiny.table("labels.label_drops").height == 0
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["clean_labels_accounting_closes"] is True


def test_no_valid_edge_names_where_the_rows_went(tiny: TinyDataset) -> None:
    tiny.write_views([view("u1", "i9", "awe"), view("u2", "i1", "unknown")])
    result = tiny.materialize(LABELS, raise_on_error=False)
    assert not result.success
    messages = failure_messages(result)
    expected = "none of the 2 raw views is a clean edge: 1 quarantined (see raw.quarantine), "
    assert any(expected in m and "'unknown': 1" in m for m in messages), messages


@pytest.mark.parametrize("selection", [["label_drops"], ["quarantine"]])
def test_empty_views_do_not_fail_the_side_tables(tiny: TinyDataset, selection: list[str]) -> None:
    tiny.write_views([])
    upstream = AssetSelection.assets(*selection).upstream()
    assert tiny.materialize(upstream).success


def test_a_symlinked_images_folder_is_quarantined_naming_the_symlink(
    tiny: TinyDataset, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "images"
    (tiny.raw_dir / "img").rename(elsewhere)
    (tiny.raw_dir / "img").symlink_to(elsewhere)
    result = tiny.materialize(LABELS)
    assert result.success
    quarantine = tiny.table("raw.quarantine").filter(pl.col("table") == "images")
    assert dict(quarantine.select("source_row", "reason").iter_rows()) == {
        row: f"file path {file!r} escapes the raw directory (it resolves outside it through "
        f"symlink 'img' -> {str(elsewhere)!r})"
        for row, file in ((1, "img/a.jpg"), (2, "img/b.jpg"))
    }


def test_parquet_views_missing_numbers_and_times_beyond_utc(tiny: TinyDataset) -> None:
    """pandas writes a missing number as NaN: a missing value, not a quarantined row; a time
    that UTC cannot hold and a Python-literal number are quarantined, not a crash."""
    nan = float("nan")
    frame = pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u1"],
            "image_id": ["i1", "i1", "i2", "i2"],
            "emotion": ["awe", "fear", "sadness", "awe"],
            "commented_at": ["1400000000", "9999-12-31T23:59:59-01:00", None, None],
            "valence": [nan, 2.5, nan, nan],
            "arousal": ["3", "3", "1_000", None],
        }
    )
    (tiny.raw_dir / "views.csv").unlink()
    frame.write_parquet(tiny.raw_dir / "views.parquet")
    result = tiny.materialize(LABELS)
    assert result.success
    quarantine = tiny.table("raw.quarantine").filter(pl.col("table") == "views")
    assert quarantine.select("source_row", "column").rows() == [
        (2, "commented_at"),
        (3, "arousal"),
    ]
    reasons = quarantine["reason"].to_list()
    assert "out of range" in reasons[0] and reasons[1] == "unparseable number '1_000'"
    clean = tiny.table("labels.clean_labels").sort("source_row")
    assert clean["source_row"].to_list() == [1, 4]
    assert clean["valence"].to_list() == [None, None]
