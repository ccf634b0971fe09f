"""LLaVA through a serving engine: the OpenAI-compatible backend against a local server that
answers as vLLM does (hmg_pipeline/testing/openai_server.py), and the shards of the augment
assets, which fail, retry and resume on their own."""

from __future__ import annotations

import _thread
import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from dagster import DagsterInstance
from PIL import Image

from hmg_pipeline.core.llava import (
    GenerationCache,
    LlavaUnavailable,
    OpenAILlava,
    chat_reply_text,
    generate_with_cache,
    image_data_url,
    in_shards,
    missing_shards,
    mixed_generators,
    shard_keys,
    shard_of,
)
from hmg_pipeline.placement import llava_generation_placement
from hmg_pipeline.resources import LlavaResource, SettingError
from hmg_pipeline.testing.openai_server import SERVED_MODEL, OpenAIState, openai_server

from .helpers import TinyDataset, jpeg_bytes, view
from .test_experiments import EXPERIMENT_SELECTION

DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens


def client(url: str, **settings: object) -> OpenAILlava:
    return OpenAILlava(url, backoff_s=0.01, **settings)  # type: ignore[arg-type]


def images(count: int) -> list[bytes]:
    return [jpeg_bytes((i * 7 % 256, 40, 90)) for i in range(count)]


# -- the backend -----------------------------------------------------------------------------


def test_each_request_carries_its_prompt_and_image_and_answers_come_back_in_order() -> None:
    pictures = images(5)
    prompts = [f"prompt number {i}" for i in range(5)]
    with openai_server(OpenAIState(latency_s=0.01)) as (url, state):
        comments = client(url, concurrency=3, max_new_tokens=25).generate(pictures, prompts)
    for comment, picture, prompt in zip(comments, pictures, prompts, strict=True):
        assert comment == f"A comment on a {len(picture)}-byte photo: {prompt}"  # cleaned
    body = next(b for b in state.requests if b["messages"][0]["content"][1]["text"] == prompts[2])
    assert (body["model"], body["max_tokens"], body["temperature"]) == (SERVED_MODEL, 25, 0)
    # The image first, then the prompt: LLaVA-1.5's order (USER: <image>\n...).
    assert [part["type"] for part in body["messages"][0]["content"]] == ["image_url", "text"]
    image_url = body["messages"][0]["content"][0]["image_url"]["url"]
    header, _, data = image_url.partition(",")
    assert header == "data:image/jpeg;base64" and base64.b64decode(data) == pictures[2]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_requests_in_flight_are_bounded_by_the_concurrency(concurrency: int) -> None:
    with openai_server(OpenAIState(latency_s=0.05)) as (url, state):
        count = 3 * concurrency + 1
        client(url, concurrency=concurrency).generate(images(count), ["p"] * count)
    assert state.max_in_flight == concurrency


def test_rate_limits_server_errors_and_dropped_connections_are_retried() -> None:
    with openai_server(OpenAIState(failures=[429, 500, 502, 503, 0])) as (url, state):
        generator = client(url, concurrency=1, attempts=6)
        assert generator.generate(images(1), ["p"])[0].startswith("A comment")
    assert generator.retries == 5 and len(state.requests) == 6


def test_retry_after_is_honoured() -> None:
    with openai_server(OpenAIState(failures=[429], retry_after="0.3")) as (url, _):
        started = time.perf_counter()
        client(url).generate(images(1), ["p"])
    assert time.perf_counter() - started >= 0.3


def test_a_server_that_keeps_failing_gives_up_after_the_attempts() -> None:
    with (
        openai_server(OpenAIState(failures=[503] * 3)) as (url, state),
        pytest.raises(LlavaUnavailable, match=r"after 3 attempts \(last: HTTP 503\)"),
    ):
        client(url, attempts=3).generate(images(1), ["p"])
    assert len(state.requests) == 3


def test_an_unreachable_server_says_what_to_start_or_set() -> None:
    with pytest.raises(LlavaUnavailable, match="no OpenAI-compatible server answered") as error:
        client(DEAD_URL, attempts=2).generate(images(1), ["p"])
    assert "HMG_LLAVA_BASE_URL" in str(error.value) and "vllm serve" in str(error.value)


