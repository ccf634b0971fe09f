"""Settings that make a run the paper as written, or say where it is not: user nodes, Table V's
negatives, the comment term with backbones that cannot use it, the head's skip inputs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from hmg_pipeline.core.graph import VIEWS, NonEdgeSampler, node_users
from hmg_pipeline.core.splits import stratified_split
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.hmg_emo import HMGEmo, InputDims
from hmg_pipeline.model.train import GraphTensors, train_fold

from .test_graph_model import make_graph, separable_graph

USERS = pl.DataFrame(
    {
        "user_id": ["viewer", "uploader", "both", "contact_only", "member_only"],
        "in_views": [True, False, True, False, False],
        "in_contacts": [False, False, True, True, False],
        "in_groups": [False, False, False, False, True],
        "in_users_table": [False] * 5,
        "in_images": [False, True, True, False, False],
    }
)


def test_user_nodes_are_the_papers_uploaders_and_viewers_by_default() -> None:
    paper = node_users(USERS, "uploaders_and_viewers")["user_id"].to_list()
    assert paper == ["viewer", "uploader", "both"]
    assert node_users(USERS, "all_known").height == USERS.height
    with pytest.raises(ValueError, match="uploaders_and_viewers or all_known"):
        node_users(USERS, "everyone")


def test_negatives_are_drawn_from_viewers_only_when_asked() -> None:
    edge_index = np.array([[0, 0, 1, 2], [0, 1, 1, 2]])
    viewers = NonEdgeSampler(edge_index, 10, 4, users=np.unique(edge_index[0]))
    drawn = viewers.sample(np.random.default_rng(0), 500)
    assert set(drawn[0]) <= {0, 1, 2}
    existing = set(map(tuple, edge_index.T.tolist()))
    assert not existing & set(map(tuple, drawn.T.tolist()))
    everyone = NonEdgeSampler(edge_index, 10, 4).sample(np.random.default_rng(0), 500)
    assert set(everyone[0]) - {0, 1, 2}  # users without views appear
    with pytest.raises(ValueError, match="no negative"):
        NonEdgeSampler(np.array([[0, 0], [0, 1]]), 5, 2, users=np.array([0]))


def test_training_negatives_avoid_only_the_edges_training_sees() -> None:
    """Inductive (RandomLinkSplit): a held-out edge is unknown to training, so a training
    negative may be that pair; test non-edges avoid every edge."""
    from hmg_pipeline.model.train import negative_sampler

    data = separable_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    model = ModelConfig(use_comments=False, extra_classes=1)
    train = TrainConfig(negative_sampling=True)
    images = data["image"].num_nodes
    codes = lambda index: set((index[0] * images + index[1]).tolist())  # noqa: E731
    edges = data[VIEWS].edge_index.numpy()
    seen = negative_sampler(data, model, train, split.train)
    every = negative_sampler(data, model, train)
    held_out = codes(edges[:, np.concatenate([split.val, split.test])])
    assert set(seen.existing.tolist()) == codes(edges[:, split.train])  # type: ignore[union-attr]
    assert held_out <= set(every.existing.tolist())  # type: ignore[union-attr]
    drawn = codes(seen.sample(np.random.default_rng(0), 20_000))  # type: ignore[union-attr]
    assert drawn & held_out  # held-out pairs can be drawn as training negatives
    assert not drawn & codes(edges[:, split.train])


def test_negative_sampling_scores_test_non_edges_as_a_ninth_class() -> None:
    data = separable_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    result = train_fold(
        data,
        ModelConfig(num_layers=2, use_comments=False, use_ac=False, extra_classes=1),
        TrainConfig(epochs=3, batch_size=64, negative_sampling=True),
        split,
        torch.device("cpu"),
    )
    metrics = result.test_metrics
    assert {"weighted_f1", "none_predicted_share", "nine_class_weighted_f1"} <= set(metrics)
    assert "nine_class_f1_none" in metrics
    assert 0.0 <= metrics["nine_class_weighted_f1"] <= 1.0


@pytest.mark.parametrize("backbone", ["sage", "graphconv"])
def test_comment_term_with_a_backbone_that_cannot_use_it_is_an_error(backbone: str) -> None:
    data, _ = make_graph()
    with pytest.raises(ValueError, match="cannot use edge features"):
        HMGEmo(ModelConfig(backbone=backbone, use_comments=True), InputDims.of(data))


def test_skip_to_head_sees_the_edges_own_comment() -> None:
    data, _ = make_graph()
    torch.manual_seed(0)
    model = HMGEmo(ModelConfig(num_layers=2, skip_to_head=True), InputDims.of(data)).eval()
    graph = GraphTensors.of(data, torch.device("cpu"))
    with torch.no_grad():
        nodes = model.encode(graph.x, graph.edge_index, graph.edge_attr)
        own = model.classify(nodes, graph.pairs, graph.comments)
        other = model.classify(nodes, graph.pairs, torch.zeros_like(graph.comments))
    assert own.shape == (graph.pairs.shape[1], 8)
    assert not torch.allclose(own, other)  # the head reads the comment directly


def test_a_bundle_written_before_these_settings_loads_as_it_was_trained() -> None:
    from hmg_pipeline.model.predict import model_bundle, trained_model_from_bundle

    data, _ = make_graph()
    dims = InputDims.of(data)
    earlier = ModelConfig(self_term="residual", skip_to_head=False)
    model = HMGEmo(earlier, dims)
    bundle = model_bundle(
        model.state_dict(), earlier, dims, TrainConfig(), 0, {}, data.class_names, np.arange(2)
    )
    for key in ("self_term", "skip_to_head"):
        del bundle["model_config"][key]
    del bundle["train_config"]["message_passing"]
    trained = trained_model_from_bundle(bundle)  # today's defaults would not fit these weights
    assert trained.model_config.skip_to_head is False
    assert trained.train_config.message_passing == "transductive"


def test_baselines_are_computed_once_per_features_and_split(monkeypatch) -> None:
    from hmg_pipeline.model import train

    calls = []
    original = train.logistic_regression_baseline

    def counting(data, split, features=None):
        calls.append(split.fold)
        return original(data, split, features)

    monkeypatch.setattr(train, "logistic_regression_baseline", counting)
    monkeypatch.setattr(train, "_BASELINES", {})
    data = separable_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    first = train.baseline_rows(data, split)
    assert train.baseline_rows(data, split) == first and len(calls) == 1
    changed = data.clone()
    changed[VIEWS].edge_attr = changed[VIEWS].edge_attr + 1.0  # other features: computed again
    train.baseline_rows(changed, split)
    assert len(calls) == 2
    assert {row["model"] for row in first} == {"majority class", "logistic regression"}
