"""The heterogeneous graph of HMG-Emo as a PyG ``HeteroData``.

Nodes: ``user`` (x = user-context embedding, Eq. 1) and ``image`` (x = image embedding).
Edges: (user, views, image) with ``edge_attr`` = comment embedding and ``edge_label`` = emotion
index; its reverse (image, rev_views, user) with the same ``edge_attr`` and no label; and
(user, connects, user) in both directions without attributes. User nodes are the paper's
(uploaders and viewers) or every user the raw data knows (:func:`node_users`). Edges whose
image could not be embedded are left out (rule ``image_unreadable``) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import torch
from torch_geometric.data import HeteroData

from hmg_pipeline.core.schema import MIKELS_EMOTIONS

VIEWS = ("user", "views", "image")
REV_VIEWS = ("image", "rev_views", "user")
CONNECTS = ("user", "connects", "user")
CLASS_INDEX = {emotion: index for index, emotion in enumerate(MIKELS_EMOTIONS)}


@dataclass(frozen=True)
class GraphStats:
    """The paper's Table I for a built graph, plus what was left out."""

    user_nodes: int
    image_nodes: int
    user_user_edges: int  # undirected pairs
    user_image_edges: int
    comment_coverage: float  # share of user-image edges with a comment
    dropped_image_unreadable: int
    dropped_contacts_unknown_user: int

    def table_i(self) -> str:
        return "\n".join(
            [
                "| user nodes | image nodes | user-user edges | user-image edges |",
                "|---|---|---|---|",
                f"| {self.user_nodes:,} | {self.image_nodes:,} | {self.user_user_edges:,} | "
                f"{self.user_image_edges:,} |",
            ]
        )


UserNodes = Literal["uploaders_and_viewers", "all_known"]


def node_users(users: pl.DataFrame, definition: UserNodes) -> pl.DataFrame:
    """The rows of ``users`` (``raw_users``, with its ``in_*`` flags) that become user nodes.
    ``uploaders_and_viewers``: the paper's user nodes ("uploaders, viewers, or both");
    ``all_known``: every user any table names (contacts and group members too)."""
    if definition == "all_known":
        return users
    if definition != "uploaders_and_viewers":
        raise ValueError(f"user_nodes={definition!r}: uploaders_and_viewers or all_known")
    return users.filter(pl.col("in_views") | pl.col("in_images"))


def _matrix(frame: pl.DataFrame, column: str = "vector") -> np.ndarray:
    dim = frame.schema[column].shape[0]
    return frame[column].to_numpy().reshape(frame.height, dim).astype(np.float32)