def test_a_wrong_api_key_fails_at_once_without_showing_the_key() -> None:
    with openai_server(OpenAIState(api_key="right-key")) as (url, state):
        with pytest.raises(LlavaUnavailable, match=r"HTTP 401.*HMG_LLAVA_API_KEY") as error:
            client(url, api_key="wrong-key-123").generate(images(1), ["p"])
        assert "wrong-key-123" not in str(error.value) and len(state.requests) == 1
        client(url, api_key="right-key").generate(images(1), ["p"])
    assert state.headers[-1]["Authorization"] == "Bearer right-key"


def test_an_unknown_model_names_the_served_ones() -> None:
    with (
        openai_server() as (url, _),
        pytest.raises(LlavaUnavailable, match=rf"served: '{SERVED_MODEL}'.*HMG_LLAVA_MODEL"),
    ):
        client(url, model="llava-13b").generate(images(1), ["p"])


def test_a_bad_request_fails_at_once_and_asks_whether_the_model_takes_images() -> None:
    with (
        openai_server(OpenAIState(failures=[400])) as (url, state),
        pytest.raises(LlavaUnavailable, match=r"HTTP 400: busy.*take images"),
    ):
        client(url).generate(images(1), ["p"])
    assert len(state.requests) == 1


def test_one_failure_cuts_the_other_requests_retries_short() -> None:
    """One request is refused (400) while the other waits out a 30 s Retry-After: the stream
    stops at once instead of sitting out the wait, and raises."""
    state = OpenAIState(failures=[503, 400], retry_after="30")
    with openai_server(state) as (url, _), pytest.raises(LlavaUnavailable, match="HTTP 400"):
        started = time.perf_counter()
        client(url, concurrency=2).generate(images(2), ["a", "b"])  # the 400's error, not 503's
    assert time.perf_counter() - started < 10


def test_an_image_that_cannot_be_read_stops_the_stream_with_its_error() -> None:
    def unreadable() -> bytes:
        raise OSError("no such file: img/7.jpg")

    items = [(0, lambda: images(1)[0], "p"), (1, unreadable, "p"), (2, lambda: b"x", "p")]
    outcome: list[object] = []

    def consume() -> None:
        try:
            outcome.append(list(client(url, concurrency=2).generate_stream(items)))
        except OSError as error:
            outcome.append(error)

    with openai_server() as (url, _):
        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        worker.join(timeout=30)
    assert not worker.is_alive(), "the stream hung"
    assert isinstance(outcome[0], OSError) and "img/7.jpg" in str(outcome[0])


def test_images_go_as_they_are_or_re_encoded_as_png() -> None:
    jpeg = jpeg_bytes((1, 2, 3))
    assert image_data_url(jpeg) == "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    bmp = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 8, 7)).save(bmp, format="BMP")
    header, _, data = image_data_url(bmp.getvalue()).partition(",")
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).getpixel((0, 0)) == (9, 8, 7)


def test_reply_text_from_a_string_parts_or_null() -> None:
    def reply(content: object) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}

    assert chat_reply_text(reply('  "Lovely light."\n')) == "Lovely light."
    assert chat_reply_text(reply([{"type": "text", "text": "Two "}, {"text": "parts"}])) == (
        "Two parts"
    )
    assert chat_reply_text(reply(None)) == ""
    with pytest.raises(ValueError, match="not a chat completion"):
        chat_reply_text({"object": "error"})


def test_a_failed_run_keeps_what_finished_and_the_rerun_generates_only_the_rest(
    tmp_path: Path,
) -> None:
    pictures = {f"sha{i}": picture for i, picture in enumerate(images(8))}
    keys = [("describe it", sha) for sha in pictures]
    identity = ("openai", f"{SERVED_MODEL}|max_new_tokens=60")
    with (
        openai_server(OpenAIState(refuse_after=4, latency_s=0.01)) as (url, state),
        GenerationCache(tmp_path / "cache.duckdb") as cache,
    ):
        with pytest.raises(LlavaUnavailable, match="HTTP 400"):
            generate_with_cache(
                identity, lambda: client(url, concurrency=2), cache, keys, pictures.get, 2
            )
        kept = len(cache.lookup(*identity, keys))
        assert kept >= 2  # the comments that finished before the failure were stored
        state.refuse_after, answered = None, state.completed
        result = generate_with_cache(
            identity, lambda: client(url, concurrency=2), cache, keys, pictures.get, 2
        )
    assert (result.reused, result.generated) == (kept, len(keys) - kept)
    assert state.completed - answered == len(keys) - kept
    assert all(comment.startswith("A comment") for comment in result.comments)


