"""HMG-Emo: a heterogeneous graph network over users and images, an adaptive combination of the
two node embeddings of an edge, and an MLP head that classifies the edge's emotion.

Equations of the paper and where they are:

- input projections (Sec. IV-B): ``user_proj`` 128, ``image_proj`` 128, ``comment_proj`` 256;
- Eq. 2-4, message passing: ``HeteroConv`` of ``GATConv`` per relation; on the two user-image
  relations the attention includes the edge term of Eq. 3 (``edge_dim``: the projected comment);
  ``connects`` has no edge attributes; 5 layers, output 64, BatchNorm + ReLU after each (Eq. 3's
  self term: see below);
- Eq. 5, ``beta = exp(LeakyReLU(w_u . x_u + w_i . x_i))``: :meth:`HMGEmo.beta`. The paper's exp
  is unbounded, so ``1 - beta`` goes negative; on the bundled sample (3 folds, transductive,
  before issue 12, std ddof=0) exp gave test weighted F1 0.4897 +- 0.0236 against 0.4900 +-
  0.0135 with a sigmoid (BENCHMARKS.md): no gain, twice the spread; so the default is
  ``beta_activation="sigmoid"``, bounded, and ``"exp"`` is the paper as written;
- Eq. 6, ``c(beta x_u, (1 - beta) x_i)``: :meth:`HMGEmo.combine`;
- head: 3 hidden layers with ReLU, Dropout after each hidden layer but the last.

Eq. 3's self term (``self_term``): ``softmax`` is Eq. 3 as written, a node's own term inside the
attention softmax of every relation (:class:`BipartiteSelfLoopGAT` on the user-image relations,
whose self edge carries a zero comment); ``residual`` is the earlier interpretation, no self term
in the softmax and ``residual=True`` instead, under which a node with a single incoming edge
gives it attention 1 and that edge's comment has no effect. SAGEConv/GraphConv keep their root
weight. ``skip_to_head`` (beyond the paper, on by default) passes the edge's own inputs (input
projections of its user and image, its projected comment) to the head beside the combined node
embeddings, so the head sees what the edge-local logistic regression sees. Both defaults come
from the generated graphs of ``hmg_pipeline.testing.structure`` (BENCHMARKS.md). The head's
hidden sizes (128, 64, 32) are ours; the paper does not give them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.data import HeteroData
from torch_geometric.nn import GATConv, GraphConv, HeteroConv, SAGEConv

from hmg_pipeline.core.graph import CONNECTS, REV_VIEWS, VIEWS
from hmg_pipeline.model.config import ModelConfig
from hmg_pipeline.model.fused import FusedLayout, comment_scores, fused_gat_layer


@dataclass(frozen=True)
class InputDims:
    """The sizes a model takes from its graph: node and comment features, and classes."""

    user: int
    image: int
    comment: int
    classes: int

    @classmethod
    def of(cls, data: HeteroData) -> InputDims:
        return cls(
            user=data["user"].x.shape[1],
            image=data["image"].x.shape[1],
            comment=data[VIEWS].edge_attr.shape[1],
            classes=len(data.class_names),
        )


class BipartiteSelfLoopGAT(nn.Module):
    """Eq. 3 on a bipartite relation: the attention softmax of a destination node runs over its
    incoming edges and the node itself. PyG's ``GATConv`` adds self-loops only on homogeneous
    graphs, so the destination nodes are appended to the sources (one shared projection ``W``,
    as in Eq. 3; it needs equal input sizes) and each gets an edge from its own copy. The self
    edge's feature is zero: the node has no comment with itself, and since the edge projection
    has no bias its comment score is exactly 0, so each edge's comment raises or lowers that
    edge against the node itself. (PyG's ``fill_value="mean"`` would give a node with a single
    edge the same comment score on both terms, which cancels in the softmax: the very case the
    self term is there for.)"""

    def __init__(self, in_dim: int, out_dim: int, edge_dim: int | None) -> None:
        super().__init__()
        self.conv = GATConv(in_dim, out_dim, edge_dim=edge_dim, add_self_loops=False)

    def forward(
        self, x: tuple[Tensor, Tensor], edge_index: Tensor, edge_attr: Tensor | None = None
    ) -> Tensor:
        x_src, x_dst = x
        if x_src.shape[1] != x_dst.shape[1]:
            raise ValueError(
                "self_term='softmax' shares one projection between user and image nodes: set "
                f"user_proj = image_proj (got {x_src.shape[1]} and {x_dst.shape[1]})"
            )
        nodes = torch.arange(x_dst.shape[0], device=x_dst.device)
        loops = torch.stack([nodes + x_src.shape[0], nodes])
        if edge_attr is not None:
            edge_attr = torch.cat(
                [edge_attr, edge_attr.new_zeros(x_dst.shape[0], edge_attr.shape[1])]
            )
        sources = torch.cat([x_src, x_dst])
        return self.conv((sources, x_dst), torch.cat([edge_index, loops], 1), edge_attr)


def make_conv(config: ModelConfig, relation: tuple[str, str, str], in_dim) -> nn.Module:
    """One relation's convolution for the configured backbone."""
    with_edges = config.use_comments and relation in (VIEWS, REV_VIEWS)
    if config.backbone == "gat":
        edge_dim = config.comment_proj if with_edges else None
        if config.self_term == "softmax":
            if relation == CONNECTS:
                return GATConv(in_dim, config.hidden, add_self_loops=True)
            return BipartiteSelfLoopGAT(in_dim[0], config.hidden, edge_dim)
        return GATConv(
            in_dim,
            config.hidden,
            edge_dim=edge_dim,
            add_self_loops=relation == CONNECTS,
            residual=True,
        )
    if config.use_comments:
        raise ValueError(
            f"backbone {config.backbone!r} cannot use edge features: the comment term T needs "
            "gat (set use_comments=false for sage or graphconv)"
        )
    if config.backbone == "sage":
        return SAGEConv(in_dim, config.hidden)
    if config.backbone == "graphconv":
        return GraphConv(in_dim, config.hidden)
    raise ValueError(f"unknown backbone {config.backbone!r}: use gat, sage or graphconv")


