"""Feature tables: a content-addressed vector cache, and the paper's user context (Eq. 1).

The cache keys a vector by (encoder identity, sha256 of the image bytes or normalised text), so
re-materialising embeds only new or changed content, and vectors of two encoders never mix.
Vectors are stored in chunks as they are computed, so an interrupted run keeps its work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from hmg_pipeline.core.duckdb_files import DuckDBFile
from hmg_pipeline.core.progress import Progress

if TYPE_CHECKING:  # the encoders import torch; they are loaded only when something is embedded
    from hmg_pipeline.core.encoders import ImageEncoder, TextEncoder

Log = Callable[[str], None]
UNREADABLE_SCHEMA = {
    "image_id": pl.String,
    "file": pl.String,
    "reason": pl.String,
    "edges": pl.Int64,
}


class VectorCache(DuckDBFile):
    """``with VectorCache(path) as cache:``; one DuckDB table of (encoder, sha, vector), opened
    per lookup or store (brief), so concurrent steps share it."""

    BRIEF = True

    SCHEMA = (
        "create table if not exists vectors (encoder varchar not null, "
        "content_sha varchar not null, vector float[] not null, "
        "primary key (encoder, content_sha))"
    )

    def lookup(self, encoder: str, hashes: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """Cached vectors of ``encoder`` for ``hashes`` (those it has)."""
        if not hashes:
            return {}
        wanted = pa.table({"content_sha": pa.array(list(set(hashes)), pa.string())})
        with self.with_table("wanted_hashes", wanted) as db:
            found = db.execute(
                "select v.content_sha, v.vector from vectors v join wanted_hashes w "
                "using (content_sha) where v.encoder = ?",
                [encoder],
            ).pl()
        if found.height == 0:
            return {}
        matrix = np.asarray(found["vector"].to_list(), dtype=np.float32).reshape(-1, dim)
        return dict(zip(found["content_sha"].to_list(), matrix, strict=True))

    def store(self, encoder: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors (one transaction); an existing (encoder, sha) is left as it is."""
        if not len(hashes):
            return
        batch = pa.table(
            {
                "encoder": pa.array([encoder] * len(hashes), pa.string()),
                "content_sha": pa.array(list(hashes), pa.string()),
                "vector": pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32())),
            }
        )
        with self.with_table("new_vectors", batch) as db:
            db.execute("insert or ignore into vectors select * from new_vectors")

    def count(self, encoder: str) -> int:
        with self.session() as db:
            return db.execute(
                "select count(*) from vectors where encoder = ?", [encoder]
            ).fetchone()[0]


@dataclass
class CachedResult:
    vectors: np.ndarray  # (items, dim); NaN rows where compute failed
    computed: int  # distinct contents embedded in this run
    reused: int  # distinct contents found in the cache
    failures: dict[int, str]  # item index -> reason


def embed_with_cache(
    cache: VectorCache,
    encoder: str,
    dim: int,
    hashes: Sequence[str],
    compute: Callable[[list[int]], tuple[np.ndarray, dict[int, str]]],
    chunk_size: int = 1024,
) -> CachedResult:
    """Vectors for items identified by content hash: cached ones reused, distinct new contents
    computed once (``compute`` gets item indices; failures are not cached) and stored chunk by
    chunk."""
    vectors = np.full((len(hashes), dim), np.nan, dtype=np.float32)
    known = cache.lookup(encoder, hashes, dim)
    first_index: dict[str, int] = {}
    for index, digest in enumerate(hashes):
        first_index.setdefault(digest, index)
    missing = [i for d, i in first_index.items() if d not in known]
    computed: dict[str, np.ndarray] = {}
    failures_by_hash: dict[str, str] = {}
    for start in range(0, len(missing), chunk_size):
        chunk = missing[start : start + chunk_size]
        result, failures = compute(chunk)
        ok = [k for k, index in enumerate(chunk) if index not in failures]
        for k, index in enumerate(chunk):
            if index in failures:
                failures_by_hash[hashes[index]] = failures[index]
            else:
                computed[hashes[index]] = result[k]
        cache.store(encoder, [hashes[chunk[k]] for k in ok], result[ok])
    item_failures: dict[int, str] = {}
    for index, digest in enumerate(hashes):
        vector = known.get(digest)
        if vector is None:
            vector = computed.get(digest)
        if vector is not None:
            vectors[index] = vector
        else:
            item_failures[index] = failures_by_hash.get(digest, "no vector")
    return CachedResult(vectors, len(computed), len(known), item_failures)


def image_sources(
    raw_dir: Path, images: pl.DataFrame, flickr_images: pl.DataFrame, image_ids: list[str]
) -> list[Path | None]:
    """The file of each image: its raw ``file`` (inside the raw dir), else a downloaded copy."""
    raw_files = dict(images.select("image_id", "file").iter_rows())
    downloaded = dict(
        flickr_images.filter(pl.col("local_file").is_not_null())
        .select("image_id", "local_file")
        .iter_rows()
    )
    sources: list[Path | None] = []
    for image_id in image_ids:
        file = raw_files.get(image_id)
        if file and file.strip():
            sources.append(raw_dir / file.strip())
        elif downloaded.get(image_id):
            sources.append(Path(downloaded[image_id]))
        else:
            sources.append(None)
    return sources


@dataclass
class ImageEmbeddings:
    table: pl.DataFrame  # image_id, content_sha, vector
    unreadable: pl.DataFrame  # image_id, file, reason, edges (the edges it takes out)
    result: CachedResult


