"""The paper's experiments (group `experiments`): `experiment_results`, one partition per
variant, and `paper_tables`, Tables II-V gathered from every partition.

Each partition cross-validates its variant (3 folds) through the same `cross_validate` as
`trained_model` and stores its test metrics, so re-running one variant leaves the others as
they are; a UI backfill runs one partition per run (in parallel where the deployment allows),
and the job `paper_experiments` runs all of them in one run.
"""

import time
import warnings

import polars as pl
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    BetaWarning,
    Config,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from hmg_pipeline.assets.model import GPU_POOL, TrainingRunConfig
from hmg_pipeline.metadata import markdown_table, png_markdown
from hmg_pipeline.model.variants import VARIANTS, VARIANTS_BY_KEY
from hmg_pipeline.resources import ComputeResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, read_store_table, table_metadata

GROUP = "experiments"
# BackfillPolicy is beta in this Dagster; its warning would repeat in every step's log.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)
variant_partitions = StaticPartitionsDefinition([variant.key for variant in VARIANTS])


@asset(
    group_name=GROUP,
    partitions_def=variant_partitions,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    metadata={**table_metadata(GROUP), "partition_expr": "variant"},
    deps=["llava_comment_embeddings"],
    op_tags=DUCKDB_TAGS,
    pool=GPU_POOL,
)
def experiment_results(
    context: AssetExecutionContext,
    config: TrainingRunConfig,
    paths: PipelinePaths,
    compute: ComputeResource,
    hetero_graph,
) -> pl.DataFrame:
    """Test metrics per fold of each variant of this run's partitions (variant, name, detail,
    fold, metric, value). The LLaVA variant reads `augment.llava_comment_embeddings`; the others
    do not need it. The run config applies to every variant; a variant's own settings win."""
    from hmg_pipeline.core.metrics import summary_table
    from hmg_pipeline.model.experiments import results_frame, run_variant, variant_graph

    device = compute.torch_device()
    rows, seconds, notes = [], {}, {}
    for key in context.partition_keys:
        variant = VARIANTS_BY_KEY[key]
        augmented = None
        if variant.comments == "llava":
            augmented = read_store_table(paths, "augment", "llava_comment_embeddings")
            notes[key] = dict(augmented.group_by("source").len().iter_rows())
        data, detail = variant_graph(variant, hetero_graph, augmented)
        if data is None:
            context.log.warning(f"variant {key} not run: no generated comment (backend none?)")
            continue
        started = time.perf_counter()
        rows += run_variant(
            variant, data, config.model(), config.training(), device, compute.amp_enabled,
            context.log.info, detail,
        )  # fmt: skip
        seconds[key] = round(time.perf_counter() - started, 1)
        context.log.info(f"variant {key}: {seconds[key]}s")
    results = results_frame(rows)
    summary = summary_table(results.rename({"name": "model"}))
    context.add_output_metadata(
        {
            "dagster/row_count": results.height,
            "summary": MetadataValue.md(markdown_table(summary)),
            "seconds_per_variant": MetadataValue.json(seconds),
            "device": str(device),
            **({"llava_feature_sources": MetadataValue.json(notes)} if notes else {}),
        }
    )
    return results


class PaperTablesConfig(Config):
    reported_rmthg: dict[str, float] = Field(
        default={},
        description="RMTHG's numbers as reported in the publication's Table II, e.g. "
        '{"weighted_f1": 0.5}; empty shows "not transcribed"',
    )


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS)
def paper_tables(
    context: AssetExecutionContext,
    config: PaperTablesConfig,
    paths: PipelinePaths,
    experiment_results: pl.DataFrame,
) -> pl.DataFrame:
    """The paper's Tables II-V (mean ± std over folds) from every partition of
    `experiment_results`; RMTHG is quoted from the publication, never re-run. Written to
    `HMG_STORE_DIR/reports/paper_tables.md` with a bar chart of weighted F1."""
    from hmg_pipeline.model.reports import paper_tables_report

    report = paper_tables_report(experiment_results, config.reported_rmthg)
    document = report.write(paths.reports_dir)
    context.log.info("\n" + report.document)
    context.add_output_metadata(
        {
            "dagster/row_count": report.table.height,
            "tables": MetadataValue.md(report.document),
            "weighted_f1": MetadataValue.md(png_markdown(report.chart, "weighted F1 per table")),
            "report": paths.relative(document),
            "variants_missing": len(report.missing),
        }
    )
    return report.table
