"""The Flickr state file: automatic retry of items in error with backoff across runs, the
migration of files written by older versions, and safe file names for downloaded images."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from hmg_pipeline.core.flickr_store import (
    RETRY_BASE_WAIT,
    RETRY_FACTOR,
    RETRY_MAX_WAIT,
    FlickrStore,
    ItemResult,
    retry_wait,
)
from hmg_pipeline.core.refetch import (
    MAX_READABLE_ID,
    UndecodableImage,
    image_file_name,
    write_verified_image,
)

from .helpers import jpeg_bytes


def save_group(store: FlickrStore, group_id: str, status: str) -> None:
    store.save_group(group_id, ItemResult(status=status, attempts=1), {}, [])


def checked_at(store: FlickrStore, group_id: str):
    return store.results("groups", [group_id])["fetched_at"].item()


def streak(store: FlickrStore, group_id: str) -> int:
    return store.results("groups", [group_id])["error_streak"].item()


def test_retry_wait_grows_from_the_next_run_to_the_cap() -> None:
    assert retry_wait(0) == retry_wait(1) == timedelta(0)  # first retry: the very next run
    assert retry_wait(2) == RETRY_BASE_WAIT
    assert retry_wait(3) == RETRY_BASE_WAIT * RETRY_FACTOR
    assert retry_wait(4) == RETRY_BASE_WAIT * RETRY_FACTOR**2
    assert retry_wait(10) == RETRY_MAX_WAIT == timedelta(days=1)
    assert retry_wait(10_000) == RETRY_MAX_WAIT  # no overflow however long the streak


def test_items_in_error_are_due_again_after_their_backoff(tmp_path: Path) -> None:
    with FlickrStore(tmp_path / "flickr.duckdb") as store:
        save_group(store, "g1", "error")
        assert streak(store, "g1") == 1
        at = checked_at(store, "g1")
        # Without any re-check: due on the very next run.
        assert store.due("groups", ["g1"], recheck=False, recheck_after_days=30, now=at) == {"g1"}

        save_group(store, "g1", "error")
        save_group(store, "g1", "error")
        assert streak(store, "g1") == 3
        at, wait = checked_at(store, "g1"), RETRY_BASE_WAIT * RETRY_FACTOR
        for now, expected in [
            (at, set()),
            (at + wait - timedelta(seconds=1), set()),
            (at + wait, {"g1"}),
            (at + timedelta(days=2), {"g1"}),
        ]:
            assert store.due("groups", ["g1"], False, 30, now=now) == expected, now - at
        errors = store.errors("groups", ["g1"])
        assert errors["next_retry_at"].item() == at + wait

        save_group(store, "g1", "ok")  # a success resets the streak
        assert streak(store, "g1") == 0 and store.errors("groups", ["g1"]).height == 0
        save_group(store, "g1", "error")
        assert streak(store, "g1") == 1


def test_dead_items_wait_for_the_slow_recheck_only(tmp_path: Path) -> None:
    with FlickrStore(tmp_path / "flickr.duckdb") as store:
        for group_id, status in [("g1", "gone"), ("g2", "private"), ("g3", "failed")]:
            save_group(store, group_id, status)
        save_group(store, "g4", "ok")
        ids = ["g1", "g2", "g3", "g4"]
        later = checked_at(store, "g1") + timedelta(days=10)
        assert store.due("groups", ids, recheck=False, recheck_after_days=0, now=later) == set()
        assert store.due("groups", ids, recheck=True, recheck_after_days=30, now=later) == set()
        assert store.due("groups", ids, recheck=True, recheck_after_days=7, now=later) == {
            "g1",
            "g2",
            "g3",
        }
        assert streak(store, "g1") == 0


OLD_SCHEMA = """
create table comment_results (
    comment_id varchar primary key, photo_id varchar not null, status varchar not null,
    text varchar, author_is_deleted boolean, attempts integer not null, message varchar,
    fetched_at timestamp not null, changed_at timestamp not null);
create table image_results (
    image_id varchar primary key, status varchar not null, url_medium varchar, width integer,
    height integer, local_file varchar, attempts integer not null, message varchar,
    fetched_at timestamp not null, changed_at timestamp not null);
create table group_results (
    group_id varchar primary key, status varchar not null, name varchar, description varchar,
    attempts integer not null, message varchar,
    fetched_at timestamp not null, changed_at timestamp not null);
create table fetch_log (
    kind varchar not null, item_id varchar not null, method varchar not null,
    attempt integer not null, outcome varchar not null, http_status integer,
    flickr_code integer, message varchar, requested_at timestamp not null);
insert into comment_results values
    ('c1', 'p1', 'error', null, null, 5, 'HTTP 503', '2025-01-01', '2025-01-01'),
    ('c2', 'p1', 'ok', 'hello', false, 1, '', '2025-01-01', '2025-01-01');
insert into group_results values
    ('g1', 'gone', null, null, 1, 'code 1', '2025-01-01', '2025-01-01');
"""


def test_a_state_file_of_an_older_version_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "flickr.duckdb"
    with duckdb.connect(str(path)) as old:
        old.execute(OLD_SCHEMA)
    with FlickrStore(path) as store:
        comments = store.results("comments")
        assert comments["error_streak"].to_list() == [0, 0]
        # An old error is retried by the next run; old ok and gone items are left alone.
        assert store.due("comments", ["c1", "c2"], False, 30) == {"c1"}
        assert store.due("groups", ["g1"], False, 30) == set()
        store.save_photo_comments(
            "p1", ["c1"], ItemResult("ok", 1), {"c1": {"id": "c1", "_content": "hi"}}, []
        )
        row = store.results("comments", ["c1"]).row(0, named=True)
        assert (row["status"], row["text"], row["attempts"], row["error_streak"]) == (
            "ok",
            "hi",
            6,
            0,
        )
    with FlickrStore(path) as store:  # reopening a migrated file is a no-op
        assert store.results("groups")["error_streak"].to_list() == [0]


def test_a_numeric_flickr_id_keeps_its_readable_file_name(tmp_path: Path) -> None:
    directory = tmp_path / "images"
    path = write_verified_image(directory, "53012345678", jpeg_bytes((1, 2, 3)))
    assert path == directory / "53012345678.jpg" and path.is_file()
    assert image_file_name("a_b-c.d") == "a_b-c.d.jpg"
    assert [p.name for p in directory.iterdir()] == ["53012345678.jpg"]  # no .part left


@pytest.mark.parametrize(
    "image_id",
    [
        "../../../escaped_by_image_id",
        "..",
        ".",
        "a/../../b",
        "/etc/passwd",
        "/tmp/absolute",
        "C:\\Windows\\evil",
        "\\\\server\\share",
        "nul\x00byte",
        "x" * 1000,
        "x" * (MAX_READABLE_ID + 1),
        ".hidden",
        "trailing.",
        "ünïcödé",
        "",
    ],
)
def test_unsafe_image_ids_get_a_hashed_name_inside_the_directory(
    tmp_path: Path, image_id: str
) -> None:
    directory = tmp_path / "store" / "images"
    path = write_verified_image(directory, image_id, jpeg_bytes((9, 9, 9)))
    assert path.parent == directory and path.resolve().parent == directory.resolve()
    assert path.name.startswith("_sha256-") and len(path.name) < 255
    assert path.is_file()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]
    assert image_file_name(image_id) == path.name  # deterministic
    assert image_file_name(image_id + "1") != path.name


def test_an_undecodable_download_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(UndecodableImage):
        write_verified_image(tmp_path / "images", "123", b"<html>oops</html>")
    assert not (tmp_path / "images").exists()
