"""Zero-shot embeddings (group `features`): images, comments, groups and user context.

Vectors are cached by content (see `core/features.py`), so a re-materialisation embeds only
new or changed images and texts. The encoder modules import torch, so they are imported inside
the assets: Dagster loads this module in every step's process.
"""

import time
from typing import Literal

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetOut,
    Config,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)
from pydantic import Field

from hmg_pipeline.core.features import (
    CachedResult,
    embed_image_files,
    embed_texts,
    group_texts,
    image_sources,
    user_context,
    vector_column,
)
from hmg_pipeline.metadata import counts_table
from hmg_pipeline.placement import GPU_OP_TAGS, GPU_POOL
from hmg_pipeline.resources import ComputeResource, EncoderResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, table_metadata

GROUP = "features"


class CommentEmbeddingConfig(Config):
    missing_comment_fill: Literal["uniform", "zeros"] = Field(
        default="uniform",
        description="vector of an edge without comment: U(0,1) per edge (the paper's) or zeros",
    )


def embedding_metadata(encoder, count: int, result: CachedResult, seconds: float) -> dict:
    """What a user checks after an embedding run: encoder, device, cache use and speed."""
    device = encoder.device
    return {
        "dagster/row_count": count,
        "dimension": encoder.dim,
        "encoder": encoder.name,
        "encoder_identity": encoder.identity,
        "device": str(device.torch_device),
        "amp_bf16": device.amp and device.is_cuda,
        "computed": result.computed,
        "reused_from_cache": result.reused,
        "wall_s": round(seconds, 2),
        "computed_per_s": round(result.computed / seconds, 1) if seconds > 0 else 0.0,
    }


def embed_texts_with(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    texts: list[str | None],
    what: str,
):
    """The configured text encoder on the compute device, and ``texts`` embedded through the
    store's cache: (encoder, vectors, has_text, cache result). Shared by every text asset."""
    encoder = encoders.text_encoder(compute)
    vectors, has_text, result = embed_texts(
        texts, encoder, paths.embedding_cache, encoders.batch_size_texts, what, context.log.info
    )
    return encoder, vectors, has_text, result


@multi_asset(
    outs={
        "image_embeddings": AssetOut(
            metadata=table_metadata(
                GROUP,
                {
                    "image_id": ("String", "the image"),
                    "content_sha": ("String", "sha256 of the image file (the cache key)"),
                    "vector": ("Array(Float32)", "the encoder's pooled features"),
                },
            ),
            description="One vector per image of a clean edge (image_id -> FLOAT[d]).",
            is_required=False,
        ),
        "unreadable_images": AssetOut(
            metadata=table_metadata(GROUP),
            description="Images of clean edges that could not be embedded, with the reason "
            "and how many edges they take out (rule image_unreadable).",
            is_required=False,
        ),
    },
    can_subset=True,
    group_name=GROUP,
    op_tags={**DUCKDB_TAGS, **GPU_OP_TAGS},
    pool=GPU_POOL,
)
def image_embeddings(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    clean_labels: pl.DataFrame,
    valid_images: pl.DataFrame,
    flickr_images: pl.DataFrame,
):
    """Embed every image of `clean_labels`' edges; unreadable ones are listed here. Either
    output can be materialised alone."""
    started = time.perf_counter()
    edges_per_image = dict(clean_labels.group_by("image_id").len().iter_rows())
    sources = image_sources(paths.raw_path, valid_images, flickr_images, sorted(edges_per_image))
    settings = encoders.settings()
    encoder = encoders.image_encoder(compute)
    embedded = embed_image_files(
        edges_per_image,
        sources,
        encoder,
        paths.embedding_cache,
        settings.batch_size_images,
        settings.loader_workers,
        context.log.info,
    )
    unreadable, edges_out = embedded.unreadable, int(embedded.unreadable["edges"].sum())
    if unreadable.height:
        context.log.warning(
            f"{unreadable.height} image(s) unreadable, {edges_out} edge(s) will be dropped "
            "(rule image_unreadable); see features.unreadable_images"
        )
    seconds = time.perf_counter() - started
    if "image_embeddings" in context.selected_output_names:
        metadata = embedding_metadata(encoder, embedded.table.height, embedded.result, seconds)
        metadata.update(
            unreadable_images=unreadable.height, edges_dropped_image_unreadable=edges_out
        )
        yield Output(embedded.table, output_name="image_embeddings", metadata=metadata)
    if "unreadable_images" in context.selected_output_names:
        reasons = dict(unreadable.group_by("reason").len().iter_rows())
        metadata = {
            "dagster/row_count": unreadable.height,
            "edges_dropped_image_unreadable": edges_out,
            "reasons": MetadataValue.md(counts_table(reasons, "reason")),
        }
        yield Output(unreadable, output_name="unreadable_images", metadata=metadata)


