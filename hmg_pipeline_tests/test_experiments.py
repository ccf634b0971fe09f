"""The paper's experiments: every variant through train_fold, negative sampling, the LLaVA
backends (a tiny random LlavaForConditionalGeneration; a local Ollama-speaking server), the
generation cache, paper_tables' layout, and the assets through Dagster on a tiny dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from scipy import stats

from hmg_pipeline.core.graph import VIEWS, NonEdgeSampler
from hmg_pipeline.core.llava import (
    EMOTION_SYNONYMS,
    GenerationCache,
    LlavaUnavailable,
    OllamaLlava,
    TransformersLlava,
    build_tiny_random_llava,
    generate_with_cache,
    pick_synonym,
    prompt_for,
    resolve_llava_model,
)
from hmg_pipeline.core.metrics import mean_interval
from hmg_pipeline.core.schema import MIKELS_EMOTIONS
from hmg_pipeline.core.splits import stratified_split
from hmg_pipeline.model import experiments, train
from hmg_pipeline.model.config import ModelConfig, TrainConfig
from hmg_pipeline.model.experiments import (
    REPORTED_ROWS,
    edge_feature_matrix,
    paper_table_frames,
    paper_tables_long,
    results_frame,
    run_variant,
)
from hmg_pipeline.model.train import train_fold, with_edge_features
from hmg_pipeline.model.variants import PAPER_TABLES, VARIANTS, VARIANTS_BY_KEY

from .helpers import TinyDataset, jpeg_bytes, view
from .ollama_server import OllamaState, ollama_server
from .test_graph_model import make_graph


def small_graph():
    rng = np.random.default_rng(5)
    edges = [
        (u, int(i), MIKELS_EMOTIONS[int(rng.integers(3))])
        for u in range(12)
        for i in rng.choice(8, 3, replace=False)
    ]
    return make_graph(12, 8, edges, [(u, (u + 1) % 12) for u in range(12)])[0]


# -- variants --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.key)
def test_every_variant_trains_through_train_fold(variant, monkeypatch) -> None:
    data = small_graph()
    calls = []

    def recording_train_fold(*args, **kwargs):
        calls.append(args[1])
        return train_fold(*args, **kwargs)

    monkeypatch.setattr(train, "train_fold", recording_train_fold)
    rows = run_variant(
        variant, data, ModelConfig(), TrainConfig(epochs=1, folds=2), torch.device("cpu")
    )
    assert len(calls) == 2  # one train_fold per fold: no second training loop
    config = calls[0]
    for setting, value in variant.model.items():
        assert getattr(config, setting) == value
    frame = results_frame(rows)
    assert set(frame["variant"]) == {variant.key} and set(frame["fold"]) == {0, 1}
    assert {"weighted_f1", "weighted_precision", "weighted_recall"} <= set(frame["metric"])
    assert ("none_predicted_share" in set(frame["metric"])) == variant.negative_sampling


def test_tables_name_existing_variants_in_the_papers_order() -> None:
    assert [t.number for t in PAPER_TABLES] == ["II", "III", "IV", "V"]
    for table in PAPER_TABLES:
        for _, key in table.rows:
            # "variant#reading": another reading of a variant's runs (Table V's nine_class)
            assert key.startswith("reported:") or key.partition("#")[0] in VARIANTS_BY_KEY
    used = {key.partition("#")[0] for table in PAPER_TABLES for _, key in table.rows}
    assert set(VARIANTS_BY_KEY) <= used  # every partition appears in a table


# -- negative sampling -----------------------------------------------------------------------


def test_negative_sampling_never_samples_an_existing_edge() -> None:
    # A dense graph: 18 of the 20 user-image pairs are edges, so most draws must be rejected.
    pairs = [(u, i) for u in range(5) for i in range(4) if (u, i) not in {(1, 2), (4, 0)}]
    sampler = NonEdgeSampler(np.array(pairs).T, num_users=5, num_images=4)
    drawn = sampler.sample(np.random.default_rng(0), 5000)
    assert drawn.shape == (2, 5000)
    assert set(map(tuple, drawn.T.tolist())) == {(1, 2), (4, 0)}
    counts = np.bincount(drawn[0] * 4 + drawn[1], minlength=20)[[6, 16]]
    assert abs(counts[0] - counts[1]) < 300  # uniform over the non-edges
    with pytest.raises(ValueError, match="no negative"):
        NonEdgeSampler(np.array([(u, i) for u in range(2) for i in range(2)]).T, 2, 2)


def test_negative_sampling_adds_a_none_class_in_training_only(monkeypatch) -> None:
    data = small_graph()
    split = stratified_split(data[VIEWS].edge_label.numpy(), seed=0)
    config = ModelConfig(use_comments=False, use_ac=False, extra_classes=1)
    seen = []
    original = torch.nn.functional.cross_entropy

    def recording_loss(logits, targets, *args, **kwargs):
        seen.append(targets.clone())
        return original(logits, targets, *args, **kwargs)

    monkeypatch.setattr("hmg_pipeline.model.train.F.cross_entropy", recording_loss)
    result = train_fold(
        data, config, TrainConfig(epochs=1, negative_sampling=True), split, torch.device("cpu")
    )
    targets = torch.cat(seen)
    none = len(data.class_names)
    assert (targets == none).sum() == (targets != none).sum() == len(split.train)
    assert 0.0 <= result.test_metrics["none_predicted_share"] <= 1.0
    # A real held-out edge is scored over the emotions only: every test edge in the matrix.
    assert result.confusion.shape == (len(data.class_names), len(data.class_names))
    assert result.confusion.sum() == len(split.test)
    with pytest.raises(ValueError, match="extra_classes"):
        train_fold(
            data,
            ModelConfig(),
            TrainConfig(epochs=1, negative_sampling=True),
            split,
            torch.device("cpu"),
        )


def test_augmented_features_follow_the_graphs_edge_order() -> None:
    data = small_graph()
    users, images = data["user"].node_id, data["image"].node_id
    source, target = data[VIEWS].edge_index.numpy()
    ids = [(users[s], images[t]) for s, t in zip(source, target, strict=True)]
    vectors = np.arange(len(ids) * 2, dtype=np.float32).reshape(-1, 2)
    order = np.random.default_rng(0).permutation(len(ids))  # the table in another order
    table = pl.DataFrame(
        {"user_id": [ids[k][0] for k in order], "image_id": [ids[k][1] for k in order]}
    ).with_columns(pl.Series("vector", vectors[order]).cast(pl.Array(pl.Float32, 2)))
    features = edge_feature_matrix(data, table)
    assert torch.equal(features, torch.from_numpy(vectors))
    augmented = with_edge_features(data, features)
    assert torch.equal(augmented["image", "rev_views", "user"].edge_attr, features)
    assert not torch.equal(data[VIEWS].edge_attr[:, :2], features)  # the original is untouched
    with pytest.raises(ValueError, match="no row"):
        edge_feature_matrix(data, table.head(3))
    with pytest.raises(ValueError, match="repeated"):
        edge_feature_matrix(data, pl.concat([table, table.head(1)]))


def test_augmented_features_replace_only_llava_rows_and_detect_stale_tables() -> None:
    data = small_graph()
    users, images = data["user"].node_id, data["image"].node_id
    source, target = data[VIEWS].edge_index.numpy()
    original = data[VIEWS].edge_attr.numpy()
    generated = np.full_like(original, 7.0)
    is_llava = np.arange(len(source)) % 3 == 0

    def table(vectors: np.ndarray, sources: list[str]) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "user_id": [users[k] for k in source],
                "image_id": [images[k] for k in target],
                "source": sources,
            }
        ).with_columns(pl.Series("vector", vectors).cast(pl.Array(pl.Float32, vectors.shape[1])))

    sources = ["llava" if flag else "fill" for flag in is_llava]
    vectors = np.where(is_llava[:, None], generated, original)
    features = experiments.augmented_comment_features(data, table(vectors, sources))
    assert torch.equal(features, torch.from_numpy(vectors))
    no_llava = table(original, ["fill"] * len(source))
    assert experiments.augmented_comment_features(data, no_llava) is None
    stale = vectors.copy()
    stale[~is_llava] += 1.0  # built from other comment features than the graph's
    with pytest.raises(ValueError, match="re-materialise llava_comment_embeddings"):
        experiments.augmented_comment_features(data, table(stale, sources))


# -- LLaVA -----------------------------------------------------------------------------------


def test_synonyms_are_seeded_and_make_distinct_prompts() -> None:
    assert set(EMOTION_SYNONYMS) == set(MIKELS_EMOTIONS)
    assert all(len(set(words)) >= 5 for words in EMOTION_SYNONYMS.values())
    users = [f"u{k}" for k in range(40)]
    first = [pick_synonym("awe", u, "i1", seed=0) for u in users]
    assert first == [pick_synonym("awe", u, "i1", seed=0) for u in users]
    assert set(first) <= set(EMOTION_SYNONYMS["awe"])
    assert len({prompt_for(s) for s in first}) >= 4  # users of one image get different prompts
    assert first != [pick_synonym("awe", u, "i1", seed=1) for u in users]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return build_tiny_random_llava(tmp_path_factory.mktemp("llava") / "tiny")


def test_transformers_backend_generates_with_a_tiny_random_llava(tiny_llava: Path) -> None:
    generator = TransformersLlava(str(tiny_llava), max_new_tokens=8)
    assert type(generator.network).__name__ == "LlavaForConditionalGeneration"
    images = [jpeg_bytes((200, 30, 30), 64), jpeg_bytes((30, 30, 200), 48)]
    prompts = [prompt_for("amazed"), prompt_for("gloomy")]
    comments = generator.generate(images, prompts)
    assert len(comments) == 2 and all(isinstance(c, str) and c for c in comments)
    assert generator.generate(images, prompts) == comments  # greedy: the cache key suffices
    assert "<image>" in generator.chat_text("hello")


def test_tiny_random_is_built_once_and_loaded_through_the_same_path(tmp_path: Path) -> None:
    path = resolve_llava_model("tiny-random", tmp_path)
    stamp = (Path(path) / "config.json").stat().st_mtime_ns
    assert resolve_llava_model("tiny-random", tmp_path) == path
    assert (Path(path) / "config.json").stat().st_mtime_ns == stamp
    assert resolve_llava_model("llava-hf/llava-1.5-7b-hf", tmp_path) == "llava-hf/llava-1.5-7b-hf"


def test_missing_llava_weights_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(LlavaUnavailable, match="HMG_LLAVA_MODEL"):
        TransformersLlava(str(tmp_path / "no-such-model"))


def test_ollama_backend_speaks_the_generate_api() -> None:
    image = jpeg_bytes((10, 200, 10))
    with ollama_server(OllamaState(failures=[503])) as (url, state):
        generator = OllamaLlava(url, "llava", max_new_tokens=20, backoff_s=0.01)
        [comment] = generator.generate([image], [prompt_for("calm")])
    assert comment == f"A comment on a {len(image)}-byte photo: {prompt_for('calm')[-40:]}".strip()
    assert len(state.requests) == 2  # one 503, retried
    body = state.requests[-1]
    assert body["stream"] is False and body["options"]["num_predict"] == 20
    assert body["prompt"] == prompt_for("calm")


def test_ollama_errors_are_clear() -> None:
    with (
        ollama_server() as (url, _),
        pytest.raises(LlavaUnavailable, match="ollama pull llava:13b"),
    ):
        OllamaLlava(url, "llava:13b").generate([jpeg_bytes((1, 2, 3))], ["hi"])
    with pytest.raises(LlavaUnavailable, match="no Ollama server answered"):
        OllamaLlava(url, attempts=2, backoff_s=0.01, timeout_s=1).generate([b"x"], ["hi"])


def test_the_cache_avoids_a_second_generation(tmp_path: Path) -> None:
    images = {"sha-a": jpeg_bytes((1, 2, 3)), "sha-b": jpeg_bytes((3, 2, 1))}
    keys = [("p1", "sha-a"), ("p2", "sha-a"), ("p1", "sha-a"), ("p1", "sha-b")]
    with ollama_server() as (url, state):
        loads = []

        def make():
            loads.append(1)
            return OllamaLlava(url, "llava")

        with GenerationCache(tmp_path / "cache.duckdb") as cache:
            first = generate_with_cache(("ollama", "llava"), make, cache, keys, images.get)
            assert len(state.requests) == 3 and first.generated == 3 and first.reused == 0
            assert first.comments[0] == first.comments[2]
            again = generate_with_cache(("ollama", "llava"), make, cache, keys, images.get)
            other = generate_with_cache(("ollama", "llava:13b"), make, cache, keys[:1], images.get)
    assert len(state.requests) == 4  # only the other model generated again
    assert again.comments == first.comments and again.generated == 0 and again.reused == 3
    assert other.generated == 1 and len(loads) == 2  # no model load when all is cached


# -- tables ----------------------------------------------------------------------------------


def synthetic_results(keys: tuple[str, ...], values=(0.5, 0.7), baselines: bool = False):
    """Two runs of each variant in ``keys`` (and, with ``baselines``, the LR and the majority
    class on the same folds: the LR 0.1 below, the majority class far below)."""
    scored = [(key, key, 0.0) for key in keys]
    if baselines:
        scored += [(key, "logistic regression", -0.1) for key in keys]
        scored += [(key, "majority class", -0.4) for key in keys]
    rows = [
        {"variant": key, "name": name, "fold": fold, "metric": metric, "value": value + shift}
        for key, name, shift in scored
        for fold, value in enumerate(values)
        for metric in ("weighted_f1", "weighted_precision", "weighted_recall", "macro_f1")
    ]
    return results_frame(rows)


def our_and_paper_rows(frame: pl.DataFrame, model: str) -> list[dict]:
    return frame.filter(pl.col("model") == model).rows(named=True)


def test_paper_tables_show_the_papers_numbers_beside_ours() -> None:
    frames = paper_table_frames(synthetic_results(("hmg_emo", "hmg_emo_no_t_ac", "comments_only")))
    assert list(frames) == ["II", "III", "IV", "V"]
    columns = ["model", "source", "runs", "weighted_f1", "weighted_precision", "weighted_recall"]
    columns += ["macro_f1", "Δ weighted_f1 vs logistic regression"]
    assert all(frame.columns == columns for frame in frames.values())
    table_ii = frames["II"]
    assert table_ii["model"].to_list()[:4] == ["RMTHG (V)", "RMTHG (Fusion)", "HMG-Emo", "HMG-Emo"]
    assert table_ii["source"].to_list()[:4] == ["reported", "reported", "this pipeline", "reported"]
    assert table_ii.row(1, named=True)["weighted_precision"] == "0.50 ± 0.1"
    ours, paper = our_and_paper_rows(table_ii, "HMG-Emo")
    expected = mean_interval([0.5, 0.7])
    assert ours["weighted_f1"] == (
        f"0.6000 ± {expected.std:.4f} [{expected.ci_low:.4f}, {expected.ci_high:.4f}]"
    )
    assert ours["runs"] == 2 and ours["macro_f1"].startswith("0.6000 ± ")
    assert ours["Δ weighted_f1 vs logistic regression"] == "no LR rows"
    assert (paper["weighted_f1"], paper["weighted_precision"], paper["weighted_recall"]) == (
        "0.77 ± 0.003",
        "0.97 ± 0.007",
        "0.65 ± 0.001",
    )
    assert paper["runs"] == 3 and paper["macro_f1"] == "not reported"
    not_run, its_paper = our_and_paper_rows(table_ii, "HMG-Emo-{AC}")
    assert not_run["weighted_f1"] == "not run" and not_run["runs"] == 0
    assert its_paper["weighted_f1"] == "0.76 ± 0.003"  # the paper's row even when ours is missing
    assert our_and_paper_rows(frames["IV"], "GAT")[1]["weighted_recall"] == "0.65 ± 0.0002"
    assert our_and_paper_rows(frames["V"], "With negative sampling")[1]["weighted_f1"] == (
        "0.71 ± 0.002"
    )
    # Table V's first row is Table II's HMG-Emo-{T, AC}: one run fills both.
    same = our_and_paper_rows(table_ii, "HMG-Emo-{T, AC}")[0]
    assert frames["V"].row(0)[2:] == tuple(same.values())[2:]
    for table in PAPER_TABLES:  # every row of ours appears, in the paper's order
        ours = frames[table.number].filter(pl.col("source") == "this pipeline")["model"]
        expected = [label for label, key in table.rows if not key.startswith("reported:")]
        assert ours.to_list() == expected
    quoted = paper_table_frames(
        synthetic_results(("hmg_emo",)), {"II": {"RMTHG (V)": {"weighted_f1": (0.25, 0.01)}}}
    )
    row = quoted["II"].row(0, named=True)
    assert (row["model"], row["weighted_f1"], row["weighted_recall"]) == (
        "RMTHG (V)",
        "0.25 ± 0.01",
        "not transcribed",
    )
    assert quoted["II"].filter(pl.col("source") == "reported").height == 1


def test_reported_rows_match_the_tables_rows() -> None:
    for table in PAPER_TABLES:
        labels = {label for label, _ in table.rows}
        for label, numbers in REPORTED_ROWS[table.number].items():
            assert label in labels or label.split(" (")[0] in labels, label
            assert set(numbers) == {"weighted_f1", "weighted_precision", "weighted_recall"}
            assert all(0 < mean < 1 and 0 < std < 1 for mean, std in numbers.values())
    assert set(REPORTED_ROWS["II"]) >= {"RMTHG (V)", "RMTHG (Fusion)"}
    assert REPORTED_ROWS["II"]["HMG-Emo-{T, AC}"] == REPORTED_ROWS["V"]["Without negative sampling"]


def test_long_table_carries_the_numbers() -> None:
    long = paper_tables_long(synthetic_results(("hmg_emo",), (0.5, 0.6, 0.9), baselines=True))
    assert long.schema["mean"] == long.schema["ci_high"] == pl.Float64
    assert long.schema["n"] == pl.Int64 and long.schema["row"] == pl.Int64
    mine = long.filter((pl.col("variant") == "hmg_emo") & (pl.col("metric") == "weighted_f1")).sort(
        "statistic"
    )
    score = mine.filter(pl.col("statistic") == "score").row(0, named=True)
    low, high = stats.t.interval(
        0.95, 2, loc=np.mean([0.5, 0.6, 0.9]), scale=stats.sem([0.5, 0.6, 0.9])
    )
    assert score["mean"] == pytest.approx(2 / 3)  # the baselines' rows are not ours
    assert score["std"] == pytest.approx(np.std([0.5, 0.6, 0.9], ddof=1))
    assert (score["ci_low"], score["ci_high"], score["n"]) == (
        pytest.approx(low),
        pytest.approx(high),
        3,
    )
    difference = mine.filter(pl.col("statistic") != "score").row(0, named=True)
    assert difference["statistic"] == "paired difference vs logistic regression"
    assert difference["mean"] == pytest.approx(0.1) and difference["std"] == pytest.approx(0.0)
    assert difference["n"] == 3
    not_run = long.filter((pl.col("variant") == "gat_no_t") & (pl.col("metric") == "macro_f1"))
    assert not_run["n"].to_list() == [0] and not_run["mean"].null_count() == 1
    paper = long.filter(
        (pl.col("model") == "RMTHG (Fusion)") & (pl.col("metric") == "weighted_recall")
    ).row(0, named=True)
    assert (paper["source"], paper["mean"], paper["std"], paper["n"]) == ("reported", 0.72, 0.1, 3)
    assert paper["ci_low"] is None and paper["variant"] is None
    frames = paper_table_frames(synthetic_results(("hmg_emo",), (0.5, 0.6, 0.9), baselines=True))
    ours = our_and_paper_rows(frames["II"], "HMG-Emo")[0]
    assert ours["Δ weighted_f1 vs logistic regression"].startswith("+0.1000 ± 0.0000")
    assert ours["runs"] == 3


def test_the_report_explains_its_statistics_and_the_papers_numbers(tmp_path: Path) -> None:
    from hmg_pipeline.model.reports import paper_tables_report

    report = paper_tables_report(synthetic_results(("hmg_emo",), baselines=True))
    text = report.document
    assert "Table I. The dataset" in text and "108,899" in text and "34%" in text
    assert "ddof = 1" in text and "Student t" in text and "optimistic" in text
    assert "3 repeated stratified 80:10:10 splits" in text and "not 3-fold" in text
    assert "weighted recall is accuracy" in text and "macro F1" in text
    assert report.table.equals(paper_tables_long(synthetic_results(("hmg_emo",), baselines=True)))
    assert "hmg_emo" not in report.missing
    assert report.write(tmp_path).read_text().startswith("# The paper's tables")


def test_footnotes_say_how_negatives_and_llava_comments_enter() -> None:
    rows = [
        {"variant": "hmg_emo_no_t_ac_negatives", "name": "n", "fold": f, "metric": m, "value": v}
        for f, v in enumerate((0.2, 0.4))
        for m in ("weighted_f1", "none_predicted_share")
    ] + [
        {
            "variant": "comments_only_llava",
            "name": "c",
            "detail": "ollama/llava",
            "fold": 0,
            "metric": "weighted_f1",
            "value": 0.3,
        }
    ]
    notes = experiments.experiment_footnotes(results_frame(rows))
    assert any("`none` for 30.0% of those edges" in n and "9-class" in n for n in notes)
    assert any("generated by ollama/llava" in n and "carry the label" in n for n in notes)
    assert not any("tiny randomly-initialised" in n for n in notes)


# -- through Dagster -------------------------------------------------------------------------

# The experiments, run on a store that holds the graph and every LLaVA shard
# (TinyDataset.materialize_shards).
EXPERIMENT_SELECTION = ["experiment_results", "paper_tables"]


def stored_score(tables: pl.DataFrame, model: str, source: str = "this pipeline") -> dict:
    """The weighted F1 score row of ``model`` in the stored paper_tables."""
    return tables.filter(
        (pl.col("model") == model)
        & (pl.col("source") == source)
        & (pl.col("metric") == "weighted_f1")
        & (pl.col("statistic") == "score")
    ).row(0, named=True)


def test_experiment_assets_on_a_tiny_dataset(tiny: TinyDataset) -> None:
    tiny.write_trainable_views(
        [
            view("u4", "i1", "awe", comment_text="what a sky"),
            view("u4", "i2", "fear"),
            view("u5", "i1", "anger", comment_text="no!"),
            view("u5", "i2", "awe"),
            view("u5", "i3", "awe"),  # i3 has no file: no generated comment
        ]
    )
    settings = {
        "ops": {
            "experiment_results": {"config": {"epochs": 1, "folds": 2}},
        }
    }
    shards = tiny.materialize_shards()
    assert shards.success
    result = tiny.materialize(EXPERIMENT_SELECTION, settings, partition_key="comments_only_llava")
    assert result.success
    comments = tiny.table("augment.llava_comments")
    assert comments.height == 9  # the clean edges without comment text
    assert dict(comments.group_by("status").len().iter_rows()) == {
        "generated": 8,
        "image_unreadable": 1,
    }
    assert comments.filter(pl.col("status") == "generated")["comment"].null_count() == 0
    meta = shards.asset_materializations_for_node("llava_comments")[0].metadata
    assert meta["generated_now"].value >= 1 and meta["reused_from_cache"].value == 0
    assert 0 < meta["unique_comment_share"].value <= 1
    augmented = tiny.table("augment.llava_comment_embeddings")
    assert dict(augmented.group_by("source").len().iter_rows()) == {
        "original": 2,
        "llava": 8,
        "fill": 1,
    }
    metrics = tiny.table("experiments.experiment_results")
    assert set(metrics["variant"]) == {"comments_only_llava"} and set(metrics["fold"]) == {0, 1}
    tables = tiny.table("experiments.paper_tables")
    assert stored_score(tables, "LLaVA-augmented comments")["n"] == 2
    assert stored_score(tables, "HMG-Emo")["n"] == 0  # not run: no number
    assert stored_score(tables, "HMG-Emo")["mean"] is None
    assert stored_score(tables, "RMTHG (V)", "reported")["mean"] == 0.44
    report = (tiny.store_dir / "reports" / "paper_tables.md").read_text()
    assert "Table III" in report and "generated by transformers/tiny-random" in report
    assert set(metrics["detail"]) == {"transformers/tiny-random"}

    # Another partition adds its rows and keeps the first; LLaVA comments come from the cache.
    again = tiny.materialize_shards(["llava_comments"])
    assert (
        again.asset_materializations_for_node("llava_comments")[0].metadata["generated_now"].value
        == 0
    )
    assert tiny.materialize(EXPERIMENT_SELECTION, settings, partition_key="hmg_emo").success
    metrics = tiny.table("experiments.experiment_results")
    assert set(metrics["variant"]) == {"comments_only_llava", "hmg_emo"}
    tables = tiny.table("experiments.paper_tables")
    assert stored_score(tables, "HMG-Emo")["n"] == 2


def test_held_out_edges_get_an_emotion_even_when_none_scores_highest() -> None:
    from hmg_pipeline.model.hmg_emo import HMGEmo, InputDims
    from hmg_pipeline.model.train import GraphTensors, held_out_metrics

    data = small_graph()
    config = ModelConfig(use_comments=False, use_ac=False, extra_classes=1)
    model = HMGEmo(config, InputDims.of(data))
    last = model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[2] = 5.0  # "awe", the most likely emotion
        last.bias[len(data.class_names)] = 50.0  # "none" above every emotion
    index = np.arange(data[VIEWS].num_edges)
    graph = GraphTensors.of(data, torch.device("cpu"))
    metrics, matrix = held_out_metrics(model, graph, index, data.class_names, amp=False)
    assert metrics["none_predicted_share"] == 1.0
    labels = data[VIEWS].edge_label.numpy()
    assert metrics["accuracy"] == pytest.approx(np.mean(labels == 2))
    assert matrix[:, 2].sum() == len(index)  # every edge predicted "awe", none left out


class SilentOllama(OllamaState):
    """An Ollama that answers every prompt with whitespace only."""

    def reply_for(self, body: dict) -> str:
        return "  \n "


@pytest.mark.parametrize(
    ("backend", "status"), [("none", "skipped"), ("ollama", "empty")], ids=["none", "empty"]
)
def test_without_generated_text_table_iii_says_not_run(
    tiny: TinyDataset, backend: str, status: str
) -> None:
    from hmg_pipeline.resources import LlavaResource

    tiny.write_trainable_views([view("u4", "i1", "awe"), view("u5", "i2", "fear")])
    with ollama_server(SilentOllama()) as (url, _):
        shards = tiny.materialize_shards(llava=LlavaResource(backend=backend, ollama_url=url))
    result = tiny.materialize(
        EXPERIMENT_SELECTION,
        {"ops": {"experiment_results": {"config": {"epochs": 1, "folds": 2}}}},
        partition_key="comments_only_llava",
    )
    assert shards.success and result.success
    comments = tiny.table("augment.llava_comments")
    # Every edge without comment has a row and a status: nothing dropped uncounted.
    assert comments.height == 8 and set(comments["status"]) == {status}
    expected_text = [None] * 8 if status == "skipped" else [""] * 8
    assert comments["comment"].to_list() == expected_text
    meta = shards.asset_materializations_for_node("llava_comments")[0].metadata
    assert f"| {status} | 8 |" in meta["status"].value
    assert set(tiny.table("augment.llava_comment_embeddings")["source"]) == {"fill"}
    assert tiny.table("experiments.experiment_results").height == 0
    tables = tiny.table("experiments.paper_tables")
    assert stored_score(tables, "LLaVA-augmented comments")["n"] == 0
    report = (tiny.store_dir / "reports" / "paper_tables.md").read_text()
    assert "| LLaVA-augmented comments | this pipeline | 0 | not run |" in report
