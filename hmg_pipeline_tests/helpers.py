"""Test helpers: tiny IESN-shaped datasets in temp dirs, and materialising assets on them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from dagster import AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize
from PIL import Image

from hmg_pipeline.assets.augment import shard_partitions
from hmg_pipeline.core.schema import MIKELS_EMOTIONS
from hmg_pipeline.definitions import all_assets, all_checks, build_resources, every_partition
from hmg_pipeline.resources import (
    ComputeResource,
    EncoderResource,
    FlickrResource,
    LlavaResource,
    PipelinePaths,
)

# The default selection of a test run: everything up to the features (training is slow; the
# tests that need the graph, the model or the experiments select them).
UP_TO_FEATURES = AssetSelection.all() - AssetSelection.groups(
    "graph", "model", "augment", "experiments"
)

# Run tags that make one run materialise every LLaVA shard (as the job llava_augmentation does).
ALL_SHARDS = every_partition(shard_partitions)
# The graph with what its multi-assets also make, and every shard of the LLaVA comments and their
# embeddings: what the experiments read (a run covers one partitions definition, so the
# experiments, partitioned by variant, run after it).
GRAPH_AND_SHARDS = [
    "*hetero_graph",
    "label_drops",
    "unreadable_images",
    "llava_comments",
    "llava_comment_embeddings",
]

VIEW_HEADER = (
    "user_id",
    "image_id",
    "emotion",
    "comment_id",
    "comment_text",
    "commented_at",
    "valence",
    "arousal",
    "dominance",
)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if value is None else value for value in row])


def jpeg_bytes(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def view(user: str, image: str, emotion: str, **extra: object) -> tuple[object, ...]:
    """One views row; keyword arguments fill the optional columns."""
    values = {"user_id": user, "image_id": image, "emotion": emotion, **extra}
    return tuple(values.get(column) for column in VIEW_HEADER)


@dataclass
class TinyDataset:
    """A raw directory that follows the contract; tests overwrite single tables."""

    raw_dir: Path
    store_dir: Path

    def write_views(self, rows: Iterable[Sequence[object]]) -> None:
        write_csv(self.raw_dir / "views.csv", VIEW_HEADER, rows)

    def write_images(self, rows: Iterable[Sequence[object]]) -> None:
        write_csv(
            self.raw_dir / "images.csv", ("image_id", "owner_id", "url", "file", "posted_at"), rows
        )

    def write_trainable_views(self, extra: Sequence[Sequence[object]] = ()) -> None:
        """Six views of u1-u3 over i1 and i2 in three classes, then ``extra``: with a few
        more, enough labelled edges for stratified 80:10:10 folds."""
        self.write_views(
            [
                view(f"u{u}", f"i{1 + (u + k) % 2}", MIKELS_EMOTIONS[(u + k) % 3])
                for u in range(1, 4)
                for k in range(2)
            ]
            + list(extra)
        )

    def write_contacts(self, rows: Iterable[Sequence[object]]) -> None:
        write_csv(self.raw_dir / "contacts.csv", ("user_id", "contact_id"), rows)

    def materialize(
        self,
        selection: Sequence[str] | None = None,
        run_config: Mapping | None = None,
        raise_on_error: bool = True,
        **kwargs: object,
    ) -> ExecuteInProcessResult:
        return materialize_on(
            self.raw_dir, self.store_dir, selection, run_config, raise_on_error, **kwargs
        )

    def materialize_shards(
        self, selection: Sequence[str] = tuple(GRAPH_AND_SHARDS), **kwargs: object
    ) -> ExecuteInProcessResult:
        """``selection`` (by default the graph and the LLaVA assets) with every shard of the
        sharded assets, in one run."""
        return self.materialize(selection, tags=ALL_SHARDS, **kwargs)

    def table(self, name: str) -> pl.DataFrame:
        return read_store_table(self.store_dir, name)


def materialize_on(
    raw_dir: Path,
    store_dir: Path,
    selection: Sequence[str] | AssetSelection | None = None,
    run_config: Mapping | None = None,
    raise_on_error: bool = True,
    flickr: FlickrResource | None = None,
    instance: DagsterInstance | None = None,
    encoders: EncoderResource | None = None,
    llava: LlavaResource | None = None,
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> ExecuteInProcessResult:
    """Materialise the project's assets (and their checks) with Dagster's own ``materialize``."""
    resources = build_resources(
        PipelinePaths(raw_dir=str(raw_dir), store_dir=str(store_dir)),
        ComputeResource(device="cpu"),
        flickr or FlickrResource(),
        encoders or EncoderResource(),
        llava or LlavaResource(model="tiny-random"),
    )
    return materialize(
        [*all_assets, *all_checks],
        selection=selection
        if isinstance(selection, AssetSelection)
        else list(selection)
        if selection
        else UP_TO_FEATURES,
        resources=resources,
        run_config=dict(run_config or {}),
        raise_on_error=raise_on_error,
        instance=instance,
        partition_key=partition_key,
        tags=dict(tags) if tags else None,
    )


def read_store_table(store_dir: Path, name: str) -> pl.DataFrame:
    """Read ``schema.table`` back from the DuckDB store."""
    database = PipelinePaths(store_dir=str(store_dir)).duckdb_file
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.sql(f"select * from {name}").pl()
