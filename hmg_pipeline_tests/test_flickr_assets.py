"""Flickr assets end to end against the local fake Flickr: refetch, resume, automatic retry
after an outage, re-check, secrets, the no-key offline path, and the schedule and sensor."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from hmg_pipeline.assets.flickr import (
    flickr_changes_sensor,
    flickr_recheck_job,
    refresh_dead_flickr_content,
)
from hmg_pipeline.core.flickr_store import FlickrStore
from hmg_pipeline.definitions import all_assets, build_resources, defs
from hmg_pipeline.resources import FlickrResource, PipelinePaths
from hmg_pipeline.testing.flickr_server import (
    BAD_KEY,
    TRANSIENT,
    FakeFlickr,
    Outage,
    Reply,
    comment,
    serve,
)

from .helpers import TinyDataset, jpeg_bytes, view

KEY = "sekret-KEY-0042"
GET_LIST = "flickr.photos.comments.getList"


@pytest.fixture
def flickr_data(tiny: TinyDataset) -> TinyDataset:
    """Views whose comments exist only as ids, an image without file, a group without text."""
    tiny.write_images(
        [
            ("p1", "u9", None, "img/a.jpg", None),
            ("p2", "u9", None, "img/b.jpg", None),
            ("p3", "u9", None, None, None),  # alive on Flickr
            ("p4", "u9", None, None, None),  # gone from Flickr
            ("p5", "u9", None, None, None),  # private
        ]
    )
    tiny.write_views(
        [
            view("u1", "p1", "awe", comment_id="c1"),  # text on Flickr
            view("u2", "p1", "fear", comment_id="c2"),  # author deleted, text still there
            view("u3", "p1", "awe", comment_id="c3"),  # not listed any more
            view("u1", "p2", "sadness", comment_id="c4", comment_text="raw text wins"),
            view("u2", "p3", "anger", comment_id="c5"),
            view("u3", "p4", "awe", comment_id="c6"),  # photo gone
            view("u1", "p5", "fear", comment_id="c7"),  # photo private
        ]
    )
    return tiny


@pytest.fixture
def fake() -> Iterator[FakeFlickr]:
    state = FakeFlickr(
        api_key=KEY,
        comments={
            "p1": [comment("c1", "いい写真 ✨"), comment("c2", "so sad", author_is_deleted=1)],
            "p3": [comment("c5", "this makes me angry")],
        },
        gone={"p4"},
        private={"p5"},
        groups={"g2": ("Rain", "Rainy days and memories")},
        images={"p3": jpeg_bytes((10, 200, 10))},
    )
    with serve(state) as running:
        yield running


def resource(fake: FakeFlickr, **overrides: object) -> FlickrResource:
    settings = dict(
        api_url=fake.base_url,
        max_qps=500.0,
        max_attempts=3,
        timeout_s=2.0,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
        workers=2,
    )
    settings.update(overrides)
    return FlickrResource(**settings)


def flickr_table(dataset: TinyDataset, kind: str) -> pl.DataFrame:
    with FlickrStore(dataset.store_dir / "flickr.duckdb") as store:
        return store.results(kind)


def statuses(frame: pl.DataFrame, key: str) -> dict[str, str]:
    return dict(frame.select(key, "status").iter_rows())


def test_without_key_the_flickr_assets_are_a_clean_no_op(
    flickr_data: TinyDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    result = flickr_data.materialize(flickr=FlickrResource(api_url="http://127.0.0.1:9/"))
    for name in ("flickr_comments", "flickr_images", "flickr_groups"):
        metadata = result.asset_materializations_for_node(name)[0].metadata
        assert "no API key" in metadata["skipped"].value
        assert metadata["dagster/row_count"].value == 0
    drops = flickr_data.table("labels.label_drops")
    assert "image_gone" not in drops["rule"].to_list()
    assert flickr_data.table("labels.clean_labels").height == 7


def test_refetch_fills_texts_marks_gone_and_feeds_clean_labels(
    flickr_data: TinyDataset, fake: FakeFlickr, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    fake.script[(GET_LIST, "p3")] = [TRANSIENT, Reply(status=500, text="oops")]
    result = flickr_data.materialize(
        flickr=resource(fake),
        run_config={"ops": {"flickr_images": {"config": {"download_images": True}}}},
    )
    comments = flickr_data.table("flickr.flickr_comments")
    assert statuses(comments, "comment_id") == {
        "c1": "ok",
        "c2": "ok",
        "c3": "comment_missing",
        "c5": "ok",
        "c6": "gone",
        "c7": "private",
    }
    row = comments.filter(pl.col("comment_id") == "c2").row(0, named=True)
    assert row["author_is_deleted"] is True and row["text"] == "so sad"
    assert comments.filter(pl.col("comment_id") == "c5")["attempts"].item() == 3
    # One comments.getList per photo, however many comment ids it has.
    assert sum(1 for m, item, _ in fake.requests if m == GET_LIST and item == "p1") == 1

    metadata = result.asset_materializations_for_node("flickr_comments")[0].metadata
    assert metadata["retries"].value == 2 and metadata["requests"].value == 6  # p1 p3x3 p4 p5
    assert metadata["coverage_before_%"].value < metadata["coverage_after_%"].value

    images = flickr_data.table("flickr.flickr_images")
    assert statuses(images, "image_id") == {"p3": "ok", "p4": "gone", "p5": "private"}
    alive = images.filter(pl.col("image_id") == "p3").row(0, named=True)
    assert alive["url_medium"].endswith("/static/p3.jpg") and alive["width"] == 500
    assert Path(alive["local_file"]).read_bytes() == fake.images["p3"]

    groups = flickr_data.table("flickr.flickr_groups")
    assert groups.row(0, named=True)["description"] == "Rainy days and memories"

    clean = flickr_data.table("labels.clean_labels")
    texts = clean["comment_text"].drop_nulls().to_list()
    sources = clean.group_by("comment_source").len()
    assert "いい写真 ✨" in texts and "raw text wins" in texts
    assert dict(sources.iter_rows())["flickr"] == 3
    drops = flickr_data.table("labels.label_drops")
    assert drops.filter(pl.col("rule") == "image_gone").height == 1
    labels_metadata = result.asset_materializations_for_node("clean_labels")[0].metadata
    assert labels_metadata["dropped_image_gone"].value == 1
    assert all(e.passed for e in result.get_asset_check_evaluations())

    # A second run fetches nothing: ok, gone, private and missing items are all settled.
    before = len(fake.requests)
    again = flickr_data.materialize(flickr=resource(fake))
    assert len(fake.requests) == before
    assert (
        again.asset_materializations_for_node("flickr_comments")[0].metadata["changed_items"].value
        == 0
    )


def test_undecodable_download_is_an_error_not_a_file(
    flickr_data: TinyDataset, fake: FakeFlickr, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    fake.images["p3"] = b"<html>not an image</html>"
    flickr_data.materialize(
        AssetSelection.assets("flickr_images").upstream(),
        flickr=resource(fake),
        run_config={"ops": {"flickr_images": {"config": {"download_images": True}}}},
    )
    row = (
        flickr_data.table("flickr.flickr_images")
        .filter(pl.col("image_id") == "p3")
        .row(0, named=True)
    )
    assert row["status"] == "error" and "does not decode" in row["message"]
    assert not (flickr_data.store_dir / "images" / "p3.jpg").exists()


def twelve_commented_photos(tiny: TinyDataset) -> tuple[list[str], FakeFlickr]:
    """Twelve photos, each viewed once with a comment known by id only, and a fake Flickr
    that knows every comment's text."""
    photos = [f"q{k:02d}" for k in range(12)]
    tiny.write_images([(p, "u9", None, "img/a.jpg", None) for p in photos])
    tiny.write_views([view(f"u{k}", p, "awe", comment_id=f"{p}-c") for k, p in enumerate(photos)])
    state = FakeFlickr(api_key=KEY, comments={p: [comment(f"{p}-c", f"text {p}")] for p in photos})
    return photos, state


