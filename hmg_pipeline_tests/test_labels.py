"""Cleaning rules through the raw and labels assets: quarantine, drops, order, accounting."""

from __future__ import annotations

import polars as pl
import pytest

from .conftest import UP_TO_QUARANTINE, TinyDataset, view


def quarantined(dataset: TinyDataset, table: str) -> dict[int, tuple[str, str]]:
    rows = dataset.table("raw.quarantine").filter(pl.col("table") == table)
    return {r["source_row"]: (r["column"], r["reason"]) for r in rows.iter_rows(named=True)}


def drops(dataset: TinyDataset) -> dict[int, str]:
    return dict(dataset.table("labels.label_drops").select("source_row", "rule").iter_rows())


def check_results(result) -> dict[str, bool]:
    return {
        evaluation.check_name: evaluation.passed
        for evaluation in result.get_asset_check_evaluations()
    }


def test_every_view_quarantine_reason(tiny: TinyDataset) -> None:
    tiny.write_views(
        [
            view("u1", "i1", "awe"),  # 1 valid
            view(None, "i1", "awe"),  # 2 missing user_id
            view("u1", "  ", "awe"),  # 3 missing image_id (blank)
            view("u1", "i1", ""),  # 4 missing emotion
            view("u1", "i1", "joy"),  # 5 token outside the nine names
            view("u1", "i1", "awe|rage"),  # 6 one bad token among good ones
            view("u1", "i1", "awe", commented_at="yesterday"),  # 7 unparseable time
            view("u1", "i1", "awe", valence="high"),  # 8 unparseable number
            view("u1", "i1", "awe", arousal="nan"),  # 9 not finite
            view("u1", "i9", "awe"),  # 10 image not in images
            view("u2", "i2", "fear", dominance="4.5", commented_at="1400000000.5"),  # 11 valid
        ]
    )
    tiny.materialize()
    reasons = quarantined(tiny, "views")
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 8, 9, 10}
    assert reasons[2][0] == "user_id" and "missing" in reasons[2][1]
    assert reasons[3][0] == "image_id" and "missing" in reasons[3][1]
    assert reasons[4][0] == "emotion"
    assert reasons[5][0] == "emotion" and "'joy'" in reasons[5][1]
    assert "'rage'" in reasons[6][1]
    assert reasons[7][0] == "commented_at" and "unparseable time" in reasons[7][1]
    assert reasons[8][0] == "valence" and "unparseable number" in reasons[8][1]
    assert reasons[9][0] == "arousal"
    assert reasons[10][0] == "image_id" and "not in the images table" in reasons[10][1]
    assert sorted(tiny.table("labels.clean_labels")["source_row"].to_list()) == [1, 11]


def test_image_quarantine_reasons_and_their_views(tiny: TinyDataset) -> None:
    outside = tiny.raw_dir.parent / "outside.jpg"
    outside.write_bytes(b"not inside the raw dir")
    tiny.write_images(
        [
            ("i1", "u9", None, "img/a.jpg", "2014-01-01"),  # 1 valid
            ("i2", "u9", None, "../outside.jpg", None),  # 2 escapes (and exists!)
            ("i3", "u9", None, "../../x.jpg", None),  # 3 escapes
            ("i4", "u9", None, str(tiny.raw_dir / "img" / "a.jpg"), None),  # 4 absolute
            ("i5", "u9", None, "img/missing.jpg", None),  # 5 does not exist
            ("i6", "u9", None, "img/b.jpg", "soon"),  # 6 bad posted_at
            ("i1", "u9", None, "img/b.jpg", None),  # 7 duplicate image_id
            (None, "u9", None, "img/b.jpg", None),  # 8 missing image_id
            ("i7", "u9", "https://example.org/7.jpg", None, None),  # 9 valid, no local file
        ]
    )
    tiny.write_views([view("u1", f"i{k}", "awe") for k in range(1, 8)])
    tiny.materialize()
    images = quarantined(tiny, "images")
    assert set(images) == {2, 3, 4, 5, 6, 7, 8}
    assert "escapes" in images[2][1] and "escapes" in images[3][1]
    assert "absolute" in images[4][1]
    assert "does not exist" in images[5][1]
    assert images[6][0] == "posted_at"
    assert "duplicate image_id, first defined at row 1" in images[7][1]
    assert images[8][0] == "image_id"
    views = quarantined(tiny, "views")
    # Views of i2..i6 point at quarantined images and say which row and why.
    assert set(views) == {2, 3, 4, 5, 6}
    assert views[2][1].startswith("image is quarantined (images row 2: file path")
    assert "images row 5" in views[5][1]
    clean = tiny.table("labels.clean_labels")
    assert sorted(clean["image_id"].to_list()) == ["i1", "i7"]


