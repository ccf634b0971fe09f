"""The Dagster code location: assets, checks, resources, jobs and the executor."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    define_asset_job,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from hmg_pipeline.assets import (
    augment,
    experiments,
    features,
    flickr,
    graph,
    labels,
    model,
    raw,
)
from hmg_pipeline.resources import (
    ComputeResource,
    EncoderResource,
    FlickrResource,
    LlavaResource,
    PipelinePaths,
    resource_from_env,
)
from hmg_pipeline.storage import artifact_io_manager, duckdb_io_manager, executor_from_env

ASSET_MODULES = [raw, flickr, labels, features, graph, model, augment, experiments]


def build_resources(
    paths: PipelinePaths,
    compute: ComputeResource | None = None,
    flickr: FlickrResource | None = None,
    encoders: EncoderResource | None = None,
    llava: LlavaResource | None = None,
) -> dict:
    """The resources every asset needs; settings not given are read from the environment (a
    bad setting fails only the steps that use its resource)."""
    return {
        "paths": paths,
        "compute": compute or resource_from_env(ComputeResource.from_env),
        "flickr": flickr or resource_from_env(FlickrResource.from_env),
        "encoders": encoders or resource_from_env(EncoderResource.from_env),
        "llava": llava or resource_from_env(LlavaResource.from_env),
        "io_manager": duckdb_io_manager(paths),
        "artifact_io_manager": artifact_io_manager(paths),
    }


all_assets = load_assets_from_modules(ASSET_MODULES)
all_checks = load_asset_checks_from_modules(ASSET_MODULES)

# The outputs users read (the model, its metrics, predictions) with everything upstream, and
# what the pipeline left out on the way (label_drops, unreadable_images) so counts add up.
MAIN_ASSETS = (
    "trained_model",
    "evaluation_metrics",
    "predictions",
    "label_drops",
    "unreadable_images",
)
main_job = define_asset_job(
    "hmg_main",
    selection=AssetSelection.assets(*MAIN_ASSETS).upstream(),
    description="The model, its metrics and predictions, with everything upstream and what was "
    "dropped on the way (label_drops, unreadable_images).",
)


def every_partition(partitions_def) -> dict[str, str]:
    """Run tags that make a job's partitioned assets run every partition in one run (a UI
    backfill of them instead runs one partition per run)."""
    keys = partitions_def.get_partition_keys()
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


# A run covers one partitions definition, so the LLaVA shards and the experiment variants are
# two jobs: `make experiments` launches llava_augmentation, then paper_experiments.
llava_augmentation_job = define_asset_job(
    "llava_augmentation",
    selection=AssetSelection.groups(augment.GROUP).upstream(),
    tags=every_partition(augment.shard_partitions),
    description="Every shard of llava_comments and llava_comment_embeddings in one run, and "
    "upstream (a backfill of the two assets runs one shard per run instead).",
)
paper_experiments_job = define_asset_job(
    "paper_experiments",
    selection=AssetSelection.assets("paper_tables").upstream()
    - AssetSelection.groups(augment.GROUP),
    tags=every_partition(experiments.variant_partitions),
    description="Every variant of experiment_results (Tables II-V), paper_tables, and upstream "
    "but the LLaVA shards (the job llava_augmentation), which the LLaVA variants read.",
)

defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[
        main_job,
        llava_augmentation_job,
        paper_experiments_job,
        flickr.flickr_recheck_job,
        flickr.flickr_downstream_job,
    ],
    schedules=[flickr.refresh_dead_flickr_content],
    sensors=[flickr.flickr_changes_sensor],
    resources=build_resources(PipelinePaths.from_env()),
    executor=executor_from_env(),
)
