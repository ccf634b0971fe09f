"""Zero-shot embeddings (group ``features``): images, comments, groups and user context.

Vectors are cached by content (see ``core/features.py``), so a re-materialisation embeds only
new or changed images and texts. The encoder modules import torch, so they are imported inside
the assets: Dagster loads this module in every step's process.
"""

import time
from pathlib import Path
from typing import Literal

import numpy as np
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

from hmg_pipeline.core import cleaning
from hmg_pipeline.core.features import (
    CACHE_FILE,
    CachedResult,
    VectorCache,
    embed_with_cache,
    user_context,
    vector_column,
)
from hmg_pipeline.core.progress import Progress
from hmg_pipeline.metadata import counts_table
from hmg_pipeline.resources import ComputeResource, EncoderResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, group_metadata

GROUP = "features"
GPU_POOL = "gpu"


class CommentEmbeddingConfig(Config):
    missing_comment_fill: Literal["uniform", "zeros"] = Field(
        default="uniform",
        description="vector of an edge without comment: U(0,1) per edge (the paper's) or zeros",
    )


def _device(compute: ComputeResource):
    from hmg_pipeline.core.encoders import Device

    return Device(compute.torch_device(), amp=compute.amp_enabled)


def _embedding_metadata(encoder, device, count: int, result: CachedResult, seconds: float) -> dict:
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


def image_sources(
    raw_dir: Path, images: pl.DataFrame, flickr_images: pl.DataFrame, image_ids: list[str]
) -> list[Path | None]:
    """The file of each image: its raw ``file`` (inside the raw dir), else a downloaded copy."""
    raw_files = dict(images.select("image_id", "file").iter_rows())
    downloaded = dict(
        flickr_images.filter(pl.col("local_file").is_not_null())
        .select("image_id", "local_file")
        .iter_rows()
    )
    sources: list[Path | None] = []
    for image_id in image_ids:
        file = raw_files.get(image_id)
        if file and file.strip():
            sources.append(raw_dir / file.strip())
        elif downloaded.get(image_id):
            sources.append(Path(downloaded[image_id]))
        else:
            sources.append(None)
    return sources


@multi_asset(
    outs={
        "image_embeddings": AssetOut(
            metadata=group_metadata(GROUP),
            description="One vector per image of a clean edge (image_id -> FLOAT[d]).",
        ),
        "unreadable_images": AssetOut(
            metadata=group_metadata(GROUP),
            description="Images of clean edges that could not be embedded, with the reason "
            "and how many edges they take out (rule image_unreadable).",
        ),
    },
    group_name=GROUP,
    op_tags=DUCKDB_TAGS,
    pool=GPU_POOL,
)
def image_embeddings(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    clean_labels: pl.DataFrame,
    raw_images: pl.DataFrame,
    quarantine: pl.DataFrame,
    flickr_images: pl.DataFrame,
):
    """Embed every image of ``clean_labels``' edges; unreadable ones are quarantined here."""
    from hmg_pipeline.core.encoders import encode_images, file_hash, image_encoder

    started = time.perf_counter()
    images = cleaning.valid_rows(raw_images, cleaning.quarantine_of(quarantine, "images"))
    edges_per_image = dict(clean_labels.group_by("image_id").len().iter_rows())
    image_ids = sorted(edges_per_image)
    sources = image_sources(paths.raw_path, images, flickr_images, image_ids)
    hashes = [None if s is None else file_hash(s) for s in sources]
    device = _device(compute)
    settings = encoders.settings()
    encoder = image_encoder(settings, device)
    readable = [i for i, h in enumerate(hashes) if h is not None]
    context.log.info(
        f"{len(image_ids)} images of clean edges; {len(readable)} with a readable file; "
        f"encoder {encoder.name} on {device.torch_device}"
    )
    progress = Progress(len(readable), "image embeddings", context.log.info)

    def compute_vectors(indices: list[int]) -> tuple[np.ndarray, dict[int, str]]:
        paths_chunk = [sources[readable[i]] for i in indices]
        vectors, failures = encode_images(
            encoder,
            paths_chunk,  # type: ignore[arg-type]
            settings.batch_size_images,
            settings.loader_workers,
            progress.advance,
        )
        return vectors, {indices[k]: reason for k, reason in failures.items()}

    with VectorCache(paths.store_path / CACHE_FILE) as cache:
        result = embed_with_cache(
            cache, encoder.identity, encoder.dim, [hashes[i] for i in readable], compute_vectors
        )
    reasons: dict[int, str] = {
        i: "no local file (not in the raw directory, not downloaded)"
        for i, h in enumerate(hashes)
        if h is None and sources[i] is None
    }
    reasons.update(
        {i: "cannot read file" for i, h in enumerate(hashes) if h is None and sources[i]}
    )
    reasons.update({readable[k]: reason for k, reason in result.failures.items()})
    good = [k for k in range(len(readable)) if k not in result.failures]
    table = pl.DataFrame(
        {
            "image_id": [image_ids[readable[k]] for k in good],
            "content_sha": [hashes[readable[k]] for k in good],
        }
    ).with_columns(vector_column("vector", result.vectors[good].reshape(len(good), encoder.dim)))
    unreadable = pl.DataFrame(
        {
            "image_id": [image_ids[i] for i in sorted(reasons)],
            "file": [None if sources[i] is None else str(sources[i]) for i in sorted(reasons)],
            "reason": [reasons[i] for i in sorted(reasons)],
            "edges": [edges_per_image[image_ids[i]] for i in sorted(reasons)],
        },
        schema={"image_id": pl.String, "file": pl.String, "reason": pl.String, "edges": pl.Int64},
    )
    if unreadable.height:
        context.log.warning(
            f"{unreadable.height} image(s) unreadable, {int(unreadable['edges'].sum())} edge(s) "
            "will be dropped (rule image_unreadable); see features.unreadable_images"
        )
    seconds = time.perf_counter() - started
    yield Output(
        table,
        output_name="image_embeddings",
        metadata={
            **_embedding_metadata(encoder, device, table.height, result, seconds),
            "unreadable_images": unreadable.height,
            "edges_dropped_image_unreadable": int(unreadable["edges"].sum()),
        },
    )
    yield Output(
        unreadable,
        output_name="unreadable_images",
        metadata={
            "dagster/row_count": unreadable.height,
            "edges_dropped_image_unreadable": int(unreadable["edges"].sum()),
            "reasons": MetadataValue.md(
                counts_table(dict(unreadable.group_by("reason").len().iter_rows()), "reason")
            ),
        },
    )


