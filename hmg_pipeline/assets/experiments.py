"""The paper's experiments (group ``experiments``): ``experiment_results``, one partition per
variant, and ``paper_tables``, Tables II-V gathered from every partition.

Each partition trains its variant on 3 folds through the same ``train_fold`` as
``trained_model`` and stores its test metrics, so re-running one variant leaves the others as
they are; a UI backfill runs one partition per run (in parallel where the deployment allows),
and the job ``paper_experiments`` runs all of them in one run.
"""

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

from hmg_pipeline.assets.training import TrainingSettings
from hmg_pipeline.metadata import markdown_table, png_markdown
from hmg_pipeline.model.variants import PAPER_TABLES, VARIANTS, VARIANTS_BY_KEY
from hmg_pipeline.resources import ComputeResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, group_metadata

GROUP = "experiments"
# BackfillPolicy is beta in this Dagster; its warning would repeat in every step's log.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)
variant_partitions = StaticPartitionsDefinition([variant.key for variant in VARIANTS])


@asset(
    group_name=GROUP,
    partitions_def=variant_partitions,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    metadata={**group_metadata(GROUP), "partition_expr": "variant"},
    deps=["llava_comment_embeddings"],
    op_tags=DUCKDB_TAGS,
    pool="gpu",
)
def experiment_results(
    context: AssetExecutionContext,
    config: TrainingSettings,
    paths: PipelinePaths,
    compute: ComputeResource,
    hetero_graph,
) -> pl.DataFrame:
    """Test metrics per fold of each variant of this run's partitions (variant, name, detail,
    fold, metric, value). The LLaVA variant reads ``augment.llava_comment_embeddings``; the others
    do not need it."""
    import time

    from hmg_pipeline.core.metrics import summary_table
    from hmg_pipeline.model.experiments import (
        augmented_comment_features,
        results_frame,
        run_variant,
        with_comment_features,
    )
    from hmg_pipeline.model.train import TrainConfig
    from hmg_pipeline.storage import read_store_table

    device = compute.torch_device()
    train_config = TrainConfig(
        epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=config.seed
    )
    rows, seconds, notes = [], {}, {}
    for key in context.partition_keys:
        variant = VARIANTS_BY_KEY[key]
        data, detail = hetero_graph, None
        if variant.comments == "llava":
            augmented = read_store_table(paths.store_path, "augment", "llava_comment_embeddings")
            notes[key] = dict(augmented.group_by("source").len().iter_rows())
            features = augmented_comment_features(data, augmented)
            if features is None:
                context.log.warning(
                    f"variant {key} not run: no generated comment (HMG_LLAVA_BACKEND=none?)"
                )
                continue
            data = with_comment_features(data, features)
            detail = ", ".join(sorted(augmented["generator"].drop_nulls().unique())) or None
        context.log.info(f"variant {key} ({variant.name}) on {device}")
        started = time.perf_counter()
        rows += run_variant(
            variant,
            data,
            train_config,
            config.folds,
            config.seed,
            device,
            compute.amp_enabled,
            context.log.info,
            detail,
            **config.shared_model_settings(),
        )
        seconds[key] = round(time.perf_counter() - started, 1)
        context.log.info(f"variant {key}: {seconds[key]}s for {config.folds} folds")
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


@asset(group_name=GROUP, metadata=group_metadata(GROUP), op_tags=DUCKDB_TAGS)
def paper_tables(
    context: AssetExecutionContext,
    config: PaperTablesConfig,
    paths: PipelinePaths,
    experiment_results: pl.DataFrame,
) -> pl.DataFrame:
    """The paper's Tables II-V (mean ± std over folds) from every partition of
    ``experiment_results``; RMTHG is quoted from the publication, never re-run. Written to
    ``HMG_STORE_DIR/reports/paper_tables.md`` with a bar chart of weighted F1."""
    from hmg_pipeline.core.plots import grouped_bars
    from hmg_pipeline.model.experiments import (
        REPORTED_ROWS,
        REPORTED_SOURCE,
        experiment_footnotes,
        paper_table_frames,
        paper_tables_long,
    )

    reported = {**REPORTED_ROWS, "RMTHG": {**REPORTED_ROWS["RMTHG"], **config.reported_rmthg}}
    frames = paper_table_frames(experiment_results, reported)
    sections = []
    bars = {}
    for table in PAPER_TABLES:
        sections.append(f"### {table.title}\n\n{markdown_table(frames[table.number])}")
        scores = experiment_results.filter(pl.col("metric") == "weighted_f1")
        bars[f"Table {table.number}"] = [
            (label, values.mean(), values.std())
            for label, key in table.rows
            if len(values := scores.filter(pl.col("variant") == key)["value"].to_numpy())
        ]
    missing = sorted(
        set(variant_partitions.get_partition_keys()) - set(experiment_results["variant"])
    )
    footnotes = [
        "Weighted F1 / precision / recall on the test edges, mean ± std over folds "
        "(stratified 80:10:10, transductive).",
        f"RMTHG: {REPORTED_SOURCE}.",
        *experiment_footnotes(experiment_results),
    ]
    if missing:
        footnotes.append(f"Not run yet: {', '.join(missing)}.")
    document = "\n\n".join(sections) + "\n\n" + "\n".join(f"- {n}" for n in footnotes) + "\n"
    chart = grouped_bars(bars)
    reports = paths.store_path / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "paper_tables.md").write_text(
        "# The paper's tables on this data\n\n" + document + "\n![weighted F1](paper_tables.png)\n",
        encoding="utf-8",
    )
    (reports / "paper_tables.png").write_bytes(chart)
    context.log.info("\n" + document)
    table = paper_tables_long(frames)
    context.add_output_metadata(
        {
            "dagster/row_count": table.height,
            "tables": MetadataValue.md(document),
            "weighted_f1": MetadataValue.md(png_markdown(chart, "weighted F1 per table")),
            "report": MetadataValue.path(str(reports / "paper_tables.md")),
            "variants_missing": len(missing),
        }
    )
    return table
