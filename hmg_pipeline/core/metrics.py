"""The paper's metrics (weighted F1, precision, recall) and the usual extras, via scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

PAPER_METRICS = ("weighted_f1", "weighted_precision", "weighted_recall")


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


def summary_table(metrics: pl.DataFrame, names: Sequence[str] = PAPER_METRICS) -> pl.DataFrame:
    """Mean and std over folds per model, as 'mean +- std' strings, one column per metric."""
    rows = []
    for model in metrics["model"].unique(maintain_order=True):
        row = {"model": model}
        for name in names:
            values = metrics.filter((pl.col("model") == model) & (pl.col("metric") == name))
            vals = values["value"].to_numpy()
            row[name] = f"{vals.mean():.4f} ± {vals.std(ddof=0):.4f}" if len(vals) else "-"
        rows.append(row)
    return pl.DataFrame(rows)