def test_every_drop_rule_and_accounting(tiny: TinyDataset) -> None:
    tiny.write_views(
        [
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
        ]
    )
    result = tiny.materialize()
    assert drops(tiny) == {
        2: "unknown",
        3: "unknown",
        6: "duplicate",
        8: "duplicate",
        10: "duplicate",
    }
    clean = tiny.table("labels.clean_labels")
    labels = dict(clean.select("source_row", "emotion").iter_rows())
    assert labels == {1: "awe", 4: "fear", 5: "sadness", 7: "fear", 9: "excitement", 11: "disgust"}
    metadata = result.asset_materializations_for_node("clean_labels")[0].metadata
    assert metadata["raw_views"].value == 11
    assert metadata["dropped_unknown"].value == 2 and metadata["dropped_duplicate"].value == 3
    assert metadata["quarantined_views"].value == 0
    assert all(check_results(result).values())

    tiny.materialize(run_config={"ops": {"clean_labels": {"config": {"multi_label": "drop"}}}})
    assert drops(tiny)[5] == "multi_label"
    assert 5 not in tiny.table("labels.clean_labels")["source_row"].to_list()


def test_rule_order_unknown_before_duplicate(tiny: TinyDataset) -> None:
    # The later row of the pair is unknown: it is dropped by rule 2, so rule 3 sees one row
    # and the earlier, labelled row is kept rather than dropped as a duplicate.
    tiny.write_views(
        [
            view("u1", "i1", "awe", commented_at="1400000000"),
            view("u1", "i1", "unknown", commented_at="1500000000"),
        ]
    )
    tiny.materialize()
    assert drops(tiny) == {2: "unknown"}
    assert tiny.table("labels.clean_labels")["emotion"].to_list() == ["awe"]


def test_accounting_closes_with_quarantine_and_drops(tiny: TinyDataset) -> None:
    tiny.write_views(
        [
            view("u1", "i1", "awe"),
            view("u1", "i1", "fear"),
            view("u2", "i2", "unknown"),
            view("u2", "i9", "awe"),
            view("u3", "i3", "joy"),
            view("u3", "i1", "anger|awe"),
        ]
    )
    result = tiny.materialize()
    clean = tiny.table("labels.clean_labels").height
    quarantine = len(quarantined(tiny, "views"))
    dropped = len(drops(tiny))
    assert (clean, quarantine, dropped) == (2, 2, 2)
    assert clean + quarantine + dropped == tiny.table("raw.raw_views").height
    assert check_results(result)["clean_labels_accounting_closes"]


def test_contacts_merging(tiny: TinyDataset) -> None:
    tiny.write_contacts(
        [
            ("u1", "u2"),
            ("u2", "u1"),
            ("u1", "u2"),
            ("u3", "u3"),
            ("u3", "u1"),
            (None, "u2"),
            ("u2", " u3 "),
        ]
    )
    result = tiny.materialize([*UP_TO_QUARANTINE, "clean_contacts"])
    pairs = tiny.table("labels.clean_contacts").sort("user_id", "contact_id")
    assert pairs.select("user_id", "contact_id").rows() == [
        ("u1", "u2"),
        ("u1", "u3"),
        ("u2", "u3"),
    ]
    metadata = result.asset_materializations_for_node("clean_contacts")[0].metadata
    assert metadata["dropped_self_loops"].value == 1
    assert metadata["merged_duplicates_or_reversed"].value == 2
    assert metadata["quarantined"].value == 1
    assert metadata["raw_rows"].value == 7


def test_group_member_of_unknown_group_is_quarantined(tiny: TinyDataset) -> None:
    from .conftest import write_csv

    write_csv(
        tiny.raw_dir / "group_members.csv",
        ("group_id", "user_id"),
        [("g1", "u1"), ("g9", "u2"), ("g2", None)],
    )
    tiny.materialize(UP_TO_QUARANTINE)
    members = quarantined(tiny, "group_members")
    assert members[2][0] == "group_id" and "'g9'" in members[2][1]
    assert members[3][0] == "user_id"


@pytest.mark.parametrize("labels", [["awe", "awe"], ["unknown", "unknown"]])
def test_two_classes_check_fails_on_a_single_class(tiny: TinyDataset, labels: list[str]) -> None:
    tiny.write_views([view(f"u{k + 1}", "i1", label) for k, label in enumerate(labels)])
    result = tiny.materialize(raise_on_error=False)
    assert check_results(result).get("clean_labels_two_classes") is False