def mlp_head(in_dim: int, config: ModelConfig, classes: int) -> nn.Sequential:
    """3 hidden layers with ReLU; Dropout after each hidden layer but the last."""
    if len(config.head_hidden) != 3:
        raise ValueError(f"head_hidden needs three sizes, got {config.head_hidden}")
    h1, h2, h3 = config.head_hidden
    return nn.Sequential(
        nn.Linear(in_dim, h1),
        nn.ReLU(),
        nn.Dropout(config.dropout),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.Dropout(config.dropout),
        nn.Linear(h2, h3),
        nn.ReLU(),
        nn.Linear(h3, classes + config.extra_classes),
    )


class HMGEmo(nn.Module):
    """The model; ``forward`` returns logits for the ``(user, image)`` pairs of ``edge_index``."""

    def __init__(self, config: ModelConfig, dims: InputDims) -> None:
        super().__init__()
        self.config = config
        self.dims = dims
        self.user_proj = nn.Linear(dims.user, config.user_proj)
        self.image_proj = nn.Linear(dims.image, config.image_proj)
        self.comment_proj = nn.Linear(dims.comment, config.comment_proj)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for layer in range(config.num_layers):
            in_user = config.user_proj if layer == 0 else config.hidden
            in_image = config.image_proj if layer == 0 else config.hidden
            relations = {
                VIEWS: make_conv(config, VIEWS, (in_user, in_image)),
                REV_VIEWS: make_conv(config, REV_VIEWS, (in_image, in_user)),
                CONNECTS: make_conv(config, CONNECTS, in_user),
            }
            self.convs.append(HeteroConv(relations, aggr="sum"))
            self.norms.append(
                nn.ModuleDict(
                    {"user": nn.BatchNorm1d(config.hidden), "image": nn.BatchNorm1d(config.hidden)}
                )
            )
        self.w_u = nn.Linear(config.hidden, 1)
        self.w_i = nn.Linear(config.hidden, 1)
        combined = 2 * config.hidden if config.combine == "concat" else config.hidden
        if config.skip_to_head:
            combined += config.user_proj + config.image_proj
            combined += config.comment_proj if config.use_comments else 0
        self.head = mlp_head(combined, config, dims.classes)

    @property
    def fusable(self) -> bool:
        """Whether :mod:`hmg_pipeline.model.fused` computes this model's layers (GAT backbone)."""
        return self.config.backbone == "gat"

    def fused_layout(self, edge_index_dict: dict, users: int, images: int) -> FusedLayout:
        """The fused path's edge layout of a message-passing graph, for this model's self term."""
        return FusedLayout.of(edge_index_dict, users, images, self.config.self_term == "softmax")

    def encode(
        self,
        x_dict: dict[str, Tensor],
        edge_index_dict: dict,
        edge_attr_dict: dict,
        layout: FusedLayout | None = None,
    ) -> dict[str, Tensor]:
        """Node embeddings after the input projections and the message-passing layers. With a
        ``layout`` (of the same ``edge_index_dict``) the layers run fused
        (:func:`~hmg_pipeline.model.fused.fused_gat_layer`: same math, same parameters);
        without, through PyG's ``HeteroConv``, the reference."""
        x = {"user": self.user_proj(x_dict["user"]), "image": self.image_proj(x_dict["image"])}
        inputs = {f"{kind}_input": x[kind] for kind in x} if self.config.skip_to_head else {}
        if layout is not None:
            return self._encode_fused(x, edge_attr_dict, layout) | inputs
        edge_attr = {}
        if self.config.use_comments and self.config.backbone == "gat":
            comment = self.comment_proj(edge_attr_dict[VIEWS])
            edge_attr = {VIEWS: comment, REV_VIEWS: comment}
        for conv, norms in zip(self.convs, self.norms, strict=True):
            if edge_attr:
                out = conv(x, edge_index_dict, edge_attr_dict=edge_attr)
            else:
                out = conv(x, edge_index_dict)
            x = {kind: F.relu(norms[kind](out[kind])) for kind in ("user", "image")}
        return x | inputs

    def _encode_fused(
        self, x: dict[str, Tensor], edge_attr_dict: dict, layout: FusedLayout
    ) -> dict[str, Tensor]:
        if not self.fusable:
            raise ValueError(f"the fused path runs GAT layers, not {self.config.backbone!r}")
        comments = edge_attr_dict[VIEWS].shape[0] if VIEWS in edge_attr_dict else layout.comments
        layout.check(
            x["user"].shape[0], x["image"].shape[0], comments, self.config.self_term == "softmax"
        )
        scores = None
        if self.config.use_comments:
            scores = comment_scores(list(self.convs), self.comment_proj, edge_attr_dict[VIEWS])
        user, image = x["user"], x["image"]
        for layer, (conv, norms) in enumerate(zip(self.convs, self.norms, strict=True)):
            own = None if scores is None else scores[:, 2 * layer : 2 * layer + 2]
            user, image = fused_gat_layer(conv, user, image, own, layout)
            user, image = F.relu(norms["user"](user)), F.relu(norms["image"](image))
        return {"user": user, "image": image}

    def beta(self, x_u: Tensor, x_i: Tensor) -> Tensor:
        """Eq. 5: beta = exp(LeakyReLU(w_u . x_u + w_i . x_i)) (``sigmoid`` as a setting)."""
        score = self.w_u(x_u) + self.w_i(x_i)
        if self.config.beta_activation == "sigmoid":
            return torch.sigmoid(score)
        return torch.exp(F.leaky_relu(score))

    def combine(self, x_u: Tensor, x_i: Tensor) -> Tensor:
        """Eq. 6: c(beta x_u, (1 - beta) x_i); without AC, c(x_u, x_i)."""
        if self.config.use_ac:
            beta = self.beta(x_u, x_i)
            x_u, x_i = beta * x_u, (1.0 - beta) * x_i
        if self.config.combine == "add":
            return x_u + x_i
        if self.config.combine == "mul":
            return x_u * x_i
        return torch.cat([x_u, x_i], dim=-1)

    def classify(
        self, nodes: dict[str, Tensor], pairs: Tensor, comments: Tensor | None = None
    ) -> Tensor:
        """Logits for (user, image) index pairs, given node embeddings from :meth:`encode`.
        ``comments`` are the pairs' own comment features, used only with ``skip_to_head`` (a
        pair that is not an edge, e.g. a negative sample, has none: zeros)."""
        features = self.combine(nodes["user"][pairs[0]], nodes["image"][pairs[1]])
        if self.config.skip_to_head:
            own = [nodes["user_input"][pairs[0]], nodes["image_input"][pairs[1]]]
            if self.config.use_comments:
                own.append(
                    self.comment_proj(comments)
                    if comments is not None
                    else features.new_zeros(pairs.shape[1], self.config.comment_proj)
                )
            features = torch.cat([features, *own], dim=-1)
        return self.head(features)

    def forward(
        self,
        x_dict: dict[str, Tensor],
        edge_index_dict: dict,
        edge_attr_dict: dict,
        pairs: Tensor,
        comments: Tensor | None = None,
    ) -> Tensor:
        nodes = self.encode(x_dict, edge_index_dict, edge_attr_dict)
        return self.classify(nodes, pairs, comments)


class CommentsOnly(nn.Module):
    """Table III's comments-only classifier: HMG-Emo's MLP head on the comment features."""

    def __init__(self, config: ModelConfig, dims: InputDims) -> None:
        super().__init__()
        self.config = config
        self.dims = dims
        self.head = mlp_head(dims.comment, config, dims.classes)

    def forward(self, comments: Tensor) -> Tensor:
        return self.head(comments)


def build_model(config: ModelConfig, dims: InputDims) -> HMGEmo | CommentsOnly:
    """The network named by ``config.architecture``, sized for ``dims``."""
    if config.architecture == "comments_only":
        return CommentsOnly(config, dims)
    if config.architecture == "hmg_emo":
        return HMGEmo(config, dims)
    raise ValueError(f"unknown architecture {config.architecture!r}: hmg_emo or comments_only")