def embed_texts(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    texts: list[str | None],
    what: str,
) -> tuple[np.ndarray, list[bool], object, object, CachedResult]:
    """Embed normalised texts through the cache; rows whose text is None stay zero.

    Returns (vectors, has_text, encoder, device, cache result)."""
    from hmg_pipeline.core.encoders import encode_texts, text_encoder, text_hash

    device = _device(compute)
    settings = encoders.settings()
    encoder = text_encoder(settings, device)
    with_text = [i for i, t in enumerate(texts) if t is not None]
    present: list[str] = [texts[i] for i in with_text]  # type: ignore[misc]
    progress = Progress(len(set(present)), what, context.log.info)

    def compute_fn(indices: list[int]) -> tuple[np.ndarray, dict[int, str]]:
        chunk = [present[i] for i in indices]
        return encode_texts(encoder, chunk, settings.batch_size_texts, progress.advance), {}

    with VectorCache(paths.store_path / CACHE_FILE) as cache:
        result = embed_with_cache(
            cache, encoder.identity, encoder.dim, [text_hash(t) for t in present], compute_fn
        )
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if with_text:
        vectors[with_text] = result.vectors
    return vectors, [t is not None for t in texts], encoder, device, result


@asset(
    group_name=GROUP,
    metadata=group_metadata(GROUP),
    op_tags=DUCKDB_TAGS,
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
    (U(0,1), deterministic per edge; or zeros). ``has_comment`` keeps which is which."""
    from hmg_pipeline.core.encoders import normalise_text, uniform_fill

    started = time.perf_counter()
    normalised = [normalise_text(t) for t in clean_labels["comment_text"].to_list()]
    vectors, has_comment, encoder, device, result = embed_texts(
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
    seconds = time.perf_counter() - started
    context.add_output_metadata(
        {
            **_embedding_metadata(encoder, device, table.height, result, seconds),
            "edges_with_comment": clean_labels.height - len(missing),
            "edges_filled": len(missing),
            "missing_comment_fill": config.missing_comment_fill,
        }
    )
    return table


def group_texts(groups: pl.DataFrame, flickr_groups: pl.DataFrame) -> list[str | None]:
    """Name and description of each group; a refetched description fills an empty one."""
    from hmg_pipeline.core.encoders import normalise_text

    fetched = dict(
        flickr_groups.filter(pl.col("status") == "ok").select("group_id", "description").iter_rows()
    )
    texts = []
    for group_id, name, description in groups.select("group_id", "name", "description").iter_rows():
        if normalise_text(description) is None:
            description = fetched.get(group_id)
        parts = [p for p in (normalise_text(name), normalise_text(description)) if p]
        texts.append(". ".join(parts) if parts else None)
    return texts


@asset(
    group_name=GROUP,
    metadata=group_metadata(GROUP),
    op_tags=DUCKDB_TAGS,
    pool=GPU_POOL,
)
def group_embeddings(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    raw_groups: pl.DataFrame,
    quarantine: pl.DataFrame,
    flickr_groups: pl.DataFrame,
) -> pl.DataFrame:
    """One vector per valid group from its name and description (zeros when it has neither)."""
    started = time.perf_counter()
    groups = cleaning.valid_rows(raw_groups, cleaning.quarantine_of(quarantine, "groups"))
    texts = group_texts(groups, flickr_groups)
    vectors, has_text, encoder, device, result = embed_texts(
        context, paths, compute, encoders, texts, "group embeddings"
    )
    table = groups.select("group_id").with_columns(
        pl.Series("has_text", has_text, dtype=pl.Boolean),
        vector_column("vector", vectors),
    )
    seconds = time.perf_counter() - started
    context.add_output_metadata(
        {
            **_embedding_metadata(encoder, device, table.height, result, seconds),
            "groups_without_text": has_text.count(False),
        }
    )
    return table


@asset(group_name=GROUP, metadata=group_metadata(GROUP), op_tags=DUCKDB_TAGS)
def user_context_embeddings(
    context: AssetExecutionContext,
    raw_users: pl.DataFrame,
    raw_group_members: pl.DataFrame,
    quarantine: pl.DataFrame,
    group_embeddings: pl.DataFrame,
) -> pl.DataFrame:
    """The paper's Eq. 1: each user's vector is the mean of their groups' vectors.

    Users in no group get a zero vector and ``n_groups = 0``.
    """
    members = cleaning.valid_rows(
        raw_group_members, cleaning.quarantine_of(quarantine, "group_members")
    )
    users = raw_users["user_id"].to_list()
    dim = group_embeddings.schema["vector"].shape[0]
    group_vectors = group_embeddings["vector"].to_numpy().reshape(group_embeddings.height, dim)
    vectors, counts = user_context(
        users, members, group_embeddings["group_id"].to_list(), group_vectors
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