def embed_image_files(
    edges_per_image: dict[str, int],
    sources: Sequence[Path | None],
    encoder: ImageEncoder,
    cache_file: Path,
    batch_size: int,
    loader_workers: int,
    log: Log,
) -> ImageEmbeddings:
    """Embed the image of each key of ``edges_per_image`` (sorted ids; ``sources`` in that
    order) through the cache; images without a file or that cannot be decoded are returned as
    unreadable, with the reason and the number of edges they take out."""
    from hmg_pipeline.core.encoders import encode_images, file_hash

    image_ids = sorted(edges_per_image)
    hashes = [None if s is None else file_hash(s) for s in sources]
    readable = [i for i, h in enumerate(hashes) if h is not None]
    log(
        f"{len(image_ids)} images of clean edges; {len(readable)} with a readable file; "
        f"encoder {encoder.name} on {encoder.device.torch_device}"
    )
    progress = Progress(len(readable), "image embeddings", log)

    def compute_vectors(indices: list[int]) -> tuple[np.ndarray, dict[int, str]]:
        files = [sources[readable[i]] for i in indices]
        vectors, failures = encode_images(
            encoder,
            files,  # type: ignore[arg-type]
            batch_size,
            loader_workers,
            progress.advance,
        )
        return vectors, {indices[k]: reason for k, reason in failures.items()}

    with VectorCache(cache_file) as cache:
        result = embed_with_cache(
            cache, encoder.identity, encoder.dim, [hashes[i] for i in readable], compute_vectors
        )
    reasons: dict[int, str] = {
        i: "no local file (not in the raw directory, not downloaded)"
        for i, h in enumerate(hashes)
        if h is None and sources[i] is None
    }
    reasons.update(
        {i: "cannot read file" for i, h in enumerate(hashes) if h is None and sources[i]}
    )
    reasons.update({readable[k]: reason for k, reason in result.failures.items()})
    good = [k for k in range(len(readable)) if k not in result.failures]
    table = pl.DataFrame(
        {
            "image_id": [image_ids[readable[k]] for k in good],
            "content_sha": [hashes[readable[k]] for k in good],
        },
        schema={"image_id": pl.String, "content_sha": pl.String},
    ).with_columns(vector_column("vector", result.vectors[good].reshape(len(good), encoder.dim)))
    order = sorted(reasons)
    unreadable = pl.DataFrame(
        {
            "image_id": [image_ids[i] for i in order],
            "file": [None if sources[i] is None else str(sources[i]) for i in order],
            "reason": [reasons[i] for i in order],
            "edges": [edges_per_image[image_ids[i]] for i in order],
        },
        schema=UNREADABLE_SCHEMA,
    )
    return ImageEmbeddings(table, unreadable, result)


def embed_texts(
    texts: Sequence[str | None],
    encoder: TextEncoder,
    cache_file: Path,
    batch_size: int,
    what: str,
    log: Log,
) -> tuple[np.ndarray, list[bool], CachedResult]:
    """Embed normalised texts through the cache; rows whose text is None stay zero.

    Returns (vectors, has_text, cache result)."""
    from hmg_pipeline.core.encoders import encode_texts, text_hash

    with_text = [i for i, t in enumerate(texts) if t is not None]
    present: list[str] = [texts[i] for i in with_text]  # type: ignore[misc]
    progress = Progress(len(set(present)), what, log)

    def compute_fn(indices: list[int]) -> tuple[np.ndarray, dict[int, str]]:
        chunk = [present[i] for i in indices]
        return encode_texts(encoder, chunk, batch_size, progress.advance), {}

    with VectorCache(cache_file) as cache:
        result = embed_with_cache(
            cache, encoder.identity, encoder.dim, [text_hash(t) for t in present], compute_fn
        )
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if with_text:
        vectors[with_text] = result.vectors
    return vectors, [t is not None for t in texts], result


def group_texts(groups: pl.DataFrame, flickr_groups: pl.DataFrame) -> list[str | None]:
    """Name and description of each group; a refetched description fills an empty one."""
    from hmg_pipeline.core.encoders import normalise_text

    fetched = dict(
        flickr_groups.filter(pl.col("status") == "ok").select("group_id", "description").iter_rows()
    )
    texts = []
    for group_id, name, description in groups.select("group_id", "name", "description").iter_rows():
        if normalise_text(description) is None:
            description = fetched.get(group_id)
        parts = [p for p in (normalise_text(name), normalise_text(description)) if p]
        texts.append(". ".join(parts) if parts else None)
    return texts


def vector_column(name: str, vectors: np.ndarray) -> pl.Series:
    """A fixed-size ``Array(Float32, d)`` column (DuckDB ``FLOAT[d]``)."""
    dim = vectors.shape[1]
    return pl.Series(name, vectors.astype(np.float32)).cast(pl.Array(pl.Float32, dim))


def user_context(
    user_ids: Sequence[str],
    memberships: pl.DataFrame,
    group_ids: Sequence[str],
    group_vectors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 of the paper: a user's context is the mean of the vectors of the groups they joined.

    Returns (vectors, n_groups). Users in no group get a zero vector and ``n_groups = 0`` (the
    paper leaves this case open; zero keeps them neutral rather than inventing a context).
    Memberships of unknown groups or users are ignored; duplicate memberships count once.
    """
    user_index = {u: i for i, u in enumerate(user_ids)}
    group_index = {g: i for i, g in enumerate(group_ids)}
    pairs = memberships.select("user_id", "group_id").unique()
    rows, cols = [], []
    for user, group in pairs.iter_rows():
        if user in user_index and group in group_index:
            rows.append(user_index[user])
            cols.append(group_index[group])
    dim = group_vectors.shape[1]
    sums = np.zeros((len(user_ids), dim), dtype=np.float64)
    np.add.at(sums, rows, group_vectors[cols].astype(np.float64))
    counts = np.bincount(rows, minlength=len(user_ids)).astype(np.int64)
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    return means.astype(np.float32), counts
