"""HMG-Emo's GAT layers as one fused pass per layer: the math of PyG's ``GATConv`` inside
``HeteroConv(aggr="sum")``, computed with a few whole-graph tensor operations.

Why: at IESN scale (3.4M user-user edges, 0.2M user-image edges) the plain PyG stack spends a
training step on three things this module avoids (BENCHMARKS.md, issue 13):

- the comment term of Eq. 3 projects every edge's comment to 256 and then to 64 in each layer
  and relation, then dots it with ``att_edge``; that score is linear in the raw comment, so
  all ten (layer, relation) scores come from one ``E x 768 @ 768 x 10`` product (associativity:
  the same parameters and gradients, float rounding aside);
- messages ``alpha * x_j`` are materialised as ``E x 64`` tensors and kept for backward; here
  the aggregation is a CSR sparse-dense product whose backward is the transposed product and a
  sampled dot product (:class:`CSRAggregate`), so only ``E``-sized vectors are kept;
- three relations run as three convolutions; here the three share one edge list (relations
  side by side in a stacked source table), one attention softmax and one aggregation.

The parameters stay those of the ``GATConv`` modules (same state dict, old bundles load), and
``HeteroConv``'s own forward stays the reference: the tests pin this path to it. It covers
HMG-Emo's GATConv: one head, no attention dropout, LeakyReLU slope 0.2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F
from torch_geometric.nn import GATConv, HeteroConv

from hmg_pipeline.core.graph import CONNECTS, REV_VIEWS, VIEWS


@dataclass(frozen=True)
class FusedLayout:
    """One message-passing graph's edges, all relations together, sorted once by destination.

    Destinations are global: users ``0..U-1``, then images ``U..U+I-1``. Sources index a stacked
    table of projected features, one block per relation (``source_blocks``: views' users
    [+ images for the self term], rev_views' images [+ users], connects' users). Attention
    segments (``segment``) are (relation, destination) pairs; ``comment_slot`` points into the
    stacked comment scores (views' edges, then rev_views', then one zero for edges without a
    comment term). Built on the training device once per graph: no per-step host work."""

    users: int
    images: int
    bipartite_loops: bool
    source: Tensor  # (E,) table row of each edge, CSR order
    target: Tensor  # (E,) global destination of each edge, CSR order
    segment: Tensor  # (E,) softmax segment of each edge
    comment_slot: Tensor  # (E,) row of the stacked comment scores
    crow: Tensor  # (U + I + 1,) CSR row pointers over destinations
    crow_t: Tensor  # (table rows + 1,) row pointers of the transposed matrix
    col_t: Tensor  # (E,) destinations in transposed (source) order
    perm_t: Tensor  # (E,) CSR position of each edge in transposed order
    comments: int  # user-image edges with a comment row (rows of edge_attr[VIEWS])

    def check(self, users: int, images: int, comments: int, bipartite_loops: bool) -> None:
        """Refuse a layout built for another graph or self term: it would compute silently
        wrong embeddings (its indices stay in range)."""
        built = (self.users, self.images, self.comments, self.bipartite_loops)
        if built != (users, images, comments, bipartite_loops):
            raise ValueError(
                f"fused layout of (users, images, user-image edges, self loops) {built} used "
                f"on {(users, images, comments, bipartite_loops)}: build it from this graph"
            )

    @property
    def table_rows(self) -> int:
        loops = self.images + self.users if self.bipartite_loops else 0
        return 2 * self.users + self.images + loops

    @property
    def segments(self) -> int:
        return self.images + 2 * self.users

    @classmethod
    def of(cls, edge_index: dict, users: int, images: int, bipartite_loops: bool) -> FusedLayout:
        """The layout of ``edge_index`` (VIEWS, REV_VIEWS = VIEWS flipped, CONNECTS). Connects
        gets GATConv's self loops (existing ones removed, one per user added); with
        ``bipartite_loops`` each user-image relation gets :class:`BipartiteSelfLoopGAT`'s."""
        views, rev, connects = edge_index[VIEWS], edge_index[REV_VIEWS], edge_index[CONNECTS]
        if not torch.equal(rev, views.flip(0)):
            raise ValueError("the fused layout needs rev_views to be views reversed, edge by edge")
        for relation, index, sizes in (
            (VIEWS, views, (users, images)),
            (CONNECTS, connects, (users, users)),
        ):
            for row, size in zip(index, sizes, strict=True):
                if row.numel() and (int(row.min()) < 0 or int(row.max()) >= size):
                    raise ValueError(f"{relation} names a node outside 0..{size - 1}")
        device = views.device
        n_views = views.shape[1]
        edge_ids = torch.arange(n_views, device=device)
        user_nodes = torch.arange(users, device=device)
        image_nodes = torch.arange(images, device=device)
        connects = connects[:, connects[0] != connects[1]]
        blocks = []  # (source row, global target, segment, comment slot), relation by relation
        offset = 0
        # views: user -> image, segments 0..I-1
        blocks.append((views[0] + offset, views[1] + users, views[1], edge_ids))
        offset += users
        if bipartite_loops:
            loop = torch.full_like(image_nodes, 2 * n_views)
            blocks.append((image_nodes + offset, image_nodes + users, image_nodes, loop))
            offset += images
        # rev_views: image -> user, segments I..I+U-1
        blocks.append((rev[0] + offset, rev[1], rev[1] + images, edge_ids + n_views))
        offset += images
        if bipartite_loops:
            loop = torch.full_like(user_nodes, 2 * n_views)
            blocks.append((user_nodes + offset, user_nodes, user_nodes + images, loop))
            offset += users
        # connects (+ one self loop per user): user -> user, segments I+U..I+2U-1
        source = torch.cat([connects[0], user_nodes])
        target = torch.cat([connects[1], user_nodes])
        none = torch.full_like(source, 2 * n_views)
        blocks.append((source + offset, target, target + images + users, none))
        source, target, segment, slot = (torch.cat(parts) for parts in zip(*blocks, strict=True))
        layout_rows = offset + users
        # CSR order: by destination, then by source row (canonical, as cuSPARSE expects)
        order = torch.sort(target * layout_rows + source, stable=True).indices
        source, target, segment, slot = source[order], target[order], segment[order], slot[order]
        perm_t = torch.sort(source, stable=True).indices
        return cls(
            users=users,
            images=images,
            bipartite_loops=bipartite_loops,
            source=source,
            target=target,
            segment=segment,
            comment_slot=slot,
            crow=_row_pointers(target, users + images),
            crow_t=_row_pointers(source[perm_t], layout_rows),
            col_t=target[perm_t],
            perm_t=perm_t,
            comments=n_views,
        )


