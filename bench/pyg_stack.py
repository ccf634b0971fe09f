"""The yardstick of `python -m bench.training side-by-side`: HMG-Emo's default architecture as
a user would write it with plain PyG, ``HeteroConv`` of ``GATConv`` per layer, every edge's
comment projected and fed to ``edge_dim`` of the two user-image relations.

Its parameters are named like :class:`hmg_pipeline.model.hmg_emo.HMGEmo`'s, so the benchmark
loads one model's weights into the other and checks that both compute the same logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import GATConv, HeteroConv

from hmg_pipeline.core.graph import CONNECTS, REV_VIEWS, VIEWS
from hmg_pipeline.model.config import ModelConfig
from hmg_pipeline.model.hmg_emo import InputDims


class PlainPyGStack(nn.Module):
    """Input projections, 5 x HeteroConv(GATConv) with BatchNorm + ReLU, the adaptive
    combination (sigmoid beta), the edge's own inputs beside it, and the MLP head: the
    project's default settings, nothing else."""

    def __init__(self, config: ModelConfig, dims: InputDims) -> None:
        super().__init__()
        self.user_proj = nn.Linear(dims.user, config.user_proj)
        self.image_proj = nn.Linear(dims.image, config.image_proj)
        self.comment_proj = nn.Linear(dims.comment, config.comment_proj)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for layer in range(config.num_layers):
            user = config.user_proj if layer == 0 else config.hidden
            image = config.image_proj if layer == 0 else config.hidden
            edge = {"edge_dim": config.comment_proj, "add_self_loops": False, "residual": True}
            self.convs.append(
                HeteroConv(
                    {
                        VIEWS: GATConv((user, image), config.hidden, **edge),
                        REV_VIEWS: GATConv((image, user), config.hidden, **edge),
                        CONNECTS: GATConv(user, config.hidden, residual=True),
                    },
                    aggr="sum",
                )
            )
            self.norms.append(
                nn.ModuleDict(
                    {"user": nn.BatchNorm1d(config.hidden), "image": nn.BatchNorm1d(config.hidden)}
                )
            )
        self.w_u = nn.Linear(config.hidden, 1)
        self.w_i = nn.Linear(config.hidden, 1)
        h1, h2, h3 = config.head_hidden
        width = 2 * config.hidden + config.user_proj + config.image_proj + config.comment_proj
        self.head = nn.Sequential(
            nn.Linear(width, h1),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(h2, h3),
            nn.ReLU(),
            nn.Linear(h3, dims.classes),
        )

    def forward(
        self, x: dict, edge_index: dict, edge_attr: dict, pairs: Tensor, comments: Tensor
    ) -> Tensor:
        h = {"user": self.user_proj(x["user"]), "image": self.image_proj(x["image"])}
        inputs = h
        comment = self.comment_proj(edge_attr[VIEWS])
        edge_attr = {VIEWS: comment, REV_VIEWS: comment}
        for conv, norms in zip(self.convs, self.norms, strict=True):
            out = conv(h, edge_index, edge_attr_dict=edge_attr)
            h = {kind: F.relu(norms[kind](out[kind])) for kind in ("user", "image")}
        x_u, x_i = h["user"][pairs[0]], h["image"][pairs[1]]
        beta = torch.sigmoid(self.w_u(x_u) + self.w_i(x_i))
        own = [inputs["user"][pairs[0]], inputs["image"][pairs[1]], self.comment_proj(comments)]
        return self.head(torch.cat([beta * x_u, (1.0 - beta) * x_i, *own], dim=-1))


class PropagationFloor(nn.Module):
    """The floor: the same input projections and head, and 5 layers of ``relu(A @ h W)`` over
    the same edges (users and images as one node set, mean-normalised CSR ``A``, self loops),
    no attention, no comment term, no norm. What any model of this graph pays at least."""

    def __init__(self, config: ModelConfig, dims: InputDims, adjacency: Tensor) -> None:
        super().__init__()
        self.adjacency = adjacency
        self.user_proj = nn.Linear(dims.user, config.user_proj)
        self.image_proj = nn.Linear(dims.image, config.image_proj)
        self.comment_proj = nn.Linear(dims.comment, config.comment_proj)
        self.layers = nn.ModuleList(
            nn.Linear(config.user_proj if k == 0 else config.hidden, config.hidden)
            for k in range(config.num_layers)
        )
        h1, h2, h3 = config.head_hidden
        width = 2 * config.hidden + config.user_proj + config.image_proj + config.comment_proj
        self.head = nn.Sequential(
            nn.Linear(width, h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, h3),
            nn.ReLU(),
            nn.Linear(h3, dims.classes),
        )

    @staticmethod
    def adjacency_of(edge_index: dict, users: int, images: int) -> Tensor:
        """Row-normalised CSR adjacency over users then images, with self loops."""
        views = edge_index[VIEWS]
        nodes = torch.arange(users + images, device=views.device)
        rows = torch.cat([views[1] + users, views[0], edge_index[CONNECTS][1], nodes])
        cols = torch.cat([views[0], views[1] + users, edge_index[CONNECTS][0], nodes])
        degree = torch.bincount(rows, minlength=users + images).float()
        values = 1.0 / degree[rows]
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (len(nodes),) * 2)
        return coo.coalesce().to_sparse_csr()

    def forward(
        self, x: dict, edge_index: dict, edge_attr: dict, pairs: Tensor, comments: Tensor
    ) -> Tensor:
        users = x["user"].shape[0]
        inputs = {"user": self.user_proj(x["user"]), "image": self.image_proj(x["image"])}
        h = torch.cat([inputs["user"], inputs["image"]])
        for layer in self.layers:
            h = F.relu(self.adjacency @ layer(h))
        x_u, x_i = h[:users][pairs[0]], h[users:][pairs[1]]
        own = [inputs["user"][pairs[0]], inputs["image"][pairs[1]], self.comment_proj(comments)]
        return self.head(torch.cat([x_u, x_i, *own], dim=-1))