def test_an_interrupted_run_keeps_the_comments_that_came_back(tmp_path: Path) -> None:
    """Ctrl-C (or a run's termination) while the step waits for answers: what came back is
    stored before the interruption goes through, although no batch was full yet."""
    pictures = {f"sha{i}": picture for i, picture in enumerate(images(6))}
    keys = [("describe it", sha) for sha in pictures]
    identity = ("openai", f"{SERVED_MODEL}|max_new_tokens=60")

    def read(sha: str) -> bytes:
        if sha == "sha3":
            _thread.interrupt_main()  # as Ctrl-C: raised in the step's (main) thread
        return pictures[sha]

    with (
        openai_server(OpenAIState(latency_s=0.05)) as (url, _),
        GenerationCache(tmp_path / "cache.duckdb") as cache,
    ):
        with pytest.raises(KeyboardInterrupt):
            generate_with_cache(
                identity, lambda: client(url, concurrency=1), cache, keys, read, 100
            )
        kept = cache.lookup(*identity, keys)
    assert {key[1] for key in kept} >= {"sha0", "sha1", "sha2"}


# -- settings --------------------------------------------------------------------------------


def test_openai_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HMG_LLAVA_MODEL", raising=False)  # `make test` sets tiny-random
    monkeypatch.setenv("HMG_LLAVA_BACKEND", "openai")
    monkeypatch.setenv("HMG_LLAVA_BASE_URL", "http://vllm.llava.svc:8000/v1")
    monkeypatch.setenv("HMG_LLAVA_CONCURRENCY", "64")
    monkeypatch.setenv("HMG_LLAVA_API_KEY", "sk-test-secret")
    resource = LlavaResource.from_env()
    generator = resource.generator(Path("."), "cpu")
    assert isinstance(generator, OpenAILlava)
    assert (generator.base_url, generator.concurrency, generator.model) == (
        "http://vllm.llava.svc:8000/v1",
        64,
        SERVED_MODEL,
    )
    assert generator.client.headers["Authorization"] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in str(resource.model_dump()) + resource.describe()
    assert resource.generate_batch_size() == 64
    for bad in ("0", "2000", "many"):
        monkeypatch.setenv("HMG_LLAVA_CONCURRENCY", bad)
        with pytest.raises(SettingError, match="HMG_LLAVA_CONCURRENCY"):
            LlavaResource.from_env()


# -- shards ----------------------------------------------------------------------------------


def test_every_edge_falls_in_exactly_one_shard_with_the_other_edges_of_its_image() -> None:
    rng = np.random.default_rng(0)
    table = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(3000)],
            "image_id": [f"img{i}" for i in rng.integers(0, 1000, 3000)],
        }
    )
    parts = [in_shards(table, [shard]) for shard in shard_keys()]
    assert sum(part.height for part in parts) == table.height
    assert all(part.height > 0 for part in parts)  # 1,000 images spread over all 16
    for part in parts:
        assert part["shard"].n_unique() == 1
        assert part["image_id"].is_in(table["image_id"]).all()
    images_per_shard = [set(part["image_id"]) for part in parts]
    assert sum(map(len, images_per_shard)) == table["image_id"].n_unique()  # disjoint
    assert in_shards(table, shard_keys()[:2]).height == parts[0].height + parts[1].height
    with pytest.raises(ValueError, match="unknown shard"):
        in_shards(table, ["shard-99"])


def test_missing_shards_are_those_of_edges_without_a_row() -> None:
    edges = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "image_id": ["a", "b", "c"]})
    table = edges.filter(pl.col("image_id") != "b")
    assert missing_shards(edges, table) == [shard_of("b")]
    assert missing_shards(edges, edges) == []


