"""Loading a trained HMG-Emo and predicting emotions for (user, image) pairs.

    from hmg_pipeline.model.predict import load_trained_model, predict_emotions
    trained = load_trained_model("data/store/artifacts/trained_model.pt")
    graph = torch.load("data/store/artifacts/hetero_graph.pt", weights_only=False)
    predict_emotions(trained, graph, [("48600000@N00", "5000000000")])

Any pair of a user node and an image node of the graph can be scored: the model embeds nodes by
message passing over the graph, then classifies the pair from the two node embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from torch_geometric.data import HeteroData

from hmg_pipeline.model.hmg_emo import HMGEmo, ModelConfig, build_model
from hmg_pipeline.model.train import GraphTensors


@dataclass
class TrainedModel:
    model: HMGEmo
    class_names: list[str]
    fold: int
    test_metrics: dict[str, float]
    model_config: dict
    train_config: dict


def model_bundle(
    state_dict: dict[str, torch.Tensor],
    model_config: ModelConfig,
    train_config: dict,
    fold: int,
    test_metrics: dict[str, float],
    class_names: Sequence[str],
) -> dict:
    """What the ``trained_model`` asset stores: weights plus everything needed to rebuild."""
    return {
        "state_dict": state_dict,
        "model_config": model_config.to_dict(),
        "train_config": dict(train_config),
        "fold": fold,
        "test_metrics": dict(test_metrics),
        "class_names": list(class_names),
    }


def trained_model_from_bundle(bundle: dict) -> TrainedModel:
    config = dict(bundle["model_config"])
    config["head_hidden"] = tuple(config["head_hidden"])
    model = build_model(ModelConfig(**config))
    model.load_state_dict(bundle["state_dict"])
    model.eval()
    return TrainedModel(
        model=model,
        class_names=list(bundle["class_names"]),
        fold=int(bundle["fold"]),
        test_metrics=dict(bundle["test_metrics"]),
        model_config=config,
        train_config=dict(bundle["train_config"]),
    )


def load_trained_model(path: str | Path) -> TrainedModel:
    """Load the ``trained_model`` artifact (``HMG_STORE_DIR/artifacts/trained_model.pt``)."""
    return trained_model_from_bundle(torch.load(Path(path), map_location="cpu", weights_only=False))


def predict_emotions(
    trained: TrainedModel, graph: HeteroData, pairs: Sequence[tuple[str, str]]
) -> pl.DataFrame:
    """Most likely emotion and class probabilities for each (user_id, image_id) pair."""
    users = {u: i for i, u in enumerate(graph["user"].node_id)}
    images = {m: i for i, m in enumerate(graph["image"].node_id)}
    unknown = [p for p in pairs if p[0] not in users or p[1] not in images]
    if unknown:
        raise KeyError(f"pairs not in the graph (unknown user or image): {unknown[:3]}")
    tensors = GraphTensors.of(graph, torch.device("cpu"))
    index = torch.tensor([[users[u] for u, _ in pairs], [images[m] for _, m in pairs]])
    with torch.no_grad():
        nodes = trained.model.encode(tensors.x, tensors.edge_index, tensors.edge_attr)
        probabilities = torch.softmax(trained.model.classify(nodes, index), dim=1)
    names = trained.class_names
    return pl.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "image_id": [m for _, m in pairs],
            "emotion": [names[i] for i in probabilities.argmax(1).tolist()],
            **{f"p_{name}": probabilities[:, k].numpy() for k, name in enumerate(names)},
        }
    )
