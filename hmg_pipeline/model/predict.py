"""Loading a trained HMG-Emo and predicting emotions for (user, image) pairs.

    from hmg_pipeline.model.predict import load_trained_model, predict_pairs
    trained = load_trained_model("data/store/artifacts/trained_model.pt")
    graph = torch.load("data/store/artifacts/hetero_graph.pt", weights_only=False)
    predict_pairs(trained, graph, [("48600000@N00", "5000000000")])

Any pair of a user node and an image node of the graph can be scored: the model embeds nodes by
message passing over the graph, then classifies the pair from the two node embeddings. A pair
whose user or image is not a node of the graph gets a status saying which, and no prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch_geometric.data import HeteroData
from upath import UPath

from hmg_pipeline.core.graph import VIEWS
from hmg_pipeline.core.locations import as_location, load_torch, shown
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.hmg_emo import HMGEmo, InputDims, build_model
from hmg_pipeline.model.train import GraphTensors


@dataclass
class TrainedModel:
    model: HMGEmo
    class_names: list[str]
    fold: int
    test_metrics: dict[str, float]
    model_config: ModelConfig
    train_config: TrainConfig
    test_edges: np.ndarray  # indices of the kept fold's test edges in the graph's views


def model_bundle(
    state_dict: dict[str, torch.Tensor],
    model_config: ModelConfig,
    dims: InputDims,
    train_config: TrainConfig,
    fold: int,
    test_metrics: dict[str, float],
    class_names: Sequence[str],
    test_edges: np.ndarray,
) -> dict:
    """What the ``trained_model`` asset stores: weights plus everything needed to rebuild."""
    return {
        "state_dict": state_dict,
        "model_config": model_config.model_dump(),
        "dims": asdict(dims),
        "train_config": train_config.model_dump(),
        "fold": fold,
        "test_metrics": dict(test_metrics),
        "class_names": list(class_names),
        "test_edges": np.asarray(test_edges, dtype=np.int64),
    }


# Settings added after bundles were first written, with the behaviour those bundles were
# trained with (a bundle without them predates them; the defaults changed since).
EARLIER_MODEL = {"self_term": "residual", "skip_to_head": False}
EARLIER_TRAINING = {"message_passing": "transductive"}


def trained_model_from_bundle(bundle: dict) -> TrainedModel:
    config = ModelConfig(**{**EARLIER_MODEL, **bundle["model_config"]})
    model = build_model(config, InputDims(**bundle["dims"]))
    model.load_state_dict(bundle["state_dict"])
    model.eval()
    return TrainedModel(
        model=model,  # type: ignore[arg-type]
        class_names=list(bundle["class_names"]),
        fold=int(bundle["fold"]),
        test_metrics=dict(bundle["test_metrics"]),
        model_config=config,
        train_config=TrainConfig(**{**EARLIER_TRAINING, **bundle["train_config"]}),
        test_edges=np.asarray(bundle["test_edges"], dtype=np.int64),
    )


def load_trained_model(path: str | Path | UPath) -> TrainedModel:
    """Load the ``trained_model`` artifact (``HMG_STORE_DIR/artifacts/trained_model.pt``, or
    under ``HMG_ARTIFACTS_URL``: a local path or an fsspec URL such as ``s3://b/p/...``)."""
    path = as_location(path)
    if not path.is_file():
        raise FileNotFoundError(f"{shown(path)} does not exist: materialise trained_model first")
    return trained_model_from_bundle(load_torch(path))


def pair_status(known_user: bool, known_image: bool) -> str:
    """Whether a pair can be scored: ok, unknown_user, unknown_image, unknown_user_and_image."""
    if known_user and known_image:
        return "ok"
    if not known_user and not known_image:
        return "unknown_user_and_image"
    return "unknown_image" if known_user else "unknown_user"


def predict_pairs(
    trained: TrainedModel,
    graph: HeteroData,
    pairs: Sequence[tuple[str, str]],
    hidden_edges: np.ndarray | None = None,
) -> pl.DataFrame:
    """For each (user_id, image_id) pair: ``status``, the most likely ``emotion``, the class
    probabilities ``p_<class>`` and the edge's ``beta`` (Eq. 5; null when the model has no
    adaptive combination). Pairs with an unknown user or image get nulls and their status.
    ``hidden_edges`` (user-image edge indices) pass no messages: the inductive protocol's
    held-out test edges, scored as in evaluation."""
    if trained.model_config.architecture != "hmg_emo":
        raise ValueError(
            f"predictions need the graph model; this one is {trained.model_config.architecture}"
        )
    users = {u: i for i, u in enumerate(graph["user"].node_id)}
    images = {m: i for i, m in enumerate(graph["image"].node_id)}
    statuses = [pair_status(u in users, m in images) for u, m in pairs]
    scored = [k for k, status in enumerate(statuses) if status == "ok"]
    names = trained.class_names
    probabilities = np.full((len(pairs), len(names)), np.nan, dtype=np.float32)
    beta = np.full(len(pairs), np.nan, dtype=np.float32)
    if scored:
        index = torch.tensor(
            [[users[pairs[k][0]] for k in scored], [images[pairs[k][1]] for k in scored]]
        )
        tensors = GraphTensors.of(graph, torch.device("cpu"))
        if hidden_edges is not None:
            edges = np.arange(graph[VIEWS].num_edges)
            tensors = tensors.passing_only(np.setdiff1d(edges, hidden_edges))
        model = trained.model
        with torch.no_grad():
            nodes = tensors.encode(model)
            comments = pair_comments(tensors, index)
            logits = model.classify(nodes, index, comments)[:, : len(names)]
            probabilities[scored] = torch.softmax(logits, dim=1).numpy()
            if trained.model_config.use_ac:
                x_u, x_i = nodes["user"][index[0]], nodes["image"][index[1]]
                beta[scored] = model.beta(x_u, x_i).squeeze(1).numpy()
    predicted = probabilities[scored].argmax(1) if scored else np.array([], dtype=np.int64)
    emotions: list[str | None] = [None] * len(pairs)
    for k, best in zip(scored, predicted, strict=True):
        emotions[k] = names[int(best)]
    return pl.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "image_id": [m for _, m in pairs],
            "status": statuses,
            "emotion": emotions,
            **{f"p_{name}": probabilities[:, k] for k, name in enumerate(names)},
            "beta": beta,
        },
        schema_overrides={"emotion": pl.String},
    ).with_columns(pl.selectors.float().fill_nan(None))


