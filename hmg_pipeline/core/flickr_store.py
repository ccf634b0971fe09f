"""Durable state of the Flickr refetch (a DuckDB file of its own, ``flickr.duckdb``).

Each fetched item is committed in its own transaction together with its fetch-log rows, so a
run killed half-way loses nothing it fetched, and the next run starts where it stopped. Item
statuses: ``ok``; ``comment_missing`` (the photo answered, the comment is no longer listed);
``gone`` and ``private`` (Flickr codes 1 and 2); ``failed`` (a permanent answer this pipeline
has no meaning for); ``error`` (a transient failure that outlasted the client's retries: outage,
timeout, HTTP 5xx / 429, code 105, a body or image that does not decode). Items in ``error`` are
retried by every later run once their backoff has passed (``error_streak`` counts the runs in a
row that ended in ``error``); ``gone``, ``private`` and ``failed`` only by a re-check. The fetch
log records every request outcome without the API key or the request URL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from hmg_pipeline.core.duckdb_files import DuckDBFile
from hmg_pipeline.core.flickr import RequestRecord

# Retried automatically by every run, with backoff across runs (see ``retry_wait``).
RETRY_STATUSES = ("error",)
# Re-checked only when asked (``recheck``, the weekly schedule) and last checked long enough ago;
# "error" is included so that ``recheck_after_days=0`` also skips the backoff.
RECHECK_STATUSES = ("error", "failed", "gone", "private")
# Backoff of items in error: the first retry is on the next run, then each one waits
# RETRY_FACTOR times longer than the last, from RETRY_BASE_WAIT up to RETRY_MAX_WAIT.
RETRY_BASE_WAIT = timedelta(minutes=1)
RETRY_FACTOR = 4
RETRY_MAX_WAIT = timedelta(days=1)

_SCHEMA = """
create table if not exists comment_results (
    comment_id varchar primary key, photo_id varchar not null, status varchar not null,
    text varchar, author_is_deleted boolean, attempts integer not null, message varchar,
    fetched_at timestamp not null, changed_at timestamp not null);
create table if not exists image_results (
    image_id varchar primary key, status varchar not null, url_medium varchar, width integer,
    height integer, local_file varchar, attempts integer not null, message varchar,
    fetched_at timestamp not null, changed_at timestamp not null);
create table if not exists group_results (
    group_id varchar primary key, status varchar not null, name varchar, description varchar,
    attempts integer not null, message varchar,
    fetched_at timestamp not null, changed_at timestamp not null);
alter table comment_results add column if not exists error_streak integer default 0;
alter table image_results add column if not exists error_streak integer default 0;
alter table group_results add column if not exists error_streak integer default 0;
create table if not exists fetch_log (
    kind varchar not null, item_id varchar not null, method varchar not null,
    attempt integer not null, outcome varchar not null, http_status integer,
    flickr_code integer, message varchar, requested_at timestamp not null);
"""

TABLES = {"comments": "comment_results", "images": "image_results", "groups": "group_results"}
KEYS = {"comments": "comment_id", "images": "image_id", "groups": "group_id"}


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item (a photo's comments, an image, a group) in one run."""

    status: str
    attempts: int
    message: str = ""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def retry_wait(error_streak: int) -> timedelta:
    """How long after its last check an item that ended ``error_streak`` runs in a row in
    ``error`` waits before the next automatic retry (none after the first failing run)."""
    if error_streak <= 1:
        return timedelta(0)
    exponent = min(error_streak - 2, 64)  # far past the cap; bounded against overflow
    seconds = RETRY_BASE_WAIT.total_seconds() * float(RETRY_FACTOR) ** exponent
    return timedelta(seconds=min(seconds, RETRY_MAX_WAIT.total_seconds()))


def with_next_retry(results: pl.DataFrame) -> pl.DataFrame:
    """``results`` with ``next_retry_at``: when an item in error is retried (null otherwise)."""
    waits = [retry_wait(int(streak or 0)) for streak in results["error_streak"].to_list()]
    return results.with_columns(
        pl.when(pl.col("status").is_in(list(RETRY_STATUSES)))
        .then(pl.col("fetched_at") + pl.Series(waits, dtype=pl.Duration("us")))
        .otherwise(None)
        .alias("next_retry_at")
    )


