"""Cleaned labels (one Mikels emotion per user-image edge) and undirected contacts."""

from typing import Literal

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetOut,
    Config,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)
from pydantic import Field

from hmg_pipeline.core import cleaning
from hmg_pipeline.core.schema import MIKELS_EMOTIONS
from hmg_pipeline.metadata import counts_table
from hmg_pipeline.storage import DUCKDB_TAGS, group_metadata

GROUP = "labels"


class CleanLabelsConfig(Config):
    multi_label: Literal["first", "drop"] = Field(
        default="first",
        description="a view with several emotions keeps the first ('first') or is dropped",
    )


@multi_asset(
    outs={
        "clean_labels": AssetOut(
            metadata=group_metadata(GROUP),
            description="One labelled user-image edge per (user_id, image_id), rules 1-3.",
        ),
        "label_drops": AssetOut(
            metadata=group_metadata(GROUP),
            description="Valid raw view rows dropped by a labelling rule, with rule and detail.",
        ),
    },
    group_name=GROUP,
    op_tags=DUCKDB_TAGS,
)
def clean_labels(
    context: AssetExecutionContext,
    config: CleanLabelsConfig,
    raw_views: pl.DataFrame,
    quarantine: pl.DataFrame,
    flickr_comments: pl.DataFrame,
    flickr_images: pl.DataFrame,
):
    """Apply the label rules to the views that passed validation and account for every row.

    Refetched comment texts fill missing ones; views of images gone from Flickr (and with no
    local file) are dropped by rule ``image_gone``.
    """
    gone = flickr_images.filter(pl.col("status") == "gone")["image_id"].to_list()
    clean, drops = cleaning.clean_views(
        raw_views, quarantine, config.multi_label, flickr_comments, gone
    )
    accounting = cleaning.view_accounting(raw_views, clean, quarantine, drops)
    if not accounting.closes:
        raise RuntimeError(f"view accounting does not close: {accounting}")
    labels = dict(clean.group_by("emotion").len().sort("len", descending=True).iter_rows())
    with_text = clean.filter(pl.col("comment_text").is_not_null()).height
    coverage = round(100 * with_text / clean.height, 2) if clean.height else 0.0
    context.log.info(
        f"{accounting.raw} raw views -> {accounting.clean} clean, "
        f"{accounting.quarantined} quarantined, dropped {accounting.dropped}"
    )
    yield Output(
        clean,
        output_name="clean_labels",
        metadata={
            "dagster/row_count": clean.height,
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
            "label_distribution": MetadataValue.md(
                counts_table({e: labels.get(e, 0) for e in MIKELS_EMOTIONS}, "emotion")
            ),
            "comment_text_coverage_%": coverage,
            "comment_texts_from_flickr": clean.filter(pl.col("comment_source") == "flickr").height,
            "multi_label_policy": config.multi_label,
        },
    )
    yield Output(drops, output_name="label_drops", metadata={"dagster/row_count": drops.height})


@asset(group_name=GROUP, metadata=group_metadata(GROUP), op_tags=DUCKDB_TAGS)
def clean_contacts(
    context: AssetExecutionContext, raw_contacts: pl.DataFrame, quarantine: pl.DataFrame
) -> pl.DataFrame:
    """Undirected user-user pairs (user_id < contact_id): self-loops dropped, duplicates merged."""
    pairs, accounting = cleaning.clean_contacts(raw_contacts, quarantine)
    if not accounting.closes:
        raise RuntimeError(f"contact accounting does not close: {accounting}")
    context.add_output_metadata(
        {
            "dagster/row_count": pairs.height,
            "raw_rows": accounting.raw,
            "quarantined": accounting.quarantined,
            "dropped_self_loops": accounting.self_loops,
            "merged_duplicates_or_reversed": accounting.merged,
            "pairs": accounting.pairs,
        }
    )
    return pairs
