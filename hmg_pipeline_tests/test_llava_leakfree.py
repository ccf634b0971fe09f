"""Table III leak-free: the neutral prompt names no emotion, each fold's validation and test
edges get neutral-prompted features while its training edges keep the paper's emotion prompt,
both prompt kinds are cached and counted, and the Dagster assets produce both."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from hmg_pipeline.core.graph import VIEWS
from hmg_pipeline.core.llava import (
    EMOTION_SYNONYMS,
    NEUTRAL_PROMPT,
    PROMPT_KINDS,
    GenerationCache,
    comment_plan,
    generation_keys,
    generation_plan,
    prompt_for,
)
from hmg_pipeline.core.splits import Split, make_splits
from hmg_pipeline.model import experiments, train
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.experiments import (
    leak_free_features,
    results_frame,
    variant_graph,
)
from hmg_pipeline.model.variants import PAPER_TABLES, VARIANTS_BY_KEY

from .helpers import TinyDataset, view
from .test_experiments import EXPERIMENT_SELECTION, small_graph

LEAK_FREE = VARIANTS_BY_KEY["comments_only_llava_leakfree"]

# -- the neutral prompt ----------------------------------------------------------------------


def emotion_terms() -> set[str]:
    """Every emotion name and synonym, and the 5-letter stem of each single word (so that
    'exciting' or 'angrily' are caught too)."""
    terms = set(EMOTION_SYNONYMS) | {w for words in EMOTION_SYNONYMS.values() for w in words}
    stems = {term[:5] for term in terms if " " not in term and "-" not in term}
    return terms | stems


def named_emotions(text: str) -> set[str]:
    """The emotion terms that begin a word of ``text``."""
    return {t for t in emotion_terms() if re.search(rf"\b{re.escape(t)}", text, re.IGNORECASE)}


def test_the_neutral_prompt_names_no_emotion_but_every_emotion_prompt_does() -> None:
    assert named_emotions(NEUTRAL_PROMPT) == set()
    for emotion, synonyms in EMOTION_SYNONYMS.items():
        for synonym in synonyms:
            assert synonym in named_emotions(prompt_for(synonym)), (emotion, synonym)


def clean_labels(rows: Sequence[tuple[str, str, str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "user_id": pl.String,
            "image_id": pl.String,
            "emotion": pl.String,
            "comment_text": pl.String,
        },
        orient="row",
    )


LABELS = clean_labels(
    [
        ("u1", "i1", "awe", None),
        ("u2", "i1", "fear", "  "),  # blank: no comment
        ("u3", "i1", "anger", None),
        ("u1", "i2", "sadness", None),
        ("u2", "i2", "awe", "a real comment"),
        ("u3", "i3", "disgust", None),  # i3 unreadable
    ]
)
SHA = {"i1": "sha-1", "i2": "sha-2"}


def test_every_edge_without_comment_gets_both_prompts() -> None:
    plan = generation_plan(LABELS, SHA, seed=0)
    assert plan.height == 5
    assert set(plan["neutral_prompt"]) == {NEUTRAL_PROMPT}
    assert all(named_emotions(p) for p in plan["prompt"])  # the paper's: names the emotion
    keys = generation_keys(plan)
    assert sorted({sha for _, sha in keys}) == ["sha-1", "sha-2"]
    assert len(keys) == 2 * 4  # both kinds for the four rows with a readable image


# -- generation, cache and statuses ----------------------------------------------------------


class CountingGenerator:
    """A backend whose comment names its prompt and image; it records every generation."""

    backend = "fake"
    model = "fake"

    def __init__(self, calls: list[tuple[str, bytes]]) -> None:
        self.calls = calls

    def generate(self, images: Sequence[bytes], prompts: Sequence[str]) -> list[str]:
        self.calls += list(zip(prompts, images, strict=True))
        return [f"{p[-30:]} on {i.decode()}" for p, i in zip(prompts, images, strict=True)]


def run_plan(plan: pl.DataFrame, cache: Path, calls: list, model: str | None = "fake"):
    return comment_plan(
        plan,
        model,
        ("fake", "fake|settings"),
        None if model is None else (lambda: CountingGenerator(calls)),
        cache,
        lambda sha: sha.encode(),
        2,
        lambda message: None,
    )


def test_both_prompt_kinds_are_cached_and_reused_on_a_rerun(tmp_path: Path) -> None:
    plan = generation_plan(LABELS, SHA, seed=0)
    cache, calls = tmp_path / "cache.duckdb", []
    # A cache from before the neutral prompt: the emotion generations are already there.
    emotion_keys = plan.filter(pl.col("image_sha").is_not_null()).select("prompt", "image_sha")
    with GenerationCache(cache) as store:
        store.store("fake", "fake|settings", emotion_keys.rows(), ["old"] * emotion_keys.height)
    table, result = run_plan(plan, cache, calls)
    assert {prompt for prompt, _ in calls} == {NEUTRAL_PROMPT}  # the emotion ones were reused
    assert len(calls) == 2 and result.generated == 2  # one neutral generation per image
    assert result.reused == emotion_keys.n_unique()
    assert set(table.filter(pl.col("status") == "generated")["comment"]) == {"old"}
    again, repeat = run_plan(plan, cache, calls)
    assert len(calls) == 2 and repeat.generated == 0  # nothing generated on a rerun
    assert again.equals(table)
    # Every edge without a comment has one status per prompt kind.
    for kind_status in ("status", "neutral_status"):
        counts = dict(table.group_by(kind_status).len().iter_rows())
        assert counts == {"generated": 4, "image_unreadable": 1}
    neutral = table.filter(pl.col("neutral_status") == "generated")
    assert neutral.group_by("image_id").agg(pl.col("neutral_comment").n_unique()).to_dict(
        as_series=False
    )["neutral_comment"] == [1, 1]  # one per image, shared by its edges


def test_without_a_backend_both_kinds_are_skipped(tmp_path: Path) -> None:
    calls: list = []
    table, result = run_plan(generation_plan(LABELS, SHA, 0), tmp_path / "c.duckdb", calls, None)
    assert not calls and result.generated == 0
    for status in ("status", "neutral_status"):
        assert dict(table.group_by(status).len().iter_rows()) == {
            "skipped": 4,
            "image_unreadable": 1,
        }


# -- per-fold features -----------------------------------------------------------------------

EMOTION, NEUTRAL = 100.0, -100.0


def augmented_table(data, is_llava: np.ndarray, neutral_llava: np.ndarray) -> pl.DataFrame:
    """An llava_comment_embeddings table for ``data``: emotion vectors EMOTION + edge, neutral
    ones NEUTRAL - edge where generated, the graph's own features elsewhere."""
    users, images = data["user"].node_id, data["image"].node_id
    source, target = data[VIEWS].edge_index.numpy()
    original = data[VIEWS].edge_attr.numpy()
    edge = np.arange(len(source), dtype=np.float32)[:, None]
    emotion = np.where(is_llava[:, None], EMOTION + edge, original)
    neutral = np.where(neutral_llava[:, None], NEUTRAL - edge, original)
    dim = original.shape[1]
    return pl.DataFrame(
        {
            "user_id": [users[k] for k in source],
            "image_id": [images[k] for k in target],
            "source": np.where(is_llava, "llava", "fill"),
            "neutral_source": np.where(neutral_llava, "llava", "fill"),
            "generator": np.where(is_llava | neutral_llava, "fake/fake", None),
        }
    ).with_columns(
        pl.Series("vector", emotion).cast(pl.Array(pl.Float32, dim)),
        pl.Series("neutral_vector", neutral).cast(pl.Array(pl.Float32, dim)),
    )


