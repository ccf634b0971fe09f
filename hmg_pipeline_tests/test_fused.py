"""The fused GAT layers (hmg_pipeline.model.fused) pinned to PyG's HeteroConv(GATConv), the
reference: node embeddings, logits and every parameter's gradient on small random graphs with
the awkward cases (nodes without edges, repeated edges, self-contacts), in each architecture
setting the fused path covers; and training with either kernel ends at the same weights."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData
from torch_geometric.utils import softmax

from hmg_pipeline.core.graph import CONNECTS, REV_VIEWS, VIEWS
from hmg_pipeline.core.splits import make_splits
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.fused import CSRAggregate, FusedLayout, segment_softmax
from hmg_pipeline.model.hmg_emo import HMGEmo, InputDims
from hmg_pipeline.model.train import GraphTensors, train_fold

SMALL = {"hidden": 8, "user_proj": 16, "image_proj": 16, "comment_proj": 6}
SETTINGS = [
    {},
    {"self_term": "softmax"},
    {"use_comments": False},
    {"use_ac": False, "combine": "add"},
    {"self_term": "softmax", "use_comments": False, "skip_to_head": False},  # as written, no T
]


def random_graph(seed: int, users: int = 40, images: int = 25, views: int = 120) -> dict:
    """Edge indices and features; the last quarter of users and fifth of images have no
    user-image edge, the last user no contact either; some views repeat and some contacts are
    self-contacts."""
    g = torch.Generator().manual_seed(seed)
    source = torch.randint(0, users * 3 // 4, (views,), generator=g)
    target = torch.randint(0, images * 4 // 5, (views,), generator=g)
    source[-5:], target[-5:] = source[:5], target[:5]  # repeated edges
    view_index = torch.stack([source, target])
    contacts = torch.randint(0, users - 1, (2, 60), generator=g)
    contacts[:, :3] = torch.tensor([[2, 5, 7], [2, 5, 7]])  # self-contacts: GATConv drops them
    connects = torch.cat([contacts, contacts.flip(0)], 1)
    return {
        "edge_index": {VIEWS: view_index, REV_VIEWS: view_index.flip(0), CONNECTS: connects},
        "x": {
            "user": torch.randn(users, 12, generator=g),
            "image": torch.randn(images, 16, generator=g),
        },
        "edge_attr": {VIEWS: torch.randn(views, 10, generator=g)},
        "users": users,
        "images": images,
    }


def model_for(settings: dict, seed: int = 0) -> HMGEmo:
    torch.manual_seed(seed)
    return HMGEmo(ModelConfig(**SMALL, **settings), InputDims(12, 16, 10, 8))


def logits_and_grads(model: HMGEmo, graph: dict, layout: FusedLayout | None):
    nodes = model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], layout)
    pairs = graph["edge_index"][VIEWS][:, :50]
    torch.manual_seed(7)  # the head's dropout draws the same mask for both paths
    logits = model.classify(nodes, pairs, graph["edge_attr"][VIEWS][:50])
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(50) % 8)
    grads = torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)
    return nodes, logits, dict(zip([n for n, _ in model.named_parameters()], grads, strict=True))


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(s) or "defaults")
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_layers_match_pyg_gatconv(settings, seed):
    graph = random_graph(seed)
    model = model_for(settings, seed)
    model.train()
    layout = model.fused_layout(graph["edge_index"], graph["users"], graph["images"])
    ref_nodes, ref_logits, ref_grads = logits_and_grads(model, graph, None)
    nodes, logits, grads = logits_and_grads(model, graph, layout)
    for kind in ("user", "image"):
        torch.testing.assert_close(nodes[kind], ref_nodes[kind], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(logits, ref_logits, atol=2e-5, rtol=1e-4)
    used = [name for name, grad in ref_grads.items() if grad is not None]
    assert used, "no parameter got a gradient"
    for name in used:
        assert grads[name] is not None, name
        torch.testing.assert_close(grads[name], ref_grads[name], atol=2e-5, rtol=1e-3, msg=name)
    # the comment term must reach the fused path: its lin_edge weights get gradients
    if settings.get("use_comments", True):
        assert any("lin_edge" in name and grads[name].abs().sum() > 0 for name in used)


def test_fused_layers_change_with_a_comment():
    """A comment that only the edge term reads changes the fused embeddings (the fold of
    lin_edge into one product is not a no-op)."""
    graph = random_graph(3)
    model = model_for({}).eval()
    layout = model.fused_layout(graph["edge_index"], graph["users"], graph["images"])
    before = model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], layout)
    graph["edge_attr"][VIEWS][0] += 5.0
    after = model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], layout)
    image = graph["edge_index"][VIEWS][1, 0]
    assert not torch.allclose(before["image"][image], after["image"][image])


def test_segment_softmax_is_pygs_softmax():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(300, generator=g) * 30  # large scores: the max shift matters
    segment = torch.randint(0, 40, (300,), generator=g)  # segments 40-44 stay empty
    torch.testing.assert_close(
        segment_softmax(scores, segment, 45), softmax(scores, segment, num_nodes=45)
    )


def test_csr_aggregate_matches_a_dense_float64_reference():
    """Forward and both gradients (transposed product, sampled product) against a dense
    float64 matrix with autograd, at float32 precision."""
    graph = random_graph(4, users=9, images=6, views=20)
    layout = FusedLayout.of(graph["edge_index"], 9, 6, bipartite_loops=True)
    g = torch.Generator().manual_seed(4)
    alpha = torch.rand(layout.source.shape[0], generator=g, dtype=torch.float64)
    table = torch.randn(layout.table_rows, 3, generator=g, dtype=torch.float64)
    weights = torch.randn(15, 3, generator=g, dtype=torch.float64)
    fused_inputs = [t.float().requires_grad_(True) for t in (alpha, table)]
    out = CSRAggregate.apply(*fused_inputs, layout)
    (out.double() * weights).sum().backward()
    dense_inputs = [t.clone().requires_grad_(True) for t in (alpha, table)]
    dense = torch.zeros(15, layout.table_rows, dtype=torch.float64)
    dense = dense.index_put((layout.target, layout.source), dense_inputs[0], accumulate=True)
    expected = dense @ dense_inputs[1]
    (expected * weights).sum().backward()
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    for fused, reference in zip(fused_inputs, dense_inputs, strict=True):
        torch.testing.assert_close(fused.grad.double(), reference.grad, atol=1e-5, rtol=1e-5)


def test_layout_counts_every_edge_and_loop():
    graph = random_graph(5)
    views = graph["edge_index"][VIEWS].shape[1]
    connects = graph["edge_index"][CONNECTS]
    without_self = int((connects[0] != connects[1]).sum())
    plain = FusedLayout.of(graph["edge_index"], graph["users"], graph["images"], False)
    loops = FusedLayout.of(graph["edge_index"], graph["users"], graph["images"], True)
    assert plain.source.shape[0] == 2 * views + without_self + graph["users"]
    assert loops.source.shape[0] == plain.source.shape[0] + graph["users"] + graph["images"]
    assert int(plain.crow[-1]) == plain.source.shape[0]
    assert bool((plain.target[1:] >= plain.target[:-1]).all())  # CSR order


def test_layout_refuses_rev_views_that_are_not_views_reversed():
    graph = random_graph(6)
    graph["edge_index"][REV_VIEWS] = graph["edge_index"][REV_VIEWS][:, 1:]
    with pytest.raises(ValueError, match="rev_views to be views reversed"):
        FusedLayout.of(graph["edge_index"], graph["users"], graph["images"], False)


def test_fused_path_refuses_other_backbones():
    graph = random_graph(7)
    model = HMGEmo(
        ModelConfig(**SMALL, backbone="sage", use_comments=False), InputDims(12, 16, 10, 8)
    )
    assert not model.fusable
    layout = FusedLayout.of(graph["edge_index"], graph["users"], graph["images"], False)
    with pytest.raises(ValueError, match="fused path runs GAT layers"):
        model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], layout)


def heterodata(seed: int) -> HeteroData:
    graph = random_graph(seed, users=60, images=30, views=400)
    data = HeteroData()
    data["user"].x, data["image"].x = graph["x"]["user"], graph["x"]["image"]
    for relation in (VIEWS, REV_VIEWS, CONNECTS):
        data[relation].edge_index = graph["edge_index"][relation]
    labels = graph["edge_index"][VIEWS][0] % 8  # a label the graph can learn
    data[VIEWS].edge_attr = data[REV_VIEWS].edge_attr = graph["edge_attr"][VIEWS]
    data[VIEWS].edge_label = labels
    data.class_names = [f"c{k}" for k in range(8)]
    return data


@pytest.mark.parametrize("protocol", ["inductive", "transductive"])
def test_training_with_either_kernel_ends_at_the_same_weights(protocol):
    data = heterodata(8)
    split = make_splits(data[VIEWS].edge_label.numpy(), 1, 0, "repeated")[0]
    results = {}
    for kernels in ("fused", "pyg"):
        config = TrainConfig(epochs=2, batch_size=64, kernels=kernels, message_passing=protocol)
        results[kernels] = train_fold(
            data, ModelConfig(**SMALL), config, split, torch.device("cpu")
        )
    fused, pyg = results["fused"], results["pyg"]
    assert fused.best_epoch == pyg.best_epoch
    for name, value in pyg.state_dict.items():
        if (name.startswith("convs.") and name.endswith(".bias")) or "running_mean" in name:
            # BatchNorm cancels a layer's bias: its gradient is float noise, which Adam scales
            # up to full steps; the bias and the running mean that tracks it drift apart
            # without changing an output (the logits below)
            continue
        torch.testing.assert_close(fused.state_dict[name], value, atol=1e-4, rtol=1e-3, msg=name)
    graph = GraphTensors.of(data, torch.device("cpu"), "pyg")
    logits = []
    for result in (fused, pyg):
        model = HMGEmo(ModelConfig(**SMALL), InputDims.of(data)).eval()
        model.load_state_dict(result.state_dict)
        with torch.no_grad():
            logits.append(model.classify(graph.encode(model), graph.pairs, graph.comments))
    torch.testing.assert_close(logits[0], logits[1], atol=1e-3, rtol=1e-3)
    assert fused.test_metrics["weighted_f1"] == pytest.approx(pyg.test_metrics["weighted_f1"])


def test_graph_tensors_build_one_layout_per_self_term():
    data = heterodata(9)
    graph = GraphTensors.of(data, torch.device("cpu"))
    residual, softmax_term = model_for({}), model_for({"self_term": "softmax"})
    graph.encode(residual)
    graph.encode(residual)
    graph.encode(softmax_term)
    assert set(graph.layouts) == {False, True}
    for loops, model in ((False, residual), (True, softmax_term)):
        fresh = model.fused_layout(
            graph.edge_index, graph.x["user"].shape[0], data["image"].num_nodes
        )
        assert torch.equal(graph.layouts[loops].source, fresh.source)
        assert torch.equal(graph.layouts[loops].crow, fresh.crow)
    kept = graph.passing_only(np.arange(100))
    assert kept.kernels == "fused" and not kept.layouts  # a different graph: its own layout


def test_benchmark_yardstick_is_the_same_math():
    """bench/pyg_stack.py (plain PyG, as a user would write it) loads our weights and computes
    our logits, so the side-by-side benchmark compares like with like."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.pyg_stack import PlainPyGStack

    graph = random_graph(10)
    ours = model_for({}).eval()
    plain = PlainPyGStack(ours.config, ours.dims).eval()
    plain.load_state_dict(ours.state_dict())
    layout = ours.fused_layout(graph["edge_index"], graph["users"], graph["images"])
    pairs, comments = graph["edge_index"][VIEWS][:, :30], graph["edge_attr"][VIEWS][:30]
    with torch.no_grad():
        expected = plain(graph["x"], graph["edge_index"], graph["edge_attr"], pairs, comments)
        nodes = ours.encode(graph["x"], graph["edge_index"], graph["edge_attr"], layout)
        torch.testing.assert_close(
            ours.classify(nodes, pairs, comments), expected, atol=1e-5, rtol=1e-4
        )


