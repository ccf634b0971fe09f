"""Training benchmarks.

Variants on the bundled sample (needs `make demo` first; CPU, 3 folds each):
    python -m bench.training variants [--graph data/store/artifacts/hetero_graph.pt]
        [--epochs 20] [--diagnostics]
Side by side at a fraction of Table I (random features of the paper's dimensions): a plain PyG
HeteroConv(GATConv) stack (bench/pyg_stack.py), our model (fused layers) and the propagation
floor, one training step each (forward + backward + Adam, batch 512), in one run:
    python -m bench.training side-by-side --scale 0.1 [--steps 10] [--device cpu] [--memory]
Training schedules on the sample (test weighted F1, full-graph passes):
    python -m bench.training schedules [--graph data/store/artifacts/hetero_graph.pt]
Step time of our model alone (or the PyG path: --kernels pyg) at a fraction of Table I:
    python -m bench.training iesn-step --device cuda [--scale 1.0] [--steps 20] [--amp]
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
from hmg_pipeline.core.sample import generate, iesn_fraction
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


# name -> TrainConfig settings: the paper's schedule and cheaper ones (fewer full-graph passes)
SCHEDULES: dict[str, dict] = {
    "paper: batch 512, 20 epochs": {},
    "batch 2048, 40 epochs": {"batch_size": 2048, "epochs": 40},
    "full batch, 100 epochs": {"schedule": "full_batch", "epochs": 100},
    "full batch, 200 epochs": {"schedule": "full_batch", "epochs": 200},
    "full batch, 200 epochs, lr 0.01": {"schedule": "full_batch", "epochs": 200, "lr": 0.01},
}


def schedules(graph: Path, folds: int) -> None:
    """Each schedule's test weighted F1 on the sample and its full-graph passes per fold."""
    data = torch.load(graph, weights_only=False)
    rows = []
    for name, settings in SCHEDULES.items():
        config = TrainConfig(folds=folds, **settings)
        started = time.perf_counter()
        result = cross_validate(data, ModelConfig(), config, torch.device("cpu"), name=name)
        seconds = time.perf_counter() - started
        passes = len(result.folds[0].step_seconds)
        f1 = [row["value"] for row in result.rows if row["metric"] == "weighted_f1"]
        rows.append(
            f"| {name} | {np.mean(f1):.4f} ± {np.std(f1, ddof=1):.4f} | {passes} | {seconds:.0f} |"
        )
        print(rows[-1], flush=True)
    print("| schedule | test weighted F1 | training passes per fold | seconds (all folds) |")
    print("|---|---|---|---|")
    print("\n".join(rows))


