"""Reports for people: the cross-validation summary with its plots, and the paper's Tables II-V,
as markdown and PNG files in the store's ``reports/`` directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hmg_pipeline.core.metrics import summary_table
from hmg_pipeline.core.plots import confusion_matrix_plot, grouped_bars, training_curves
from hmg_pipeline.metadata import markdown_table
from hmg_pipeline.model.experiments import (
    REPORTED_ROWS,
    REPORTED_SOURCE,
    experiment_footnotes,
    paper_table_frames,
    paper_tables_long,
)
from hmg_pipeline.model.train import CrossValidation
from hmg_pipeline.model.variants import PAPER_TABLES, VARIANTS


@dataclass
class EvaluationReport:
    summary: pl.DataFrame  # mean ± std per model of the paper's metrics
    curves: bytes  # PNG: loss and validation F1 per epoch and fold
    confusion: bytes  # PNG: the kept fold's test confusion matrix

    def write(self, directory: Path) -> Path:
        """``evaluation.md`` (with the plots beside it) in ``directory``; returns the file."""
        (directory / "training_curves.png").write_bytes(self.curves)
        (directory / "confusion_matrix.png").write_bytes(self.confusion)
        document = directory / "evaluation.md"
        document.write_text(
            "# Cross-validated evaluation\n\n"
            + markdown_table(self.summary)
            + "\n\n![training curves](training_curves.png)\n\n"
            + "![confusion matrix](confusion_matrix.png)\n",
            encoding="utf-8",
        )
        return document


def evaluation_report(result: CrossValidation, class_names: list[str]) -> EvaluationReport:
    best = result.best
    return EvaluationReport(
        summary=summary_table(result.metrics()),
        curves=training_curves({fold.fold: fold.history for fold in result.folds}),
        confusion=confusion_matrix_plot(
            best.confusion, class_names, f"HMG-Emo, test set of fold {best.fold}"
        ),
    )


@dataclass
class PaperTablesReport:
    document: str  # the four tables and their footnotes, markdown
    chart: bytes  # PNG: weighted F1 per table
    table: pl.DataFrame  # every table in one frame (what DuckDB stores)
    missing: list[str]  # variants without results

    def write(self, directory: Path) -> Path:
        (directory / "paper_tables.png").write_bytes(self.chart)
        document = directory / "paper_tables.md"
        document.write_text(
            "# The paper's tables on this data\n\n"
            + self.document
            + "\n![weighted F1](paper_tables.png)\n",
            encoding="utf-8",
        )
        return document


def paper_tables_report(
    results: pl.DataFrame, reported_rmthg: dict[str, float] | None = None
) -> PaperTablesReport:
    """Tables II-V (mean ± std over folds) from the results of every variant that ran;
    RMTHG's row is quoted from the publication (``reported_rmthg``), never re-run."""
    reported = {**REPORTED_ROWS, "RMTHG": {**REPORTED_ROWS["RMTHG"], **(reported_rmthg or {})}}
    frames = paper_table_frames(results, reported)
    scores = results.filter(pl.col("metric") == "weighted_f1")
    sections, bars = [], {}
    for table in PAPER_TABLES:
        sections.append(f"### {table.title}\n\n{markdown_table(frames[table.number])}")
        bars[f"Table {table.number}"] = [
            (label, values.mean(), values.std())
            for label, key in table.rows
            if len(values := scores.filter(pl.col("variant") == key)["value"].to_numpy())
        ]
    missing = sorted({variant.key for variant in VARIANTS} - set(results["variant"]))
    footnotes = [
        "Weighted F1 / precision / recall on the test edges, mean ± std over folds "
        "(stratified 80:10:10, transductive).",
        f"RMTHG: {REPORTED_SOURCE}.",
        *experiment_footnotes(results),
    ]
    if missing:
        footnotes.append(f"Not run yet: {', '.join(missing)}.")
    document = "\n\n".join(sections) + "\n\n" + "\n".join(f"- {n}" for n in footnotes) + "\n"
    return PaperTablesReport(document, grouped_bars(bars), paper_tables_long(frames), missing)
