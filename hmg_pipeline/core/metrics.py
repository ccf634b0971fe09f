"""The paper's metrics (weighted F1, precision, recall) and the usual extras, via scikit-learn;
and their statistics over runs: mean, sample std (ddof=1), Student-t 95% interval, and paired
differences between two models on the same splits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

PAPER_METRICS = ("weighted_f1", "weighted_precision", "weighted_recall")
REPORT_METRICS = (*PAPER_METRICS, "macro_f1")  # macro F1: every class counts once


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """Weighted F1 / precision / recall (the paper's), macro F1 and per-class F1."""
    labels = list(range(len(class_names)))
    metrics = {
        "weighted_f1": f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
        "weighted_precision": precision_score(
            y_true, y_pred, labels=labels, average="weighted", zero_division=0
        ),
        "weighted_recall": recall_score(
            y_true, y_pred, labels=labels, average="weighted", zero_division=0
        ),
        "macro_f1": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
    }
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    metrics.update({f"f1_{name}": float(v) for name, v in zip(class_names, per_class, strict=True)})
    return {k: float(v) for k, v in metrics.items()}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


@dataclass(frozen=True)
class Interval:
    """Mean, sample std (ddof=1) and Student-t confidence interval of ``n`` runs; std and the
    interval are NaN below two runs, everything is NaN for none."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean ± t_{n-1} * std / sqrt(n), std with ddof=1."""
    array = np.asarray(values, dtype=float)
    n = len(array)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(array.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    std = float(array.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, n)


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float]) -> Interval:
    """``values - reference`` fold by fold, over the folds both have, as an interval."""
    folds = sorted(set(values) & set(reference))
    return mean_interval([values[fold] - reference[fold] for fold in folds])


def format_interval(interval: Interval, signed: bool = False) -> str:
    """'mean ± std [low, high]'; 'not run' without runs, 'mean (1 run)' with one."""
    sign = "+" if signed else ""
    if interval.n == 0:
        return "not run"
    if interval.n == 1:
        return f"{interval.mean:{sign}.4f} (1 run)"
    return (
        f"{interval.mean:{sign}.4f} ± {interval.std:.4f} "
        f"[{interval.ci_low:{sign}.4f}, {interval.ci_high:{sign}.4f}]"
    )


def fold_values(metrics: pl.DataFrame, metric: str) -> dict[int, float]:
    """{fold: value} of ``metric`` in rows (fold, metric, value) of one model."""
    rows = metrics.filter(pl.col("metric") == metric)
    return dict(zip(rows["fold"].to_list(), rows["value"].to_list(), strict=True))


def summary_table(metrics: pl.DataFrame, names: Sequence[str] = PAPER_METRICS) -> pl.DataFrame:
    """Per model: runs, and 'mean ± std [95% CI]' over folds (std ddof=1, Student t) per
    metric."""
    rows = []
    for model in metrics["model"].unique(maintain_order=True):
        mine = metrics.filter(pl.col("model") == model)
        row = {"model": model, "runs": mine["fold"].n_unique()}
        for name in names:
            row[name] = format_interval(
                mean_interval(mine.filter(pl.col("metric") == name)["value"])
            )
        rows.append(row)
    return pl.DataFrame(rows)


def difference_table(
    metrics: pl.DataFrame,
    reference: str = "logistic regression",
    names: Sequence[str] = ("weighted_f1", "macro_f1"),
) -> pl.DataFrame:
    """Per model, the paired difference to ``reference`` on the same folds, 'mean ± std [95%
    CI]' per metric; empty when ``reference`` has no rows."""
    baseline = metrics.filter(pl.col("model") == reference)
    if baseline.is_empty():
        return pl.DataFrame()
    rows = []
    for model in metrics["model"].unique(maintain_order=True):
        if model == reference:
            continue
        mine = metrics.filter(pl.col("model") == model)
        row = {"model": model, "paired runs": len(set(mine["fold"]) & set(baseline["fold"]))}
        for name in names:
            difference = paired_difference(fold_values(mine, name), fold_values(baseline, name))
            row[f"Δ {name} vs {reference}"] = format_interval(difference, signed=True)
        rows.append(row)
    return pl.DataFrame(rows)
