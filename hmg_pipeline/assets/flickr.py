"""Flickr refetch (group `flickr`): comment texts, image liveness, group descriptions; the
weekly re-check of dead content (schedule) and the refresh of what depends on it (sensor).

Without `FLICKR_API_KEY` each asset is a clean no-op: it says so in the log and metadata,
marks nothing gone and returns what earlier keyed runs stored (possibly nothing).

Items in `error` (an outage, timeouts, 5xx that outlasted the client's retries) are retried by
every later run, with a backoff across runs (`core.flickr_store`); a run that leaves items in
`error` says so with a warning and `items_in_error` / `next_retry_at` metadata. `gone`,
`private` and `failed` items are only re-checked on request (`recheck`, the weekly schedule).

Why a sensor rather than declarative automation: the downstream assets (labels, the embeddings
and the model) are expensive, so they should re-run only when a Flickr asset reports that items
actually changed (`changed_items` > 0 in its materialisation metadata), not on every Flickr
materialisation. An eager automation condition cannot look at that number; a sensor can.
"""

import json
from collections.abc import Callable, Sequence

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    schedule,
    sensor,
)
from pydantic import Field

from hmg_pipeline.core import refetch
from hmg_pipeline.core.flickr import FlickrClient
from hmg_pipeline.core.flickr_store import RECHECK_STATUSES, RETRY_MAX_WAIT, FlickrStore
from hmg_pipeline.core.progress import Progress
from hmg_pipeline.metadata import counts_table
from hmg_pipeline.resources import (
    FlickrResource,
    PipelinePaths,
    env_setting,
    flickr_recheck_cron,
)
from hmg_pipeline.storage import DUCKDB_TAGS, table_metadata

GROUP = "flickr"
FLICKR_ASSETS = ("flickr_comments", "flickr_images", "flickr_groups")
Runner = Callable[[FlickrClient, FlickrStore, Sequence[str], Progress], refetch.FetchSummary]
# A run without a partition key cannot execute partitioned assets, so the downstream refresh
# leaves them (and what reads them) out; the jobs `llava_augmentation` and `paper_experiments`,
# or a backfill, run them.
PARTITIONED_DOWNSTREAM = ("llava_comments", "experiment_results")


class FlickrFetchConfig(Config):
    recheck: bool = Field(
        default=False,
        description="also re-check items whose status is "
        + ", ".join(RECHECK_STATUSES)
        + " (error items are retried by every run anyway, with a backoff)",
    )
    recheck_after_days: float = Field(
        default=30.0,
        description="re-check only items last checked longer ago than this (0: all of them, "
        "error items without waiting for their backoff)",
    )


class FlickrImagesConfig(FlickrFetchConfig):
    download_images: bool = Field(
        default=False,
        description="download the medium rendition into HMG_STORE_DIR/images/ (verified)",
    )


def run_refetch(
    context: AssetExecutionContext,
    flickr: FlickrResource,
    paths: PipelinePaths,
    config: FlickrFetchConfig,
    kind: str,
    ids: Sequence[str],
    runner: Runner,
) -> tuple[pl.DataFrame, dict]:
    """Fetch the due items of `kind` (none without a key); return stored results + metadata."""
    settings = flickr.settings()
    metadata: dict = {"candidates": len(ids), "recheck": config.recheck}
    with FlickrStore(paths.flickr_state) as store:
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
        errors = store.errors(kind, ids)
    metadata.update(error_metadata(context, kind, errors, keyed=settings is not None))
    statuses = dict(results.group_by("status").len().sort("status").iter_rows())
    metadata["dagster/row_count"] = results.height
    metadata["status_counts"] = MetadataValue.md(counts_table(statuses, "status"))
    metadata.setdefault("changed_items", 0)
    return results, metadata


