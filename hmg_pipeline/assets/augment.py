"""LLaVA-augmented comments (group `augment`): for every clean edge without a comment, two
generated comments (the paper's prompt naming the edge's emotion, and a neutral prompt naming
none), and their embeddings by the same text encoder as the real comments.

Both assets are split into 16 static shards by a hash of the image id (`shard-00`..`shard-15`),
so a dead server costs one shard and a backfill can spread the shards over runs, pods and
servers (one run per shard); the job `llava_augmentation` runs every shard in one run, and the
generation cache makes any rerun resume where the last one stopped.

Following the paper's ethics note, these comments feed only the Table III experiments
(`experiment_results`, partitions `comments_only_llava` and `comments_only_llava_leakfree`);
HMG-Emo never trains on them.
"""

import time

import polars as pl
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from hmg_pipeline.assets.features import embed_texts_with
from hmg_pipeline.core.features import image_sources
from hmg_pipeline.core.llava import shard_keys
from hmg_pipeline.metadata import counts_table, markdown_table
from hmg_pipeline.placement import GPU_OP_TAGS, GPU_POOL, llava_generation_placement
from hmg_pipeline.resources import (
    ComputeResource,
    EncoderResource,
    LlavaResource,
    PipelinePaths,
    SettingError,
    env_setting,
)
from hmg_pipeline.storage import DUCKDB_TAGS, table_metadata

GROUP = "augment"
shard_partitions = StaticPartitionsDefinition(shard_keys())
SHARDED = {
    "group_name": GROUP,
    "partitions_def": shard_partitions,
    "backfill_policy": BackfillPolicy.multi_run(max_partitions_per_run=1),
    "metadata": {**table_metadata(GROUP), "partition_expr": "shard"},
}


def generation_placement() -> dict:
    """Pool and op tags of llava_comments, from HMG_LLAVA_BACKEND when the definitions load
    (the code server and every run and step pod read the same environment): a GPU for
    in-process generation, a CPU pod in the `llava_server` pool for a served model. A bad
    value keeps the GPU; the step then fails with the setting's error."""
    try:
        backend = env_setting("HMG_LLAVA_BACKEND")
    except SettingError:
        backend = "transformers"
    pool, tags = llava_generation_placement(backend)
    return {"pool": pool, "op_tags": {**DUCKDB_TAGS, **tags}}


def generation_metadata(table: pl.DataFrame, result, seconds: float) -> dict:
    """What a user checks after a generation run: statuses per prompt kind, cache use, speed,
    examples."""
    from hmg_pipeline.core.llava import kind_column

    done = table.filter(pl.col("status") == "generated")
    neutral = table.filter(pl.col(kind_column("neutral", "status")) == "generated")
    generating = result.seconds_generating
    return {
        "dagster/row_count": table.height,
        "edges_without_comment": table.height,
        "status": MetadataValue.md(status_counts(table, "emotion")),
        "neutral_status": MetadataValue.md(status_counts(table, "neutral")),
        "generated_now": result.generated,
        "reused_from_cache": result.reused,
        "retried_requests": result.retries,
        "unique_comment_share": round(done["comment"].n_unique() / max(done.height, 1), 4),
        "distinct_prompts": table["prompt"].n_unique(),
        "distinct_neutral_comments": neutral[kind_column("neutral", "comment")].n_unique(),
        "generations_per_s": round(result.generated / generating, 2) if generating > 0 else 0.0,
        "wall_s": round(seconds, 2),
        "examples": MetadataValue.md(
            markdown_table(
                done.select(
                    "image_id", "emotion", "synonym", "comment", kind_column("neutral", "comment")
                ).head(5)
            )
        ),
    }


def status_counts(table: pl.DataFrame, kind: str) -> str:
    """A markdown count of one prompt kind's statuses (every row has one)."""
    from hmg_pipeline.core.llava import kind_column

    column = kind_column(kind, "status")
    return counts_table(dict(table.group_by(column).len().iter_rows()), column)


