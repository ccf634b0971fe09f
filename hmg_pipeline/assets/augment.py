"""LLaVA-augmented comments (group ``augment``): a generated comment for every clean edge without
one, and its embedding by the same text encoder as the real comments.

Following the paper's ethics note, these comments feed only the Table III experiment
(``experiment_results``, partition ``comments_only_llava``); HMG-Emo never trains on them.
"""

import time

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset

from hmg_pipeline.assets.embeddings import GPU_POOL, embed_texts, image_sources
from hmg_pipeline.core import cleaning
from hmg_pipeline.core.features import vector_column
from hmg_pipeline.core.progress import Progress
from hmg_pipeline.metadata import counts_table, markdown_table
from hmg_pipeline.resources import ComputeResource, EncoderResource, LlavaResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, group_metadata

GROUP = "augment"


@asset(group_name=GROUP, metadata=group_metadata(GROUP), op_tags=DUCKDB_TAGS, pool=GPU_POOL)
def llava_comments(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    llava: LlavaResource,
    clean_labels: pl.DataFrame,
    image_embeddings: pl.DataFrame,
    raw_images: pl.DataFrame,
    quarantine: pl.DataFrame,
    flickr_images: pl.DataFrame,
) -> pl.DataFrame:
    """One generated comment per clean edge without comment text, from its image and a seeded
    synonym of its emotion; cached by (backend, model and its output settings, prompt, image
    sha256). ``status``: generated, empty (the model returned no text), image_unreadable (the
    image could not be embedded), or skipped (``HMG_LLAVA_BACKEND=none``)."""
    from hmg_pipeline.core.encoders import normalise_text
    from hmg_pipeline.core.llava import (
        CACHE_FILE,
        GenerationCache,
        GenerationResult,
        generate_with_cache,
        pick_synonym,
        prompt_for,
    )

    started = time.perf_counter()
    missing = clean_labels.filter(
        pl.col("comment_text").map_elements(normalise_text, return_dtype=pl.String).is_null()
    ).select("user_id", "image_id", "emotion")
    sha_of = dict(image_embeddings.select("image_id", "content_sha").iter_rows())
    synonyms = [
        pick_synonym(emotion, user, image, llava.seed) for user, image, emotion in missing.rows()
    ]
    table = missing.with_columns(
        pl.Series("synonym", synonyms, dtype=pl.String),
        pl.Series("prompt", [prompt_for(s) for s in synonyms], dtype=pl.String),
        pl.col("image_id")
        .replace_strict(sha_of, default=None, return_dtype=pl.String)
        .alias("image_sha"),
    )
    readable = table.filter(pl.col("image_sha").is_not_null())
    images = cleaning.valid_rows(raw_images, cleaning.quarantine_of(quarantine, "images"))
    image_ids = readable["image_id"].unique().to_list()
    file_of_sha = {
        sha_of[image_id]: source
        for image_id, source in zip(
            image_ids,
            image_sources(paths.raw_path, images, flickr_images, image_ids),
            strict=True,
        )
    }
    keys = list(readable.select("prompt", "image_sha").iter_rows())
    device = str(compute.torch_device())
    model = llava.model_name()
    skip = llava.backend == "none"
    context.log.info(
        f"{missing.height} clean edge(s) without comment; {readable.height} with a readable "
        + (
            "image: none generated (HMG_LLAVA_BACKEND=none)"
            if skip
            else f"image get a comment from {llava.backend}/{model}"
        )
    )
    result = GenerationResult([None] * len(keys), 0, 0, 0.0)
    if not skip:
        progress = Progress(len(keys), "LLaVA comments", context.log.info)
        with GenerationCache(paths.store_path / CACHE_FILE) as cache:
            result = generate_with_cache(
                llava.identity(device),
                lambda: llava.generator(paths.store_path / "models", device),
                cache,
                keys,
                lambda sha: file_of_sha[sha].read_bytes(),  # type: ignore[union-attr]
                llava.batch_size,
                progress.advance,
            )
    generations = pl.DataFrame(
        {
            "prompt": [prompt for prompt, _ in keys],
            "image_sha": [sha for _, sha in keys],
            "comment": result.comments,
        },
        schema={"prompt": pl.String, "image_sha": pl.String, "comment": pl.String},
    ).unique(["prompt", "image_sha"])
    table = table.join(
        generations, on=["prompt", "image_sha"], how="left", maintain_order="left"
    ).with_columns(
        pl.when(pl.col("image_sha").is_null())
        .then(pl.lit("image_unreadable"))
        .when(pl.lit(skip))
        .then(pl.lit("skipped"))
        .when(pl.col("comment").map_elements(normalise_text, return_dtype=pl.String).is_null())
        .then(pl.lit("empty"))
        .otherwise(pl.lit("generated"))
        .alias("status"),
        pl.lit(llava.backend).alias("backend"),
        pl.lit(None if skip else model, dtype=pl.String).alias("model"),
    )
    generated = table.filter(pl.col("status") == "generated")
    unique_share = generated["comment"].n_unique() / generated.height if generated.height else 0.0
    seconds = time.perf_counter() - started
    context.add_output_metadata(
        {
            "dagster/row_count": table.height,
            "backend": llava.backend,
            "model": model,
            "device": device,
            "edges_without_comment": missing.height,
            "status": MetadataValue.md(
                counts_table(dict(table.group_by("status").len().iter_rows()), "status")
            ),
            "generated_now": result.generated,
            "reused_from_cache": result.reused,
            "unique_comment_share": round(unique_share, 4),
            "distinct_prompts": table["prompt"].n_unique(),
            "generations_per_s": round(result.generated / result.seconds_generating, 2)
            if result.seconds_generating > 0
            else 0.0,
            "wall_s": round(seconds, 2),
            "examples": MetadataValue.md(
                markdown_table(
                    generated.select("image_id", "emotion", "synonym", "comment").head(5)
                )
            ),
        }
    )
    return table


