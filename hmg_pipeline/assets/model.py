"""Training, cross-validated evaluation and predictions (group `model`): `trained_model` and
`evaluation_metrics` (one run, either can be materialised alone), with the majority-class and
logistic-regression baselines, and `predictions` for held-out edges and requested pairs."""

from typing import TYPE_CHECKING

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

from hmg_pipeline.metadata import markdown_table, png_markdown
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.placement import GPU_OP_TAGS, GPU_POOL
from hmg_pipeline.resources import ComputeResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, table_metadata

if TYPE_CHECKING:  # torch is imported inside the steps only
    from hmg_pipeline.model.train import CrossValidation

GROUP = "model"
PROTOCOL_NOTES = {
    "transductive": "transductive: held-out edges' structure and comment features take part in "
    "message passing, their labels never do",
    "inductive": "inductive: held-out edges and their comments leave message passing (training "
    "and validation see training edges, test training + validation edges)",
}


def split_note(training: TrainConfig) -> str:
    """How this run split and evaluated, for the metadata."""
    runs = (
        f"{training.folds} repeated stratified 80:10:10 splits"
        if training.split == "repeated"
        else f"stratified {training.folds}-fold"
    )
    return f"{runs}; {PROTOCOL_NOTES[training.message_passing]}"


class TrainingRunConfig(Config, TrainConfig, ModelConfig):
    """Run config of `trained_model` and `experiment_results`: the training settings
    (`TrainConfig`) and the model's (`ModelConfig`), each defined once in `model/`."""

    def training(self) -> TrainConfig:
        return TrainConfig(**self.model_dump(include=set(TrainConfig.model_fields)))

    def model(self) -> ModelConfig:
        return ModelConfig(**self.model_dump(include=set(ModelConfig.model_fields)))


@multi_asset(
    outs={
        "trained_model": AssetOut(
            io_manager_key="artifact_io_manager",
            description="HMG-Emo weights and config from the fold with the best validation "
            "weighted F1, with its test metrics and test edges (load: `hmg_pipeline.model."
            "predict.load_trained_model`).",
            is_required=False,
        ),
        "evaluation_metrics": AssetOut(
            metadata=table_metadata(
                GROUP,
                {
                    "model": (
                        "String",
                        "HMG-Emo (or the variant trained), majority class, logistic regression",
                    ),
                    "fold": ("Int64", "the split (seed + fold)"),
                    "metric": (
                        "String",
                        "weighted_f1/precision/recall (the paper's), macro_f1, "
                        "accuracy, f1_<class>",
                    ),
                    "value": ("Float64", "on the fold's test edges"),
                },
            ),
            description="Test metrics per model and fold (model, fold, metric, value).",
            is_required=False,
        ),
    },
    can_subset=True,
    group_name=GROUP,
    op_tags={**DUCKDB_TAGS, **GPU_OP_TAGS},
    pool=GPU_POOL,
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainingRunConfig,
    paths: PipelinePaths,
    compute: ComputeResource,
    hetero_graph,
):
    """Cross-validate HMG-Emo (run config: splits, protocol, model) next to the baselines on
    the same splits; keep the best fold's model. Either output can be
    materialised alone (the cross-validation runs either way)."""
    from hmg_pipeline.model.hmg_emo import InputDims
    from hmg_pipeline.model.predict import model_bundle
    from hmg_pipeline.model.reports import evaluation_report
    from hmg_pipeline.model.train import cross_validate

    data, device = hetero_graph, compute.torch_device()
    model_config, train_config = config.model(), config.training()
    result = cross_validate(
        data, model_config, train_config, device, compute.amp_enabled, context.log.info,
        baselines=True,
    )  # fmt: skip
    best, report = result.best, evaluation_report(result, data.class_names)
    document = report.write(paths.reports_dir)
    context.log.info("\n" + report.markdown())
    if "trained_model" in context.selected_output_names:
        bundle = model_bundle(
            best.state_dict, model_config, InputDims.of(data), train_config, best.fold,
            best.test_metrics, data.class_names, best.split.test,
        )  # fmt: skip
        yield Output(
            bundle,
            output_name="trained_model",
            metadata=trained_model_metadata(result, str(device)),
        )
    if "evaluation_metrics" in context.selected_output_names:
        metrics = result.metrics()
        metadata = evaluation_metadata(metrics, report, paths.relative(document), train_config)
        yield Output(metrics, output_name="evaluation_metrics", metadata=metadata)


