"""Asset checks: invariants that must hold after every materialisation."""

import polars as pl
from dagster import AssetCheckResult, AssetIn, asset_check

from hmg_pipeline.core import cleaning
from hmg_pipeline.core.schema import MIKELS_EMOTIONS
from hmg_pipeline.storage import DUCKDB_TAGS


@asset_check(
    asset="clean_labels",
    additional_ins={
        "raw_views": AssetIn("raw_views"),
        "quarantine": AssetIn("quarantine"),
        "label_drops": AssetIn("label_drops"),
    },
    op_tags=DUCKDB_TAGS,
    description="Every raw view row is clean, quarantined or dropped, exactly once.",
)
def clean_labels_accounting_closes(
    clean_labels: pl.DataFrame,
    raw_views: pl.DataFrame,
    quarantine: pl.DataFrame,
    label_drops: pl.DataFrame,
) -> AssetCheckResult:
    accounting = cleaning.view_accounting(raw_views, clean_labels, quarantine, label_drops)
    return AssetCheckResult(
        passed=accounting.closes,
        metadata={
            "raw": accounting.raw,
            "clean": accounting.clean,
            "quarantined": accounting.quarantined,
            **{f"dropped_{rule}": n for rule, n in accounting.dropped.items()},
            "unaccounted_rows": str(accounting.unaccounted_rows[:20]),
            "double_counted_rows": str(accounting.double_counted_rows[:20]),
        },
    )


@asset_check(
    asset="clean_labels",
    op_tags=DUCKDB_TAGS,
    description="Every label is one of the eight Mikels emotions.",
)
def clean_labels_only_mikels(clean_labels: pl.DataFrame) -> AssetCheckResult:
    bad = clean_labels.filter(~pl.col("emotion").is_in(list(MIKELS_EMOTIONS)))
    return AssetCheckResult(
        passed=bad.height == 0,
        metadata={
            "non_mikels_labels": bad.height,
            "examples": str(bad["emotion"].head(5).to_list()),
        },
    )


@asset_check(
    asset="clean_labels",
    additional_ins={
        "raw_users": AssetIn("raw_users"),
        "raw_images": AssetIn("raw_images"),
        "quarantine": AssetIn("quarantine"),
    },
    op_tags=DUCKDB_TAGS,
    description="Every edge's user is a known user and its image a valid (not quarantined) image.",
)
def clean_labels_endpoints_exist(
    clean_labels: pl.DataFrame,
    raw_users: pl.DataFrame,
    raw_images: pl.DataFrame,
    quarantine: pl.DataFrame,
) -> AssetCheckResult:
    images = cleaning.valid_rows(raw_images, cleaning.quarantine_of(quarantine, "images"))
    orphan_users = clean_labels.join(raw_users.select("user_id"), on="user_id", how="anti")
    orphan_images = clean_labels.join(images.select("image_id"), on="image_id", how="anti")
    return AssetCheckResult(
        passed=orphan_users.height == 0 and orphan_images.height == 0,
        metadata={
            "edges_unknown_user": orphan_users.height,
            "edges_unknown_image": orphan_images.height,
        },
    )


@asset_check(
    asset="clean_labels",
    op_tags=DUCKDB_TAGS,
    description="At least two emotion classes are present.",
)
def clean_labels_two_classes(clean_labels: pl.DataFrame) -> AssetCheckResult:
    classes = clean_labels["emotion"].n_unique()
    return AssetCheckResult(passed=classes >= 2, metadata={"classes": classes})