def fold_kinds(features: torch.Tensor, split: Split, is_llava: np.ndarray) -> dict[str, set]:
    """Which prompt kind each subset's generated edges carry: emotion (> 50) or neutral."""
    kind = np.where(features[:, 0].numpy() > 50, "emotion", "neutral")
    return {
        name: set(kind[index[is_llava[index]]])
        for name, index in (("train", split.train), ("val", split.val), ("test", split.test))
    }


@pytest.mark.parametrize("scheme", ["repeated", "kfold"])
def test_each_fold_prompts_its_held_out_edges_without_emotion(scheme: str) -> None:
    data = small_graph()
    n = data[VIEWS].num_edges
    is_llava = np.arange(n) % 3 != 0
    table = augmented_table(data, is_llava, is_llava)
    splits = make_splits(data[VIEWS].edge_label.numpy(), 3, 7, scheme)  # type: ignore[arg-type]
    emotion_in = []
    edge = torch.arange(n, dtype=torch.float32)
    rows = torch.from_numpy(is_llava)
    for split in splits:
        features = leak_free_features(data, table, split)
        in_train = torch.from_numpy(np.isin(np.arange(n), split.train))
        expected = torch.where(in_train, EMOTION + edge, NEUTRAL - edge)
        assert torch.equal(features[rows, 0], expected[rows])  # train: emotion; else neutral
        assert torch.equal(features[~rows], data[VIEWS].edge_attr[~rows])  # no LLaVA: as is
        emotion_in.append(features[:, 0] > 50)
    # The features differ per fold: an edge held out in one fold trains in another.
    assert any(not torch.equal(emotion_in[0], other) for other in emotion_in[1:])


