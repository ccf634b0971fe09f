"""Does HMG-Emo use the graph where it pays, and lose nothing where it does not?

python -m bench.structure [--datasets graph_only mostly_local] [--configs paper ...]
    [--folds 3] [--epochs 20]

Trains each model configuration on the generated graphs of ``hmg_pipeline.testing.structure``
(same splits for every configuration) and prints test weighted F1, mean ± std (ddof=1) over
the folds, next to the logistic regression on the edge's own features
[user context, image, comment] and the majority class.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.train import cross_validate
from hmg_pipeline.testing.structure import GRAPH_ONLY, MOSTLY_LOCAL, structure_graph

DATASETS = {"graph_only": GRAPH_ONLY, "mostly_local": MOSTLY_LOCAL}
# name -> (model settings, training settings) over the project's defaults (residual, skip to
# the head, inductive, sigmoid beta)
TRANSDUCTIVE = {"message_passing": "transductive"}
CONFIGS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "no_skip": ({"skip_to_head": False}, {}),
    "self_term": ({"self_term": "softmax"}, {}),
    "self_term_no_skip": ({"self_term": "softmax", "skip_to_head": False}, {}),
    "transductive": ({}, TRANSDUCTIVE),
    "transductive_no_skip": ({"skip_to_head": False}, TRANSDUCTIVE),
    "transductive_self_term": ({"self_term": "softmax"}, TRANSDUCTIVE),
    "transductive_self_term_no_skip": (
        {"self_term": "softmax", "skip_to_head": False},
        TRANSDUCTIVE,
    ),
    "as_written": (
        {"self_term": "softmax", "skip_to_head": False, "beta_activation": "exp"},
        TRANSDUCTIVE,
    ),
    "two_layers": ({"num_layers": 2}, {}),
}


def summary(values: list[float]) -> str:
    array = np.array(values)
    spread = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{array.mean():.4f} ± {spread:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for dataset in args.datasets:
        data = structure_graph(DATASETS[dataset])
        print(f"\n## {dataset}: {data['user', 'views', 'image'].num_edges} edges")
        baselines: dict[str, list[float]] = {}
        for k, name in enumerate(args.configs):
            model, training = CONFIGS[name]
            started = time.perf_counter()
            result = cross_validate(
                data,
                ModelConfig(**model),
                TrainConfig(epochs=args.epochs, folds=args.folds, **training),
                torch.device("cpu"),
                name=name,
                baselines=k == 0,
            )
            scores: dict[str, list[float]] = {}
            for row in result.rows:
                if row["metric"] == "weighted_f1":
                    scores.setdefault(row["model"], []).append(row["value"])
            if k == 0:
                baselines = {m: v for m, v in scores.items() if m != name}
            seconds = time.perf_counter() - started
            print(f"| {name} | {summary(scores[name])} | {seconds:.0f} s |", flush=True)
        for model, values in baselines.items():
            print(f"| {model} | {summary(values)} | |")


if __name__ == "__main__":
    main()
