"""Evaluation protocols and Eq. 3: held-out labels never reach training (leak guard), the
inductive protocol keeps held-out edges out of message passing, and the self term of Eq. 3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.nn import GATConv

from hmg_pipeline.core.graph import VIEWS
from hmg_pipeline.core.splits import Split, stratified_split
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.hmg_emo import BipartiteSelfLoopGAT
from hmg_pipeline.model.train import GraphTensors, ProtocolGraphs, train_fold

from .test_graph_model import separable_graph

CPU = torch.device("cpu")
MODEL = ModelConfig(num_layers=2)


def train(data, split: Split, protocol: str, **model):
    config = TrainConfig(epochs=6, lr=0.01, batch_size=32, message_passing=protocol)
    return train_fold(data, MODEL.model_copy(update=model), config, split, CPU)


def with_labels(data, labels: torch.Tensor):
    copy = data.clone()
    copy[VIEWS].edge_label = labels
    return copy


def permuted(labels: torch.Tensor, index: np.ndarray, seed: int = 1) -> torch.Tensor:
    shuffled = labels.clone()
    order = np.random.default_rng(seed).permutation(index)
    shuffled[torch.as_tensor(index)] = labels[torch.as_tensor(order)]
    assert not torch.equal(shuffled, labels)
    return shuffled


@pytest.mark.parametrize(
    ("protocol", "self_term"), [("transductive", "residual"), ("inductive", "softmax")]
)
def test_leak_guard_held_out_labels_never_reach_training(protocol: str, self_term: str) -> None:
    data = separable_graph()
    labels = data[VIEWS].edge_label
    split = stratified_split(labels.numpy(), seed=0)
    base = train(data, split, protocol, self_term=self_term)

    held_out = np.concatenate([split.val, split.test])
    shuffled_data = with_labels(data, permuted(labels, held_out))
    shuffled = train(shuffled_data, split, protocol, self_term=self_term)
    assert [h.loss for h in shuffled.history] == [h.loss for h in base.history]

    # Test labels only: model selection (on validation) is blind to them, so the kept weights
    # and epoch are bit-identical too.
    test_only = train(
        with_labels(data, permuted(labels, split.test)), split, protocol, self_term=self_term
    )
    assert test_only.best_epoch == base.best_epoch
    for name, tensor in base.state_dict.items():
        assert torch.equal(tensor, test_only.state_dict[name]), name


def with_comments(data, index: np.ndarray, seed: int = 2):
    copy = data.clone()
    attr = copy[VIEWS].edge_attr.clone()
    attr[torch.as_tensor(index)] = torch.from_numpy(
        np.random.default_rng(seed).normal(size=(len(index), attr.shape[1])).astype(np.float32)
    )
    copy[VIEWS].edge_attr = attr
    return copy


def test_inductive_keeps_held_out_edges_out_of_training() -> None:
    data = separable_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    held_out = np.concatenate([split.val, split.test])
    changed = with_comments(data, held_out)
    inductive = [train(d, split, "inductive").history for d in (data, changed)]
    assert [h.loss for h in inductive[0]] == [h.loss for h in inductive[1]]
    # the same change does reach training transductively: the test above can fail
    transductive = [train(d, split, "transductive").history for d in (data, changed)]
    assert [h.loss for h in transductive[0]] != [h.loss for h in transductive[1]]


def test_protocol_graphs_follow_random_link_split_semantics() -> None:
    data = separable_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    graph = GraphTensors.of(data, CPU)
    graphs = ProtocolGraphs.of(graph, split, "inductive")
    n_edges = data[VIEWS].num_edges

    def passing(g: GraphTensors) -> set[tuple[int, int]]:
        return set(map(tuple, g.edge_index[VIEWS].T.tolist()))

    pairs = [tuple(p) for p in graph.pairs.T.tolist()]
    assert passing(graphs.train) == passing(graphs.val) == {pairs[e] for e in split.train}
    assert passing(graphs.test) == {pairs[e] for e in np.concatenate([split.train, split.val])}
    for g in (graphs.train, graphs.test):
        assert torch.equal(
            g.edge_index[VIEWS].flip(0), g.edge_index[("image", "rev_views", "user")]
        )
        assert g.edge_attr[VIEWS].shape[0] == g.edge_index[VIEWS].shape[1]
        assert g.pairs.shape[1] == n_edges  # supervision and scoring index every edge
    same = ProtocolGraphs.of(graph, split, "transductive")
    assert same.train is same.val is same.test is graph
    with pytest.raises(ValueError, match="transductive or inductive"):
        ProtocolGraphs.of(graph, split, "semi")


def single_edge_outputs(conv, comments: list[torch.Tensor]) -> list[torch.Tensor]:
    torch.manual_seed(0)
    x_src, x_dst = torch.randn(3, 8), torch.randn(2, 8)
    edge_index = torch.tensor([[0, 1, 2], [0, 0, 1]])  # image 1 has a single viewer
    outputs = []
    with torch.no_grad():
        for comment in comments:
            attr = torch.zeros(3, 4)
            attr[2] = comment
            outputs.append(conv((x_src, x_dst), edge_index, attr)[1])
    return outputs


def test_eq3_self_term_lets_a_single_edge_comment_count() -> None:
    comments = [torch.zeros(4), torch.ones(4) * 3]
    torch.manual_seed(0)
    paper = BipartiteSelfLoopGAT(8, 6, edge_dim=4)
    with_self = single_edge_outputs(paper, comments)
    assert not torch.allclose(with_self[0], with_self[1])
    # without the self term (the residual setting) the one edge gets attention 1: its comment
    # cannot change anything
    torch.manual_seed(0)
    residual = GATConv((8, 8), 6, edge_dim=4, add_self_loops=False, residual=True)
    without_self = single_edge_outputs(residual, comments)
    assert torch.allclose(without_self[0], without_self[1])


def test_eq3_self_term_attention_includes_the_node_itself() -> None:
    torch.manual_seed(0)
    conv = BipartiteSelfLoopGAT(8, 6, edge_dim=4)
    x_src, x_dst = torch.randn(3, 8), torch.randn(2, 8)
    edge_index = torch.tensor([[0, 1, 2], [0, 0, 1]])
    attr = torch.randn(3, 4)
    with torch.no_grad():
        out = conv((x_src, x_dst), edge_index, attr)
        # by hand: sources are [x_src; x_dst], self edges 3 -> 0 and 4 -> 1 with zero comments
        self_attr = torch.zeros(2, 4)
        expected = conv.conv(
            (torch.cat([x_src, x_dst]), x_dst),
            torch.tensor([[0, 1, 2, 3, 4], [0, 0, 1, 0, 1]]),
            torch.cat([attr, self_attr]),
        )
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="user_proj = image_proj"):
        conv((torch.randn(3, 5), x_dst), edge_index, attr)


@pytest.mark.parametrize("architecture", ["hmg_emo", "comments_only"])
def test_every_architecture_trains_in_the_inductive_protocol(architecture: str) -> None:
    data = separable_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    result = train(data, split, "inductive", architecture=architecture)
    assert len(result.history) == 6 and 0.0 <= result.test_metrics["weighted_f1"] <= 1.0