def test_leak_free_graph_defaults_to_neutral_and_needs_neutral_comments() -> None:
    data = small_graph()
    n = data[VIEWS].num_edges
    is_llava = np.arange(n) % 2 == 0
    table = augmented_table(data, is_llava, is_llava)
    graph, detail = variant_graph(LEAK_FREE, data, table)
    assert detail == "fake/fake"
    assert (graph[VIEWS].edge_attr[torch.from_numpy(is_llava), 0] < -50).all()  # never leaky
    paper, _ = variant_graph(VARIANTS_BY_KEY["comments_only_llava"], data, table)
    assert (paper[VIEWS].edge_attr[torch.from_numpy(is_llava), 0] > 50).all()
    no_neutral = augmented_table(data, is_llava, np.zeros(n, dtype=bool))
    assert variant_graph(LEAK_FREE, data, no_neutral) == (None, None)  # reported "not run"
    with pytest.raises(ValueError, match="re-materialise llava_comments"):
        variant_graph(LEAK_FREE, data, table.drop("neutral_source", "neutral_vector"))
    assert ("LLaVA-augmented comments, leak-free", LEAK_FREE.key) in PAPER_TABLES[1].rows


def test_a_per_fold_hook_trains_each_fold_on_its_own_leak_free_features(monkeypatch) -> None:
    """run_variant's ``fold_features`` hook: per fold, the graph's comment features become
    ``leak_free_features(hetero_graph, augmented, split)`` for the model and the baselines."""
    data = small_graph()
    is_llava = np.ones(data[VIEWS].num_edges, dtype=bool)
    table = augmented_table(data, is_llava, is_llava)
    graph, detail = variant_graph(LEAK_FREE, data, table)
    seen: list[tuple[torch.Tensor, Split]] = []
    original_train_fold = train.train_fold

    def recording_train_fold(fold_data, model_config, train_config, split, *args, **kwargs):
        seen.append((fold_data[VIEWS].edge_attr, split))
        return original_train_fold(fold_data, model_config, train_config, split, *args, **kwargs)

    monkeypatch.setattr(train, "train_fold", recording_train_fold)
    rows = experiments.run_variant(
        LEAK_FREE,
        graph,
        ModelConfig(),
        TrainConfig(epochs=1, folds=2),
        torch.device("cpu"),
        detail=detail,
        fold_features=partial(leak_free_features, data, table),
    )
    assert set(results_frame(rows)["fold"]) == {0, 1}
    assert len(seen) == 2
    for features, split in seen:
        assert fold_kinds(features, split, is_llava) == {
            "train": {"emotion"},
            "val": {"neutral"},
            "test": {"neutral"},
        }


# -- through Dagster -------------------------------------------------------------------------


def test_assets_generate_and_embed_both_prompt_kinds(tiny: TinyDataset) -> None:
    tiny.write_trainable_views(
        [
            view("u4", "i1", "awe", comment_text="what a sky"),
            view("u4", "i2", "fear"),
            view("u5", "i2", "awe"),
            view("u5", "i3", "awe"),  # i3 has no file: no generated comment
        ]
    )
    settings = {"ops": {"experiment_results": {"config": {"epochs": 1, "folds": 2}}}}
    shards = tiny.materialize_shards()
    result = tiny.materialize(EXPERIMENT_SELECTION, settings, partition_key=LEAK_FREE.key)
    assert shards.success and result.success
    comments = tiny.table("augment.llava_comments")
    for status in ("status", "neutral_status"):
        assert dict(comments.group_by(status).len().iter_rows()) == {
            "generated": 8,
            "image_unreadable": 1,
        }
    assert set(comments["neutral_prompt"]) == {NEUTRAL_PROMPT}
    meta = shards.asset_materializations_for_node("llava_comments")[0].metadata
    readable = comments.filter(pl.col("image_sha").is_not_null())
    distinct = readable.select("prompt", "image_sha").n_unique() + readable["image_sha"].n_unique()
    assert meta["generated_now"].value == distinct  # both kinds, each key once
    assert "| generated | 8 |" in meta["neutral_status"].value
    augmented = tiny.table("augment.llava_comment_embeddings")
    for kind in PROMPT_KINDS:
        source = "source" if kind == "emotion" else f"{kind}_source"
        assert dict(augmented.group_by(source).len().iter_rows()) == {
            "original": 1,
            "llava": 8,
            "fill": 1,
        }
    llava = augmented.filter(pl.col("source") == "llava")
    assert not np.allclose(  # the two kinds' texts differ, so do their embeddings
        np.stack(llava["vector"].to_numpy()), np.stack(llava["neutral_vector"].to_numpy())
    )
    metrics = tiny.table("experiments.experiment_results")
    assert set(metrics["variant"]) == {LEAK_FREE.key} and set(metrics["fold"]) == {0, 1}
    assert set(metrics["detail"]) == {"transformers/tiny-random"}
    again = tiny.materialize_shards(["llava_comments"])
    meta = again.asset_materializations_for_node("llava_comments")[0].metadata
    assert meta["generated_now"].value == 0 and meta["reused_from_cache"].value == distinct