@asset(**SHARDED, **generation_placement())
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
    """Two generated comments per clean edge without comment text in this run's shards, from
    its image and either a seeded synonym of its emotion (`prompt`, `comment`, `status`: the
    paper's) or a prompt naming no emotion (`neutral_prompt`, `neutral_comment`,
    `neutral_status`: the leak-free variant's held-out edges); cached by (backend, model and its
    output settings, prompt, image sha256). A status: generated, empty (the model returned no
    text), image_unreadable (the image could not be embedded), or skipped
    (`HMG_LLAVA_BACKEND=none`)."""
    from hmg_pipeline.core.llava import comment_plan, generation_plan, in_shards

    started = time.perf_counter()
    sha_of = dict(image_embeddings.select("image_id", "content_sha").iter_rows())
    plan = in_shards(generation_plan(clean_labels, sha_of, llava.seed), context.partition_keys)
    image_ids = sorted(set(plan.filter(pl.col("image_sha").is_not_null())["image_id"]))
    sources = image_sources(paths.raw_path, valid_images, flickr_images, image_ids)
    file_of_sha = {sha_of[i]: s for i, s in zip(image_ids, sources, strict=True)}
    device, model, skip = str(compute.torch_device()), llava.model_name(), llava.backend == "none"
    context.log.info(
        f"{', '.join(context.partition_keys)}: {plan.height} clean edge(s) without comment, "
        f"{len(image_ids)} image(s): "
        + ("none generated (HMG_LLAVA_BACKEND=none)" if skip else llava.describe())
    )
    table, result = comment_plan(
        plan,
        None if skip else model,
        llava.identity(device),
        None if skip else (lambda: llava.generator(paths.models_dir, device)),
        paths.llava_cache,
        lambda sha: file_of_sha[sha].read_bytes(),  # type: ignore[union-attr]
        llava.generate_batch_size(),
        context.log.info,
    )
    metadata = generation_metadata(table, result, time.perf_counter() - started)
    context.add_output_metadata(
        {"backend": llava.backend, "model": model, "device": device, **metadata}
    )
    return table


@asset(**SHARDED, op_tags={**DUCKDB_TAGS, **GPU_OP_TAGS}, pool=GPU_POOL)
def llava_comment_embeddings(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    compute: ComputeResource,
    encoders: EncoderResource,
    comment_embeddings: pl.DataFrame,
    llava_comments: pl.DataFrame,
) -> pl.DataFrame:
    """Augmented comment features, one row per clean edge of this run's shards and one vector
    per prompt kind (`vector`: the paper's emotion prompt, `neutral_vector`: the neutral one):
    the real comment's vector where there is one, else the embedding of the kind's LLaVA comment
    (same text encoder, same cache), else the missing-comment fill of `comment_embeddings`
    (`source`/`neutral_source` say which; `generator` names the backend/model)."""
    from hmg_pipeline.core.llava import (
        PROMPT_KINDS,
        augmented_comment_table,
        comments_to_embed,
        in_shards,
    )

    started = time.perf_counter()
    shard_edges = in_shards(comment_embeddings, context.partition_keys)
    edges, texts = comments_to_embed(shard_edges, llava_comments)
    every = [text for kind in PROMPT_KINDS for text in texts[kind]]  # one encoder load
    encoder, vectors, has_text, result = embed_texts_with(
        context, paths, compute, encoders, every, "LLaVA comment embeddings"
    )
    n = edges.height
    embeddings = {
        kind: (vectors[k * n : (k + 1) * n], has_text[k * n : (k + 1) * n])
        for k, kind in enumerate(PROMPT_KINDS)
    }
    table = augmented_comment_table(edges, embeddings)
    counts = dict(table.group_by("source").len().iter_rows())
    neutral = dict(table.group_by("neutral_source").len().iter_rows())
    context.add_output_metadata(
        {
            "dagster/row_count": table.height,
            "sources": MetadataValue.md(counts_table(counts, "source")),
            "neutral_sources": MetadataValue.md(counts_table(neutral, "neutral_source")),
            "encoder": encoder.name,
            "encoder_identity": encoder.identity,
            "device": str(encoder.device.torch_device),
            "computed": result.computed,
            "reused_from_cache": result.reused,
            "wall_s": round(time.perf_counter() - started, 2),
        }
    )
    return table
