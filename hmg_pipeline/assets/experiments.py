"""The paper's experiments (group `experiments`): `experiment_results`, one partition per
variant, and `paper_tables`, Tables II-V gathered from every partition.

Each partition cross-validates its variant (3 folds) through the same `cross_validate` as
`trained_model` and stores its test metrics, so re-running one variant leaves the others as
they are; a UI backfill runs one partition per run (in parallel where the deployment allows),
and the job `paper_experiments` runs all of them in one run.
"""

import time

import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from hmg_pipeline.assets.model import TrainingRunConfig
from hmg_pipeline.metadata import markdown_table, png_markdown
from hmg_pipeline.model.variants import VARIANTS, VARIANTS_BY_KEY
from hmg_pipeline.placement import GPU_OP_TAGS, GPU_POOL
from hmg_pipeline.resources import ComputeResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, MissingUpstream, read_store_table, table_metadata

GROUP = "experiments"
variant_partitions = StaticPartitionsDefinition([variant.key for variant in VARIANTS])


@asset(
    group_name=GROUP,
    partitions_def=variant_partitions,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    metadata={**table_metadata(GROUP), "partition_expr": "variant"},
    deps=[AssetDep("llava_comment_embeddings", partition_mapping=AllPartitionMapping())],
    op_tags={**DUCKDB_TAGS, **GPU_OP_TAGS},
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
    fold, metric, value). The LLaVA variants read `augment.llava_comment_embeddings` (every shard
    the graph's edges fall in); the others do not need it. The run config applies to every
    variant; a variant's own settings win."""
    from hmg_pipeline.core.metrics import summary_table
    from hmg_pipeline.model.experiments import results_frame, run_experiment

    device = compute.torch_device()
    rows, seconds, notes = [], {}, {}
    for key in context.partition_keys:
        variant = VARIANTS_BY_KEY[key]
        augmented = None
        if variant.comments != "original":
            augmented = llava_features(paths, hetero_graph)
            source = "neutral_source" if variant.comments == "llava_leakfree" else "source"
            notes[key] = dict(augmented.group_by(source).len().iter_rows())
        started = time.perf_counter()
        variant_rows = run_experiment(
            variant, hetero_graph, augmented, config.model(), config.training(), device,
            compute.amp_enabled, context.log.info,
        )  # fmt: skip
        if variant_rows is None:
            context.log.warning(f"variant {key} not run: no generated comment (backend none?)")
            continue
        rows += variant_rows
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


def llava_features(paths: PipelinePaths, hetero_graph) -> pl.DataFrame:
    """`augment.llava_comment_embeddings`, from one generator, with every shard the graph's
    edges fall in: an error naming the shards to re-materialise or still to materialise
    otherwise."""
    from hmg_pipeline.core.llava import missing_shards, mixed_generators
    from hmg_pipeline.model.experiments import graph_edges

    table = read_store_table(paths, "augment", "llava_comment_embeddings")
    mixed = mixed_generators(table)
    if mixed:
        raise ValueError(
            "llava_comment_embeddings mixes generators across shards ("
            + "; ".join(f"{g}: {', '.join(shards)}" for g, shards in mixed.items())
            + "): re-materialise the shards of the ones you do not want with one "
            "HMG_LLAVA_BACKEND and HMG_LLAVA_MODEL (the LLaVA cache keeps what was generated)"
        )
    missing = missing_shards(graph_edges(hetero_graph), table)
    if missing:
        raise MissingUpstream(
            f"llava_comment_embeddings lacks {len(missing)} shard(s) that the graph's edges fall "
            f"in ({', '.join(missing)}): materialise them with the job llava_augmentation "
            "(`python -m hmg_pipeline.launch llava_augmentation`, every shard in one run), a "
            "backfill of llava_comments and llava_comment_embeddings (one run per shard), or "
            f"per shard: `dagster asset materialize --select 'llava_comments,"
            f"llava_comment_embeddings' --partition {missing[0]}`"
        )
    return table


PAPER_TABLE_COLUMNS = {
    "table": ("String", "II, III, IV or V"),
    "row": ("Int64", "the printed row's position in its table"),
    "model": ("String", "the row as the paper labels it"),
    "source": ("String", "this pipeline, or reported (quoted from the paper, never re-run)"),
    "variant": ("String", "the experiment_results partition; null for reported rows"),
    "metric": ("String", "weighted_f1/precision/recall (the paper's) or macro_f1"),
    "statistic": ("String", "score, or paired difference vs logistic regression (same splits)"),
    "mean": ("Float64", "mean over runs; null when not run"),
    "std": ("Float64", "sample std over runs (ddof=1; the paper's as printed)"),
    "ci_low": ("Float64", "95% Student-t interval over runs (optimistic: runs overlap)"),
    "ci_high": ("Float64", "upper end of that interval; null for reported rows"),
    "n": ("Int64", "runs (0: not run, or not transcribed)"),
}


@asset(group_name=GROUP, metadata=table_metadata(GROUP, PAPER_TABLE_COLUMNS), op_tags=DUCKDB_TAGS)
def paper_tables(
    context: AssetExecutionContext, paths: PipelinePaths, experiment_results: pl.DataFrame
) -> pl.DataFrame:
    """The paper's Tables II-V from every partition of `experiment_results`: per row our mean ±
    sample std [95% t interval] over runs, macro F1 and the paired difference to the logistic
    regression, with the paper's reported row (never re-run) under it; the paper's Table I.
    Stored as numbers (table, row, model, source, variant, metric, statistic, mean, std,
    ci_low, ci_high, n); written to `reports/paper_tables.md` (under HMG_ARTIFACTS_URL, by
    default the store) with a bar chart of weighted F1."""
    from hmg_pipeline.model.reports import paper_tables_report

    report = paper_tables_report(experiment_results)
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
