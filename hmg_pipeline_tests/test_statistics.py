"""Statistics over runs (sample std, Student-t intervals, paired differences), stratified
k-fold, and the trained model's cross-validated numbers beside the kept fold's."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
from scipy import stats

from hmg_pipeline.core import plots
from hmg_pipeline.core.graph import VIEWS
from hmg_pipeline.core.metrics import (
    difference_table,
    format_interval,
    mean_interval,
    paired_difference,
    summary_table,
)
from hmg_pipeline.core.splits import Split, fold_splits, kfold_splits, make_splits
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.reports import cross_validated_numbers, kept_and_cross_validated
from hmg_pipeline.model.train import CrossValidation, FoldResult, cross_validate, metric_rows

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


# -- mean, std, interval ---------------------------------------------------------------------


def test_std_is_the_sample_std_and_the_interval_student_t() -> None:
    values = [0.52, 0.61, 0.47, 0.70]
    interval = mean_interval(values)
    assert interval.n == 4
    assert interval.mean == pytest.approx(np.mean(values))
    assert interval.std == pytest.approx(np.std(values, ddof=1))
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (interval.ci_low, interval.ci_high) == pytest.approx((low, high))
    three = mean_interval([0.4, 0.5, 0.9])
    half = T_975_DF2 * np.std([0.4, 0.5, 0.9], ddof=1) / math.sqrt(3)
    assert (three.ci_low, three.ci_high) == pytest.approx((0.6 - half, 0.6 + half))


def test_fewer_than_two_runs_have_no_spread() -> None:
    assert format_interval(mean_interval([])) == "not run"
    one = mean_interval([0.3])
    assert one.mean == 0.3 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert format_interval(one) == "0.3000 (1 run)"


def test_summary_table_uses_ddof_1_and_shows_the_interval() -> None:
    frame = pl.DataFrame(
        {
            "model": ["m", "m"],
            "fold": [0, 1],
            "metric": ["weighted_f1", "weighted_f1"],
            "value": [0.5, 0.7],
        }
    )
    row = summary_table(frame, ("weighted_f1",)).row(0, named=True)
    low, high = stats.t.interval(0.95, 1, loc=0.6, scale=stats.sem([0.5, 0.7]))
    assert row["runs"] == 2
    assert (
        row["weighted_f1"] == f"0.6000 ± {np.std([0.5, 0.7], ddof=1):.4f} [{low:.4f}, {high:.4f}]"
    )


# -- paired differences ----------------------------------------------------------------------


def hand_made_metrics() -> pl.DataFrame:
    """Model A beats the LR by 0.1, 0.2, 0.3 on folds 0-2; fold 3 has no LR row."""
    rows = [
        ("A", 0, 0.6),
        ("A", 1, 0.5),
        ("A", 2, 0.9),
        ("A", 3, 0.1),
        ("logistic regression", 0, 0.5),
        ("logistic regression", 1, 0.3),
        ("logistic regression", 2, 0.6),
    ]
    return pl.DataFrame(
        [
            {"model": m, "fold": f, "metric": metric, "value": v}
            for m, f, v in rows
            for metric in ("weighted_f1", "macro_f1")
        ]
    )


def test_paired_differences_pair_runs_by_fold() -> None:
    metrics = hand_made_metrics()
    difference = paired_difference(
        {0: 0.6, 1: 0.5, 2: 0.9, 3: 0.1}, {0: 0.5, 1: 0.3, 2: 0.6}
    )  # fold 3 has no partner: left out
    assert difference.n == 3
    assert difference.mean == pytest.approx(0.2) and difference.std == pytest.approx(0.1)
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert (difference.ci_low, difference.ci_high) == pytest.approx((0.2 - half, 0.2 + half))
    table = difference_table(metrics)
    assert table["model"].to_list() == ["A"] and table["paired runs"].to_list() == [3]
    cell = table["Δ weighted_f1 vs logistic regression"].item()
    assert cell == f"+0.2000 ± 0.1000 [{0.2 - half:+.4f}, {0.2 + half:+.4f}]"
    assert difference_table(metrics.filter(pl.col("model") == "A")).is_empty()


# -- k-fold ----------------------------------------------------------------------------------


def test_kfold_test_sets_are_disjoint_cover_every_edge_and_are_stratified() -> None:
    counts = [103, 50, 21, 7, 5]
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(5), counts))
    splits = kfold_splits(labels, 5, seed=3)
    tests = np.concatenate([split.test for split in splits])
    assert len(tests) == len(labels) and set(tests) == set(range(len(labels)))  # disjoint cover
    for split in splits:
        parts = [set(split.train), set(split.val), set(split.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert sum(map(len, parts)) == len(labels)
        assert np.array_equal(split.val, splits[(split.fold + 1) % 5].test)  # the next fold
        for label, count in enumerate(counts):
            assert np.sum(labels[split.test] == label) in {count // 5, -(-count // 5)}
    assert all(
        np.array_equal(a.test, b.test)
        for a, b in zip(splits, kfold_splits(labels, 5, seed=3), strict=True)
    )
    assert not np.array_equal(splits[0].test, kfold_splits(labels, 5, seed=4)[0].test)


def test_make_splits_dispatches_and_keeps_the_too_few_edges_error() -> None:
    labels = np.repeat(np.arange(3), 20)
    repeated = make_splits(labels, 3, 0, "repeated")
    assert all(
        np.array_equal(a.test, b.test)
        for a, b in zip(repeated, fold_splits(labels, 3, 0), strict=True)
    )
    kfold = make_splits(labels, 4, 0, "kfold")
    assert len(kfold) == 4 and sum(len(s.test) for s in kfold) == len(labels)
    with pytest.raises(ValueError, match=r"too few labelled edges to split into 3 folds: .*"):
        make_splits(np.array([0, 1]), 3, 0, "kfold")
    with pytest.raises(ValueError, match="k >= 3"):
        make_splits(labels, 2, 0, "kfold")
    with pytest.raises(ValueError, match="repeated or kfold"):
        make_splits(labels, 3, 0, "bootstrap")


def test_cross_validate_follows_the_split_scheme() -> None:
    from .test_experiments import small_graph

    data = small_graph()
    config = TrainConfig(epochs=1, folds=3, split="kfold")
    result = cross_validate(data, ModelConfig(num_layers=1), config, torch.device("cpu"))
    tests = np.concatenate([fold.split.test for fold in result.folds])
    assert sorted(tests) == list(range(data[VIEWS].num_edges))  # k-fold: each edge tested once


# -- plots and the trained model's metadata --------------------------------------------------


def test_error_bars_are_sample_std(monkeypatch) -> None:
    recorded = []
    original = plots.plt.Axes.bar

    def recording_bar(self, x, height, *args, yerr=None, **kwargs):
        recorded.append(list(yerr))
        return original(self, x, height, *args, yerr=yerr, **kwargs)

    monkeypatch.setattr(plots.plt.Axes, "bar", recording_bar)
    png = plots.grouped_bars({"Table II": [("a", [0.5, 0.7], 0.77), ("b", [0.4], None)]})
    assert png.startswith(b"\x89PNG")
    assert recorded == [[pytest.approx(np.std([0.5, 0.7], ddof=1)), 0.0]]


def fake_fold(fold: int, val_f1: float, test_f1: float) -> FoldResult:
    split = Split(fold, fold, np.arange(2), np.arange(2, 3), np.arange(3, 4))
    metrics = {"weighted_f1": test_f1, "macro_f1": test_f1 / 2}
    return FoldResult(fold, 1, val_f1, {}, [], metrics, np.zeros((2, 2)), split)


def test_trained_model_reports_the_cross_validated_mean_beside_the_kept_fold() -> None:
    folds = [fake_fold(0, 0.3, 0.50), fake_fold(1, 0.9, 0.60), fake_fold(2, 0.5, 0.70)]
    rows = [row for fold in folds for row in metric_rows("HMG-Emo", fold.fold, fold.test_metrics)]
    rows += metric_rows("logistic regression", 0, {"weighted_f1": 0.99, "macro_f1": 0.99})
    result = CrossValidation(folds, rows)
    table = kept_and_cross_validated(result)
    f1 = table.filter(pl.col("metric") == "weighted_f1").row(0, named=True)
    assert f1["kept fold 1 (test)"] == "0.6000"  # the best validation F1, not the best test
    assert f1["cross-validated (all runs)"] == format_interval(mean_interval([0.5, 0.6, 0.7]))
    numbers = cross_validated_numbers(result)
    assert numbers["cv_runs"] == 3
    assert numbers["cv_weighted_f1_mean"] == pytest.approx(0.6)
    assert numbers["cv_weighted_f1_std"] == pytest.approx(0.1)
    assert numbers["cv_weighted_f1_ci95_high"] == pytest.approx(
        round(0.6 + T_975_DF2 * 0.1 / math.sqrt(3), 4)
    )