def build_hetero_graph(
    users: pl.DataFrame,
    user_context: pl.DataFrame,
    image_embeddings: pl.DataFrame,
    edges: pl.DataFrame,
    comment_embeddings: pl.DataFrame,
    contacts: pl.DataFrame,
) -> tuple[HeteroData, GraphStats]:
    """Assemble the graph from the cleaned tables and the feature tables."""
    user_ids = users["user_id"].sort().to_list()
    user_index = {u: i for i, u in enumerate(user_ids)}
    context = user_context.filter(pl.col("user_id").is_in(user_ids))
    missing_context = set(user_ids) - set(context["user_id"].to_list())
    if missing_context:
        raise ValueError(
            f"{len(missing_context)} user(s) have no user-context vector, e.g. "
            f"{sorted(missing_context)[:3]}"
        )
    context = context.sort(pl.col("user_id").replace_strict(user_index, return_dtype=pl.Int64))
    images = image_embeddings.sort("image_id")
    image_ids = images["image_id"].to_list()
    image_index = {i: k for k, i in enumerate(image_ids)}

    labelled = edges.select("user_id", "image_id", "emotion").join(
        comment_embeddings.select("user_id", "image_id", "has_comment", "vector"),
        on=["user_id", "image_id"],
        how="left",
    )
    if labelled["vector"].null_count():
        raise ValueError("some clean edges have no comment embedding; re-materialise features")
    readable = labelled.filter(pl.col("image_id").is_in(image_ids))
    if labelled.height and not readable.height:
        raise ValueError(
            f"no user-image edge is left: the images of all {labelled.height} clean edges are "
            "unreadable (see features.unreadable_images for the reasons)"
        )
    if not labelled.height:
        raise ValueError("no clean user-image edge: materialise clean_labels on data with views")
    unknown_users = readable.filter(~pl.col("user_id").is_in(user_ids))
    if unknown_users.height:
        raise ValueError(f"{unknown_users.height} edge(s) name a user that is not a node")

    source = np.array([user_index[u] for u in readable["user_id"]], dtype=np.int64)
    target = np.array([image_index[i] for i in readable["image_id"]], dtype=np.int64)
    labels = np.array([CLASS_INDEX[e] for e in readable["emotion"]], dtype=np.int64)
    comment = _matrix(readable) if readable.height else np.zeros((0, 1), np.float32)

    known = contacts.filter(
        pl.col("user_id").is_in(user_ids) & pl.col("contact_id").is_in(user_ids)
    )
    a = np.array([user_index[u] for u in known["user_id"]], dtype=np.int64)
    b = np.array([user_index[u] for u in known["contact_id"]], dtype=np.int64)

    data = HeteroData()
    data["user"].x = torch.from_numpy(_matrix(context))
    data["user"].node_id = user_ids
    data["image"].x = torch.from_numpy(_matrix(images))
    data["image"].node_id = image_ids
    view_index = torch.from_numpy(np.stack([source, target]))
    data[VIEWS].edge_index = view_index
    data[VIEWS].edge_attr = torch.from_numpy(comment)
    data[VIEWS].edge_label = torch.from_numpy(labels)
    data[VIEWS].has_comment = torch.from_numpy(readable["has_comment"].to_numpy().astype(bool))
    data[REV_VIEWS].edge_index = view_index.flip(0)
    data[REV_VIEWS].edge_attr = data[VIEWS].edge_attr
    data[CONNECTS].edge_index = torch.from_numpy(
        np.stack([np.concatenate([a, b]), np.concatenate([b, a])])
    )
    data.class_names = list(MIKELS_EMOTIONS)
    data.validate(raise_on_error=True)
    stats = GraphStats(
        user_nodes=len(user_ids),
        image_nodes=len(image_ids),
        user_user_edges=known.height,
        user_image_edges=readable.height,
        comment_coverage=float(readable["has_comment"].mean()) if readable.height else 0.0,
        dropped_image_unreadable=labelled.height - readable.height,
        dropped_contacts_unknown_user=contacts.height - known.height,
    )
    return data, stats


class NonEdgeSampler:
    """Uniform (user, image) pairs that are not user-image edges of the graph: the negatives of
    the paper's negative-sampling experiment (Table V). Users are drawn from ``users`` (default:
    every user; Table V draws from users with at least one view, since a user without views
    would make ``none`` trivially separable). Existing pairs are kept as sorted codes
    ``user * num_images + image``; draws that hit one are rejected and redrawn."""

    def __init__(
        self,
        edge_index: np.ndarray,
        num_users: int,
        num_images: int,
        users: np.ndarray | None = None,
    ) -> None:
        self.num_users = num_users
        self.num_images = num_images
        self.users = np.arange(num_users) if users is None else np.unique(users).astype(np.int64)
        self.existing = np.unique(edge_index[0].astype(np.int64) * num_images + edge_index[1])
        possible = np.isin(self.existing // num_images, self.users).sum()
        if possible >= len(self.users) * num_images:
            raise ValueError("every user-image pair is an edge: there is no negative to sample")

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` non-edges as a (2, count) array of (user index, image index)."""
        chosen: list[np.ndarray] = []
        needed = count
        while needed > 0:
            size = max(2 * needed, 16)
            users = self.users[rng.integers(0, len(self.users), size=size)]
            draws = users * self.num_images + rng.integers(0, self.num_images, size=size)
            position = np.searchsorted(self.existing, draws).clip(max=len(self.existing) - 1)
            fresh = draws[self.existing[position] != draws] if len(self.existing) else draws
            chosen.append(fresh[:needed])
            needed -= len(chosen[-1])
        codes = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
        return np.stack([codes // self.num_images, codes % self.num_images])
