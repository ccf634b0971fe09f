"""Graph building, the HMG-Emo model, training, splits and metrics; and +trained_model through
Dagster on a tiny dataset."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score
from torch.nn import functional as F

from hmg_pipeline.core.graph import CONNECTS, REV_VIEWS, VIEWS, build_hetero_graph
from hmg_pipeline.core.metrics import classification_metrics
from hmg_pipeline.core.schema import MIKELS_EMOTIONS
from hmg_pipeline.core.splits import fold_splits, stratified_split
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.hmg_emo import HMGEmo, InputDims
from hmg_pipeline.model.train import GraphTensors, train_fold

from .helpers import TinyDataset, view, write_csv


def vectors(rows: int, dim: int, seed: int) -> pl.Series:
    values = np.random.default_rng(seed).random((rows, dim), dtype=np.float32)
    return pl.Series("vector", values).cast(pl.Array(pl.Float32, dim))


def make_graph(
    n_users: int = 6,
    n_images: int = 4,
    edges: list[tuple[int, int, str]] | None = None,
    contacts: list[tuple[int, int]] | None = None,
    image_x: np.ndarray | None = None,
    seed: int = 0,
):
    users = [f"u{i}" for i in range(n_users)]
    images = [f"i{i}" for i in range(n_images)]
    edges = edges or [
        (0, 0, "awe"),
        (1, 0, "fear"),
        (2, 1, "awe"),
        (3, 2, "sadness"),
        (0, 3, "fear"),
    ]
    contacts = contacts if contacts is not None else [(0, 1), (1, 2), (4, 5)]
    edge_frame = pl.DataFrame(
        {
            "user_id": [users[u] for u, _, _ in edges],
            "image_id": [images[i] for _, i, _ in edges],
            "emotion": [e for _, _, e in edges],
        }
    )
    image_frame = pl.DataFrame({"image_id": images})
    image_frame = image_frame.with_columns(
        vectors(n_images, 5, seed + 1)
        if image_x is None
        else pl.Series("vector", image_x.astype(np.float32)).cast(
            pl.Array(pl.Float32, image_x.shape[1])
        )
    )
    return build_hetero_graph(
        users=pl.DataFrame({"user_id": users}),
        user_context=pl.DataFrame({"user_id": users}).with_columns(vectors(n_users, 3, seed)),
        image_embeddings=image_frame,
        edges=edge_frame,
        comment_embeddings=edge_frame.select("user_id", "image_id").with_columns(
            pl.Series("has_comment", [k % 2 == 0 for k in range(len(edges))]),
            vectors(len(edges), 4, seed + 2),
        ),
        contacts=pl.DataFrame(
            {
                "user_id": [users[a] for a, _ in contacts],
                "contact_id": [users[b] for _, b in contacts],
            },
            schema={"user_id": pl.String, "contact_id": pl.String},
        ),
    )


def test_graph_counts_reverse_edges_and_attributes() -> None:
    data, stats = make_graph()
    assert (stats.user_nodes, stats.image_nodes) == (6, 4)  # u4, u5: contacts only
    assert (stats.user_image_edges, stats.user_user_edges) == (5, 3)
    assert data[VIEWS].edge_index.shape == (2, 5)
    assert torch.equal(data[REV_VIEWS].edge_index, data[VIEWS].edge_index.flip(0))
    assert data[CONNECTS].edge_index.shape == (2, 6)  # both directions
    assert data[VIEWS].edge_attr.shape == (5, 4) and data[REV_VIEWS].edge_attr.shape == (5, 4)
    assert "edge_attr" not in data[CONNECTS] and "edge_label" not in data[REV_VIEWS]
    labels = data[VIEWS].edge_label.tolist()
    assert [MIKELS_EMOTIONS[i] for i in labels] == ["awe", "fear", "awe", "sadness", "fear"]
    assert data.validate()


def test_graph_leaves_out_edges_of_unreadable_images() -> None:
    users = pl.DataFrame({"user_id": [f"u{i}" for i in range(6)]})
    edges = pl.DataFrame(
        {"user_id": ["u0", "u1"], "image_id": ["i0", "gone"], "emotion": ["awe"] * 2}
    )
    _, stats = build_hetero_graph(
        users,
        users.with_columns(vectors(6, 3, 0)),
        pl.DataFrame({"image_id": ["i0"]}).with_columns(vectors(1, 5, 0)),
        edges,
        edges.select("user_id", "image_id").with_columns(
            pl.Series("has_comment", [True, False]), vectors(2, 4, 0)
        ),
        pl.DataFrame({"user_id": ["u0"], "contact_id": ["u1"]}),
    )
    assert stats.user_image_edges == 1 and stats.dropped_image_unreadable == 1


def test_graph_refuses_to_be_built_without_an_edge() -> None:
    users = pl.DataFrame({"user_id": ["u0", "u1"]})
    edges = pl.DataFrame(
        {"user_id": ["u0", "u1"], "image_id": ["i9", "i9"], "emotion": ["awe"] * 2}
    )
    comments = edges.select("user_id", "image_id").with_columns(
        pl.Series("has_comment", [True, False]), vectors(2, 4, 0)
    )
    arguments = {
        "users": users,
        "user_context": users.with_columns(vectors(2, 3, 0)),
        "image_embeddings": pl.DataFrame({"image_id": ["i0"]}).with_columns(vectors(1, 5, 0)),
        "contacts": pl.DataFrame(schema={"user_id": pl.String, "contact_id": pl.String}),
    }
    with pytest.raises(ValueError, match="the images of all 2 clean edges are unreadable"):
        build_hetero_graph(**arguments, edges=edges, comment_embeddings=comments)
    with pytest.raises(ValueError, match="no clean user-image edge"):
        build_hetero_graph(**arguments, edges=edges.head(0), comment_embeddings=comments.head(0))


@pytest.mark.parametrize("labels", [[0, 1], [0, 0, 1, 1], [0, 1, 2, 0, 1, 2]])
def test_too_few_edges_to_split_is_a_clear_error(labels: list[int]) -> None:
    with pytest.raises(ValueError, match=r"too few labelled edges to split 80:10:10: .* empty"):
        fold_splits(np.array(labels), 3, base_seed=0)


def model_for(data, **settings) -> HMGEmo:
    torch.manual_seed(0)
    return HMGEmo(ModelConfig(**settings), InputDims.of(data)).eval()


def logits(model: HMGEmo, data) -> torch.Tensor:
    g = GraphTensors.of(data, torch.device("cpu"))
    with torch.no_grad():
        return model(g.x, g.edge_index, g.edge_attr, g.pairs)


@pytest.mark.parametrize("backbone", ["gat", "sage", "graphconv"])
def test_every_backbone_gives_one_logit_row_per_edge(backbone: str) -> None:
    data, _ = make_graph()
    out = logits(model_for(data, backbone=backbone, use_comments=backbone == "gat"), data)
    assert out.shape == (5, len(MIKELS_EMOTIONS)) and torch.isfinite(out).all()


def test_comment_edge_term_changes_that_edges_attention() -> None:
    data, _ = make_graph()
    model = model_for(data)
    conv = model.convs[0].convs[VIEWS]
    x_user = model.user_proj(data["user"].x)
    x_image = model.image_proj(data["image"].x)
    edge_index = data[VIEWS].edge_index

    def attention(edge_attr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            _, (_, alpha) = conv(
                (x_user, x_image),
                edge_index,
                edge_attr=model.comment_proj(edge_attr),
                return_attention_weights=True,
            )
        return alpha.squeeze(-1)

    before = attention(data[VIEWS].edge_attr)
    changed = data[VIEWS].edge_attr.clone()
    changed[0] += 5.0  # edge 0: u0 -> i0, which i0 shares with edge 1 (u1 -> i0)
    after = attention(changed)
    assert not torch.isclose(before[0], after[0])
    assert torch.allclose(before[2:4], after[2:4])  # edges into other images are untouched


def test_variants_switch_the_right_parts_off() -> None:
    data, _ = make_graph()
    no_text = model_for(data, use_comments=False, use_ac=False)
    assert all(conv.lin_edge is None for conv in no_text.convs[0].convs.values())
    changed = data.clone()
    changed[VIEWS].edge_attr = changed[VIEWS].edge_attr + 3.0
    changed[REV_VIEWS].edge_attr = changed[VIEWS].edge_attr
    assert torch.allclose(logits(no_text, data), logits(no_text, changed))
    with_text = model_for(data)
    assert not torch.allclose(logits(with_text, data), logits(with_text, changed))
    # Without AC, the beta weights play no part.
    before = logits(no_text, data)
    with torch.no_grad():
        no_text.w_u.weight.add_(10.0)
    assert torch.allclose(before, logits(no_text, data))


def test_beta_follows_eq5_on_fixed_weights() -> None:
    data, _ = make_graph()
    model = model_for(data, beta_activation="exp")
    with torch.no_grad():
        model.w_u.weight.fill_(0.1)
        model.w_u.bias.fill_(0.0)
        model.w_i.weight.fill_(-0.2)
        model.w_i.bias.fill_(0.3)
    x_u, x_i = torch.ones(2, 64), torch.full((2, 64), 0.5)
    expected = torch.exp(F.leaky_relu(torch.tensor(0.1 * 64 - 0.2 * 0.5 * 64 + 0.3)))
    assert torch.allclose(model.beta(x_u, x_i), expected.expand(2, 1))
    combined = model.combine(x_u, x_i)
    assert torch.allclose(combined[:, :64], expected * x_u)
    assert torch.allclose(combined[:, 64:], (1 - expected) * x_i)
    sigmoid = model_for(data, beta_activation="sigmoid")
    assert (sigmoid.beta(x_u, x_i) < 1).all()


def separable_graph():
    """Each image's features are its class one-hot; every edge's label is its image's class."""
    n_images, classes = 24, 4
    image_class = np.arange(n_images) % classes
    image_x = np.eye(classes)[image_class] * 3.0
    rng = np.random.default_rng(0)
    edges = [
        (u, i, MIKELS_EMOTIONS[image_class[i]])
        for u in range(30)
        for i in rng.choice(n_images, 6, replace=False)
    ]
    contacts = [(u, (u + 1) % 30) for u in range(30)]
    return make_graph(30, n_images, edges, contacts, image_x)[0]


