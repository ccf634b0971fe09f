"""The label assets wired together through Dagster's ``materialize``.

The cleaning rules themselves are tested where they live, in test_cleaning.py; these tests check
that the assets run them on the raw tables, store the results and report the accounting.
"""

from __future__ import annotations

import polars as pl
from dagster import AssetSelection, ExecuteInProcessResult

from .helpers import TinyDataset, view

LABEL_ASSETS = AssetSelection.assets("clean_labels", "label_drops", "clean_contacts").upstream()

TINY_VIEWS = [
    view("u1", "i1", "awe", comment_id="c1", comment_text="wow", commented_at="1400000000"),
    view("u2", "i1", "fear", commented_at="2014-05-13T16:53:20+02:00", valence="2.5"),  # 2 dup
    view("u2", "i2", "sadness"),
    view("u3", "i3", "Amusement "),
    view("u3", "i2", "unknown"),  # 5 dropped: unknown
    view("u2", "i1", "anger", commented_at="2015-01-01T00:00:00Z"),  # 6 wins over 2
    view("u1", "i9", "awe"),  # 7 quarantined: no such image
    view("u1", "i2", "joy"),  # 8 quarantined: not an emotion
    view("u1", "i3", "sadness|awe"),  # 9 clean (first) / dropped (drop)
]
EXPECTED_LABELS = {1: "awe", 3: "sadness", 4: "amusement", 6: "anger", 9: "sadness"}
EXPECTED_DROPS = {2: "duplicate", 5: "unknown"}


def source_rows(frame: pl.DataFrame) -> list[int]:
    return frame["source_row"].to_list()


def check_results(result: ExecuteInProcessResult) -> dict[str, bool]:
    return {
        evaluation.check_name: evaluation.passed
        for evaluation in result.get_asset_check_evaluations()
    }


def metadata_of(result: ExecuteInProcessResult, asset: str) -> dict[str, object]:
    [materialization] = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.to_user_string() == asset
    ]
    return {key: value.value for key, value in materialization.materialization.metadata.items()}


def value_named(metadata: dict[str, object], fragment: str) -> object:
    """The one metadata value whose key contains ``fragment`` (keys may be renamed)."""
    [value] = [value for key, value in metadata.items() if fragment in key]
    return value


def test_tiny_dataset_through_the_label_assets(tiny: TinyDataset) -> None:
    tiny.write_views(TINY_VIEWS)
    tiny.write_contacts([("u1", "u2"), ("u2", "u1"), ("u3", "u3"), ("u2", "u3"), (None, "u2")])
    result = tiny.materialize(LABEL_ASSETS | AssetSelection.assets("raw_users").upstream())
    assert result.success

    raw_views = tiny.table("raw.raw_views")
    quarantine = tiny.table("raw.quarantine")
    views_quarantine = quarantine.filter(pl.col("table") == "views")
    clean = tiny.table("labels.clean_labels")
    drops = tiny.table("labels.label_drops")
    assert sorted(source_rows(views_quarantine)) == [7, 8]
    assert dict(drops.select("source_row", "rule").iter_rows()) == EXPECTED_DROPS
    assert dict(clean.select("source_row", "emotion").iter_rows()) == EXPECTED_LABELS
    placed = source_rows(clean) + source_rows(drops) + source_rows(views_quarantine)
    assert sorted(placed) == sorted(source_rows(raw_views))

    checks = check_results(result)
    assert "clean_labels_accounting_closes" in checks
    assert all(checks.values()), checks

    labels = metadata_of(result, "clean_labels")
    assert labels["dagster/row_count"] == clean.height
    assert labels["raw_views"] == raw_views.height
    assert labels["quarantined_views"] == views_quarantine.height
    for rule in ("unknown", "duplicate", "multi_label", "image_gone"):
        assert labels[f"dropped_{rule}"] == drops.filter(pl.col("rule") == rule).height

    pairs = tiny.table("labels.clean_contacts")
    assert sorted(pairs.select("user_id", "contact_id").rows()) == [("u1", "u2"), ("u2", "u3")]
    contacts = metadata_of(result, "clean_contacts")
    assert contacts["dagster/row_count"] == pairs.height == value_named(contacts, "pairs")
    assert value_named(contacts, "self_loop") == 1
    assert value_named(contacts, "merged") == 1
    assert sorted(source_rows(quarantine.filter(pl.col("table") == "contacts"))) == [5]

    users = tiny.table("raw.raw_users")["user_id"].to_list()
    assert "u4" in users  # a group member only
    assert "u9" in users  # an image owner only: an uploader, a user node in the paper


def test_multi_label_policy_is_configurable(tiny: TinyDataset) -> None:
    tiny.write_views(TINY_VIEWS)
    tiny.materialize(
        AssetSelection.assets("clean_labels", "label_drops").upstream(),
        run_config={"ops": {"clean_labels": {"config": {"multi_label": "drop"}}}},
    )
    drops = tiny.table("labels.label_drops")
    assert dict(drops.select("source_row", "rule").iter_rows()) == {
        **EXPECTED_DROPS,
        9: "multi_label",
    }
    assert 9 not in source_rows(tiny.table("labels.clean_labels"))


def test_two_classes_check_fails_on_a_single_class(tiny: TinyDataset) -> None:
    # (no class at all, e.g. only `unknown` labels, stops clean_labels: test_hardening.py)
    tiny.write_views([view(f"u{k + 1}", "i1", "awe") for k in range(2)])
    result = tiny.materialize(
        AssetSelection.assets("clean_labels").upstream(), raise_on_error=False
    )
    assert check_results(result).get("clean_labels_two_classes") is False
