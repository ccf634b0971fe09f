"""Training and cross-validated evaluation (group ``model``): ``trained_model`` and
``evaluation_metrics``, with the majority-class and logistic-regression baselines."""

from typing import Literal

from dagster import AssetExecutionContext, AssetOut, Config, MetadataValue, Output, multi_asset
from pydantic import Field

from hmg_pipeline.metadata import markdown_table, png_markdown
from hmg_pipeline.resources import ComputeResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, group_metadata

GROUP = "model"


class TrainingSettings(Config):
    """Settings every trained model shares (``trained_model`` and every experiment variant);
    defaults are the paper's (Sec. IV-B)."""

    epochs: int = Field(default=20)
    lr: float = Field(default=0.005)
    batch_size: int = Field(default=512)
    folds: int = Field(default=3, description="independent stratified 80:10:10 splits")
    seed: int = Field(default=0)
    num_layers: int = Field(default=5)
    hidden: int = Field(default=64)
    beta_activation: Literal["exp", "sigmoid"] = Field(
        default="sigmoid", description="exp is the paper as written (unbounded beta)"
    )
    dropout: float = Field(default=0.2)

    def shared_model_settings(self) -> dict:
        return {
            "num_layers": self.num_layers,
            "hidden": self.hidden,
            "beta_activation": self.beta_activation,
            "dropout": self.dropout,
        }


class TrainingConfig(TrainingSettings):
    """``trained_model``'s settings: the shared ones and the model's switches."""

    backbone: Literal["gat", "sage", "graphconv"] = Field(default="gat")
    use_comments: bool = Field(default=True, description="T: comment edge term of Eq. 3")
    use_ac: bool = Field(default=True, description="AC: adaptive combination, Eq. 5-6")
    combine: Literal["concat", "add", "mul"] = Field(default="concat")

    def model_settings(self) -> dict:
        return {
            **self.shared_model_settings(),
            "backbone": self.backbone,
            "use_comments": self.use_comments,
            "use_ac": self.use_ac,
            "combine": self.combine,
        }


@multi_asset(
    outs={
        "trained_model": AssetOut(
            io_manager_key="artifact_io_manager",
            description="HMG-Emo weights and config from the fold with the best validation "
            "weighted F1, with its test metrics (load: hmg_pipeline.model.predict).",
        ),
        "evaluation_metrics": AssetOut(
            metadata=group_metadata(GROUP),
            description="Test metrics per model and fold (model, fold, metric, value).",
        ),
    },
    group_name=GROUP,
    op_tags=DUCKDB_TAGS,
    pool="gpu",
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainingConfig,
    paths: PipelinePaths,
    compute: ComputeResource,
    hetero_graph,
):
    """Cross-validate HMG-Emo (3 seeded 80:10:10 stratified splits, transductive) next to the
    baselines on the same splits; keep the best fold's model."""
    from hmg_pipeline.core.graph import VIEWS
    from hmg_pipeline.core.metrics import summary_table
    from hmg_pipeline.core.plots import confusion_matrix_plot, training_curves
    from hmg_pipeline.core.splits import fold_splits
    from hmg_pipeline.model.predict import model_bundle
    from hmg_pipeline.model.train import (
        TrainConfig,
        logistic_regression_baseline,
        majority_baseline,
        metric_rows,
        metrics_frame,
        model_config_for,
        train_fold,
    )

    data = hetero_graph
    device = compute.torch_device()
    model_config = model_config_for(data, **config.model_settings())
    train_config = TrainConfig(
        epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=config.seed
    )
    splits = fold_splits(data[VIEWS].edge_label.numpy(), config.folds, config.seed)
    rows, results = [], []
    for split in splits:
        context.log.info(
            f"fold {split.fold}: {len(split.train)} train / {len(split.val)} val / "
            f"{len(split.test)} test edges, device {device}"
        )
        result = train_fold(
            data, model_config, train_config, split, device, compute.amp_enabled, context.log.info
        )
        results.append(result)
        rows += metric_rows(model_config.variant, split.fold, result.test_metrics)
        rows += metric_rows("majority class", split.fold, majority_baseline(data, split))
        rows += metric_rows(
            "logistic regression", split.fold, logistic_regression_baseline(data, split)
        )
    metrics = metrics_frame(rows)
    best = max(results, key=lambda r: r.best_val_f1)
    summary = summary_table(metrics)
    reports = paths.store_path / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    curves = training_curves({r.fold: r.history for r in results})
    matrix = confusion_matrix_plot(
        best.confusion, data.class_names, f"HMG-Emo, test set of fold {best.fold}"
    )
    (reports / "training_curves.png").write_bytes(curves)
    (reports / "confusion_matrix.png").write_bytes(matrix)
    (reports / "evaluation.md").write_text(markdown_table(summary) + "\n", encoding="utf-8")
    context.log.info("\n" + markdown_table(summary))
    yield Output(
        model_bundle(
            best.state_dict,
            model_config,
            train_config.to_dict(),
            best.fold,
            best.test_metrics,
            data.class_names,
        ),
        output_name="trained_model",
        metadata={
            "variant": model_config.variant,
            "fold": best.fold,
            "best_epoch": best.best_epoch,
            "val_weighted_f1": round(best.best_val_f1, 4),
            **{f"test_{k}": round(v, 4) for k, v in best.test_metrics.items() if "_" in k},
            "device": str(device),
        },
    )
    yield Output(
        metrics,
        output_name="evaluation_metrics",
        metadata={
            "dagster/row_count": metrics.height,
            "summary": MetadataValue.md(markdown_table(summary)),
            "training_curves": MetadataValue.md(png_markdown(curves, "training curves")),
            "confusion_matrix": MetadataValue.md(png_markdown(matrix, "confusion matrix")),
            "reports": MetadataValue.path(str(reports)),
            "split": "transductive: test edges' structure and comment features take part in "
            "message passing, their labels never do (as in the paper)",
        },
    )