@asset(group_name=GROUP, metadata=group_metadata(GROUP), op_tags=DUCKDB_TAGS, pool=GPU_POOL)
def llava_comment_embeddings(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    comment_embeddings: pl.DataFrame,
    llava_comments: pl.DataFrame,
) -> pl.DataFrame:
    """Augmented comment features, one per clean edge: the real comment's vector where there is
    one, else the embedding of the LLaVA comment (same text encoder, same cache), else the
    missing-comment fill of ``comment_embeddings`` (``source`` says which; ``generator`` names
    the backend/model of a LLaVA comment)."""
    from hmg_pipeline.core.encoders import normalise_text

    started = time.perf_counter()
    generated = llava_comments.filter(pl.col("status") == "generated").select(
        "user_id", "image_id", "comment", pl.format("{}/{}", "backend", "model").alias("generator")
    )
    edges = comment_embeddings.join(
        generated, on=["user_id", "image_id"], how="left", maintain_order="left"
    )
    texts = [
        None if has else normalise_text(comment)
        for has, comment in edges.select("has_comment", "comment").iter_rows()
    ]
    vectors, has_text, encoder, device, result = embed_texts(
        context, paths, compute, encoders, texts, "LLaVA comment embeddings"
    )
    original = edges["vector"].to_numpy().reshape(edges.height, -1)
    if original.shape[1] != vectors.shape[1]:
        raise ValueError(
            f"comment_embeddings has {original.shape[1]}-d vectors but the text encoder gives "
            f"{vectors.shape[1]}-d: re-materialise comment_embeddings with the same encoder"
        )
    generated_rows = np.asarray(has_text)
    vectors[~generated_rows] = original[~generated_rows]
    source = (
        pl.when(pl.col("has_comment"))
        .then(pl.lit("original"))
        .when(pl.col("embedded_llava"))
        .then(pl.lit("llava"))
        .otherwise(pl.lit("fill"))
    )
    table = (
        edges.with_columns(pl.Series("embedded_llava", has_text, dtype=pl.Boolean))
        .select(
            "user_id",
            "image_id",
            "has_comment",
            source.alias("source"),
            pl.when(pl.col("embedded_llava")).then(pl.col("generator")).alias("generator"),
        )
        .with_columns(vector_column("vector", vectors))
    )
    counts = dict(table.group_by("source").len().iter_rows())
    context.add_output_metadata(
        {
            "dagster/row_count": table.height,
            "sources": MetadataValue.md(counts_table(counts, "source")),
            "encoder": encoder.name,
            "encoder_identity": encoder.identity,
            "device": str(device.torch_device),
            "computed": result.computed,
            "reused_from_cache": result.reused,
            "wall_s": round(time.perf_counter() - started, 2),
        }
    )
    return table