def test_layout_refuses_nodes_out_of_range():
    graph = random_graph(11)
    graph["edge_index"][CONNECTS][0, 0] = graph["users"]
    with pytest.raises(ValueError, match=r"connects.*outside 0\.\.39"):
        FusedLayout.of(graph["edge_index"], graph["users"], graph["images"], False)


def test_thin_product_gradients():
    from hmg_pipeline.model.fused import ThinProduct

    g = torch.Generator().manual_seed(12)
    x, m, b = (
        torch.randn(*shape, generator=g, dtype=torch.float64) for shape in [(30, 7), (7, 3), (3,)]
    )
    for tensor in (x, m, b):
        tensor.requires_grad_(True)
    torch.testing.assert_close(ThinProduct.apply(x, m, b), x @ m + b)
    assert torch.autograd.gradcheck(ThinProduct.apply, (x, m, b))


@pytest.mark.parametrize("empty", ["views", "contacts", "both"])
def test_fused_layers_match_pyg_with_an_empty_relation(empty):
    graph = random_graph(13)
    if empty in ("views", "both"):
        none = torch.zeros(2, 0, dtype=torch.long)
        graph["edge_index"][VIEWS], graph["edge_index"][REV_VIEWS] = none, none
        graph["edge_attr"][VIEWS] = torch.zeros(0, 10)
    if empty in ("contacts", "both"):
        graph["edge_index"][CONNECTS] = torch.zeros(2, 0, dtype=torch.long)
    for settings in SETTINGS:
        model = model_for(settings).train()
        layout = model.fused_layout(graph["edge_index"], graph["users"], graph["images"])
        outputs = []
        for used in (None, layout):
            nodes = model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], used)
            loss = (nodes["user"] ** 2).sum() + (nodes["image"] ** 2).sum()
            grads = torch.autograd.grad(loss, list(model.convs.parameters()), allow_unused=True)
            outputs.append((nodes, grads))
        (ref, ref_grads), (fused, fused_grads) = outputs
        for kind in ("user", "image"):
            torch.testing.assert_close(fused[kind], ref[kind], atol=2e-5, rtol=1e-4)
        for a, b in zip(fused_grads, ref_grads, strict=True):
            if b is not None:
                torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-3)


