"""Reports for people: the cross-validation summary (mean, sample std, 95% t interval, paired
differences to the logistic regression) with its plots, and the paper's Tables I-V with its
reported numbers beside ours, as markdown and PNG files in the store's ``reports/`` directory
(``PipelinePaths.reports_dir``: a local directory, or an object store under HMG_ARTIFACTS_URL;
everything is written as whole bytes or text through ``upath.UPath``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from upath import UPath

from hmg_pipeline.core.metrics import (
    REPORT_METRICS,
    difference_table,
    format_interval,
    mean_interval,
    summary_table,
)
from hmg_pipeline.core.plots import confusion_matrix_plot, grouped_bars, training_curves
from hmg_pipeline.metadata import markdown_table
from hmg_pipeline.model.experiments import (
    BASELINES,
    PAPER_TABLE_I,
    REPORTED_ROWS,
    Reported,
    experiment_footnotes,
    paper_tables_long,
    statistics_footnotes,
    table_frames,
    table_i_cells,
    variant_rows,
)
from hmg_pipeline.model.train import CrossValidation
from hmg_pipeline.model.variants import PAPER_TABLES, VARIANTS

RUNS_NOTE = (
    "Mean ± sample std (ddof = 1) over the runs [95% Student-t interval]. Unless trained with "
    "`split: kfold`, the runs are repeated stratified 80:10:10 splits whose test sets overlap, "
    "not k-fold; runs are not independent, so the interval is optimistic (too narrow)."
)


@dataclass
class EvaluationReport:
    summary: pl.DataFrame  # 'mean ± std [95% CI]' per model of the paper's metrics and macro F1
    differences: pl.DataFrame  # paired differences to the logistic regression (may be empty)
    curves: bytes  # PNG: loss and validation F1 per epoch and fold
    confusion: bytes  # PNG: the kept fold's test confusion matrix

    def markdown(self) -> str:
        """The summary, the paired differences and how to read them."""
        parts = [markdown_table(self.summary)]
        if not self.differences.is_empty():
            parts.append(
                "Paired difference to the logistic regression on the same splits:\n\n"
                + markdown_table(self.differences)
            )
        return "\n\n".join([*parts, RUNS_NOTE])

    def write(self, directory: Path | UPath) -> Path | UPath:
        """``evaluation.md`` (with the plots beside it) in ``directory``, a local directory or
        an object-store prefix; returns the file."""
        (directory / "training_curves.png").write_bytes(self.curves)
        (directory / "confusion_matrix.png").write_bytes(self.confusion)
        document = directory / "evaluation.md"
        document.write_text(
            "# Cross-validated evaluation\n\n"
            + self.markdown()
            + "\n\n![training curves](training_curves.png)\n\n"
            + "![confusion matrix](confusion_matrix.png)\n",
            encoding="utf-8",
        )
        return document


def evaluation_report(result: CrossValidation, class_names: list[str]) -> EvaluationReport:
    best, metrics = result.best, result.metrics()
    return EvaluationReport(
        summary=summary_table(metrics, REPORT_METRICS),
        differences=difference_table(metrics),
        curves=training_curves({fold.fold: fold.history for fold in result.folds}),
        confusion=confusion_matrix_plot(
            best.confusion, class_names, f"HMG-Emo, test set of fold {best.fold}"
        ),
    )


def kept_and_cross_validated(result: CrossValidation) -> pl.DataFrame:
    """Per metric: the trained model's cross-validated 'mean ± std [95% CI]' over every run
    and the kept fold's own test score (one run, chosen on validation F1)."""
    own = result.metrics().filter(~pl.col("model").is_in(BASELINES))
    kept = result.best.test_metrics
    return pl.DataFrame(
        [
            {
                "metric": metric,
                "cross-validated (all runs)": format_interval(
                    mean_interval(own.filter(pl.col("metric") == metric)["value"])
                ),
                f"kept fold {result.best.fold} (test)": f"{kept[metric]:.4f}",
            }
            for metric in REPORT_METRICS
            if metric in kept
        ]
    )