def test_shards_from_two_generators_are_named_with_their_shards() -> None:
    table = pl.DataFrame(
        {
            "image_id": ["i1", "i1", "i2", "i3"],
            "generator": ["openai/llava", "openai/llava", "transformers/tiny", None],
        }
    )
    assert mixed_generators(table) == {
        "openai/llava": [shard_of("i1")],
        "transformers/tiny": [shard_of("i2")],
    }
    assert mixed_generators(table.filter(pl.col("image_id") != "i2")) == {}


# -- through Dagster -------------------------------------------------------------------------


def store_text(store_dir: Path) -> str:
    """Every table of every DuckDB file of the store, as text."""
    text = []
    for database in store_dir.glob("*.duckdb"):
        with duckdb.connect(str(database), read_only=True) as connection:
            for schema, table in connection.execute(
                "select table_schema, table_name from information_schema.tables"
            ).fetchall():
                text.append(str(connection.execute(f'select * from "{schema}"."{table}"').pl()))
    return "\n".join(text)


def failure_text(result) -> str:
    """The errors of a run's failed steps, with their causes."""
    return " ".join(
        event.event_specific_data.error.to_string()
        for event in result.all_events
        if event.is_step_failure
    )


def test_shards_fail_alone_resume_from_the_cache_and_gate_the_experiments(
    tiny: TinyDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny.write_trainable_views(
        [
            view("u4", "i1", "awe", comment_text="what a sky"),
            view("u4", "i2", "fear"),
            view("u5", "i2", "awe"),
            view("u5", "i3", "awe"),  # i3 has no file: no generated comment
        ]
    )
    first, second = shard_of("i1"), shard_of("i2")
    assert len({first, second, shard_of("i3")}) == 3
    monkeypatch.setenv("HMG_LLAVA_API_KEY", "sk-never-stored")
    settings = {"ops": {"experiment_results": {"config": {"epochs": 1, "folds": 2}}}}
    with openai_server(OpenAIState(api_key="sk-never-stored", latency_s=0.01)) as (url, state):
        served = LlavaResource(backend="openai", base_url=url, concurrency=4)
        one = tiny.materialize(
            ["*hetero_graph", "llava_comments", "llava_comment_embeddings"],
            partition_key=first,
            llava=served,
        )
        comments = tiny.table("augment.llava_comments")
        assert set(comments["shard"]) == {first} and set(comments["status"]) == {"generated"}
        assert set(comments["backend"]) == {"openai"}

        # A dead server fails its shard only; the finished shard stays in the store.
        dead = LlavaResource(backend="openai", base_url=DEAD_URL, attempts=2, backoff_s=0.01)
        failed = tiny.materialize(
            ["llava_comments"], partition_key=second, llava=dead, raise_on_error=False
        )
        assert not failed.success
        assert "no OpenAI-compatible server answered" in failure_text(failed)
        assert tiny.table("augment.llava_comments").equals(comments)

        # The experiments name the shards still missing (i3 has no file: not in the graph).
        blocked = tiny.materialize(
            EXPERIMENT_SELECTION,
            settings,
            partition_key="comments_only_llava",
            raise_on_error=False,
        )
        messages = failure_text(blocked)
        assert "lacks 1 shard(s)" in messages and second in messages and first not in messages

        # A backfill of every shard reuses the first shard's generations.
        rest = tiny.materialize_shards(["llava_comments", "llava_comment_embeddings"], llava=served)
        meta = rest.asset_materializations_for_node("llava_comments")[0].metadata
        assert (
            meta["reused_from_cache"].value
            == one.asset_materializations_for_node("llava_comments")[0]
            .metadata["generated_now"]
            .value
        )
        result = tiny.materialize(
            EXPERIMENT_SELECTION, settings, partition_key="comments_only_llava"
        )
    assert result.success
    comments = tiny.table("augment.llava_comments")
    assert comments.height == 9 and set(comments["shard"]) == {first, second, shard_of("i3")}
    assert {h.get("Authorization") for h in state.headers} == {"Bearer sk-never-stored"}
    logged = " ".join(str(event) for run in (one, failed, rest, result) for event in run.all_events)
    assert "sk-never-stored" not in logged + store_text(tiny.store_dir)


def test_a_brief_cache_lets_another_process_write_between_two_batches(tmp_path: Path) -> None:
    """The shards of a backfill share llava_cache.duckdb: a step that has the cache open (its
    ``with`` block) must not lock the others out for its whole generation."""
    path = tmp_path / "cache.duckdb"
    writer = (
        "import sys; from pathlib import Path; from hmg_pipeline.core.llava import "
        "GenerationCache\n"
        "with GenerationCache(Path(sys.argv[1]), connect_timeout_s=5) as cache:\n"
        "    cache.store('openai', 'm', [('p', 'from-the-other-process')], ['hello'])\n"
    )
    with GenerationCache(path) as cache:
        cache.store("openai", "m", [("p", "mine")], ["first"])
        done = subprocess.run(
            [sys.executable, "-c", writer, str(path)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-1500:]
        keys = [("p", "mine"), ("p", "from-the-other-process")]
        assert cache.lookup("openai", "m", keys) == dict(zip(keys, ["first", "hello"], strict=True))


def test_served_llava_shards_run_on_cpu_pods_in_their_own_pool() -> None:
    from hmg_pipeline.placement import GPU_OP_TAGS, GPU_POOL, LLAVA_SERVER_POOL

    assert llava_generation_placement("transformers") == (GPU_POOL, GPU_OP_TAGS)
    for backend in ("openai", "ollama", "none"):
        assert llava_generation_placement(backend) == (LLAVA_SERVER_POOL, {})
    # As a code server or pod loads the definitions with HMG_LLAVA_BACKEND=openai.
    show = (
        "import json; from hmg_pipeline.definitions import defs\n"
        "ops = {n: defs.resolve_assets_def(n).op for n in ('llava_comments', "
        "'llava_comment_embeddings')}\n"
        "print(json.dumps({n: [op.pool, sorted(op.tags)] for n, op in ops.items()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", show],
        env={**os.environ, "HMG_LLAVA_BACKEND": "openai"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    placed = json.loads(done.stdout.strip().splitlines()[-1])
    assert placed["llava_comments"] == [LLAVA_SERVER_POOL, ["hmg/duckdb"]]
    assert placed["llava_comment_embeddings"] == [GPU_POOL, sorted(["hmg/duckdb", *GPU_OP_TAGS])]


def test_a_shard_without_edges_materialises_empty_tables(tiny: TinyDataset) -> None:
    tiny.write_trainable_views()
    used = {shard_of(image) for image in ("i1", "i2", "i3")}
    empty = next(shard for shard in shard_keys() if shard not in used)
    result = tiny.materialize(["*llava_comment_embeddings"], partition_key=empty)
    assert result.success
    for name in ("llava_comments", "llava_comment_embeddings"):
        assert (
            result.asset_materializations_for_node(name)[0].metadata["dagster/row_count"].value == 0
        )
        assert tiny.table(f"augment.{name}").height == 0


def old_layout(store_dir: Path) -> None:
    """augment.llava_comments as the store held it before the shards: no shard column."""
    store_dir.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(store_dir / "hmg.duckdb")) as connection:
        connection.execute("create schema if not exists augment")
        connection.execute(
            "create or replace table augment.llava_comments as "
            "select 'u1' as user_id, 'i1' as image_id, 'an old comment' as comment"
        )


def test_a_store_from_before_the_shards_is_replaced_on_write_and_named_on_read(
    tiny: TinyDataset,
) -> None:
    tiny.write_trainable_views()
    shard = shard_of("i1")
    old_layout(tiny.store_dir)
    instance = DagsterInstance.ephemeral()
    written = tiny.materialize(
        ["*llava_comment_embeddings"], partition_key=shard, instance=instance
    )
    assert written.success
    logged = " ".join(entry.user_message for entry in instance.all_logs(written.run_id))
    assert "was stored before llava_comments was partitioned; dropping it" in logged
    comments = tiny.table("augment.llava_comments")
    assert set(comments["shard"]) == {shard} and "an old comment" not in comments["comment"]

    old_layout(tiny.store_dir)
    read = tiny.materialize(["llava_comment_embeddings"], partition_key=shard, raise_on_error=False)
    assert not read.success
    assert "augment.llava_comments was stored before llava_comments was partitioned" in (
        failure_text(read)
    )
