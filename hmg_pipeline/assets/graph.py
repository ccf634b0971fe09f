"""The heterogeneous graph (group `graph`), stored as a torch artifact."""

from typing import Literal

from dagster import AssetExecutionContext, Config, MetadataValue, asset
from polars import DataFrame
from pydantic import Field

from hmg_pipeline.storage import DUCKDB_TAGS

GROUP = "graph"


class GraphConfig(Config):
    user_nodes: Literal["uploaders_and_viewers", "all_known"] = Field(
        default="uploaders_and_viewers",
        description="uploaders_and_viewers: the paper's user nodes; all_known: also users seen "
        "only as contacts, group members or in the users table",
    )


@asset(group_name=GROUP, io_manager_key="artifact_io_manager", op_tags=DUCKDB_TAGS)
def hetero_graph(
    context: AssetExecutionContext,
    config: GraphConfig,
    raw_users: DataFrame,
    clean_labels: DataFrame,
    clean_contacts: DataFrame,
    image_embeddings: DataFrame,
    comment_embeddings: DataFrame,
    user_context_embeddings: DataFrame,
):
    """PyG HeteroData: user and image nodes, views / rev_views (comment features, labels on
    views) and connects edges. Edges of unreadable images are left out and counted."""
    from hmg_pipeline.core.graph import build_hetero_graph, node_users
    from hmg_pipeline.model.experiments import table_i_beside_paper

    data, stats = build_hetero_graph(
        node_users(raw_users, config.user_nodes),
        user_context_embeddings,
        image_embeddings,
        clean_labels,
        comment_embeddings,
        clean_contacts,
    )
    context.log.info(f"graph: {stats}")
    context.add_output_metadata(
        {
            "table_i": MetadataValue.md(stats.table_i()),
            "table_i_vs_paper": MetadataValue.md(table_i_beside_paper(stats)),
            "user_nodes": stats.user_nodes,
            "image_nodes": stats.image_nodes,
            "user_user_edges": stats.user_user_edges,
            "user_image_edges": stats.user_image_edges,
            "comment_coverage_%": round(100 * stats.comment_coverage, 2),
            "dropped_image_unreadable": stats.dropped_image_unreadable,
            "dropped_contacts_unknown_user": stats.dropped_contacts_unknown_user,
        }
    )
    return data