@asset(
    group_name=GROUP,
    metadata=table_metadata(GROUP),
    op_tags={**DUCKDB_TAGS, **GPU_OP_TAGS},
    pool=GPU_POOL,
)
def comment_embeddings(
    context: AssetExecutionContext,
    config: CommentEmbeddingConfig,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    clean_labels: pl.DataFrame,
) -> pl.DataFrame:
    """One vector per clean edge: its comment's embedding, or the paper's missing-comment fill
    (U(0,1), deterministic per edge; or zeros). `has_comment` keeps which is which."""
    from hmg_pipeline.core.encoders import normalise_text, uniform_fill

    started = time.perf_counter()
    normalised = [normalise_text(t) for t in clean_labels["comment_text"].to_list()]
    encoder, vectors, has_comment, result = embed_texts_with(
        context, paths, compute, encoders, normalised, "comment embeddings"
    )
    keys = [f"{u}\x1f{i}" for u, i in clean_labels.select("user_id", "image_id").iter_rows()]
    missing = [i for i, present in enumerate(has_comment) if not present]
    if config.missing_comment_fill == "uniform" and missing:
        vectors[missing] = uniform_fill([keys[i] for i in missing], vectors.shape[1])
    table = clean_labels.select("user_id", "image_id").with_columns(
        pl.Series("has_comment", has_comment, dtype=pl.Boolean),
        vector_column("vector", vectors),
    )
    metadata = embedding_metadata(encoder, table.height, result, time.perf_counter() - started)
    metadata.update(
        edges_with_comment=clean_labels.height - len(missing),
        edges_filled=len(missing),
        missing_comment_fill=config.missing_comment_fill,
    )
    context.add_output_metadata(metadata)
    return table


@asset(
    group_name=GROUP,
    metadata=table_metadata(GROUP),
    op_tags={**DUCKDB_TAGS, **GPU_OP_TAGS},
    pool=GPU_POOL,
)
def group_embeddings(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    valid_groups: pl.DataFrame,
    flickr_groups: pl.DataFrame,
) -> pl.DataFrame:
    """One vector per valid group from its name and description (zeros when it has neither)."""
    started = time.perf_counter()
    texts = group_texts(valid_groups, flickr_groups)
    encoder, vectors, has_text, result = embed_texts_with(
        context, paths, compute, encoders, texts, "group embeddings"
    )
    table = valid_groups.select("group_id").with_columns(
        pl.Series("has_text", has_text, dtype=pl.Boolean),
        vector_column("vector", vectors),
    )
    metadata = embedding_metadata(encoder, table.height, result, time.perf_counter() - started)
    metadata["groups_without_text"] = has_text.count(False)
    context.add_output_metadata(metadata)
    return table


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS)
def user_context_embeddings(
    context: AssetExecutionContext,
    raw_users: pl.DataFrame,
    valid_group_members: pl.DataFrame,
    group_embeddings: pl.DataFrame,
) -> pl.DataFrame:
    """The paper's Eq. 1: each user's vector is the mean of their groups' vectors.

    Users in no group get a zero vector and `n_groups = 0`.
    """
    users = raw_users["user_id"].to_list()
    dim = group_embeddings.schema["vector"].shape[0]
    group_vectors = group_embeddings["vector"].to_numpy().reshape(group_embeddings.height, dim)
    vectors, counts = user_context(
        users, valid_group_members, group_embeddings["group_id"].to_list(), group_vectors
    )
    table = pl.DataFrame({"user_id": users, "n_groups": counts}).with_columns(
        vector_column("vector", vectors)
    )
    context.add_output_metadata(
        {
            "dagster/row_count": table.height,
            "dimension": int(vectors.shape[1]),
            "users_without_group": int((counts == 0).sum()),
            "mean_groups_per_user": round(float(counts.mean()) if len(counts) else 0.0, 2),
        }
    )
    return table
