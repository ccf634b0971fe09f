"""Cleaned labels (one Mikels emotion per user-image edge), the dropped views, undirected
contacts, and the checks that hold after every materialisation of them."""

from typing import Literal

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
    asset_check,
    multi_asset,
)
from pydantic import Field

from hmg_pipeline.core import cleaning
from hmg_pipeline.core.schema import MIKELS_EMOTIONS
from hmg_pipeline.metadata import counts_table
from hmg_pipeline.storage import DUCKDB_TAGS, table_metadata

GROUP = "labels"
CLEAN_LABEL_COLUMNS = {
    "user_id": ("String", "the viewer"),
    "image_id": ("String", "the image"),
    "emotion": ("String", "one of the eight Mikels emotions"),
    "comment_text": (
        "String",
        "the comment (raw, or refetched from Flickr); null when there is none",
    ),
    "comment_source": ("String", "raw, flickr, or null"),
    "commented_at": ("Datetime", "comment time (UTC)"),
    "source_row": ("Int64", "row of the kept view in views"),
}
ACCOUNTING_CHECK = AssetCheckSpec(
    "clean_labels_accounting_closes",
    asset="clean_labels",
    blocking=True,
    description="Every raw view row is clean, quarantined or dropped, exactly once.",
)
IMAGES_CHECK = AssetCheckSpec(
    "clean_labels_images_are_valid",
    asset="clean_labels",
    description="Every edge's image is a valid (not quarantined) image.",
)


class CleanLabelsConfig(Config):
    multi_label: Literal["first", "drop"] = Field(
        default="first",
        description="a view with several emotions keeps the first ('first') or is dropped",
    )


def accounting_metadata(accounting: cleaning.ViewAccounting) -> dict:
    """How the raw views were spent, as metadata."""
    return {
        "raw_views": accounting.raw,
        "quarantined_views": accounting.quarantined,
        **{f"dropped_{rule}": count for rule, count in accounting.dropped.items()},
        "accounting": MetadataValue.md(
            counts_table(
                {
                    "clean": accounting.clean,
                    "quarantined": accounting.quarantined,
                    **{f"dropped: {r}": c for r, c in accounting.dropped.items()},
                },
                "outcome",
                accounting.raw,
            )
        ),
    }


@multi_asset(
    outs={
        "clean_labels": AssetOut(
            metadata=table_metadata(GROUP, CLEAN_LABEL_COLUMNS),
            description="One labelled user-image edge per (user_id, image_id), rules 1-3.",
            is_required=False,
        ),
        "label_drops": AssetOut(
            metadata=table_metadata(GROUP),
            description="Valid raw view rows dropped by a labelling rule, with rule and detail.",
            is_required=False,
        ),
    },
    check_specs=[ACCOUNTING_CHECK, IMAGES_CHECK],
    can_subset=True,
    group_name=GROUP,
    op_tags=DUCKDB_TAGS,
)
def clean_labels(
    context: AssetExecutionContext,
    config: CleanLabelsConfig,
    raw_views: pl.DataFrame,
    quarantine: pl.DataFrame,
    valid_views: pl.DataFrame,
    valid_images: pl.DataFrame,
    flickr_comments: pl.DataFrame,
    flickr_images: pl.DataFrame,
):
    """Apply the label rules to the views that passed validation and account for every row
    (`raw_views` and `quarantine` are read for the accounting only).

    Refetched comment texts fill missing ones; views of images gone from Flickr (and with no
    local file) are dropped by rule `image_gone`. Either output can be materialised alone.
    """
    gone = flickr_images.filter(pl.col("status") == "gone")["image_id"].to_list()
    clean, drops = cleaning.clean_views(valid_views, config.multi_label, flickr_comments, gone)
    accounting = cleaning.view_accounting(raw_views, clean, quarantine, drops)
    context.log.info(
        f"{accounting.raw} raw views -> {accounting.clean} clean, "
        f"{accounting.quarantined} quarantined, dropped {accounting.dropped}"
    )
    yield from check_results(context, accounting, clean, valid_images)
    if "label_drops" in context.selected_output_names:
        yield Output(
            drops,
            output_name="label_drops",
            metadata={
                "dagster/row_count": drops.height,
                **{f"dropped_{rule}": n for rule, n in accounting.dropped.items()},
            },
        )
    if "clean_labels" in context.selected_output_names:
        reason = cleaning.no_edges_reason(accounting)
        if reason:  # stop the main path here rather than train on an empty table
            raise Failure(f"clean_labels: {reason}", metadata=accounting_metadata(accounting))
        metadata = {**label_metadata(clean, config), **accounting_metadata(accounting)}
        yield Output(clean, output_name="clean_labels", metadata=metadata)


def check_results(
    context: AssetExecutionContext,
    accounting: cleaning.ViewAccounting,
    clean: pl.DataFrame,
    valid_images: pl.DataFrame,
):
    """The selected checks of `clean_labels` (the accounting must close even when unchecked)."""
    checks = context.selected_asset_check_keys
    if ACCOUNTING_CHECK.key in checks:
        yield AssetCheckResult(
            check_name=ACCOUNTING_CHECK.name,
            asset_key="clean_labels",
            passed=accounting.closes,
            metadata={
                "unaccounted_rows": str(accounting.unaccounted_rows[:20]),
                "double_counted_rows": str(accounting.double_counted_rows[:20]),
            },
        )
    elif not accounting.closes:
        raise RuntimeError(f"view accounting does not close: {accounting}")
    if IMAGES_CHECK.key in checks:
        orphans = clean.join(valid_images.select("image_id"), on="image_id", how="anti")
        yield AssetCheckResult(
            check_name=IMAGES_CHECK.name,
            asset_key="clean_labels",
            passed=orphans.height == 0,
            metadata={"edges_unknown_image": orphans.height},
        )


def label_metadata(clean: pl.DataFrame, config: CleanLabelsConfig) -> dict:
    labels = dict(clean.group_by("emotion").len().sort("len", descending=True).iter_rows())
    with_text = clean.filter(pl.col("comment_text").is_not_null()).height
    return {
        "dagster/row_count": clean.height,
        "label_distribution": MetadataValue.md(
            counts_table({e: labels.get(e, 0) for e in MIKELS_EMOTIONS}, "emotion")
        ),
        "comment_text_coverage_%": round(100 * with_text / clean.height, 2) if clean.height else 0,
        "comment_texts_from_flickr": clean.filter(pl.col("comment_source") == "flickr").height,
        "multi_label_policy": config.multi_label,
    }


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS)
def clean_contacts(context: AssetExecutionContext, valid_contacts: pl.DataFrame) -> pl.DataFrame:
    """Undirected user-user pairs (user_id < contact_id): self-loops dropped, duplicates merged."""
    pairs, accounting = cleaning.clean_contacts(valid_contacts)
    if not accounting.closes:
        raise RuntimeError(f"contact accounting does not close: {accounting}")
    context.add_output_metadata(
        {
            "dagster/row_count": pairs.height,
            "valid_rows": accounting.valid,
            "dropped_self_loops": accounting.self_loops,
            "merged_duplicates_or_reversed": accounting.merged,
            "pairs": accounting.pairs,
        }
    )
    return pairs


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
    op_tags=DUCKDB_TAGS,
    description="At least two emotion classes are present.",
)
def clean_labels_two_classes(clean_labels: pl.DataFrame) -> AssetCheckResult:
    classes = clean_labels["emotion"].n_unique()
    return AssetCheckResult(passed=classes >= 2, metadata={"classes": classes})
