"""Training HMG-Emo as edge classification, cross-validation, and the baselines.

Each step runs message passing over the whole graph and classifies one batch of supervision
edges (PyG's neighbour samplers need pyg-lib or torch-sparse, not installable here). Adam,
cosine annealing over the epochs, model selection on validation weighted F1 (the best epoch's
weights are kept). Which edges pass messages in each phase is the protocol
(``TrainConfig.message_passing``, :class:`ProtocolGraphs`); labels of held-out edges are never
read before they are scored (the leak guard test checks it bit for bit).

Every model of the paper's experiments trains here: HMG-Emo and its variants, the backbones, the
comments-only classifier (Table III) and negative sampling (Table V: each batch adds as many
non-edges labelled with the extra class ``none``, drawn from users with at least one view by
default). Table V is scored two ways: the emotion-only reading (every real held-out edge gets
its most likely emotion, argmax over the emotion logits; ``none_predicted_share`` says how often
the full argmax would have said ``none``), and the paper's 9-class reading (``nine_class_*``:
the test edges plus as many test non-edges, each pair its full argmax). Model selection uses
the emotion-only validation F1 in both.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch.nn import functional as F
from torch_geometric.data import HeteroData

from hmg_pipeline.core.graph import REV_VIEWS, VIEWS, NonEdgeSampler
from hmg_pipeline.core.metrics import classification_metrics, confusion
from hmg_pipeline.core.splits import Split, make_splits
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.fused import FusedLayout
from hmg_pipeline.model.hmg_emo import CommentsOnly, HMGEmo, InputDims, build_model

Log = Callable[[str], None]


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
    split: Split
    step_seconds: list[float] = field(default_factory=list)


@dataclass
class GraphTensors:
    """The graph's tensors on the training device: what message passing sees (``x``,
    ``edge_index``, ``edge_attr``) and every labelled user-image edge (``pairs``, ``labels``),
    which supervision and evaluation index into."""

    x: dict[str, torch.Tensor]
    edge_index: dict
    edge_attr: dict
    pairs: torch.Tensor
    labels: torch.Tensor
    comments: torch.Tensor  # every labelled edge's own comment features
    kernels: str = "fused"  # TrainConfig.kernels
    layouts: dict[bool, FusedLayout] = field(default_factory=dict)  # by bipartite self loops

    @classmethod
    def of(cls, data: HeteroData, device: torch.device, kernels: str = "fused") -> GraphTensors:
        comments = data[VIEWS].edge_attr.to(device)
        return cls(
            x={kind: data[kind].x.to(device) for kind in ("user", "image")},
            edge_index={rel: data[rel].edge_index.to(device) for rel in data.edge_types},
            edge_attr={VIEWS: comments},
            pairs=data[VIEWS].edge_index.to(device),
            labels=data[VIEWS].edge_label.to(device),
            comments=comments,
            kernels=kernels,
        )

    def encode(self, model: HMGEmo) -> dict[str, torch.Tensor]:
        """``model``'s node embeddings on this graph: fused layers when the kernels are fused
        and the model has GAT layers, with the edge layout built once per graph and self term
        (no per-step host work); else PyG's HeteroConv."""
        layout = None
        if self.kernels == "fused" and model.fusable:
            loops = model.config.self_term == "softmax"
            if loops not in self.layouts:
                users, images = self.x["user"].shape[0], self.x["image"].shape[0]
                self.layouts[loops] = model.fused_layout(self.edge_index, users, images)
            layout = self.layouts[loops]
        return model.encode(self.x, self.edge_index, self.edge_attr, layout)

    def passing_only(self, edges: np.ndarray) -> GraphTensors:
        """The same graph with only the user-image edges ``edges`` (both directions, with
        their comment features) in message passing; ``pairs``/``labels`` keep every edge."""
        keep = torch.as_tensor(np.sort(edges), device=self.pairs.device)
        views = self.pairs[:, keep]
        edge_index = {**self.edge_index, VIEWS: views, REV_VIEWS: views.flip(0)}
        kept = {VIEWS: self.edge_attr[VIEWS][keep]}
        return GraphTensors(
            self.x, edge_index, kept, self.pairs, self.labels, self.comments, self.kernels
        )