def error_metadata(
    context: AssetExecutionContext, kind: str, errors: pl.DataFrame, keyed: bool
) -> dict:
    """`items_in_error` and `next_retry_at` (earliest); a warning when any item is in error."""
    if errors.height == 0:
        return {"items_in_error": 0, "next_retry_at": MetadataValue.null()}
    next_retry = errors["next_retry_at"].min()
    when = f"{next_retry:%Y-%m-%d %H:%M:%S} UTC"
    who = "the first run" if keyed else "the first run with an API key"
    context.log.warning(
        f"flickr {kind}: {errors.height} item(s) in error (transient failures such as an outage, "
        f"timeouts or HTTP 5xx); retried automatically by {who} at or after {when}, each "
        f"further failure waiting longer, up to {RETRY_MAX_WAIT.total_seconds() / 3600:g} h"
    )
    return {"items_in_error": errors.height, "next_retry_at": when}


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS)
def flickr_comments(
    context: AssetExecutionContext,
    config: FlickrFetchConfig,
    flickr: FlickrResource,
    paths: PipelinePaths,
    valid_views: pl.DataFrame,
) -> pl.DataFrame:
    """Texts of comments that the views name by id only, listed once per photo and matched by
    comment id: status ok, comment_missing, gone, private, failed or error, with attempts."""
    wanted = refetch.wanted_comments(valid_views)
    comment_ids = [c for ids in wanted.values() for c in ids]

    def runner(client, store, due_comments, progress):
        due = set(due_comments)
        photos = {p: ids for p, ids in wanted.items() if due.intersection(ids)}
        progress.total = len(photos)
        return refetch.refetch_comments(client, store, photos, flickr.workers, progress)

    results, metadata = run_refetch(context, flickr, paths, config, "comments", comment_ids, runner)
    metadata["photos_with_wanted_comments"] = len(wanted)
    metadata["coverage_before_%"] = refetch.text_coverage(valid_views)
    metadata["coverage_after_%"] = refetch.text_coverage(valid_views, results)
    context.add_output_metadata(metadata)
    return results


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS)
def flickr_images(
    context: AssetExecutionContext,
    config: FlickrImagesConfig,
    flickr: FlickrResource,
    paths: PipelinePaths,
    valid_images: pl.DataFrame,
) -> pl.DataFrame:
    """For each image without a local file: alive (ok) or gone/private/failed/error, the URL of
    its medium rendition and, if `download_images`, the verified downloaded file."""
    download_dir = paths.images_dir if config.download_images else None

    def runner(client, store, due, progress):
        progress.total = len(due)
        return refetch.refetch_images(client, store, due, download_dir, flickr.workers, progress)

    ids = refetch.images_without_file(valid_images)
    results, metadata = run_refetch(context, flickr, paths, config, "images", ids, runner)
    metadata["downloaded_files"] = results.filter(pl.col("local_file").is_not_null()).height
    context.add_output_metadata(metadata)
    return results


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS)
def flickr_groups(
    context: AssetExecutionContext,
    config: FlickrFetchConfig,
    flickr: FlickrResource,
    paths: PipelinePaths,
    valid_groups: pl.DataFrame,
) -> pl.DataFrame:
    """Name and description of each group whose description is empty in the raw data."""

    def runner(client, store, due, progress):
        progress.total = len(due)
        return refetch.refetch_groups(client, store, due, flickr.workers, progress)

    ids = refetch.groups_without_description(valid_groups)
    results, metadata = run_refetch(context, flickr, paths, config, "groups", ids, runner)
    context.add_output_metadata(metadata)
    return results


flickr_recheck_job = define_asset_job(
    "flickr_recheck",
    selection=AssetSelection.assets(*FLICKR_ASSETS),
    description="Re-check Flickr items whose status is " + ", ".join(RECHECK_STATUSES) + ".",
)

flickr_downstream_job = define_asset_job(
    "flickr_downstream_refresh",
    selection=AssetSelection.assets("clean_labels", "label_drops").downstream()
    - AssetSelection.assets(*PARTITIONED_DOWNSTREAM).downstream(),
    description="Re-materialise everything that uses Flickr results, after they changed. "
    "The partitioned LLaVA shards, experiment_results and what reads them are left out (a "
    "sensor run carries no partition key); they show as stale in the UI and are refreshed by "
    "the jobs llava_augmentation and paper_experiments, or a backfill.",
)


def recheck_run_config(days: float) -> dict:
    config = {"recheck": True, "recheck_after_days": days}
    return {"ops": {name: {"config": dict(config)} for name in FLICKR_ASSETS}}


@schedule(
    job=flickr_recheck_job,
    cron_schedule=flickr_recheck_cron(),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekly (HMG_FLICKR_RECHECK_CRON): re-check Flickr items that are failed, gone "
    "or private, last checked longer ago than HMG_FLICKR_RECHECK_DAYS (default 30); items in "
    "error are retried by every run anyway.",
)
def refresh_dead_flickr_content(context: ScheduleEvaluationContext) -> RunRequest:
    env_setting("HMG_FLICKR_RECHECK_CRON")  # a bad cron fails the tick with the setting's error
    days = FlickrResource.from_env().recheck_after_days
    stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
    return RunRequest(run_key=f"flickr-recheck-{stamp}", run_config=recheck_run_config(days))


@sensor(
    job=flickr_downstream_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.STOPPED,
    description="When a Flickr asset's materialisation changed items, re-materialise the "
    "assets downstream of clean_labels.",
)
def flickr_changes_sensor(context: SensorEvaluationContext):
    cursor = json.loads(context.cursor) if context.cursor else {}
    changed_by: dict[str, int] = {}
    for name in FLICKR_ASSETS:
        records = context.instance.fetch_materializations(AssetKey(name), limit=1).records
        if not records or records[0].storage_id <= cursor.get(name, -1):
            continue
        cursor[name] = records[0].storage_id
        materialization = records[0].event_log_entry.asset_materialization
        changed = materialization.metadata.get("changed_items") if materialization else None
        if changed is not None and int(changed.value) > 0:
            changed_by[name] = int(changed.value)
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if not changed_by:
        return SkipReason("no Flickr materialisation with changed items since the last tick")
    key = "-".join(f"{name}:{cursor[name]}" for name in sorted(changed_by))
    context.log.info(f"Flickr results changed: {changed_by}; refreshing downstream assets")
    return RunRequest(run_key=f"flickr-changed-{key}", tags={"hmg/flickr_changed": key})
