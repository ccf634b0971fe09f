"""The graph must pay, and never cost: on generated graphs (hmg_pipeline.testing.structure),
HMG-Emo with the default settings beats the logistic regression on the edge's own features
where the label lives in the graph, and does not fall below it where most of the signal is
local. Both models train on the same split; the numbers are BENCHMARKS.md's, at a smaller
scale (bench/structure.py runs the full one)."""

from __future__ import annotations

from dataclasses import replace

import torch

from hmg_pipeline.core.graph import VIEWS
from hmg_pipeline.core.splits import stratified_split
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.train import logistic_regression_baseline, train_fold
from hmg_pipeline.testing.structure import GRAPH_ONLY, MOSTLY_LOCAL, structure_graph

SMALL = {"users": 400, "images": 250, "views_per_user": 6}


def scores(spec) -> tuple[float, float]:
    data = structure_graph(replace(spec, **SMALL))
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    model = train_fold(
        data, ModelConfig(), TrainConfig(epochs=15), split, torch.device("cpu")
    ).test_metrics["weighted_f1"]
    return model, logistic_regression_baseline(data, split)["weighted_f1"]


def test_the_graph_pays_where_the_label_lives_in_the_graph() -> None:
    model, edge_local = scores(GRAPH_ONLY)
    assert model > edge_local + 0.15, (model, edge_local)


def test_the_graph_never_costs_where_the_signal_is_local() -> None:
    model, edge_local = scores(MOSTLY_LOCAL)
    assert model >= edge_local - 0.02, (model, edge_local)