def evaluation_metadata(metrics: pl.DataFrame, report, document: str, training: TrainConfig):
    """`evaluation_metrics`' metadata: HMG-Emo's weighted F1, the report and its plots."""
    f1 = metrics.filter((pl.col("model") == "HMG-Emo") & (pl.col("metric") == "weighted_f1"))
    return {
        "dagster/row_count": metrics.height,
        "hmg_emo_weighted_f1_mean": round(float(f1["value"].mean()), 4),
        "hmg_emo_weighted_f1_std": round(float(f1["value"].std(ddof=1) or 0.0), 4),
        "summary": MetadataValue.md(report.markdown()),
        "training_curves": MetadataValue.md(png_markdown(report.curves, "curves")),
        "confusion_matrix": MetadataValue.md(png_markdown(report.confusion, "matrix")),
        "report": document,
        "split": split_note(training),
    }


def trained_model_metadata(result: "CrossValidation", device: str) -> dict:
    """The kept fold's own numbers (``kept_fold_*``: one run, chosen on validation weighted F1)
    next to the cross-validated ones over every run (``cv_*``: mean, sample std, 95% t
    interval), and both side by side as a table."""
    from hmg_pipeline.model.reports import cross_validated_numbers, kept_and_cross_validated

    best = result.best
    metadata = {"kept_fold": best.fold, "kept_fold_best_epoch": best.best_epoch, "device": device}
    metadata["kept_fold_val_weighted_f1"] = round(best.best_val_f1, 4)
    metadata.update({f"kept_fold_test_{k}": round(v, 4) for k, v in best.test_metrics.items()})
    metadata.update(cross_validated_numbers(result))
    metadata["kept_fold_vs_cross_validated"] = MetadataValue.md(
        markdown_table(kept_and_cross_validated(result))
    )
    return metadata


@asset(
    group_name=GROUP,
    metadata=table_metadata(
        GROUP,
        {
            "source": (
                "String",
                "test (a held-out test edge of the kept fold) or request (requests table)",
            ),
            "user_id": ("String", "the user"),
            "image_id": ("String", "the image"),
            "status": ("String", "ok, unknown_user, unknown_image or unknown_user_and_image"),
            "true_emotion": ("String", "the label of a test edge"),
            "emotion": ("String", "the most likely emotion"),
            "beta": ("Float32", "the pair's adaptive-combination weight (Eq. 5); null without AC"),
        },
    ),
    op_tags=DUCKDB_TAGS,
)
def predictions(
    context: AssetExecutionContext, trained_model, hetero_graph, valid_requests: pl.DataFrame
) -> pl.DataFrame:
    """The predicted emotion, the eight class probabilities (`p_<class>`) and beta for every
    held-out test edge of the kept fold and every pair of the optional `requests` table; a
    pair whose user or image is not in the graph gets a status saying so."""
    from hmg_pipeline.model.predict import predictions_table, trained_model_from_bundle

    table = predictions_table(
        trained_model_from_bundle(trained_model), hetero_graph, valid_requests
    )
    tests = table.filter(pl.col("source") == "test")
    statuses = dict(table.group_by("status").len().iter_rows())
    if statuses.keys() - {"ok"}:
        context.log.warning(f"pairs that cannot be scored: {statuses}")
    context.add_output_metadata(
        {
            "dagster/row_count": table.height,
            "test_edges": tests.height,
            "requested_pairs": table.height - tests.height,
            "statuses": MetadataValue.json(statuses),
            "test_accuracy": round(float((tests["emotion"] == tests["true_emotion"]).mean()), 4)
            if tests.height
            else 0.0,
            "preview": MetadataValue.md(markdown_table(table.head(10))),
        }
    )
    return table