def csr_matrix(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A CSR matrix from a layout's index arrays (valid by construction: :meth:`FusedLayout.of`
    checks the node indices, so torch's per-call invariant check is skipped).
    torch warns that sparse CSR is "beta" on each construction: silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _row_pointers(sorted_rows: Tensor, rows: int) -> Tensor:
    counts = torch.bincount(sorted_rows, minlength=rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class CSRAggregate(torch.autograd.Function):
    """``out[d] = sum_e alpha[e] * table[source[e]]`` over the edges ``e`` into ``d``, as a CSR
    sparse-dense product. Backward: the transposed product for the table and a sampled dense
    product (SDDMM, ``<grad[d], table[s]>`` on the edges) for alpha: no ``E x C`` tensor at
    all. Runs in float32 (under autocast the table may come in bf16)."""

    @staticmethod
    def forward(ctx, alpha: Tensor, table: Tensor, layout: FusedLayout) -> Tensor:
        alpha, table = alpha.float(), table.float()
        ctx.save_for_backward(alpha, table)
        ctx.layout = layout
        shape = (layout.users + layout.images, table.shape[0])
        matrix = csr_matrix(layout.crow, layout.source, alpha, shape)
        return matrix @ table

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        alpha, table = ctx.saved_tensors
        layout: FusedLayout = ctx.layout
        grad = grad.contiguous()
        grad_alpha = grad_table = None
        if ctx.needs_input_grad[1]:
            shape = (table.shape[0], layout.users + layout.images)
            values = alpha[layout.perm_t]
            grad_table = csr_matrix(layout.crow_t, layout.col_t, values, shape) @ grad
        if ctx.needs_input_grad[0]:  # <grad[d], table[s]> on the edges: a sampled product
            shape = (layout.users + layout.images, table.shape[0])
            pattern = csr_matrix(layout.crow, layout.source, alpha, shape)
            grad_alpha = torch.sparse.sampled_addmm(pattern, grad, table.t(), beta=0.0).values()
        return grad_alpha, grad_table, None


def segment_softmax(scores: Tensor, segment: Tensor, segments: int) -> Tensor:
    """PyG's ``softmax(src, index)``: ``exp(s - max) / (sum + 1e-16)`` per segment."""
    top = scores.new_full((segments,), float("-inf"))
    top = top.scatter_reduce(0, segment, scores.detach(), "amax", include_self=False)
    exp = (scores - top.index_select(0, segment)).exp()
    total = exp.new_zeros(segments).index_add(0, segment, exp)
    return exp / (total.index_select(0, segment) + 1e-16)


def gat_of(module: torch.nn.Module) -> GATConv:
    """The ``GATConv`` of a relation (:class:`BipartiteSelfLoopGAT` wraps one)."""
    conv = getattr(module, "conv", module)
    if not isinstance(conv, GATConv):
        raise TypeError(f"the fused path needs GATConv relations, got {type(conv).__name__}")
    if conv.heads != 1 or conv.dropout or conv.negative_slope != 0.2:
        raise ValueError(
            "the fused path supports HMG-Emo's GATConv: one head, no attention dropout, "
            "LeakyReLU slope 0.2"
        )
    return conv


def source_weight(conv: GATConv) -> Tensor:
    return (conv.lin if conv.lin is not None else conv.lin_src).weight


def target_weight(conv: GATConv) -> Tensor:
    return (conv.lin if conv.lin is not None else conv.lin_dst).weight


def comment_scores(layers: list[HeteroConv], project: torch.nn.Linear, comments: Tensor) -> Tensor:
    """Eq. 3's edge term of every layer and user-image relation, ``(E, 2 * layers)``: column
    ``2l`` views and ``2l + 1`` rev_views of layer ``l``. The score
    ``att_edge . lin_edge(project(c))`` is linear in ``c``, so the matrices fold into one
    ``768 x 2L`` product instead of ``E x 256`` and ``E x 64`` intermediates."""
    with torch.autocast(comments.device.type, enabled=False):  # attention: float32
        vectors = []
        for layer in layers:
            for relation in (VIEWS, REV_VIEWS):
                conv = gat_of(layer.convs[relation])
                vectors.append(conv.lin_edge.weight.t() @ conv.att_edge.view(-1))
        folded = torch.stack(vectors, 1)  # (comment_proj, 2L)
        m = project.weight.t() @ folded
        return ThinProduct.apply(comments.float(), m, project.bias @ folded)


class ThinProduct(torch.autograd.Function):
    """``x @ m + b`` for a tall ``x`` (edges x 768) and a thin ``m`` (768 x 10), computed as
    ``(m^T x^T)^T`` with the weight gradient as ``(g^T x)^T``: on CPU BLAS runs these
    orientations 3-6x faster than ``x @ m`` and ``x^T g`` (BENCHMARKS.md). Same products."""

    @staticmethod
    def forward(ctx, x: Tensor, m: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(x, m)
        return (m.t() @ x.t()).t() + b

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, m = ctx.saved_tensors
        grad_x = grad @ m.t() if ctx.needs_input_grad[0] else None
        grad_m = (grad.t() @ x).t() if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_m, grad_b


def fused_gat_layer(
    layer: HeteroConv,
    x_user: Tensor,
    x_image: Tensor,
    scores: Tensor | None,
    layout: FusedLayout,
) -> tuple[Tensor, Tensor]:
    """One HeteroConv(GATConv, aggr="sum") layer: (user output, image output) before the
    norm. ``scores`` are this layer's comment scores ``(E, 2)`` (None without the term)."""
    views, rev, connects = (gat_of(layer.convs[r]) for r in (VIEWS, REV_VIEWS, CONNECTS))
    if views.add_self_loops or rev.add_self_loops or not connects.add_self_loops:
        raise ValueError("the fused layout adds self loops on connects only (as HMG-Emo does)")
    blocks = [(views, x_user)]
    if layout.bipartite_loops:
        blocks.append((views, x_image))
    blocks.append((rev, x_image))
    if layout.bipartite_loops:
        blocks.append((rev, x_user))
    blocks.append((connects, x_user))
    projected = [F.linear(x, source_weight(conv)) for conv, x in blocks]
    # attention and aggregation in float32, also under bf16 autocast (as PyG's sums are)
    with torch.autocast(x_user.device.type, enabled=False):
        projected = [p.float() for p in projected]
        table = torch.cat(projected)
        source_att = torch.cat(
            [p @ conv.att_src.view(-1) for p, (conv, _) in zip(projected, blocks, strict=True)]
        )
        target_att = torch.cat(
            [
                x.float() @ (target_weight(conv).t() @ conv.att_dst.view(-1))
                for conv, x in ((views, x_image), (rev, x_user), (connects, x_user))
            ]
        )
        alpha = source_att.index_select(0, layout.source)
        alpha = alpha + target_att.index_select(0, layout.segment)
        if scores is not None:
            slots = torch.cat([scores[:, 0], scores[:, 1], scores.new_zeros(1)]).float()
            alpha = alpha + slots.index_select(0, layout.comment_slot)
        alpha = segment_softmax(F.leaky_relu(alpha, 0.2), layout.segment, layout.segments)
        out = CSRAggregate.apply(alpha, table, layout)
    out_user, out_image = out[: layout.users], out[layout.users :]
    for conv in (rev, connects):
        out_user = _finish(conv, out_user, x_user)
    return out_user, _finish(views, out_image, x_image)


def _finish(conv: GATConv, out: Tensor, x_target: Tensor) -> Tensor:
    """GATConv's residual and bias, added after aggregation."""
    if conv.res is not None:
        out = out + conv.res(x_target)
    if conv.bias is not None:
        out = out + conv.bias
    return out
