"""Schedules and sensors: weekly re-check of dead Flickr content, and re-materialisation of
what depends on it when a re-check changed something.

Why a sensor rather than declarative automation: the downstream assets (labels, and later the
embeddings and the model) are expensive, so they should re-run only when a Flickr asset reports
that items actually changed (``changed_items`` > 0 in its materialisation metadata), not on every
Flickr materialisation. An eager automation condition cannot look at that number; a sensor can.
"""

import json
import os

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

FLICKR_ASSETS = ("flickr_comments", "flickr_images", "flickr_groups")
RECHECK_CRON = os.environ.get("HMG_FLICKR_RECHECK_CRON", "0 3 * * 0")  # Sundays 03:00


def recheck_after_days() -> float:
    """``HMG_FLICKR_RECHECK_DAYS``: re-check dead items last checked longer ago than this."""
    return float(os.environ.get("HMG_FLICKR_RECHECK_DAYS", "30"))


flickr_recheck_job = define_asset_job(
    "flickr_recheck",
    selection=AssetSelection.assets(*FLICKR_ASSETS),
    description="Re-check Flickr items whose status is error, gone or private.",
)

flickr_downstream_job = define_asset_job(
    "flickr_downstream_refresh",
    selection=AssetSelection.assets("clean_labels", "label_drops").downstream(),
    description="Re-materialise everything that uses Flickr results, after they changed.",
)


def recheck_run_config(days: float) -> dict:
    config = {"recheck": True, "recheck_after_days": days}
    return {"ops": {name: {"config": dict(config)} for name in FLICKR_ASSETS}}


@schedule(
    job=flickr_recheck_job,
    cron_schedule=RECHECK_CRON,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekly: re-check Flickr items that were error, gone or private "
    "(HMG_FLICKR_RECHECK_DAYS, default 30 days since the last check).",
)
def refresh_dead_flickr_content(context: ScheduleEvaluationContext) -> RunRequest:
    days = recheck_after_days()
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
