"""The heterogeneous graph (group `graph`), stored as a torch artifact."""

from dagster import AssetExecutionContext, MetadataValue, asset
from polars import DataFrame

from hmg_pipeline.storage import DUCKDB_TAGS

GROUP = "graph"


@asset(group_name=GROUP, io_manager_key="artifact_io_manager", op_tags=DUCKDB_TAGS)
def hetero_graph(
    context: AssetExecutionContext,
    raw_users: DataFrame,
    clean_labels: DataFrame,
    clean_contacts: DataFrame,
    image_embeddings: DataFrame,
    comment_embeddings: DataFrame,
    user_context_embeddings: DataFrame,
):
    """PyG HeteroData: user and image nodes, views / rev_views (comment features, labels on
    views) and connects edges. Edges of unreadable images are left out and counted."""
    from hmg_pipeline.core.graph import build_hetero_graph

    data, stats = build_hetero_graph(
        raw_users,
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
