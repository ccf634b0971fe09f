"""The two settings of a trained model, each defined once with the paper's defaults (Sec.
IV-B): how to train and evaluate it (:class:`TrainConfig`) and its architecture
(:class:`ModelConfig`). ``trained_model``'s and ``experiment_results``' run config is built from
both. No torch import here: Dagster loads this module in every step's process.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Backbone = Literal["gat", "sage", "graphconv"]
Architecture = Literal["hmg_emo", "comments_only"]


class ModelConfig(BaseModel):
    """HMG-Emo's architecture; defaults are the paper's (Sec. IV-B). The one definition of the
    model's settings: ``trained_model``'s run config and every experiment variant build on it."""

    hidden: int = Field(default=64, description="output size of each graph layer")
    num_layers: int = Field(default=5, description="graph layers")
    user_proj: int = Field(default=128, description="input projection of user features")
    image_proj: int = Field(default=128, description="input projection of image features")
    comment_proj: int = Field(default=256, description="input projection of comment features")
    backbone: Backbone = Field(default="gat", description="gat (HMG-Emo), sage or graphconv")
    use_comments: bool = Field(default=True, description="T: the comment edge term of Eq. 3")
    use_ac: bool = Field(default=True, description="AC: the adaptive combination of Eq. 5-6")
    self_term: Literal["softmax", "residual"] = Field(
        default="residual",
        description="residual (default): no self term in the softmax, a residual connection "
        "instead (on generated data with local signal, softmax fell below the edge-local "
        "logistic regression: BENCHMARKS.md); softmax: Eq. 3 as written, each node's own term "
        "inside the attention softmax of every relation (on user-image relations the self "
        "edge's comment feature is zero)",
    )
    skip_to_head: bool = Field(
        default=True,
        description="beyond the paper: the edge's own inputs (the user's and image's input "
        "projections and, with T, the edge's projected comment) join the combined node "
        "embeddings at the MLP head, so message passing cannot wash them out",
    )
    combine: Literal["concat", "add", "mul"] = Field(
        default="concat", description="c(.,.) of Eq. 6"
    )
    beta_activation: Literal["exp", "sigmoid"] = Field(
        default="sigmoid", description="exp is Eq. 5 as written (unbounded beta); see the docs"
    )
    head_hidden: list[int] = Field(
        default=[128, 64, 32], description="the MLP head's three hidden sizes (ours)"
    )
    dropout: float = Field(default=0.2, description="dropout in the MLP head")
    extra_classes: int = Field(default=0, description="1 for negative sampling's class none")
    architecture: Architecture = Field(
        default="hmg_emo", description="hmg_emo, or comments_only (Table III's classifier)"
    )


class TrainConfig(BaseModel):
    """Optimisation and evaluation settings; defaults are the paper's (Sec. IV-B). The one
    definition of training settings: ``trained_model``'s run config and every experiment
    variant build on it."""

    epochs: int = Field(default=20, description="epochs per fold")
    lr: float = Field(default=0.005, description="Adam's learning rate (cosine annealing)")
    batch_size: int = Field(default=512, description="supervision edges per step")
    schedule: Literal["paper", "full_batch"] = Field(
        default="paper",
        description="paper: every training edge once per epoch in shuffled batches of "
        "batch_size, one full-graph pass per batch; full_batch: one step per epoch on every "
        "training edge (batch_size unused; give it more epochs): far fewer full-graph passes "
        "at IESN scale (BENCHMARKS.md)",
    )
    weight_decay: float = Field(default=0.0, description="Adam's weight decay")
    seed: int = Field(default=0, description="fold k uses seed + k for its split and weights")
    folds: int = Field(
        default=3,
        description="evaluation runs: seeds of repeated 80:10:10 splits (the paper's '3 runs'), "
        "or k of k-fold",
    )
    split: Literal["repeated", "kfold"] = Field(
        default="repeated",
        description="repeated: `folds` independent stratified 80:10:10 splits (test sets "
        "overlap; the paper's protocol); kfold: stratified k-fold, disjoint test sets, "
        "validation = the next fold",
    )
    message_passing: Literal["transductive", "inductive"] = Field(
        default="inductive",
        description="transductive: every edge passes messages, held-out labels are hidden; "
        "inductive: validation/test edges (and their comments) are removed from message passing",
    )
    negative_sampling: bool = Field(
        default=False,
        description="Table V: one non-edge labelled none per batch edge in training (avoiding "
        "the edges training sees: in the inductive protocol the training edges), and as many "
        "true non-edges as test edges in test (scored as a 9-class problem too); validation "
        "(model selection) stays emotion-only",
    )
    kernels: Literal["fused", "pyg"] = Field(
        default="fused",
        description="fused: the GAT layers as one pass per layer (hmg_pipeline.model.fused; "
        "same math and parameters, several times faster, BENCHMARKS.md); pyg: PyG's "
        "HeteroConv(GATConv), the reference the tests pin the fused path to. sage/graphconv "
        "always run through PyG",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the message passing (static shapes); off by default: no "
        "gain measured on CPU",
    )
    negatives_from: Literal["viewers", "all_users"] = Field(
        default="viewers",
        description="whose non-edges are negatives: users with at least one view, or every "
        "user (users without views make `none` trivially separable)",
    )
