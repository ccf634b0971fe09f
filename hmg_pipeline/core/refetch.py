"""Refetch what the raw data lacks: comment texts, image liveness, group descriptions.

Items are fetched by a thread pool that shares the client's single rate ceiling; results are
saved one item at a time by the calling thread (see :class:`FlickrStore`), so an interrupted run
keeps everything it fetched. A bad key stops the run after the requests in flight are saved.
Statuses are those of :mod:`hmg_pipeline.core.flickr_store`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from PIL import Image

from hmg_pipeline.core.flickr import (
    FlickrBadKey,
    FlickrClient,
    FlickrError,
    FlickrFailed,
    FlickrGone,
    FlickrPrivate,
    FlickrTransient,
    RequestRecord,
    content,
    medium_rendition,
)
from hmg_pipeline.core.flickr_store import FlickrStore, ItemResult
from hmg_pipeline.core.progress import Progress

Outcome = tuple[str, Any, str]  # status, payload, message
Fetch = Callable[[str], Any]
Save = Callable[[str, ItemResult, Any, list[RequestRecord]], int]


@dataclass
class FetchSummary:
    """What one run of a refetch did."""

    items: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    changed: int = 0


def classify(fetch: Fetch, item_id: str) -> Outcome:
    """Run ``fetch`` and turn Flickr's answer into an item status; a bad key propagates."""
    try:
        return "ok", fetch(item_id), ""
    except FlickrBadKey:
        raise
    except FlickrGone as error:
        return "gone", None, str(error)
    except FlickrPrivate as error:
        return "private", None, str(error)
    except FlickrFailed as error:
        # Flickr's answer is permanent, so retrying soon would repeat it: slow re-check only.
        return "failed", None, str(error)
    except FlickrTransient as error:
        return "error", None, str(error)
    except UndecodableImage as error:
        # Like a body that is not JSON (transient in the client): usually a truncated transfer
        # or an error page instead of the image, so retried automatically.
        return "error", None, str(error)