class FlickrStore(DuckDBFile):
    """Open with ``with FlickrStore(path) as store:``; one writer process at a time."""

    SCHEMA = _SCHEMA

    # -- what to fetch --------------------------------------------------------------------

    def due(
        self,
        kind: str,
        ids: Sequence[str],
        recheck: bool,
        recheck_after_days: float,
        now: datetime | None = None,
    ) -> set[str]:
        """Ids never fetched, ids in ``error`` whose backoff has passed, and (when ``recheck``)
        ids of a re-check status last checked at least ``recheck_after_days`` ago."""
        table, key = TABLES[kind], KEYS[kind]
        now = now or utcnow()
        wanted = pl.DataFrame({key: list(ids)}, schema={key: pl.String})
        known = self.db.execute(f"select {key}, status, fetched_at, error_streak from {table}").pl()
        due = set(wanted.join(known, on=key, how="anti")[key].to_list())
        known = known.join(wanted, on=key)
        retry = with_next_retry(known).filter(pl.col("next_retry_at") <= now)
        due |= set(retry[key].to_list())
        if recheck:
            cutoff = now - timedelta(days=recheck_after_days)
            stale = known.filter(
                pl.col("status").is_in(list(RECHECK_STATUSES)) & (pl.col("fetched_at") <= cutoff)
            )
            due |= set(stale[key].to_list())
        return due

    # -- saving results -------------------------------------------------------------------

    def save_photo_comments(
        self,
        photo_id: str,
        comment_ids: Iterable[str],
        result: ItemResult,
        found: dict[str, dict],
        records: Sequence[RequestRecord],
    ) -> int:
        """Store the outcome for every wanted comment of one photo; return how many changed."""
        rows = []
        for comment_id in comment_ids:
            comment = found.get(comment_id)
            status = result.status
            if status == "ok" and comment is None:
                status = "comment_missing"
            rows.append(
                {
                    "comment_id": comment_id,
                    "photo_id": photo_id,
                    "status": status,
                    "text": None if comment is None else comment.get("_content"),
                    "author_is_deleted": None
                    if comment is None
                    else bool(int(comment.get("author_is_deleted") or 0)),
                    "message": result.message,
                }
            )
        return self._save("comments", rows, result.attempts, "photo_comments", photo_id, records)

    def save_image(
        self, image_id: str, result: ItemResult, values: dict, records: Sequence[RequestRecord]
    ) -> int:
        row = {"image_id": image_id, "status": result.status, "message": result.message, **values}
        return self._save("images", [row], result.attempts, "image", image_id, records)

    def save_group(
        self, group_id: str, result: ItemResult, values: dict, records: Sequence[RequestRecord]
    ) -> int:
        row = {"group_id": group_id, "status": result.status, "message": result.message, **values}
        return self._save("groups", [row], result.attempts, "group", group_id, records)

    def _save(
        self,
        kind: str,
        rows: list[dict],
        attempts: int,
        log_kind: str,
        item_id: str,
        records: Sequence[RequestRecord],
    ) -> int:
        """Upsert ``rows`` and append the fetch log, in one transaction."""
        table, key = TABLES[kind], KEYS[kind]
        now = utcnow()
        db = self.db
        db.execute("begin transaction")
        try:
            changed = 0
            for row in rows:
                previous = db.execute(
                    f"select * from {table} where {key} = ?", [row[key]]
                ).fetchone()
                columns = [c[0] for c in db.description] if previous else []
                old = dict(zip(columns, previous, strict=True)) if previous else {}
                content_columns = [c for c in row if c not in (key, "message")]
                is_change = not old or any(old.get(c) != row[c] for c in content_columns)
                changed += is_change
                in_error = row["status"] in RETRY_STATUSES
                record = {
                    **row,
                    "error_streak": int(old.get("error_streak") or 0) + 1 if in_error else 0,
                    "attempts": int(old.get("attempts") or 0) + attempts,
                    "fetched_at": now,
                    "changed_at": now if is_change else old["changed_at"],
                }
                names = list(record)
                db.execute(
                    f"insert or replace into {table} ({', '.join(names)}) "
                    f"values ({', '.join('?' for _ in names)})",
                    [record[n] for n in names],
                )
            self._append_log(log_kind, item_id, records)
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise
        return changed

    def append_fetch_log(
        self, log_kind: str, item_id: str, records: Sequence[RequestRecord]
    ) -> None:
        """Log requests of an item that got no result (e.g. the one a bad key stopped)."""
        self._append_log(log_kind, item_id, records)

    def _append_log(self, log_kind: str, item_id: str, records: Sequence[RequestRecord]) -> None:
        if not records:
            return
        self.db.executemany(
            "insert into fetch_log values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    log_kind,
                    item_id,
                    r.method,
                    r.attempt,
                    r.outcome,
                    r.http_status,
                    r.flickr_code,
                    r.message,
                    datetime.fromtimestamp(r.at, UTC).replace(tzinfo=None),
                )
                for r in records
            ],
        )

    # -- reading back ---------------------------------------------------------------------

    def results(self, kind: str, ids: Sequence[str] | None = None) -> pl.DataFrame:
        """The stored results of ``kind`` (restricted to ``ids`` when given)."""
        table, key = TABLES[kind], KEYS[kind]
        frame = self.db.execute(f"select * from {table} order by {key}").pl()
        if ids is not None:
            frame = frame.filter(pl.col(key).is_in(list(ids)))
        return frame

    def errors(self, kind: str, ids: Sequence[str]) -> pl.DataFrame:
        """The items of ``ids`` in ``error``, with ``error_streak`` and ``next_retry_at``."""
        results = self.results(kind, ids).filter(pl.col("status").is_in(list(RETRY_STATUSES)))
        return with_next_retry(results).sort("next_retry_at")

    def fetch_log(self) -> pl.DataFrame:
        return self.db.execute("select * from fetch_log order by requested_at").pl()