def test_fused_layers_under_bf16_autocast_keep_attention_in_float32():
    """Under autocast (HMG_AMP on CUDA; CPU here) the fused path runs and stays within bf16
    rounding of its float32 result."""
    graph = random_graph(14)
    model = model_for({}).eval()
    layout = model.fused_layout(graph["edge_index"], graph["users"], graph["images"])
    with torch.no_grad():
        exact = model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], layout)
        with torch.autocast("cpu", torch.bfloat16):
            rounded = model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], layout)
    for kind in ("user", "image"):
        error = (rounded[kind].float() - exact[kind]).abs().max() / exact[kind].abs().max()
        assert error < 0.05, (kind, float(error))


def test_a_layout_of_another_graph_or_self_term_is_refused():
    graph = random_graph(15)
    model = model_for({})
    fewer = {**graph["edge_index"]}
    fewer[VIEWS] = graph["edge_index"][VIEWS][:, :100]
    fewer[REV_VIEWS] = fewer[VIEWS].flip(0)
    stale = model.fused_layout(fewer, graph["users"], graph["images"])
    with pytest.raises(ValueError, match="build it from this graph"):
        model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], stale)
    other_term = FusedLayout.of(graph["edge_index"], graph["users"], graph["images"], True)
    with pytest.raises(ValueError, match="build it from this graph"):
        model.encode(graph["x"], graph["edge_index"], graph["edge_attr"], other_term)
