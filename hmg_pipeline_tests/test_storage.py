"""DuckDB storage through the project's IO manager: vectors, empty tables, schema changes, column
descriptions, and the one-line error for an input that is not in the store."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from dagster import asset, materialize

from hmg_pipeline.resources import PipelinePaths, SettingError
from hmg_pipeline.storage import (
    MissingUpstream,
    artifact_io_manager,
    duckdb_io_manager,
    table_metadata,
)

from .helpers import read_store_table


def vectors(ids: list[str], dim: int, seed: int) -> pl.DataFrame:
    values = np.random.default_rng(seed).random((len(ids), dim), dtype=np.float32)
    return pl.DataFrame({"id": ids}).with_columns(
        pl.Series("vector", values).cast(pl.Array(pl.Float32, dim))
    )


def run(store: Path, frame: pl.DataFrame) -> pl.DataFrame:
    """Write ``frame`` as an asset and read it back as a downstream asset's input."""
    seen: dict[str, pl.DataFrame] = {}

    @asset(
        metadata=table_metadata(
            "features", {"id": ("String", "the item"), "vector": ("Array", "its vector")}
        )
    )
    def embeddings() -> pl.DataFrame:
        return frame

    @asset(metadata=table_metadata("features"))
    def reader(embeddings: pl.DataFrame) -> pl.DataFrame:
        seen["loaded"] = embeddings
        return embeddings.select("id")

    paths = PipelinePaths(store_dir=str(store))
    result = materialize([embeddings, reader], resources={"io_manager": duckdb_io_manager(paths)})
    schema = result.asset_materializations_for_node("embeddings")[0].metadata
    columns = schema["dagster/column_schema"].value.columns
    assert [(c.name, c.description) for c in columns] == [
        ("id", "the item"),
        ("vector", "its vector"),
    ]
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


@pytest.mark.parametrize("io_manager_key", ["io_manager", "artifact_io_manager"])
def test_an_input_missing_from_the_store_names_the_asset_and_the_command(
    tmp_path: Path, io_manager_key: str
) -> None:
    @asset(metadata=table_metadata("features"), io_manager_key=io_manager_key)
    def upstream() -> pl.DataFrame:
        return pl.DataFrame({"id": ["a"]})

    @asset(metadata=table_metadata("features"))
    def downstream(upstream: pl.DataFrame) -> pl.DataFrame:
        return upstream

    paths = PipelinePaths(store_dir=str(tmp_path))
    resources = {
        "io_manager": duckdb_io_manager(paths),
        "artifact_io_manager": artifact_io_manager(paths),
    }
    with pytest.raises(MissingUpstream) as error:
        materialize([upstream, downstream], selection=["downstream"], resources=resources)
    message = str(error.value)
    assert "\n" not in message and "upstream asset upstream is not in the store" in message
    assert str(tmp_path) in message
    assert "dagster asset materialize --select '*upstream'" in message


def test_the_io_managers_create_the_store_only_when_a_step_uses_it(tmp_path: Path) -> None:
    store = tmp_path / "new" / "store"
    paths = PipelinePaths(store_dir=str(store))
    duckdb_io_manager(paths), artifact_io_manager(paths)
    assert not (tmp_path / "new").exists()
    loaded = run(store, vectors(["a"], 2, seed=1))
    assert loaded.height == 1 and (store / "hmg.duckdb").is_file()


def test_an_artifact_in_an_unusable_store_names_the_setting(tmp_path: Path) -> None:
    store = tmp_path / "afile"
    store.write_text("x", encoding="utf-8")

    @asset(io_manager_key="artifact_io_manager")
    def artifact() -> dict:
        return {"a": 1}

    paths = PipelinePaths(store_dir=str(store))
    with pytest.raises(SettingError) as error:
        materialize([artifact], resources={"artifact_io_manager": artifact_io_manager(paths)})
    assert str(error.value) == (
        f"HMG_STORE_DIR={str(store)!r} is not a writable directory "
        f"(a file, not a directory: {store})"
    )