def cross_validated_numbers(
    result: CrossValidation, metrics: tuple[str, ...] = ("weighted_f1", "macro_f1")
) -> dict[str, float | int]:
    """``cv_<metric>_mean/std/ci95_low/ci95_high`` over every run, and ``cv_runs``."""
    own = result.metrics().filter(~pl.col("model").is_in(BASELINES))
    numbers: dict[str, float | int] = {"cv_runs": own["fold"].n_unique()}
    for metric in metrics:
        interval = mean_interval(own.filter(pl.col("metric") == metric)["value"])
        for name in ("mean", "std", "ci_low", "ci_high"):
            value = getattr(interval, name)
            if not math.isnan(value):  # std and interval need two runs
                numbers[f"cv_{metric}_{name.replace('ci_', 'ci95_')}"] = round(value, 4)
    return numbers


@dataclass
class PaperTablesReport:
    document: str  # Table I (reported), Tables II-V and their footnotes, markdown
    chart: bytes  # PNG: weighted F1 per table, the paper's beside
    table: pl.DataFrame  # every printed row's numbers (paper_tables_long: what DuckDB stores)
    missing: list[str]  # variants without results

    def write(self, directory: Path | UPath) -> Path | UPath:
        (directory / "paper_tables.png").write_bytes(self.chart)
        document = directory / "paper_tables.md"
        document.write_text(
            "# The paper's tables on this data, beside the paper's\n\n"
            + self.document
            + "\n![weighted F1](paper_tables.png)\n",
            encoding="utf-8",
        )
        return document


def table_i_section() -> str:
    """The paper's Table I; this graph's own counts are in ``hetero_graph``'s metadata."""
    counts = table_i_cells(PAPER_TABLE_I.values())
    return (
        "### Table I. The dataset (IESN, reported)\n\n"
        + markdown_table(pl.DataFrame([counts]))
        + "\n\nThis graph's counts beside these: `hetero_graph` metadata `table_i_vs_paper`."
    )


def _bars(
    results: pl.DataFrame, reported: dict[str, dict[str, Reported]]
) -> dict[str, list[tuple[str, list[float], float | None]]]:
    """Per table: (row, our weighted F1 per run, the paper's mean) of the rows that ran."""
    bars = {}
    for table in PAPER_TABLES:
        quoted, rows = reported.get(table.number, {}), []
        for label, key in table.rows:
            scores = variant_rows(results, key).filter(pl.col("metric") == "weighted_f1")
            paper = quoted.get(label, {}).get("weighted_f1")
            if scores.height:
                rows.append((label, scores["value"].to_list(), paper[0] if paper else None))
        bars[f"Table {table.number}"] = rows
    return bars


def paper_tables_report(
    results: pl.DataFrame, reported: dict[str, dict[str, Reported]] | None = None
) -> PaperTablesReport:
    """Tables II-V from the results of every variant that ran, each of our rows with the
    paper's reported row under it (``REPORTED_ROWS``, never re-run), and the paper's Table I."""
    reported = REPORTED_ROWS if reported is None else reported
    long = paper_tables_long(results, reported)
    frames = table_frames(long)
    sections = [table_i_section()] + [
        f"### {table.title}\n\n{markdown_table(frames[table.number])}" for table in PAPER_TABLES
    ]
    missing = sorted({variant.key for variant in VARIANTS} - set(results["variant"]))
    footnotes = [
        "Scores on each run's test edges: weighted F1 / precision / recall (the paper's "
        "metrics) and macro F1.",
        *statistics_footnotes(),
        *experiment_footnotes(results),
    ]
    if missing:
        footnotes.append(f"Not run yet: {', '.join(missing)}.")
    document = "\n\n".join(sections) + "\n\n" + "\n".join(f"- {n}" for n in footnotes) + "\n"
    return PaperTablesReport(document, grouped_bars(_bars(results, reported)), long, missing)
