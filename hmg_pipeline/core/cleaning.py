"""Cleaning rules: raw rows -> quarantine, labelled user-image edges and undirected contacts.

The rules run in the order the pipeline documents (issue "Step 1", rule 1-3):

1. row validation -> quarantine (one quarantine row per bad raw row, naming the first failing
   column; views of a quarantined image are quarantined too);
2. labels: tokens lower-cased and stripped, ``unknown`` removed, none left -> drop ``unknown``,
   several left -> keep the first (or drop ``multi_label``);
3. one edge per (user_id, image_id): the latest ``commented_at`` wins (missing = earliest),
   ties keep the later file row; the others are dropped as ``duplicate``.

Accounting closes by construction: every raw view row ends in exactly one of clean edges,
quarantine or drops, and the caller can verify it with :func:`view_accounting`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import polars as pl

from hmg_pipeline.core.schema import (
    CONTACTS,
    EMOTION_SEPARATOR,
    EMOTION_TOKENS,
    GROUP_MEMBERS,
    GROUPS,
    IMAGES,
    REQUESTS,
    SOURCE_ROW,
    UNKNOWN_EMOTION,
    USERS,
    VIEWS,
    TableSpec,
    empty_table,
)

MultiLabelPolicy = Literal["first", "drop"]

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "table": pl.String(),
    SOURCE_ROW: pl.Int64(),
    "column": pl.String(),
    "reason": pl.String(),
    "raw_row": pl.String(),
}
DROP_SCHEMA: dict[str, pl.DataType] = {
    SOURCE_ROW: pl.Int64(),
    "rule": pl.String(),
    "detail": pl.String(),
}
DROP_RULES: tuple[str, ...] = ("image_gone", "unknown", "multi_label", "duplicate")
NUMERIC_VIEW_COLUMNS: tuple[str, ...] = ("valence", "arousal", "dominance")
NAME_MAX_BYTES = 255  # one path component, on Linux and macOS file systems
_UNIX_SECONDS = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


@dataclass(frozen=True)
class Problem:
    """Why one raw row is quarantined: the first failing column and a readable reason."""

    column: str
    reason: str


def is_missing(value: str | None) -> bool:
    """A value is missing when null, empty or only white space."""
    return value is None or not value.strip()


class TimeOutOfRange(ValueError):
    """A well-formed time that has no UTC datetime (before year 1 or after 9999 in UTC)."""


def parse_timestamp(value: str) -> datetime:
    """Parse ISO-8601 or Unix seconds into a naive UTC datetime; ValueError if neither, and
    :class:`TimeOutOfRange` (a ValueError) for a time that UTC cannot hold, such as
    ``9999-12-31T23:59:59-01:00``."""
    text = value.strip()
    if _UNIX_SECONDS.match(text):
        try:
            return datetime.fromtimestamp(float(text), tz=UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError) as error:  # beyond the platform's time_t
            raise TimeOutOfRange(f"Unix seconds out of range ({error})") from None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # the offset moves it past year 1 or 9999
            raise TimeOutOfRange("out of range in UTC (years 1 to 9999)") from None
    return parsed


# A plain decimal or scientific number: no underscores (Python literal syntax), no NaN or
# infinity, no hex, no non-ASCII digits, all of which float() would accept.
_PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_number(value: str) -> float:
    """Parse a plain, finite decimal or scientific number (``2.5``, ``-1e3``); ValueError
    otherwise (``1_000``, ``NaN``, infinities and overflow such as ``1e999`` are not data)."""
    text = value.strip()
    if not _PLAIN_NUMBER.fullmatch(text):
        raise ValueError(f"{value!r} is not a plain decimal number")
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not finite")
    return number


def emotion_tokens(value: str) -> list[str]:
    """Split an emotion cell into lower-cased, stripped, de-duplicated tokens, in order."""
    tokens: list[str] = []
    for token in value.split(EMOTION_SEPARATOR):
        token = token.strip().lower()
        if token and token not in tokens:
            tokens.append(token)
    return tokens


def image_file_problem(raw_dir: Path, file: str) -> str | None:
    """Say why an image's ``file`` is unusable, or None when it is a regular file inside
    ``raw_dir``. Never raises: every bad path becomes a reason (loop, too long, NUL, ...)."""
    text = file.strip()
    if "\x00" in text:
        return f"file path {file!r} contains a NUL byte"
    relative = Path(text)
    if relative.is_absolute() or text.startswith(("/", "\\")):
        return f"file path {file!r} is absolute; it must be relative to the raw directory"
    too_long = [part for part in relative.parts if len(os.fsencode(part)) > NAME_MAX_BYTES]
    if too_long:
        return (
            f"file path {file!r} has a name of {len(os.fsencode(too_long[0]))} bytes "
            f"(the file system allows {NAME_MAX_BYTES})"
        )
    root = raw_dir.resolve()
    try:
        resolved = (root / relative).resolve()
        if not resolved.is_relative_to(root):
            return _escape_reason(root, relative, file)
        mode = resolved.stat().st_mode
    except RuntimeError:  # Python < 3.13 reports a symlink loop in resolve() this way
        return f"file path {file!r} is a symlink loop"
    except FileNotFoundError:
        return f"file {file!r} does not exist in the raw directory"
    except OSError as error:
        return f"file path {file!r} cannot be opened: {_os_reason(error)}"
    if stat.S_ISDIR(mode):
        return f"file path {file!r} is a directory, not an image file"
    if not stat.S_ISREG(mode):
        return f"file path {file!r} is not a regular file ({_file_kind(mode)})"
    return None


def _escape_reason(root: Path, relative: Path, file: str) -> str:
    """Why a path that resolves outside ``root`` does: the first symlink on the way that leads
    outside (the path itself may look harmless, e.g. ``images`` links to another disk), or
    just that it escapes (``..``). Files outside the raw directory are refused on purpose: the
    raw directory is the whole input, so nothing outside it is read through a path in a table."""
    current = root
    for part in relative.parts:
        if part == "..":
            break
        current = current / part
        if current.is_symlink() and not current.resolve().is_relative_to(root):
            link = current.relative_to(root).as_posix()
            return (
                f"file path {file!r} escapes the raw directory (it resolves outside it through "
                f"symlink {link!r} -> {os.readlink(current)!r})"
            )
    return f"file path {file!r} escapes the raw directory"


def _os_reason(error: OSError) -> str:
    """A short reason for an OS error on a path, without repeating the path."""
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno == errno.ENAMETOOLONG:
        return "name too long for the file system"
    return error.strerror or type(error).__name__


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def required_problem(row: dict[str, str | None], spec: TableSpec) -> Problem | None:
    """The first required column of ``spec`` whose value is missing, if any."""
    for column in spec.required:
        if is_missing(row.get(column)):
            return Problem(column, f"missing required value in '{column}'")
    return None


def time_problem(row: dict[str, str | None], column: str) -> Problem | None:
    value = row.get(column)
    if is_missing(value):
        return None
    try:
        parse_timestamp(value)  # type: ignore[arg-type]
    except TimeOutOfRange as error:
        return Problem(column, f"unparseable time {value!r}: {error}")
    except ValueError:
        return Problem(column, f"unparseable time {value!r} (expected ISO-8601 or Unix seconds)")
    return None


def number_problem(row: dict[str, str | None], column: str) -> Problem | None:
    value = row.get(column)
    if is_missing(value):
        return None
    try:
        parse_number(value)  # type: ignore[arg-type]
    except ValueError:
        return Problem(column, f"unparseable number {value!r}")
    return None


def image_problem(
    row: dict[str, str | None], raw_dir: Path, first_row_of: dict[str, int]
) -> Problem | None:
    """Validate one images row; ``first_row_of`` records the first row of each image_id."""
    problem = required_problem(row, IMAGES) or time_problem(row, "posted_at")
    if problem:
        return problem
    image_id = row["image_id"]
    assert image_id is not None
    if image_id in first_row_of:
        return Problem(
            "image_id", f"duplicate image_id, first defined at row {first_row_of[image_id]}"
        )
    file = row.get("file")
    if not is_missing(file):
        reason = image_file_problem(raw_dir, file)  # type: ignore[arg-type]
        if reason:
            return Problem("file", reason)
    return None


def view_problem(
    row: dict[str, str | None],
    valid_images: set[str],
    quarantined_images: dict[str, str],
) -> Problem | None:
    """Validate one views row against the (already validated) images."""
    problem = required_problem(row, VIEWS)
    if problem:
        return problem
    tokens = emotion_tokens(row["emotion"])  # type: ignore[arg-type]
    if not tokens:
        return Problem("emotion", f"missing required value in 'emotion' ({row['emotion']!r})")
    unknown = [token for token in tokens if token not in EMOTION_TOKENS]
    if unknown:
        return Problem(
            "emotion",
            f"emotion token {unknown[0]!r} is not one of {', '.join(sorted(EMOTION_TOKENS))}",
        )
    problem = time_problem(row, "commented_at")
    for column in NUMERIC_VIEW_COLUMNS:
        problem = problem or number_problem(row, column)
    if problem:
        return problem
    image_id = row["image_id"]
    assert image_id is not None
    if image_id in quarantined_images:
        return Problem("image_id", f"image is quarantined ({quarantined_images[image_id]})")
    if image_id not in valid_images:
        return Problem("image_id", f"image_id {image_id!r} is not in the images table")
    return None


def membership_problem(row: dict[str, str | None], group_ids: set[str]) -> Problem | None:
    problem = required_problem(row, GROUP_MEMBERS)
    if problem:
        return problem
    if row["group_id"] not in group_ids:
        return Problem("group_id", f"group_id {row['group_id']!r} is not in the groups table")
    return None


def quarantine_rows(
    table: str, frame: pl.DataFrame, check: Callable[[dict[str, str | None]], Problem | None]
) -> pl.DataFrame:
    """Run ``check`` on every row of ``frame``; one quarantine row per failing raw row."""
    records = []
    for row in frame.iter_rows(named=True):
        problem = check(row)
        if problem is not None:
            raw = {key: value for key, value in row.items() if key != SOURCE_ROW}
            records.append(
                {
                    "table": table,
                    SOURCE_ROW: row[SOURCE_ROW],
                    "column": problem.column,
                    "reason": problem.reason,
                    "raw_row": json.dumps(raw, ensure_ascii=False),
                }
            )
    return pl.DataFrame(records, schema=QUARANTINE_SCHEMA)


def quarantine_missing_required(table: str, frame: pl.DataFrame, spec: TableSpec) -> pl.DataFrame:
    """Vectorised required-value check for the large id-only tables (contacts, members)."""
    missing = pl.any_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in spec.required]
    )
    bad = frame.filter(missing)
    return quarantine_rows(table, bad, lambda row: required_problem(row, spec))


def validate_images(images: pl.DataFrame, raw_dir: Path) -> pl.DataFrame:
    """Quarantine rows of the images table (see :func:`image_problem`)."""
    first_row_of: dict[str, int] = {}

    def check(row: dict[str, str | None]) -> Problem | None:
        problem = image_problem(row, raw_dir, first_row_of)
        if problem is None:
            first_row_of[row["image_id"]] = row[SOURCE_ROW]  # type: ignore[index]
        return problem

    return quarantine_rows("images", images, check)


def validate_views(
    views: pl.DataFrame, images: pl.DataFrame, images_quarantine: pl.DataFrame
) -> pl.DataFrame:
    """Quarantine rows of the views table, given the images and their quarantine rows."""
    valid = valid_rows(images, images_quarantine)
    valid_images = set(valid["image_id"].to_list())
    quarantined_images: dict[str, str] = {}
    bad_images = images.join(images_quarantine.select(SOURCE_ROW, "reason"), on=SOURCE_ROW)
    for image_id, source_row, reason in bad_images.select(
        "image_id", SOURCE_ROW, "reason"
    ).iter_rows():
        if image_id is not None and image_id not in valid_images:
            quarantined_images.setdefault(image_id, f"images row {source_row}: {reason}")
    return quarantine_rows(
        "views", views, lambda row: view_problem(row, valid_images, quarantined_images)
    )


def validate_groups(groups: pl.DataFrame) -> pl.DataFrame:
    seen: dict[str, int] = {}

    def check(row: dict[str, str | None]) -> Problem | None:
        problem = required_problem(row, GROUPS)
        if problem:
            return problem
        group_id = row["group_id"]
        if group_id in seen:
            return Problem("group_id", f"duplicate group_id, first defined at row {seen[group_id]}")
        seen[group_id] = row[SOURCE_ROW]  # type: ignore[index, assignment]
        return None

    return quarantine_rows("groups", groups, check)


def validate_group_members(members: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    group_ids = set(groups["group_id"].drop_nulls().to_list())
    return quarantine_rows("group_members", members, lambda row: membership_problem(row, group_ids))


def build_quarantine(
    *,
    images: pl.DataFrame,
    views: pl.DataFrame,
    contacts: pl.DataFrame,
    groups: pl.DataFrame,
    group_members: pl.DataFrame,
    users: pl.DataFrame,
    raw_dir: Path,
    requests: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Rule 1 over every raw table: one quarantine row per bad raw row."""
    images_quarantine = validate_images(images, raw_dir)
    groups_quarantine = validate_groups(groups)
    return pl.concat(
        [
            images_quarantine,
            validate_views(views, images, images_quarantine),
            quarantine_missing_required("contacts", contacts, CONTACTS),
            groups_quarantine,
            validate_group_members(group_members, valid_rows(groups, groups_quarantine)),
            quarantine_missing_required("users", users, USERS),
            quarantine_missing_required(
                "requests", requests if requests is not None else empty_table(REQUESTS), REQUESTS
            ),
        ]
    )