@dataclass
class ProtocolGraphs:
    """The message-passing graph of each phase of one split. Transductive: every edge passes
    messages in every phase (only held-out labels are hidden). Inductive (PyG
    ``RandomLinkSplit`` semantics): training and validation see the training edges, test sees
    training + validation edges; held-out edges and their comments never shape an embedding
    before they are scored."""

    train: GraphTensors
    val: GraphTensors
    test: GraphTensors

    @classmethod
    def of(cls, graph: GraphTensors, split: Split, message_passing: str) -> ProtocolGraphs:
        if message_passing == "transductive":
            return cls(graph, graph, graph)
        if message_passing != "inductive":
            raise ValueError(f"message_passing={message_passing!r}: transductive or inductive")
        seen = graph.passing_only(split.train)
        return cls(seen, seen, graph.passing_only(np.concatenate([split.train, split.val])))


Model = HMGEmo | CommentsOnly


def edge_logits(
    model: Model, graph: GraphTensors, edges: torch.Tensor, non_edges: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits of the user-image edges ``edges`` (indices), then of the ``non_edges`` pairs.

    HMG-Emo classifies a pair from its node embeddings after message passing; the comments-only
    classifier classifies an edge from its comment features (it cannot score non-edges)."""
    if isinstance(model, CommentsOnly):
        if non_edges is not None:
            raise ValueError("the comments-only classifier has no features for non-edges")
        return model(graph.comments[edges])  # its own features: every edge, any protocol
    nodes = graph.encode(model)
    pairs, comments = graph.pairs[:, edges], graph.comments[edges]
    if non_edges is not None:
        pairs = torch.cat([pairs, non_edges], dim=1)
        comments = torch.cat([comments, comments.new_zeros(non_edges.shape[1], comments.shape[1])])
    return model.classify(nodes, pairs, comments)


def predict_logits(
    model: Model, graph: GraphTensors, index: np.ndarray, amp: bool = False
) -> torch.Tensor:
    """Logits of the edges ``index`` with the model in eval mode."""
    model.eval()
    device_type = graph.pairs.device.type
    with torch.no_grad(), torch.autocast(device_type, torch.bfloat16, enabled=amp):
        selected = torch.as_tensor(index, device=graph.pairs.device)
        return edge_logits(model, graph, selected).float()


def held_out_metrics(
    model: Model, graph: GraphTensors, index: np.ndarray, class_names: list[str], amp: bool
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics over the emotion classes on real edges, and the confusion matrix. Each edge gets
    its most likely emotion; with extra classes (negative sampling's ``none``) the share of
    edges whose full argmax is an extra class is reported too."""
    logits = predict_logits(model, graph, index, amp)
    predictions = logits[:, : len(class_names)].argmax(1).cpu().numpy()
    truth = graph.labels[torch.as_tensor(index, device=graph.labels.device)].cpu().numpy()
    metrics = classification_metrics(truth, predictions, class_names)
    if model.config.extra_classes:
        full = logits.argmax(1).cpu().numpy()
        metrics["none_predicted_share"] = float(np.mean(full >= len(class_names)))
    return metrics, confusion(truth, predictions, len(class_names))


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
    graph = GraphTensors.of(data, device, train_config.kernels)
    graphs = ProtocolGraphs.of(graph, split, train_config.message_passing)
    model = build_model(model_config, InputDims.of(data)).to(device)
    if train_config.compile and isinstance(model, HMGEmo):
        model.encode = torch.compile(model.encode, dynamic=False)  # the module's state is unchanged
    seen = split.train if train_config.message_passing == "inductive" else None
    negatives = negative_sampler(data, model_config, train_config, seen)  # held-out edges unseen
    negative_rng = np.random.default_rng([train_config.seed + split.fold, 1])
    none_class = model.dims.classes  # the first extra class
    optimizer = torch.optim.Adam(  # fused: one kernel for all ~130 parameters (CPU and CUDA)
        model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay, fused=True
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train_config.epochs)
    history: list[EpochLog] = []
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    step_seconds: list[float] = []
    for epoch in range(1, train_config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.as_tensor(rng.permutation(split.train), device=device)  # once an epoch
        losses = []
        full = train_config.schedule == "full_batch"
        size = max(1, len(order)) if full else train_config.batch_size
        for start in range(0, len(order), size):
            step_started = time.perf_counter()
            batch = order[start : start + size]
            targets = graphs.train.labels[batch]
            non_edges = None
            if negatives is not None:
                non_edges = torch.as_tensor(
                    negatives.sample(negative_rng, len(batch)), device=device
                )
                targets = torch.cat([targets, torch.full_like(targets, none_class)])
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                logits = edge_logits(model, graphs.train, batch, non_edges)
            loss = F.cross_entropy(logits.float(), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())  # read once an epoch: no host sync per step
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_seconds.append(time.perf_counter() - step_started)
        losses = torch.stack(losses).double().cpu().numpy()
        scheduler.step()
        val_f1 = held_out_metrics(model, graphs.val, split.val, data.class_names, amp)[0][
            "weighted_f1"
        ]
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
    test_metrics, matrix = held_out_metrics(model, graphs.test, split.test, data.class_names, amp)
    if negatives is not None:  # the same count of test non-edges as test edges (training ratio)
        test_negatives = negative_sampler(data, model_config, train_config)  # avoid every edge
        test_non_edges = test_negatives.sample(  # type: ignore[union-attr]
            np.random.default_rng([train_config.seed + split.fold, 3]), len(split.test)
        )
        test_metrics |= nine_class_metrics(
            model, graphs.test, split.test, test_non_edges, data.class_names, amp
        )
    return FoldResult(
        fold=split.fold,
        best_epoch=best[1],
        best_val_f1=best[0],
        state_dict=best[2],
        history=history,
        test_metrics=test_metrics,
        confusion=matrix,
        split=split,
        step_seconds=step_seconds,
    )


@dataclass
class CrossValidation:
    """Every fold's result and the test metric rows (model, fold, metric, value) of the model
    and, when asked for, of the baselines on the same splits."""

    folds: list[FoldResult]
    rows: list[dict]

    @property
    def best(self) -> FoldResult:
        """The fold kept as the trained model: the best validation weighted F1."""
        return max(self.folds, key=lambda result: result.best_val_f1)

    def metrics(self) -> pl.DataFrame:
        return metrics_frame(self.rows)


def cross_validate(
    data: HeteroData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    device: torch.device,
    amp: bool = False,
    log: Log = lambda message: None,
    name: str = "HMG-Emo",
    baselines: bool = False,
    fold_features: Callable[[Split], torch.Tensor] | None = None,
) -> CrossValidation:
    """Train and test on the splits of ``train_config`` (``folds`` seeded stratified 80:10:10
    splits, or stratified k-fold: ``split``), in its message-passing protocol; with
    ``baselines``, the majority class and the logistic regression are scored on the same splits
    and features. ``fold_features(split)``, when given, replaces the comment features of every
    edge for that fold (Table III's leak-free LLaVA variant). The one CV loop of the project:
    ``trained_model``, every experiment variant and the benchmarks run through it."""
    labels = data[VIEWS].edge_label.numpy()
    results, rows = [], []
    for split in make_splits(labels, train_config.folds, train_config.seed, train_config.split):
        log(
            f"{name}, fold {split.fold + 1}/{train_config.folds}: {len(split.train)} train / "
            f"{len(split.val)} val / {len(split.test)} test edges, "
            f"{train_config.message_passing}, device {device}"
        )
        fold_data = (
            data if fold_features is None else with_edge_features(data, fold_features(split))
        )
        result = train_fold(fold_data, model_config, train_config, split, device, amp, log)
        results.append(result)
        rows += metric_rows(name, split.fold, result.test_metrics)
        if baselines:
            rows += baseline_rows(fold_data, split)
    return CrossValidation(results, rows)


_BASELINES: dict[tuple, list[dict]] = {}  # every variant of a run shares its splits and features


def baseline_rows(data: HeteroData, split: Split) -> list[dict]:
    """The majority class's and the logistic regression's metric rows on ``split``, computed
    once per (features, labels, split) in this process: the experiment variants share them."""
    features = edge_features(data)
    digest = hashlib.blake2b(features.tobytes(), digest_size=16)
    digest.update(data[VIEWS].edge_label.numpy().tobytes())
    digest.update(np.concatenate([split.train, split.val, split.test]).tobytes())
    key = (digest.hexdigest(), split.fold, split.seed)
    if key not in _BASELINES:
        if len(_BASELINES) >= 32:
            _BASELINES.pop(next(iter(_BASELINES)))
        _BASELINES[key] = metric_rows(
            "majority class", split.fold, majority_baseline(data, split)
        ) + metric_rows(
            "logistic regression",
            split.fold,
            logistic_regression_baseline(data, split, features),
        )
    return [dict(row) for row in _BASELINES[key]]


def with_edge_features(data: HeteroData, features: torch.Tensor) -> HeteroData:
    """A copy of the graph whose user-image edges (both directions) carry ``features``."""
    if features.shape[0] != data[VIEWS].num_edges:
        raise ValueError(f"{features.shape[0]} comment vectors for {data[VIEWS].num_edges} edges")
    copy = data.clone()
    copy[VIEWS].edge_attr = features
    copy[REV_VIEWS].edge_attr = features
    return copy


def negative_sampler(
    data: HeteroData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    avoid: np.ndarray | None = None,
) -> NonEdgeSampler | None:
    """The sampler of non-edges when negative sampling is on (checked against the model).
    Sampled pairs avoid the user-image edges ``avoid`` (indices; default every edge): training
    passes the edges it can see, as PyG's ``RandomLinkSplit`` samples training negatives
    against training edges only; test non-edges avoid every edge (they must be true
    non-edges)."""
    if not train_config.negative_sampling:
        return None
    if model_config.extra_classes < 1:
        raise ValueError("negative sampling needs a model with extra_classes >= 1 (class none)")
    if model_config.architecture != "hmg_emo":
        raise ValueError("negative sampling needs a graph model: non-edges have no comment")
    if model_config.use_comments and model_config.skip_to_head:
        raise ValueError(
            "negative sampling with the comment term and skip_to_head would let `none` be read "
            "off the non-edges' zero comment: set use_comments=false or skip_to_head=false"
        )
    edge_index = data[VIEWS].edge_index.numpy()
    known = edge_index if avoid is None else edge_index[:, avoid]
    viewers = np.unique(known[0]) if train_config.negatives_from == "viewers" else None
    return NonEdgeSampler(known, data["user"].num_nodes, data["image"].num_nodes, viewers)


def nine_class_metrics(
    model: Model,
    graph: GraphTensors,
    index: np.ndarray,
    non_edges: np.ndarray,
    class_names: list[str],
    amp: bool,
) -> dict[str, float]:
    """Table V as the paper reads it: held-out edges and as many non-edges (true class
    ``none``), every pair assigned its full argmax over the emotions and ``none``; metrics
    prefixed ``nine_class_``."""
    model.eval()
    device = graph.pairs.device
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
        edges = torch.as_tensor(index, device=device)
        logits = edge_logits(model, graph, edges, torch.as_tensor(non_edges, device=device))
    predictions = logits.float().argmax(1).cpu().numpy()
    truth = np.concatenate(
        [graph.labels[edges].cpu().numpy(), np.full(non_edges.shape[1], len(class_names))]
    )
    metrics = classification_metrics(truth, predictions, [*class_names, "none"])
    return {f"nine_class_{name}": value for name, value in metrics.items()}


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
    """Standardised features, multinomial logistic regression (scikit-learn), seeded, on one
    BLAS/OpenMP thread: two runtimes (torch's and scikit-learn's) spinning on 2 cores made the
    fit 2.5x slower, and the thread count changed lbfgs' path (262 vs 245 iterations)."""
    labels = data[VIEWS].edge_label.numpy()
    features = edge_features(data) if features is None else features
    classifier = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, random_state=split.seed)
    )
    with threadpool_limits(1):  # 2.5x faster on 2 cores, and the same fit on any machine
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