def run_items(
    client: FlickrClient,
    store: FlickrStore,
    log_kind: str,
    item_ids: Sequence[str],
    fetch: Fetch,
    save: Save,
    workers: int,
    progress: Progress,
) -> FetchSummary:
    """Fetch every item on ``workers`` threads, saving each result as it completes."""
    summary = FetchSummary()
    fatal: FlickrError | None = None
    pending = list(item_ids)[::-1]
    running: dict[Future[Outcome], str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while pending or running:
            while pending and fatal is None and len(running) < max(1, workers):
                item_id = pending.pop()
                running[pool.submit(classify, fetch, item_id)] = item_id
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                item_id = running.pop(future)
                records = client.take_records(item_id)
                try:
                    status, payload, message = future.result()
                except FlickrBadKey as error:
                    store.append_fetch_log(log_kind, item_id, records)
                    fatal = fatal or error
                    continue
                result = ItemResult(status=status, attempts=len(records), message=message)
                summary.changed += save(item_id, result, payload, records)
                summary.items += 1
                summary.statuses[status] += 1
                progress.advance()
    if fatal is not None:
        raise fatal
    return summary


def refetch_comments(
    client: FlickrClient,
    store: FlickrStore,
    wanted: Mapping[str, Sequence[str]],
    workers: int,
    progress: Progress,
) -> FetchSummary:
    """List the comments of each photo once and keep the wanted comment ids' texts."""

    def fetch(photo_id: str) -> dict[str, dict]:
        return {str(c.get("id")): c for c in client.photo_comments(photo_id)}

    def save(photo_id: str, result: ItemResult, found: Any, records: list[RequestRecord]) -> int:
        return store.save_photo_comments(photo_id, wanted[photo_id], result, found or {}, records)

    return run_items(
        client, store, "photo_comments", sorted(wanted), fetch, save, workers, progress
    )


class UndecodableImage(Exception):
    """A downloaded file that is not a decodable image."""


def refetch_images(
    client: FlickrClient,
    store: FlickrStore,
    image_ids: Sequence[str],
    download_dir: Path | None,
    workers: int,
    progress: Progress,
) -> FetchSummary:
    """Ask whether each image is alive (its sizes), and optionally download the medium size."""

    def fetch(image_id: str) -> dict[str, Any]:
        medium = medium_rendition(client.photo_sizes(image_id))
        values: dict[str, Any] = {
            "url_medium": None if medium is None else medium.get("source"),
            "width": None if medium is None else int(medium.get("width") or 0),
            "height": None if medium is None else int(medium.get("height") or 0),
            "local_file": None,
        }
        if download_dir is not None and values["url_medium"]:
            data = client.download(values["url_medium"], image_id)
            values["local_file"] = str(write_verified_image(download_dir, image_id, data))
        return values

    def save(image_id: str, result: ItemResult, values: Any, records: list[RequestRecord]) -> int:
        return store.save_image(image_id, result, values or {}, records)

    return run_items(client, store, "image", list(image_ids), fetch, save, workers, progress)


# Ids kept readable in file names: ASCII letters, digits, "_" and "-", dots only between them
# (so never "." or ".."), starting with a letter or digit, at most 100 characters.
_READABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
MAX_READABLE_ID = 100


def image_file_name(image_id: str) -> str:
    """``{image_id}.jpg`` for a plain id (Flickr's numeric ids); any other id gets a name from
    its SHA-256, so no id can leave the directory, hide a NUL, or pass the name-length limit.
    Hashed names start with "_", which readable ones never do, so the two cannot collide."""
    if len(image_id) <= MAX_READABLE_ID and _READABLE_ID.fullmatch(image_id):
        return f"{image_id}.jpg"
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"_sha256-{digest}.jpg"


def write_verified_image(directory: Path, image_id: str, data: bytes) -> Path:
    """Write ``data`` as :func:`image_file_name` in ``directory`` only if it decodes as an
    image (atomic rename)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:
        raise UndecodableImage(f"downloaded file does not decode: {error}") from None
    target = directory / image_file_name(image_id)
    if target.parent != directory or target.resolve().parent != directory.resolve():
        raise ValueError(f"image file name for id {image_id!r} leaves {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


def refetch_groups(
    client: FlickrClient,
    store: FlickrStore,
    group_ids: Sequence[str],
    workers: int,
    progress: Progress,
) -> FetchSummary:
    """Fetch the name and description of each group."""

    def fetch(group_id: str) -> dict[str, Any]:
        info = client.group_info(group_id)
        return {"name": content(info.get("name")), "description": content(info.get("description"))}

    def save(group_id: str, result: ItemResult, values: Any, records: list[RequestRecord]) -> int:
        return store.save_group(group_id, result, values or {}, records)

    return run_items(client, store, "group", list(group_ids), fetch, save, workers, progress)


def wanted_comments(views: pl.DataFrame) -> dict[str, list[str]]:
    """Photo id -> comment ids of the views that have a ``comment_id`` but no text."""
    missing = views.filter(
        pl.col("comment_id").is_not_null()
        & (pl.col("comment_text").is_null() | (pl.col("comment_text").str.strip_chars() == ""))
    )
    pairs = missing.select("image_id", "comment_id").unique().sort("image_id", "comment_id")
    wanted: dict[str, list[str]] = {}
    for photo_id, comment_id in pairs.iter_rows():
        wanted.setdefault(photo_id, []).append(comment_id)
    return wanted


def images_without_file(images: pl.DataFrame) -> list[str]:
    """Ids of images with no local file (their liveness is asked of Flickr)."""
    no_file = images.filter(pl.col("file").is_null() | (pl.col("file").str.strip_chars() == ""))
    return sorted(set(no_file["image_id"].to_list()))


def groups_without_description(groups: pl.DataFrame) -> list[str]:
    """Ids of groups whose description is empty."""
    empty = groups.filter(
        pl.col("description").is_null() | (pl.col("description").str.strip_chars() == "")
    )
    return sorted(set(empty["group_id"].to_list()))


def text_coverage(views: pl.DataFrame, fetched: pl.DataFrame | None = None) -> float:
    """Share (%) of views with comment text, counting fetched texts when given."""
    if views.height == 0:
        return 0.0
    has_text = pl.col("comment_text").is_not_null() & (
        pl.col("comment_text").str.strip_chars() != ""
    )
    if fetched is not None and fetched.height:
        usable = fetched.filter((pl.col("status") == "ok") & pl.col("text").is_not_null())
        views = views.join(
            usable.select("comment_id", pl.col("text").alias("fetched_text")),
            on="comment_id",
            how="left",
        )
        has_text = has_text | (
            pl.col("fetched_text").is_not_null() & (pl.col("fetched_text").str.strip_chars() != "")
        )
    return round(100 * views.select(has_text.mean()).item(), 2)
