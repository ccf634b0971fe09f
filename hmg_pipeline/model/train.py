"""Training HMG-Emo as edge classification, cross-validation, and the baselines.

Each step runs message passing over the whole graph and classifies one batch of supervision
edges (PyG's neighbour samplers need pyg-lib or torch-sparse, not installable here). Adam,
cosine annealing over the epochs, model selection on validation weighted F1 (the best epoch's
weights are kept). Deviation: none of the paper's values; all are settings.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.nn import functional as F
from torch_geometric.data import HeteroData

from hmg_pipeline.core.graph import VIEWS
from hmg_pipeline.core.metrics import classification_metrics, confusion
from hmg_pipeline.core.splits import Split
from hmg_pipeline.model.hmg_emo import HMGEmo, ModelConfig

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    """Optimisation settings; defaults are the paper's (Sec. IV-B)."""

    epochs: int = 20
    lr: float = 0.005
    batch_size: int = 512
    weight_decay: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochLog:
    epoch: int
    loss: float
    val_weighted_f1: float
    seconds: float


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    best_val_f1: float
    state_dict: dict[str, torch.Tensor]
    history: list[EpochLog]
    test_metrics: dict[str, float]
    confusion: np.ndarray
    step_seconds: list[float] = field(default_factory=list)


def model_config_for(data: HeteroData, **settings) -> ModelConfig:
    """A ModelConfig whose input sizes match ``data``."""
    return ModelConfig(
        user_dim=data["user"].x.shape[1],
        image_dim=data["image"].x.shape[1],
        comment_dim=data[VIEWS].edge_attr.shape[1],
        num_classes=len(data.class_names),
        **settings,
    )


@dataclass
class GraphTensors:
    """The graph's tensors on the training device."""

    x: dict[str, torch.Tensor]
    edge_index: dict
    edge_attr: dict
    pairs: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(cls, data: HeteroData, device: torch.device) -> GraphTensors:
        return cls(
            x={kind: data[kind].x.to(device) for kind in ("user", "image")},
            edge_index={rel: data[rel].edge_index.to(device) for rel in data.edge_types},
            edge_attr={VIEWS: data[VIEWS].edge_attr.to(device)},
            pairs=data[VIEWS].edge_index.to(device),
            labels=data[VIEWS].edge_label.to(device),
        )


def predict_logits(
    model: HMGEmo, graph: GraphTensors, index: np.ndarray, amp: bool = False
) -> torch.Tensor:
    """Logits of the edges ``index`` with the model in eval mode."""
    model.eval()
    device_type = graph.pairs.device.type
    with torch.no_grad(), torch.autocast(device_type, torch.bfloat16, enabled=amp):
        nodes = model.encode(graph.x, graph.edge_index, graph.edge_attr)
        selected = torch.as_tensor(index, device=graph.pairs.device)
        return model.classify(nodes, graph.pairs[:, selected]).float()


def weighted_f1_of(model: HMGEmo, graph: GraphTensors, index: np.ndarray, amp: bool) -> float:
    predictions = predict_logits(model, graph, index, amp).argmax(1).cpu().numpy()
    labels = graph.labels[torch.as_tensor(index, device=graph.labels.device)].cpu().numpy()
    names = [str(i) for i in range(model.config.num_classes + model.config.extra_classes)]
    return classification_metrics(labels, predictions, names)["weighted_f1"]


@contextmanager
def reproducible(device: torch.device) -> Iterator[None]:
    """On CPU, deterministic kernels: PyG's parallel scatter-add otherwise sums in a varying
    order, and the same seed gave different metrics on the sample. (On CUDA several scatter
    kernels have no deterministic version, so it is left as it is there.)"""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(previous or device.type == "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def train_fold(
    data: HeteroData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    split: Split,
    device: torch.device,
    amp: bool = False,
    log: Log = lambda message: None,
) -> FoldResult:
    """Train on ``split.train``, select on ``split.val``, report on ``split.test``."""
    with reproducible(device):
        return _train_fold(data, model_config, train_config, split, device, amp, log)


def _train_fold(
    data: HeteroData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    split: Split,
    device: torch.device,
    amp: bool,
    log: Log,
) -> FoldResult:
    torch.manual_seed(train_config.seed + split.fold)
    rng = np.random.default_rng(train_config.seed + split.fold)
    graph = GraphTensors.of(data, device)
    model = HMGEmo(model_config).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train_config.epochs)
    history: list[EpochLog] = []
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    step_seconds: list[float] = []
    for epoch in range(1, train_config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = rng.permutation(split.train)
        losses = []
        for start in range(0, len(order), train_config.batch_size):
            step_started = time.perf_counter()
            batch = torch.as_tensor(order[start : start + train_config.batch_size], device=device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                nodes = model.encode(graph.x, graph.edge_index, graph.edge_attr)
                logits = model.classify(nodes, graph.pairs[:, batch])
            loss = F.cross_entropy(logits.float(), graph.labels[batch])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_seconds.append(time.perf_counter() - step_started)
        scheduler.step()
        val_f1 = weighted_f1_of(model, graph, split.val, amp)
        seconds = time.perf_counter() - started
        history.append(EpochLog(epoch, float(np.mean(losses)), val_f1, seconds))
        log(
            f"fold {split.fold} epoch {epoch:2d}/{train_config.epochs}: loss {np.mean(losses):.4f}"
            f", val weighted F1 {val_f1:.4f}, {seconds:.1f}s"
        )
        if val_f1 > best[0]:
            best = (
                val_f1,
                epoch,
                copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()}),
            )
    model.load_state_dict(best[2])
    predictions = predict_logits(model, graph, split.test, amp).argmax(1).cpu().numpy()
    truth = data[VIEWS].edge_label[torch.as_tensor(split.test)].numpy()
    return FoldResult(
        fold=split.fold,
        best_epoch=best[1],
        best_val_f1=best[0],
        state_dict=best[2],
        history=history,
        test_metrics=classification_metrics(truth, predictions, data.class_names),
        confusion=confusion(truth, predictions, len(data.class_names)),
        step_seconds=step_seconds,
    )


def edge_features(data: HeteroData) -> np.ndarray:
    """[user context, image, comment] per labelled edge: the logistic-regression baseline's X."""
    source, target = data[VIEWS].edge_index.numpy()
    return np.concatenate(
        [
            data["user"].x.numpy()[source],
            data["image"].x.numpy()[target],
            data[VIEWS].edge_attr.numpy(),
        ],
        axis=1,
    )


def majority_baseline(data: HeteroData, split: Split) -> dict[str, float]:
    labels = data[VIEWS].edge_label.numpy()
    majority = np.bincount(labels[split.train]).argmax()
    predictions = np.full(len(split.test), majority)
    return classification_metrics(labels[split.test], predictions, data.class_names)


def logistic_regression_baseline(
    data: HeteroData, split: Split, features: np.ndarray | None = None
) -> dict[str, float]:
    """Standardised features, multinomial logistic regression (scikit-learn), seeded."""
    labels = data[VIEWS].edge_label.numpy()
    features = edge_features(data) if features is None else features
    classifier = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, random_state=split.seed)
    )
    classifier.fit(features[split.train], labels[split.train])
    predictions = classifier.predict(features[split.test])
    return classification_metrics(labels[split.test], predictions, data.class_names)


def metric_rows(model: str, fold: int, metrics: dict[str, float]) -> list[dict]:
    return [
        {"model": model, "fold": fold, "metric": name, "value": float(value)}
        for name, value in metrics.items()
    ]


def metrics_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"model": pl.String, "fold": pl.Int64, "metric": pl.String, "value": pl.Float64},
    )
