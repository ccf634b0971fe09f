"""DuckDB storage through the project's IO manager: vectors, empty tables, schema changes."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from dagster import asset, materialize

from hmg_pipeline.storage import duckdb_io_manager, group_metadata

from .conftest import read_store_table


def vectors(ids: list[str], dim: int, seed: int) -> pl.DataFrame:
    values = np.random.default_rng(seed).random((len(ids), dim), dtype=np.float32)
    return pl.DataFrame({"id": ids}).with_columns(
        pl.Series("vector", values).cast(pl.Array(pl.Float32, dim))
    )


def run(store: Path, frame: pl.DataFrame) -> pl.DataFrame:
    """Write ``frame`` as an asset and read it back as a downstream asset's input."""
    seen: dict[str, pl.DataFrame] = {}

    @asset(metadata=group_metadata("features"))
    def embeddings() -> pl.DataFrame:
        return frame

    @asset(metadata=group_metadata("features"))
    def reader(embeddings: pl.DataFrame) -> pl.DataFrame:
        seen["loaded"] = embeddings
        return embeddings.select("id")

    materialize([embeddings, reader], resources={"io_manager": duckdb_io_manager(store)})
    return seen["loaded"]


def test_fixed_size_float_array_round_trip(tmp_path: Path) -> None:
    frame = vectors(["a", "b", "c"], 5, seed=1)
    loaded = run(tmp_path, frame)
    assert loaded.schema["vector"] == pl.Array(pl.Float32, 5)
    np.testing.assert_array_equal(loaded["vector"].to_numpy(), frame["vector"].to_numpy())
    with duckdb.connect(str(tmp_path / "hmg.duckdb"), read_only=True) as connection:
        types = {
            row[0]: row[1] for row in connection.sql("describe features.embeddings").fetchall()
        }
    assert types["vector"] == "FLOAT[5]"


def test_new_dimension_replaces_the_table(tmp_path: Path) -> None:
    run(tmp_path, vectors(["a", "b"], 4, seed=1))
    loaded = run(tmp_path, vectors(["a"], 6, seed=2))
    assert loaded.schema["vector"] == pl.Array(pl.Float32, 6)
    assert loaded.height == 1


def test_empty_frame_is_stored_as_an_empty_table(tmp_path: Path) -> None:
    loaded = run(tmp_path, vectors([], 3, seed=1))
    assert loaded.height == 0
    assert read_store_table(tmp_path, "features.embeddings").columns == ["id", "vector"]