def test_training_learns_a_separable_graph_and_is_reproducible() -> None:
    data = separable_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    config = ModelConfig(num_layers=2)
    train = TrainConfig(epochs=30, lr=0.01, batch_size=64)
    first = train_fold(data, config, train, split, torch.device("cpu"))
    assert first.history[-1].loss < first.history[0].loss
    assert first.test_metrics["accuracy"] >= 0.95
    again = train_fold(data, config, train, split, torch.device("cpu"))
    assert again.test_metrics == first.test_metrics
    assert [h.loss for h in again.history] == [h.loss for h in first.history]


def test_full_batch_schedule_takes_one_step_per_epoch_and_learns() -> None:
    data = separable_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    train = TrainConfig(epochs=40, lr=0.01, batch_size=32, schedule="full_batch")
    result = train_fold(data, ModelConfig(num_layers=2), train, split, torch.device("cpu"))
    assert len(split.train) > 4 * 32  # the paper's schedule would take 5 steps per epoch
    assert len(result.step_seconds) == 40
    assert result.history[-1].loss < result.history[0].loss
    assert result.test_metrics["accuracy"] >= 0.9


def test_same_seed_same_metrics_on_a_graph_large_enough_for_parallel_kernels() -> None:
    # Thousands of edges: CPU scatter kernels run on several threads at this size, which made
    # runs differ before training switched to deterministic kernels on CPU.
    rng = np.random.default_rng(3)
    edges = [
        (u, int(i), MIKELS_EMOTIONS[int(rng.integers(8))])
        for u in range(400)
        for i in rng.choice(300, 15, replace=False)
    ]
    contacts = [(u, int(v)) for u in range(400) for v in rng.choice(400, 10) if v != u]
    data = make_graph(400, 300, edges, contacts)[0]
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    runs = [
        train_fold(data, ModelConfig(), TrainConfig(epochs=2), split, torch.device("cpu"))
        for _ in range(2)
    ]
    assert [h.loss for h in runs[0].history] == [h.loss for h in runs[1].history]
    assert runs[0].test_metrics == runs[1].test_metrics
    assert not torch.are_deterministic_algorithms_enabled()  # the global setting is restored