def iesn_graph(seed: int = 0, fraction: float = 1.0):
    """Table I sizes times ``fraction``: tables from the generator, random features of the
    paper's dimensions (user 768 = mBERT group context, image 2048 = ResNet-50, comment 768 =
    mBERT)."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), seed=seed, scale=iesn_fraction(fraction))
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


class Stepper:
    """One model's training step on the whole graph: forward, cross-entropy on a batch of
    labelled edges, backward, Adam."""

    def __init__(self, name: str, model: torch.nn.Module, forward, graph: GraphTensors) -> None:
        self.name, self.model, self.forward, self.graph = name, model, forward, graph
        self.optimizer = torch.optim.Adam(model.parameters(), lr=0.005)

    def step(self, batch: torch.Tensor, amp: bool = False) -> None:
        device = batch.device
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            logits = self.forward(batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), self.graph.labels[batch])
        loss.backward()
        self.optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()


def steppers(data, device: torch.device, kinds: list[str], compile_: bool = False):
    """The models of the side-by-side benchmark on ``data``: ``pyg`` (the yardstick), ``ours``
    (HMGEmo, fused layers) and ``floor``, with the same first weights where they share them."""
    from bench.pyg_stack import PlainPyGStack, PropagationFloor

    graph = GraphTensors.of(data, device)
    dims, config = InputDims.of(data), ModelConfig()
    users, images = data["user"].num_nodes, data["image"].num_nodes
    torch.manual_seed(0)
    ours = HMGEmo(config, dims).to(device)
    started = time.perf_counter()
    layout = ours.fused_layout(graph.edge_index, users, images)
    print(
        f"fused layout of {layout.source.shape[0]:,} edges built in "
        f"{time.perf_counter() - started:.2f}s (once per graph)"
    )
    encode = torch.compile(ours.encode, dynamic=False) if compile_ else ours.encode

    def forward_ours(batch):
        nodes = encode(graph.x, graph.edge_index, graph.edge_attr, layout)
        return ours.classify(nodes, graph.pairs[:, batch], graph.comments[batch])

    def plain(model):  # the two bench models take the whole graph and the batch's pairs
        return lambda batch: model(
            graph.x, graph.edge_index, graph.edge_attr, graph.pairs[:, batch], graph.comments[batch]
        )

    result = {}
    for kind in kinds:
        if kind == "ours":
            result[kind] = Stepper("ours (fused)", ours, forward_ours, graph)
        elif kind == "pyg":
            stack = PlainPyGStack(config, dims).to(device)
            stack.load_state_dict(ours.state_dict())
            result[kind] = Stepper("plain PyG HeteroConv(GATConv)", stack, plain(stack), graph)
        elif kind == "floor":
            adjacency = PropagationFloor.adjacency_of(graph.edge_index, users, images)
            floor = PropagationFloor(config, dims, adjacency).to(device)
            result[kind] = Stepper("propagation floor (CSR spmm)", floor, plain(floor), graph)
    return result, graph


def same_logits(models: dict[str, Stepper], graph: GraphTensors) -> float:
    """Max |logit difference| of the yardstick and our model on the same weights (eval mode)."""
    batch = torch.arange(min(512, graph.pairs.shape[1]), device=graph.pairs.device)
    with torch.no_grad():
        models["pyg"].model.load_state_dict(models["ours"].model.state_dict())
        outputs = []
        for kind in ("pyg", "ours"):
            models[kind].model.eval()
            outputs.append(models[kind].forward(batch))
    return float((outputs[0] - outputs[1]).abs().max())


def saved_for_backward(stepper: Stepper, batch: torch.Tensor) -> tuple[int, list[str]]:
    """Bytes autograd keeps for backward in one step (each storage once; parameters, inputs
    and the graph's own tensors left out: they exist anyway), and the largest saved tensors."""
    existing = {p.untyped_storage().data_ptr() for p in stepper.model.parameters()}
    graph = stepper.graph
    for tensor in [*graph.x.values(), *graph.edge_index.values(), *graph.edge_attr.values()]:
        existing.add(tensor.untyped_storage().data_ptr())
    seen: set[int] = set()
    sizes: dict[tuple, list[int]] = {}

    def pack(tensor):
        if tensor.layout != torch.strided:  # a sparse matrix of the graph: built before
            return tensor
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in existing and pointer not in seen:
            seen.add(pointer)
            key = (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
            sizes.setdefault(key, []).append(tensor.untyped_storage().nbytes())
        return tensor

    stepper.model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = stepper.forward(batch)
    del logits
    total = sum(sum(v) for v in sizes.values())
    ranked = sorted(sizes.items(), key=lambda item: -sum(item[1]))[:3]
    names = [
        f"{len(v)} x {list(shape)} {dtype} ({sum(v) / 2**20:,.0f} MiB)"
        for (shape, dtype), v in ranked
    ]
    return total, names


def side_by_side(
    fraction: float, device_name: str, steps: int, amp: bool, compile_: bool, memory: bool
) -> None:
    import subprocess
    import sys

    if memory:  # first, each model alone in a fresh process: its own peak (nothing held here)
        for kind in ("pyg", "ours", "floor"):
            command = ["iesn-step", "--scale", str(fraction), "--model", kind, "--steps", "3"]
            command += ["--device", device_name] + (["--amp"] if amp else [])
            subprocess.run([sys.executable, "-m", "bench.training", *command], check=True)
    started = time.perf_counter()
    data, stats = iesn_graph(fraction=fraction)
    print(
        f"scale {fraction} of Table I: {stats.table_i()}\n"
        f"graph built in {time.perf_counter() - started:.0f}s"
    )
    device = torch.device(device_name)
    models, graph = steppers(data, device, ["pyg", "ours", "floor"], compile_)
    print(f"same weights, eval: max |logit(pyg) - logit(ours)| = {same_logits(models, graph):.2e}")
    edges = graph.pairs.shape[1]
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {kind: [] for kind in models}
    for round_ in range(steps + 2):  # the first two rounds warm up; models alternate per round
        batch = torch.randint(0, edges, (512,), generator=generator).to(device)
        for kind, stepper in models.items():
            begun = time.perf_counter()
            stepper.step(batch, amp and kind != "floor")
            if round_ >= 2:
                times[kind].append(time.perf_counter() - begun)
    median = {kind: statistics.median(values) for kind, values in times.items()}
    print(f"\ndevice {device}, amp {amp}, compile {compile_}, batch 512, median of {steps} steps:")
    print("| model | ms/step | vs plain PyG | vs floor | saved for backward | largest saved |")
    print("|---|---|---|---|---|---|")
    batch = torch.arange(512, device=device) % edges
    for kind, stepper in models.items():
        saved, largest = saved_for_backward(stepper, batch)
        print(
            f"| {stepper.name} | {1000 * median[kind]:,.1f} | "
            f"{median['pyg'] / median[kind]:.2f}x faster | {median[kind] / median['floor']:.2f}x | "
            f"{saved / 2**30:.2f} GiB | {'; '.join(largest)} |"
        )
    if device.type == "cuda":
        print(f"peak GPU memory (all three) {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def iesn_step(
    device_name: str,
    steps: int,
    amp: bool,
    batch_size: int,
    fraction: float,
    kind: str,
    compile_: bool,
) -> None:
    started = time.perf_counter()
    data, stats = iesn_graph(fraction=fraction)
    print(f"graph built in {time.perf_counter() - started:.0f}s: {stats}")
    device = torch.device(device_name)
    stepper = steppers(data, device, [kind], compile_)[0][kind]
    edges = stepper.graph.pairs.shape[1]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps + 2):
        batch = torch.randint(0, edges, (batch_size,), device=device)
        begun = time.perf_counter()
        stepper.step(batch, amp)
        if step >= 2:
            times.append(time.perf_counter() - begun)
    median = statistics.median(times)
    steps_per_epoch = int(np.ceil(0.8 * edges / batch_size))
    print(
        f"{stepper.name}, scale {fraction}, device={device} amp={amp} batch={batch_size}: "
        f"median {1000 * median:.1f} ms/step over {steps} steps; {steps_per_epoch} steps/epoch "
        f"-> {median * steps_per_epoch:.1f} s/epoch, "
        f"{20 * median * steps_per_epoch / 60:.1f} min for 20 epochs"
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
    sch = sub.add_parser("schedules")
    sch.add_argument("--graph", type=Path, default=Path("data/store/artifacts/hetero_graph.pt"))
    sch.add_argument("--folds", type=int, default=3)
    for name in ("iesn-step", "side-by-side"):
        s = sub.add_parser(name)
        s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        s.add_argument("--scale", type=float, default=1.0, help="fraction of Table I's sizes")
        s.add_argument("--steps", type=int, default=20 if name == "iesn-step" else 10)
        s.add_argument("--amp", action="store_true", help="bf16 autocast")
        s.add_argument("--compile", action="store_true", help="torch.compile our encode")
    s.add_argument("--memory", action="store_true", help="each model's peak in its own process")
    step = sub.choices["iesn-step"]
    step.add_argument("--batch-size", type=int, default=512)
    step.add_argument("--model", choices=["ours", "pyg", "floor"], default="ours")
    args = parser.parse_args()
    if args.command == "variants":
        variants(args.graph, args.epochs, args.folds, args.diagnostics)
    elif args.command == "schedules":
        schedules(args.graph, args.folds)
    elif args.command == "side-by-side":
        side_by_side(args.scale, args.device, args.steps, args.amp, args.compile, args.memory)
    else:
        iesn_step(
            args.device,
            args.steps,
            args.amp,
            args.batch_size,
            args.scale,
            args.model,
            args.compile,
        )


if __name__ == "__main__":
    main()
