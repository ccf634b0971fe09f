"""Training benchmarks.

Variants on the bundled sample (needs `make demo` first; CPU, 3 folds each):
    python -m bench.training variants [--graph data/store/artifacts/hetero_graph.pt]
        [--epochs 20] [--diagnostics]
Step time at IESN scale (Table I sizes, random features of the paper's dimensions):
    python -m bench.training iesn-step --device cuda [--steps 20] [--amp]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from hmg_pipeline.core.graph import VIEWS, build_hetero_graph
from hmg_pipeline.core.metrics import PAPER_METRICS, summary_table
from hmg_pipeline.core.sample import generate
from hmg_pipeline.metadata import markdown_table
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.hmg_emo import HMGEmo, InputDims
from hmg_pipeline.model.train import GraphTensors, cross_validate, metrics_frame

TRANSDUCTIVE = {"message_passing": "transductive"}
# name -> (ModelConfig settings, TrainConfig settings) over the project's defaults
VARIANTS: dict[str, tuple[dict, dict]] = {
    "HMG-Emo (defaults: residual, skip, inductive, sigmoid beta)": ({}, {}),
    "HMG-Emo, no skip": ({"skip_to_head": False}, {}),
    "HMG-Emo, transductive": ({}, TRANSDUCTIVE),
    "HMG-Emo, Eq. 3 self term": ({"self_term": "softmax"}, {}),
    "HMG-Emo as written (self term, exp beta, no skip, transductive)": (
        {"self_term": "softmax", "skip_to_head": False, "beta_activation": "exp"},
        TRANSDUCTIVE,
    ),
    "HMG-Emo-{T}": ({"use_comments": False}, {}),
    "HMG-Emo-{T, AC}": ({"use_comments": False, "use_ac": False}, {}),
}
# Diagnostics: the same models with edges without comment given zeros instead of U(0,1).
ZERO_FILL_VARIANTS: dict[str, tuple[dict, dict]] = {
    "HMG-Emo, zeros fill": ({}, {}),
    "HMG-Emo, no skip, zeros fill": ({"skip_to_head": False}, {}),
}


def with_zero_fill(data):
    """A copy of the graph whose comment features are zero on edges without a comment."""
    zeroed = data.clone()
    attr = zeroed[VIEWS].edge_attr.clone()
    attr[~zeroed[VIEWS].has_comment] = 0.0
    zeroed[VIEWS].edge_attr = attr
    zeroed["image", "rev_views", "user"].edge_attr = attr
    return zeroed


def variants(graph: Path, epochs: int, folds: int, diagnostics: bool) -> None:
    original = torch.load(graph, weights_only=False)
    runs = [(name, settings, original) for name, settings in VARIANTS.items()]
    if diagnostics:
        zeroed = with_zero_fill(original)
        runs += [(name, settings, zeroed) for name, settings in ZERO_FILL_VARIANTS.items()]
    rows, seconds = [], {}
    for k, (name, (model, training), data) in enumerate(runs):
        started = time.perf_counter()
        result = cross_validate(
            data,
            ModelConfig(**model),
            TrainConfig(epochs=epochs, folds=folds, **training),
            torch.device("cpu"),
            name=name,
            baselines=k == 0,
        )
        rows += result.rows
        seconds[name] = time.perf_counter() - started
        print(f"{name}: {seconds[name]:.0f}s for {folds} folds", flush=True)
    metrics = metrics_frame(rows)
    print(markdown_table(summary_table(metrics, (*PAPER_METRICS, "macro_f1"))))


def iesn_graph(seed: int = 0):
    """Table I sizes: tables from the generator at --scale iesn, random features of the paper's
    dimensions (user 768 = mBERT group context, image 2048 = ResNet-50, comment 768 = mBERT)."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), seed=seed, scale="iesn")
        views = pl.read_csv(Path(tmp) / "views.csv", infer_schema=False)
        contacts = pl.read_csv(Path(tmp) / "contacts.csv", infer_schema=False)
        users = pl.read_csv(Path(tmp) / "users.csv", infer_schema=False)
        images = pl.read_csv(Path(tmp) / "images.csv", infer_schema=False)

    def with_vectors(frame: pl.DataFrame, dim: int) -> pl.DataFrame:
        values = rng.random((frame.height, dim), dtype=np.float32)
        return frame.with_columns(pl.Series("vector", values).cast(pl.Array(pl.Float32, dim)))

    edges = views.select("user_id", "image_id").drop_nulls().unique(["user_id", "image_id"])
    edges = edges.filter(pl.col("image_id").is_in(images["image_id"].implode()))
    labels = np.array(
        ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"]
    )[rng.integers(0, 8, edges.height)]
    edges = edges.with_columns(pl.Series("emotion", labels))
    comments = with_vectors(edges.select("user_id", "image_id"), 768).with_columns(
        pl.lit(True).alias("has_comment")
    )
    pairs = (
        contacts.filter(pl.col("user_id") != pl.col("contact_id"))
        .select(
            pl.min_horizontal("user_id", "contact_id").alias("user_id"),
            pl.max_horizontal("user_id", "contact_id").alias("contact_id"),
        )
        .unique()
    )
    return build_hetero_graph(
        users,
        with_vectors(users, 768),
        with_vectors(images.select("image_id").unique(), 2048),
        edges,
        comments,
        pairs,
    )


def iesn_step(device_name: str, steps: int, amp: bool, batch_size: int) -> None:
    started = time.perf_counter()
    data, stats = iesn_graph()
    print(f"graph built in {time.perf_counter() - started:.0f}s: {stats}")
    device = torch.device(device_name)
    graph = GraphTensors.of(data, device)
    model = HMGEmo(ModelConfig(), InputDims.of(data)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    edges = graph.pairs.shape[1]
    times = []
    for step in range(steps + 3):
        batch = torch.randint(0, edges, (batch_size,), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        begun = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            nodes = model.encode(graph.x, graph.edge_index, graph.edge_attr)
            logits = model.classify(nodes, graph.pairs[:, batch])
        loss = torch.nn.functional.cross_entropy(logits.float(), graph.labels[batch])
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 3:
            times.append(time.perf_counter() - begun)
    median = statistics.median(times)
    steps_per_epoch = int(np.ceil(0.8 * edges / batch_size))
    print(
        f"device={device} amp={amp} batch={batch_size}: median {1000 * median:.1f} ms/step "
        f"over {steps} steps; {steps_per_epoch} steps/epoch -> {median * steps_per_epoch:.1f} "
        f"s/epoch, {20 * median * steps_per_epoch / 60:.1f} min for 20 epochs"
    )
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"peak host RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("variants")
    v.add_argument("--graph", type=Path, default=Path("data/store/artifacts/hetero_graph.pt"))
    v.add_argument("--epochs", type=int, default=20)
    v.add_argument("--folds", type=int, default=3)
    v.add_argument("--diagnostics", action="store_true", help="also the zero-fill variants")
    s = sub.add_parser("iesn-step")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--amp", action="store_true")
    s.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    if args.command == "variants":
        variants(args.graph, args.epochs, args.folds, args.diagnostics)
    else:
        iesn_step(args.device, args.steps, args.amp, args.batch_size)


if __name__ == "__main__":
    main()
