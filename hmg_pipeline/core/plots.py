"""PNG plots for the reports: training curves and the confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def training_curves(histories: dict[int, Sequence]) -> bytes:
    """Loss and validation weighted F1 per epoch, one line per fold."""
    figure, (loss_axis, f1_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    for fold, history in histories.items():
        epochs = [h.epoch for h in history]
        loss_axis.plot(epochs, [h.loss for h in history], label=f"fold {fold}")
        f1_axis.plot(epochs, [h.val_weighted_f1 for h in history], label=f"fold {fold}")
    loss_axis.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    f1_axis.set(title="validation weighted F1", xlabel="epoch", ylabel="weighted F1")
    for axis in (loss_axis, f1_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    return _png(figure)


def confusion_matrix_plot(matrix: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """Row-normalised confusion matrix with counts."""
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    figure, axis = plt.subplots(figsize=(6.4, 5.6))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axis.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if shares[i, j] > 0.5 else "black",
                fontsize=8,
            )
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _png(figure)


def grouped_bars(
    groups: dict[str, list[tuple[str, Sequence[float], float | None]]],
    metric: str = "test weighted F1",
) -> bytes:
    """One panel per group (a paper table): a bar per row with its mean over runs and a sample
    std (ddof=1) error bar, and the paper's reported mean (when given) as a black tick."""
    groups = {name: rows for name, rows in groups.items() if rows}
    figure, axes = plt.subplots(
        1,
        max(len(groups), 1),
        figsize=(3.4 * max(len(groups), 1), 3.8),
        squeeze=False,
        sharey=True,
    )
    for axis, (name, rows) in zip(axes[0], groups.items(), strict=False):
        values = [np.asarray(runs, dtype=float) for _, runs, _ in rows]
        stds = [float(v.std(ddof=1)) if len(v) > 1 else 0.0 for v in values]
        axis.bar(
            range(len(rows)),
            [float(v.mean()) for v in values],
            yerr=stds,
            capsize=4,
            color="#4c72b0",
            label="this pipeline",
        )
        paper = [(k, mean) for k, (_, _, mean) in enumerate(rows) if mean is not None]
        if paper:
            axis.scatter(*zip(*paper, strict=True), marker="_", s=400, color="black", zorder=3)
            axis.scatter([], [], marker="_", color="black", label="paper (reported)")
            axis.legend(fontsize=7, loc="upper right")
        axis.set_xticks(
            range(len(rows)), [label for label, _, _ in rows], rotation=30, ha="right", fontsize=8
        )
        axis.set(title=name, ylim=(0, 1))
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (mean ± std, ddof=1)")
    return _png(figure)