def test_interrupted_run_resumes_without_loss_or_duplication(
    tiny: TinyDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    photos, state = twelve_commented_photos(tiny)
    # The injected failure: Flickr rejects the key at the 6th photo, which stops the run.
    state.script[(GET_LIST, photos[5])] = [BAD_KEY]
    with serve(state):
        first = tiny.materialize(flickr=resource(state, workers=1), raise_on_error=False)
        assert not first.success
        saved = flickr_table(tiny, "comments")
        assert saved["photo_id"].to_list() == photos[:5]
        second = tiny.materialize(flickr=resource(state, workers=3))
        assert second.success
    results = flickr_table(tiny, "comments")
    assert results.height == len(photos) and results["comment_id"].n_unique() == len(photos)
    assert set(results["status"]) == {"ok"}
    assert dict(results.select("comment_id", "text").rows()) == {
        f"{p}-c": f"text {p}" for p in photos
    }
    # Every photo's comments were served exactly once over both runs.
    assert {p: state.served_ok[(GET_LIST, p)] for p in photos} == dict.fromkeys(photos, 1)
    with FlickrStore(tiny.store_dir / "flickr.duckdb") as store:
        log = store.fetch_log().filter(pl.col("kind") == "photo_comments")
    assert log.filter(pl.col("outcome") == "bad_key").height == 1
    assert log.filter(pl.col("outcome") == "ok").height == len(photos)


def test_an_outage_leaves_errors_with_a_warning_and_the_next_plain_run_retries_them(
    tiny: TinyDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    photos, state = twelve_commented_photos(tiny)
    # Flickr goes down after 4 photos, for 4 photos' worth of attempts (3 each): dropped
    # connections, HTTP 503 and code 105 in turn. One worker keeps the order deterministic.
    state.outage = Outage(after=4, length=12)
    down = photos[4:8]
    selection = AssetSelection.assets("flickr_comments").upstream()
    instance = DagsterInstance.ephemeral()
    with serve(state):
        first = tiny.materialize(
            selection, flickr=resource(state, workers=1, max_attempts=3), instance=instance
        )
        assert first.success  # an outage is not a failed run: it warns
        results = flickr_table(tiny, "comments")
        assert {c for c, s in statuses(results, "comment_id").items() if s == "error"} == {
            f"{p}-c" for p in down
        }
        assert set(results.filter(pl.col("status") == "error")["error_streak"]) == {1}
        metadata = first.asset_materializations_for_node("flickr_comments")[0].metadata
        assert metadata["items_in_error"].value == 4
        assert metadata["next_retry_at"].value.endswith("UTC")
        warnings = [
            e.user_message
            for e in instance.all_logs(first.run_id)
            if e.level == logging.WARNING and "in error" in e.user_message
        ]
        assert len(warnings) == 1 and "4 item(s) in error" in warnings[0]
        with FlickrStore(tiny.store_dir / "flickr.duckdb") as store:
            log = store.fetch_log().filter(pl.col("item_id").is_in(down))
        messages = " ".join(log["message"])
        assert set(log["outcome"]) == {"transient"} and log.height == 12
        assert "connection failed" in messages and "HTTP 503" in messages
        assert "code 105" in messages

        # A plain rerun (no re-check) asks again for exactly the photos that failed.
        before = len(state.requests)
        second = tiny.materialize(selection, flickr=resource(state, workers=2), instance=instance)
        asked = sorted(item for _, item, _ in state.requests[before:])
    assert asked == down
    results = flickr_table(tiny, "comments")
    assert set(results["status"]) == {"ok"} and set(results["error_streak"]) == {0}
    assert dict(results.select("comment_id", "text").rows()) == {
        f"{p}-c": f"text {p}" for p in photos
    }
    metadata = second.asset_materializations_for_node("flickr_comments")[0].metadata
    assert metadata["items_in_error"].value == 0 and metadata["changed_items"].value == 4
    assert not [e for e in instance.all_logs(second.run_id) if e.level == logging.WARNING]


def test_recheck_revives_dead_items_and_the_sensor_reacts(
    flickr_data: TinyDataset, fake: FakeFlickr, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    instance = DagsterInstance.ephemeral()
    flickr_data.materialize(flickr=resource(fake), instance=instance)
    sensor_context = build_sensor_context(instance=instance)
    first_tick = flickr_changes_sensor(sensor_context)
    assert isinstance(first_tick, RunRequest)  # the first fetch changed items
    cursor = sensor_context.cursor
    assert isinstance(
        flickr_changes_sensor(build_sensor_context(instance=instance, cursor=cursor)), SkipReason
    )

    fake.gone.discard("p4")  # the photo came back
    fake.comments["p4"] = [comment("c6", "awe again")]
    fake.private.discard("p5")

    schedule_context = build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 29, 3, tzinfo=UTC)
    )
    request = refresh_dead_flickr_content(schedule_context)
    assert isinstance(request, RunRequest)
    assert request.run_key == "flickr-recheck-2026-11-29T03:00:00+00:00"
    ops = request.run_config["ops"]
    assert ops["flickr_comments"]["config"] == {"recheck": True, "recheck_after_days": 30.0}

    # The schedule's job, with the schedule's run config: items were checked moments ago, so a
    # 30-day re-check leaves them alone ...
    job = Definitions(
        assets=all_assets,
        jobs=[flickr_recheck_job],
        resources=build_resources(
            PipelinePaths(raw_dir=str(flickr_data.raw_dir), store_dir=str(flickr_data.store_dir)),
            flickr=resource(fake),
        ),
    ).resolve_job_def("flickr_recheck")
    recent = len(fake.requests)
    assert job.execute_in_process(run_config=request.run_config, instance=instance).success
    assert len(fake.requests) == recent
    # ... and a re-check of anything older than 0 days asks again and finds them alive.
    recheck_now = {
        "ops": {name: {"config": {"recheck": True, "recheck_after_days": 0}} for name in ops}
    }
    result = flickr_data.materialize(
        ["flickr_comments", "flickr_images", "flickr_groups"],
        run_config=recheck_now,
        flickr=resource(fake),
        instance=instance,
    )
    comments = flickr_data.table("flickr.flickr_comments")
    assert statuses(comments, "comment_id")["c6"] == "ok"
    assert statuses(comments, "comment_id")["c3"] == "comment_missing"  # not a re-check status
    assert statuses(flickr_data.table("flickr.flickr_images"), "image_id")["p4"] == "ok"
    changed = result.asset_materializations_for_node("flickr_comments")[0].metadata["changed_items"]
    assert changed.value >= 1
    tick = flickr_changes_sensor(build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(tick, RunRequest)


def test_the_api_key_never_reaches_logs_metadata_or_stores(
    flickr_data: TinyDataset,
    fake: FakeFlickr,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    # urllib3 logs each request line at DEBUG; another library (kubernetes' client config, in
    # test_deploy) may have set its logger to WARNING.
    caplog.set_level(logging.DEBUG, logger="urllib3")
    fake.script[(GET_LIST, "p1")] = [Reply(status=503, text=f"echo {fake.base_url}")]
    instance = DagsterInstance.ephemeral()
    result = flickr_data.materialize(flickr=resource(fake), instance=instance)
    assert any("api_key=" in q for q in fake.raw_queries)  # the key did travel to Flickr ...
    assert any("api_key=***" in r.getMessage() for r in caplog.records)  # ... logged redacted
    texts = [r.getMessage() for r in caplog.records]
    texts += [str(entry) for entry in instance.all_logs(result.run_id)]
    for node in ("flickr_comments", "flickr_images", "flickr_groups", "clean_labels"):
        texts += [str(m.metadata) for m in result.asset_materializations_for_node(node)]
    with FlickrStore(flickr_data.store_dir / "flickr.duckdb") as store:
        texts.append(store.fetch_log().write_csv())
    assert not [t for t in texts if KEY in t]
    for path in flickr_data.store_dir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_the_downstream_refresh_job_leaves_partitioned_assets_out() -> None:
    job = defs.resolve_job_def("flickr_downstream_refresh")
    graph = job.asset_layer.asset_graph
    selected = job.asset_layer.selected_asset_keys
    names = {key.to_user_string() for key in selected}
    assert not [name for name in names if graph.get(AssetKey(name)).is_partitioned]
    assert {"clean_labels", "label_drops", "hetero_graph", "trained_model"} <= names
    assert {"evaluation_metrics", "predictions"} <= names
    # Downstream of a partitioned asset: refreshed with it by paper_experiments, not here.
    assert not {"experiment_results", "paper_tables", "llava_comment_embeddings"} & names
    assert "paper_experiments" in (job.description or "")