def test_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    truth, predicted = rng.integers(0, 8, 200), rng.integers(0, 8, 200)
    metrics = classification_metrics(truth, predicted, MIKELS_EMOTIONS)
    assert metrics["weighted_f1"] == pytest.approx(f1_score(truth, predicted, average="weighted"))
    assert metrics["weighted_precision"] == pytest.approx(
        precision_score(truth, predicted, average="weighted")
    )
    assert metrics["weighted_recall"] == pytest.approx(
        recall_score(truth, predicted, average="weighted")
    )
    assert metrics["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))


def test_splits_are_disjoint_stratified_80_10_10_and_differ_per_fold() -> None:
    labels = np.repeat(np.arange(5), [400, 200, 100, 50, 30])
    splits = fold_splits(labels, 3, base_seed=0)
    for split in splits:
        parts = [set(split.train), set(split.val), set(split.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert sum(map(len, parts)) == len(labels)
        assert len(split.train) / len(labels) == pytest.approx(0.8, abs=0.01)
        assert len(split.val) / len(labels) == pytest.approx(0.1, abs=0.01)
        for label, count in zip(range(5), [400, 200, 100, 50, 30], strict=True):
            assert np.sum(labels[split.train] == label) == round(0.8 * count)
    assert not np.array_equal(splits[0].test, splits[1].test)


def test_materialize_trained_model_and_predictions_on_a_tiny_dataset(
    tiny: TinyDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    from hmg_pipeline.model.predict import load_trained_model, predict_pairs

    tiny.write_trainable_views(
        [
            view("u4", "i1", "awe"),
            view("u4", "i2", "fear"),
            view("u5", "i1", "anger"),
            view("u5", "i2", "awe"),
        ]
    )
    write_csv(
        tiny.raw_dir / "requests.csv",
        ("user_id", "image_id"),
        [("u5", "i1"), ("nobody", "i1"), ("u1", "i404"), ("", "i1")],
    )
    settings = {"epochs": 2, "folds": 2, "num_layers": 2}
    result = tiny.materialize(
        ["*trained_model", "*evaluation_metrics", "*predictions"],
        run_config={"ops": {"trained_model": {"config": settings}}},
    )
    assert result.success
    metrics = tiny.table("model.evaluation_metrics")
    assert set(metrics["model"]) == {"HMG-Emo", "majority class", "logistic regression"}
    assert set(metrics["fold"]) == {0, 1}
    assert {"weighted_f1", "weighted_precision", "weighted_recall", "macro_f1"} <= set(
        metrics["metric"]
    )
    summary = result.asset_materializations_for_node("trained_model")
    evaluation = next(m for m in summary if m.asset_key.path[-1] == "evaluation_metrics").metadata
    assert (
        "HMG-Emo" in evaluation["summary"].value
        and "data:image/png" in evaluation["training_curves"].value
    )
    assert evaluation["report"].value == "reports/evaluation.md"  # relative to the store
    assert (tiny.store_dir / "reports" / "confusion_matrix.png").stat().st_size > 1000
    graph_meta = result.asset_materializations_for_node("hetero_graph")[0].metadata
    assert graph_meta["user_image_edges"].value == 10
    trained = load_trained_model(tiny.store_dir / "artifacts" / "trained_model.pt")
    graph = torch.load(tiny.store_dir / "artifacts" / "hetero_graph.pt", weights_only=False)
    predictions = predict_pairs(trained, graph, [("u1", "i1"), ("u4", "i2")])
    assert predictions.height == 2 and set(predictions["emotion"]) <= set(MIKELS_EMOTIONS)
    probabilities = predictions.select(pl.col("^p_.*$")).to_numpy().sum(axis=1)
    assert np.allclose(probabilities, 1.0, atol=1e-5)

    # The predictions table: the kept fold's test edges, then the valid requested pairs.
    table = tiny.table("model.predictions")
    tests = table.filter(pl.col("source") == "test")
    assert tests.height == len(trained.test_edges) > 0
    assert set(tests["true_emotion"]) <= set(MIKELS_EMOTIONS)
    requests = table.filter(pl.col("source") == "request")
    assert dict(requests.select("user_id", "status").iter_rows()) == {
        "u5": "ok",
        "nobody": "unknown_user",
        "u1": "unknown_image",
    }
    scored = table.filter(pl.col("status") == "ok")
    assert scored["emotion"].null_count() == 0 and scored["beta"].is_between(0, 1).all()
    assert table.filter(pl.col("status") != "ok")["emotion"].null_count() == 2
    quarantined = tiny.table("raw.quarantine").filter(pl.col("table") == "requests")
    assert quarantined.rows(named=True)[0]["column"] == "user_id"  # the blank user id

    # The command line prints the same for any pair, with the stored model and graph.
    from hmg_pipeline.predict import main

    assert main(["u5", "i1", "nobody", "i1", "--store", str(tiny.store_dir)]) == 0
    printed = capsys.readouterr().out
    expected = table.filter((pl.col("source") == "request") & (pl.col("user_id") == "u5"))
    assert expected["emotion"][0] in printed and "unknown_user" in printed
    assert main(["u5", "i1", "--store", str(tiny.store_dir / "nowhere")]) == 1
    assert "materialise trained_model" in capsys.readouterr().err