def valid_rows(frame: pl.DataFrame, table_quarantine: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``frame`` whose ``source_row`` is not in ``table_quarantine``."""
    return frame.join(table_quarantine.select(SOURCE_ROW), on=SOURCE_ROW, how="anti")


def quarantine_of(quarantine: pl.DataFrame, table: str) -> pl.DataFrame:
    return quarantine.filter(pl.col("table") == table)


def _parse_optional(values: Iterable[str | None], parse: Callable[[str], object]) -> list:
    return [None if is_missing(value) else parse(value) for value in values]  # type: ignore[arg-type]


def resolve_labels(
    views: pl.DataFrame, multi_label: MultiLabelPolicy
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rule 2: one Mikels emotion per valid view, or a drop (``unknown``, ``multi_label``)."""
    emotions: list[str | None] = []
    drops: list[dict[str, object]] = []
    for source_row, cell in views.select(SOURCE_ROW, "emotion").iter_rows():
        tokens = [t for t in emotion_tokens(cell) if t != UNKNOWN_EMOTION]
        if not tokens:
            drops.append({SOURCE_ROW: source_row, "rule": "unknown", "detail": cell})
            emotions.append(None)
        elif len(tokens) > 1 and multi_label == "drop":
            drops.append({SOURCE_ROW: source_row, "rule": "multi_label", "detail": cell})
            emotions.append(None)
        else:
            emotions.append(tokens[0])
    labelled = views.with_columns(pl.Series("emotion", emotions, dtype=pl.String)).filter(
        pl.col("emotion").is_not_null()
    )
    return labelled, pl.DataFrame(drops, schema=DROP_SCHEMA)


def deduplicate_edges(labelled: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rule 3: keep one edge per (user_id, image_id): latest time, then later file row."""
    ordered = labelled.sort(["commented_at", SOURCE_ROW], nulls_last=False)
    kept = ordered.unique(subset=["user_id", "image_id"], keep="last", maintain_order=True)
    dropped = (
        labelled.join(kept.select(SOURCE_ROW), on=SOURCE_ROW, how="anti")
        .join(
            kept.select("user_id", "image_id", pl.col(SOURCE_ROW).alias("kept_row")),
            on=["user_id", "image_id"],
        )
        .select(
            SOURCE_ROW,
            pl.lit("duplicate").alias("rule"),
            pl.format("same user_id and image_id as row {}, which was kept", "kept_row").alias(
                "detail"
            ),
        )
    )
    return kept.sort(SOURCE_ROW), dropped


def typed_views(views: pl.DataFrame) -> pl.DataFrame:
    """Parse times and numbers of validated views; blank comment text becomes null."""
    return views.with_columns(
        pl.Series(
            "commented_at",
            _parse_optional(views["commented_at"], parse_timestamp),
            dtype=pl.Datetime("us"),
        ),
        *[
            pl.Series(column, _parse_optional(views[column], parse_number), dtype=pl.Float64)
            for column in NUMERIC_VIEW_COLUMNS
        ],
        pl.when(pl.col("comment_text").str.strip_chars() == "")
        .then(None)
        .otherwise(pl.col("comment_text"))
        .alias("comment_text"),
    )


def fill_fetched_texts(views: pl.DataFrame, fetched: pl.DataFrame | None) -> pl.DataFrame:
    """Use a refetched comment text (status ok) where the raw text is missing.

    ``comment_source`` says where each edge's text came from: ``raw``, ``flickr`` or null.
    """
    source = pl.when(pl.col("comment_text").is_not_null()).then(pl.lit("raw"))
    if fetched is None or fetched.height == 0:
        return views.with_columns(source.otherwise(None).alias("comment_source"))
    usable = fetched.filter(
        (pl.col("status") == "ok")
        & pl.col("text").is_not_null()
        & (pl.col("text").str.strip_chars() != "")
    ).select("comment_id", pl.col("text").alias("fetched_text"))
    joined = views.join(usable, on="comment_id", how="left")
    return joined.with_columns(
        source.when(pl.col("fetched_text").is_not_null())
        .then(pl.lit("flickr"))
        .otherwise(None)
        .alias("comment_source"),
        pl.coalesce("comment_text", "fetched_text").alias("comment_text"),
    ).drop("fetched_text")


def drop_gone_images(
    views: pl.DataFrame, gone_images: Collection[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rule ``image_gone``: views of images Flickr reports gone and that have no local file."""
    gone = pl.col("image_id").is_in(list(gone_images))
    drops = views.filter(gone).select(
        SOURCE_ROW,
        pl.lit("image_gone").alias("rule"),
        pl.format("image {} is gone from Flickr and has no local file", "image_id").alias("detail"),
    )
    return views.filter(~gone), drops


def clean_views(
    valid_views: pl.DataFrame,
    multi_label: MultiLabelPolicy = "first",
    fetched_comments: pl.DataFrame | None = None,
    gone_images: Collection[str] = (),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rules after validation, on the views that passed rule 1: (clean edges, drops).

    Fetched texts fill missing comment texts first; views of gone images are dropped before
    the label rules (``image_gone``), so a gone image never counts as a duplicate's winner.
    """
    valid = typed_views(valid_views)
    alive, gone_drops = drop_gone_images(fill_fetched_texts(valid, fetched_comments), gone_images)
    labelled, label_drops = resolve_labels(alive, multi_label)
    clean, duplicate_drops = deduplicate_edges(labelled)
    drops = pl.concat([gone_drops, label_drops, duplicate_drops]).sort(SOURCE_ROW)
    return clean, drops


@dataclass(frozen=True)
class ViewAccounting:
    """How the raw views were spent; ``closes`` is True when every row is in one place."""

    raw: int
    clean: int
    quarantined: int
    dropped: dict[str, int]
    unaccounted_rows: list[int]
    double_counted_rows: list[int]

    @property
    def closes(self) -> bool:
        total = self.clean + self.quarantined + sum(self.dropped.values())
        return total == self.raw and not self.unaccounted_rows and not self.double_counted_rows


def no_edges_reason(accounting: ViewAccounting) -> str | None:
    """Why no clean user-image edge is left, or None when there is one: with no edge there is
    nothing to learn from, so the main path stops here with this message."""
    if accounting.clean:
        return None
    if accounting.raw == 0:
        return "the views table has no data rows (header only?): there is no edge to learn from"
    dropped = {rule: count for rule, count in accounting.dropped.items() if count}
    return (
        f"none of the {accounting.raw} raw views is a clean edge: {accounting.quarantined} "
        f"quarantined (see raw.quarantine), dropped {dropped or 0} (see labels.label_drops)"
    )


def view_accounting(
    views: pl.DataFrame, clean: pl.DataFrame, quarantine: pl.DataFrame, drops: pl.DataFrame
) -> ViewAccounting:
    """Check row by row that each raw view is clean, quarantined or dropped, exactly once."""
    placed = pl.concat(
        [
            clean.select(SOURCE_ROW),
            quarantine_of(quarantine, "views").select(SOURCE_ROW),
            drops.select(SOURCE_ROW),
        ]
    )[SOURCE_ROW]
    counts = placed.value_counts()
    raw_rows = set(views[SOURCE_ROW].to_list())
    return ViewAccounting(
        raw=views.height,
        clean=clean.height,
        quarantined=quarantine_of(quarantine, "views").height,
        dropped={rule: drops.filter(pl.col("rule") == rule).height for rule in DROP_RULES},
        unaccounted_rows=sorted(raw_rows - set(placed.to_list())),
        double_counted_rows=sorted(counts.filter(pl.col("count") > 1)[SOURCE_ROW].to_list()),
    )


@dataclass(frozen=True)
class ContactAccounting:
    """How the valid contact rows were spent (quarantined rows are counted by the quarantine)."""

    valid: int
    self_loops: int
    merged: int
    pairs: int

    @property
    def closes(self) -> bool:
        return self.valid == self.self_loops + self.merged + self.pairs


def clean_contacts(valid: pl.DataFrame) -> tuple[pl.DataFrame, ContactAccounting]:
    """Undirected contact pairs from the valid contact rows: self-loops dropped, duplicate and
    reversed rows merged.

    Each pair is stored once as (user_id, contact_id) with user_id < contact_id; the earliest
    source row of the pair is kept for traceability.
    """
    loops = valid.filter(pl.col("user_id") == pl.col("contact_id"))
    canonical = (
        valid.filter(pl.col("user_id") != pl.col("contact_id"))
        .select(
            SOURCE_ROW,
            pl.min_horizontal("user_id", "contact_id").alias("user_id"),
            pl.max_horizontal("user_id", "contact_id").alias("contact_id"),
        )
        .sort(SOURCE_ROW)
    )
    pairs = canonical.unique(subset=["user_id", "contact_id"], keep="first", maintain_order=True)
    accounting = ContactAccounting(
        valid=valid.height,
        self_loops=loops.height,
        merged=canonical.height - pairs.height,
        pairs=pairs.height,
    )
    return pairs.select("user_id", "contact_id", SOURCE_ROW), accounting


def collect_users(
    *,
    views: pl.DataFrame,
    contacts: pl.DataFrame,
    group_members: pl.DataFrame,
    users: pl.DataFrame,
    images: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every user id seen in a user column, with where it was seen: views.user_id,
    contacts.user_id/contact_id, group_members.user_id, users.user_id and images.owner_id
    (``in_images``: uploaders, user nodes in the paper). Which of them become graph nodes is
    the graph's choice (:func:`hmg_pipeline.core.graph.node_users`)."""
    owners = images["owner_id"] if images is not None else pl.Series("owner_id", [], pl.String)
    sources = {
        "in_views": [views["user_id"]],
        "in_contacts": [contacts["user_id"], contacts["contact_id"]],
        "in_groups": [group_members["user_id"]],
        "in_users_table": [users["user_id"]],
        "in_images": [owners],
    }
    frames = [
        pl.DataFrame({"user_id": series.drop_nulls().unique()}).with_columns(
            pl.lit(flag).alias("source")
        )
        for flag, columns in sources.items()
        for series in columns
    ]
    long = pl.concat(frames).unique()
    wide = long.with_columns(pl.lit(True).alias("seen")).pivot(
        on="source", index="user_id", values="seen"
    )
    return (
        wide.with_columns(
            [
                (pl.col(flag).fill_null(False) if flag in wide.columns else pl.lit(False)).alias(
                    flag
                )
                for flag in sources
            ]
        )
        .select("user_id", *sources)
        .sort("user_id")
    )
