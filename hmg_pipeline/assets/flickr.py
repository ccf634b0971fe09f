"""Flickr refetch (group ``flickr``): comment texts, image liveness, group descriptions.

Without ``FLICKR_API_KEY`` each asset is a clean no-op: it says so in the log and metadata,
marks nothing gone and returns what earlier keyed runs stored (possibly nothing).
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, Config, MetadataValue, asset
from pydantic import Field

from hmg_pipeline.core import cleaning, refetch
from hmg_pipeline.core.flickr import FlickrClient
from hmg_pipeline.core.flickr_store import FlickrStore
from hmg_pipeline.core.progress import Progress
from hmg_pipeline.metadata import counts_table
from hmg_pipeline.resources import FlickrResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, group_metadata

GROUP = "flickr"
FLICKR_STATE_FILE = "flickr.duckdb"
Runner = Callable[[FlickrClient, FlickrStore, Sequence[str], Progress], refetch.FetchSummary]


class FlickrFetchConfig(Config):
    recheck: bool = Field(
        default=False,
        description="also re-check items whose status is error, gone or private",
    )
    recheck_after_days: float = Field(
        default=30.0, description="re-check only items last checked longer ago than this"
    )


class FlickrImagesConfig(FlickrFetchConfig):
    download_images: bool = Field(
        default=False,
        description="download the medium rendition into HMG_STORE_DIR/images/ (verified)",
    )


def flickr_state_path(paths: PipelinePaths) -> Path:
    return paths.store_path / FLICKR_STATE_FILE


def run_refetch(
    context: AssetExecutionContext,
    flickr: FlickrResource,
    paths: PipelinePaths,
    config: FlickrFetchConfig,
    kind: str,
    ids: Sequence[str],
    runner: Runner,
) -> tuple[pl.DataFrame, dict]:
    """Fetch the due items of ``kind`` (none without a key); return stored results + metadata."""
    settings = flickr.settings()
    metadata: dict = {"candidates": len(ids), "recheck": config.recheck}
    with FlickrStore(flickr_state_path(paths)) as store:
        if settings is None:
            context.log.info(
                f"{flickr.api_key_env} is not set: Flickr refetch of {kind} skipped (offline "
                "run); nothing is marked gone"
            )
            metadata["skipped"] = f"no API key ({flickr.api_key_env} not set)"
        else:
            due = store.due(kind, ids, config.recheck, config.recheck_after_days)
            client = FlickrClient(settings)
            progress = Progress(0, f"flickr {kind}", context.log.info)
            summary = runner(client, store, sorted(due), progress)
            context.log.info(
                f"flickr {kind}: {summary.items} item(s) fetched, {client.stats.requests} "
                f"request(s), {client.stats.retries} retr(ies), {summary.changed} changed"
            )
            metadata.update(
                {
                    "skipped": "no",
                    "due": len(due),
                    "items_fetched": summary.items,
                    "requests": client.stats.requests,
                    "retries": client.stats.retries,
                    "effective_qps": round(client.stats.effective_qps, 3),
                    "max_qps": settings.max_qps,
                    "changed_items": summary.changed,
                    "fetched_statuses": MetadataValue.json(dict(summary.statuses)),
                }
            )
        results = store.results(kind, ids)
    statuses = dict(results.group_by("status").len().sort("status").iter_rows())
    metadata["dagster/row_count"] = results.height
    metadata["status_counts"] = MetadataValue.md(counts_table(statuses, "status"))
    metadata.setdefault("changed_items", 0)
    return results, metadata


@asset(group_name=GROUP, metadata=group_metadata(GROUP), op_tags=DUCKDB_TAGS)
def flickr_comments(
    context: AssetExecutionContext,
    config: FlickrFetchConfig,
    flickr: FlickrResource,
    paths: PipelinePaths,
    raw_views: pl.DataFrame,
    quarantine: pl.DataFrame,
) -> pl.DataFrame:
    """Texts of comments that the views name by id only, listed once per photo and matched by
    comment id: status ok, gone, private, comment_missing or error, with attempts."""
    views = cleaning.valid_rows(raw_views, cleaning.quarantine_of(quarantine, "views"))
    wanted = refetch.wanted_comments(views)
    comment_ids = [c for ids in wanted.values() for c in ids]

    def runner(client, store, due_comments, progress):
        due = set(due_comments)
        photos = {p: ids for p, ids in wanted.items() if due.intersection(ids)}
        progress.total = len(photos)
        return refetch.refetch_comments(client, store, photos, flickr.workers, progress)

    results, metadata = run_refetch(context, flickr, paths, config, "comments", comment_ids, runner)
    metadata["photos_with_wanted_comments"] = len(wanted)
    metadata["coverage_before_%"] = refetch.text_coverage(views)
    metadata["coverage_after_%"] = refetch.text_coverage(views, results)
    context.add_output_metadata(metadata)
    return results


@asset(group_name=GROUP, metadata=group_metadata(GROUP), op_tags=DUCKDB_TAGS)
def flickr_images(
    context: AssetExecutionContext,
    config: FlickrImagesConfig,
    flickr: FlickrResource,
    paths: PipelinePaths,
    raw_images: pl.DataFrame,
    quarantine: pl.DataFrame,
) -> pl.DataFrame:
    """For each image without a local file: alive (ok) or gone/private/error, the URL of its
    medium rendition and, if ``download_images``, the verified downloaded file."""
    images = cleaning.valid_rows(raw_images, cleaning.quarantine_of(quarantine, "images"))
    download_dir = paths.store_path / "images" if config.download_images else None

    def runner(client, store, due, progress):
        progress.total = len(due)
        return refetch.refetch_images(client, store, due, download_dir, flickr.workers, progress)

    ids = refetch.images_without_file(images)
    results, metadata = run_refetch(context, flickr, paths, config, "images", ids, runner)
    metadata["downloaded_files"] = results.filter(pl.col("local_file").is_not_null()).height
    context.add_output_metadata(metadata)
    return results


@asset(group_name=GROUP, metadata=group_metadata(GROUP), op_tags=DUCKDB_TAGS)
def flickr_groups(
    context: AssetExecutionContext,
    config: FlickrFetchConfig,
    flickr: FlickrResource,
    paths: PipelinePaths,
    raw_groups: pl.DataFrame,
    quarantine: pl.DataFrame,
) -> pl.DataFrame:
    """Name and description of each group whose description is empty in the raw data."""
    groups = cleaning.valid_rows(raw_groups, cleaning.quarantine_of(quarantine, "groups"))

    def runner(client, store, due, progress):
        progress.total = len(due)
        return refetch.refetch_groups(client, store, due, flickr.workers, progress)

    ids = refetch.groups_without_description(groups)
    results, metadata = run_refetch(context, flickr, paths, config, "groups", ids, runner)
    context.add_output_metadata(metadata)
    return results
