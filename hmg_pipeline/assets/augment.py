"""LLaVA-augmented comments (group `augment`): a generated comment for every clean edge without
one, and its embedding by the same text encoder as the real comments.

Following the paper's ethics note, these comments feed only the Table III experiment
(`experiment_results`, partition `comments_only_llava`); HMG-Emo never trains on them.
"""

import time

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset

from hmg_pipeline.assets.features import GPU_POOL, embed_texts_with
from hmg_pipeline.core.features import image_sources
from hmg_pipeline.metadata import counts_table, markdown_table
from hmg_pipeline.resources import ComputeResource, EncoderResource, LlavaResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, table_metadata

GROUP = "augment"


def generation_metadata(table: pl.DataFrame, result, seconds: float) -> dict:
    """What a user checks after a generation run: statuses, cache use, speed, examples."""
    done = table.filter(pl.col("status") == "generated")
    generating = result.seconds_generating
    return {
        "dagster/row_count": table.height,
        "edges_without_comment": table.height,
        "status": MetadataValue.md(
            counts_table(dict(table.group_by("status").len().iter_rows()), "status")
        ),
        "generated_now": result.generated,
        "reused_from_cache": result.reused,
        "unique_comment_share": round(done["comment"].n_unique() / max(done.height, 1), 4),
        "distinct_prompts": table["prompt"].n_unique(),
        "generations_per_s": round(result.generated / generating, 2) if generating > 0 else 0.0,
        "wall_s": round(seconds, 2),
        "examples": MetadataValue.md(
            markdown_table(done.select("image_id", "emotion", "synonym", "comment").head(5))
        ),
    }


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS, pool=GPU_POOL)
def llava_comments(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    llava: LlavaResource,
    clean_labels: pl.DataFrame,
    image_embeddings: pl.DataFrame,
    valid_images: pl.DataFrame,
    flickr_images: pl.DataFrame,
) -> pl.DataFrame:
    """One generated comment per clean edge without comment text, from its image and a seeded
    synonym of its emotion; cached by (backend, model and its output settings, prompt, image
    sha256). `status`: generated, empty (the model returned no text), image_unreadable (the
    image could not be embedded), or skipped (`HMG_LLAVA_BACKEND=none`)."""
    from hmg_pipeline.core.llava import comment_plan, generation_plan

    started = time.perf_counter()
    sha_of = dict(image_embeddings.select("image_id", "content_sha").iter_rows())
    plan = generation_plan(clean_labels, sha_of, llava.seed)
    image_ids = sorted(set(plan.filter(pl.col("image_sha").is_not_null())["image_id"]))
    sources = image_sources(paths.raw_path, valid_images, flickr_images, image_ids)
    file_of_sha = {sha_of[i]: s for i, s in zip(image_ids, sources, strict=True)}
    device, model, skip = str(compute.torch_device()), llava.model_name(), llava.backend == "none"
    context.log.info(
        f"{plan.height} clean edge(s) without comment, {len(image_ids)} image(s): "
        + ("none generated (HMG_LLAVA_BACKEND=none)" if skip else f"{llava.backend}/{model}")
    )
    table, result = comment_plan(
        plan,
        None if skip else model,
        llava.identity(device),
        None if skip else (lambda: llava.generator(paths.models_dir, device)),
        paths.llava_cache,
        lambda sha: file_of_sha[sha].read_bytes(),  # type: ignore[union-attr]
        llava.batch_size,
        context.log.info,
    )
    metadata = generation_metadata(table, result, time.perf_counter() - started)
    context.add_output_metadata(
        {"backend": llava.backend, "model": model, "device": device, **metadata}
    )
    return table


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS, pool=GPU_POOL)
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
    missing-comment fill of `comment_embeddings` (`source` says which; `generator` names
    the backend/model of a LLaVA comment)."""
    from hmg_pipeline.core.llava import augmented_comment_table, comments_to_embed

    started = time.perf_counter()
    edges, texts = comments_to_embed(comment_embeddings, llava_comments)
    encoder, vectors, has_text, result = embed_texts_with(
        context, paths, compute, encoders, texts, "LLaVA comment embeddings"
    )
    table = augmented_comment_table(edges, vectors, has_text)
    counts = dict(table.group_by("source").len().iter_rows())
    context.add_output_metadata(
        {
            "dagster/row_count": table.height,
            "sources": MetadataValue.md(counts_table(counts, "source")),
            "encoder": encoder.name,
            "encoder_identity": encoder.identity,
            "device": str(encoder.device.torch_device),
            "computed": result.computed,
            "reused_from_cache": result.reused,
            "wall_s": round(time.perf_counter() - started, 2),
        }
    )
    return table