def pair_comments(tensors: GraphTensors, index: torch.Tensor) -> torch.Tensor:
    """Each pair's own comment features: the edge's when the pair is an edge, else zeros (as a
    negative sample's in training); used by models with ``skip_to_head``."""
    edge_of = {(u, i): k for k, (u, i) in enumerate(tensors.pairs.T.tolist())}
    comments = tensors.comments.new_zeros(index.shape[1], tensors.comments.shape[1])
    for row, (u, i) in enumerate(index.T.tolist()):
        edge = edge_of.get((u, i))
        if edge is not None:
            comments[row] = tensors.comments[edge]
    return comments


def held_out_pairs(trained: TrainedModel, graph: HeteroData) -> pl.DataFrame:
    """The kept fold's held-out test edges as (user_id, image_id, true_emotion)."""
    users = np.asarray(graph["user"].node_id, dtype=object)
    images = np.asarray(graph["image"].node_id, dtype=object)
    source, target = graph[VIEWS].edge_index[:, torch.as_tensor(trained.test_edges)].numpy()
    labels = graph[VIEWS].edge_label[torch.as_tensor(trained.test_edges)].numpy()
    return pl.DataFrame(
        {
            "user_id": users[source].tolist(),
            "image_id": images[target].tolist(),
            "true_emotion": [trained.class_names[int(k)] for k in labels],
        },
        schema={"user_id": pl.String, "image_id": pl.String, "true_emotion": pl.String},
    )


def predictions_table(
    trained: TrainedModel, graph: HeteroData, requests: pl.DataFrame
) -> pl.DataFrame:
    """Predictions for the kept fold's test edges (``source`` test, with ``true_emotion``;
    in the inductive protocol they pass no messages, as when they were scored) and for the
    requested pairs (``source`` request; ``requests`` has user_id and image_id)."""
    tests = held_out_pairs(trained, graph).with_columns(pl.lit("test").alias("source"))
    asked = requests.select(
        "user_id", "image_id", pl.lit(None, pl.String).alias("true_emotion")
    ).with_columns(pl.lit("request").alias("source"))
    inductive = trained.train_config.message_passing == "inductive"
    predicted = pl.concat(
        [
            predict_pairs(trained, graph, list(tests.select("user_id", "image_id").rows()),
                          trained.test_edges if inductive else None),
            predict_pairs(trained, graph, list(asked.select("user_id", "image_id").rows())),
        ]
    )  # fmt: skip
    wanted = pl.concat([tests, asked])
    return pl.concat([wanted.select("source", "true_emotion"), predicted], how="horizontal").select(
        "source",
        "user_id",
        "image_id",
        "status",
        "true_emotion",
        pl.exclude("source", "user_id", "image_id", "status", "true_emotion"),
    )
