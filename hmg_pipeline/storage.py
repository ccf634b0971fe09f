"""Storage wiring: DuckDB through dagster-duckdb-polars, one schema per asset group.

DuckDB allows one writing process at a time, so every step that goes through the DuckDB IO
manager carries ``DUCKDB_TAGS`` and the executor limits that tag to one step at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
    multiprocess_executor,
)
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb_polars import DuckDBPolarsTypeHandler

DUCKDB_FILE = "hmg.duckdb"
DUCKDB_TAG_KEY = "hmg/duckdb"
DUCKDB_TAGS = {DUCKDB_TAG_KEY: "writer"}

executor = multiprocess_executor.configured(
    {"tag_concurrency_limits": [{"key": DUCKDB_TAG_KEY, "value": "writer", "limit": 1}]},
    name="hmg_executor",
)


class PolarsTableHandler(DuckDBPolarsTypeHandler):
    """dagster-duckdb-polars' handler, with two changes this pipeline needs.

    Empty frames are written as empty tables (upstream skips them, so an empty quarantine would
    break its readers), and an unpartitioned table is replaced rather than emptied and appended
    to, so a changed schema (say, another encoder's vector dimension) is stored as it is.
    """

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection
    ) -> None:
        table = f"{table_slice.schema}.{table_slice.table}"
        connection.register("hmg_output", obj.to_arrow())
        try:
            connection.execute(f"create schema if not exists {table_slice.schema}")
            if table_slice.partition_dimensions:
                # The DbIOManager has already deleted this partition's rows.
                connection.execute(
                    f"create table if not exists {table} as select * from hmg_output limit 0"
                )
                connection.execute(f"insert into {table} by name select * from hmg_output")
            else:
                connection.execute(f"create or replace table {table} as select * from hmg_output")
        finally:
            connection.unregister("hmg_output")
        context.add_output_metadata(
            {
                "dagster/row_count": obj.height,
                "dagster/column_schema": MetadataValue.table_schema(
                    TableSchema(
                        columns=[
                            TableColumn(name=name, type=str(dtype))
                            for name, dtype in obj.schema.items()
                        ]
                    )
                ),
                "duckdb_table": table,
            }
        )


class HmgDuckDBIOManager(DuckDBIOManager):
    """The DuckDB IO manager for every tabular asset (polars frames in, polars frames out)."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PolarsTableHandler()]

    @staticmethod
    def default_load_type() -> type:
        return pl.DataFrame


def duckdb_path(store_dir: Path) -> Path:
    return store_dir / DUCKDB_FILE


def duckdb_io_manager(store_dir: Path) -> HmgDuckDBIOManager:
    """The IO manager for all tabular assets; the schema comes from each asset's metadata."""
    store_dir.mkdir(parents=True, exist_ok=True)
    return HmgDuckDBIOManager(database=str(duckdb_path(store_dir)))


def read_store_table(store_dir: Path, schema: str, table: str) -> pl.DataFrame:
    """A table of the DuckDB store, for an asset that needs it only in some partitions (it
    declares the table's asset in ``deps``); a clear error when it was never materialised."""
    from hmg_pipeline.core.duckdb_files import connect_with_retry

    if not duckdb_path(store_dir).is_file():
        raise FileNotFoundError(f"{duckdb_path(store_dir)} does not exist: materialise {table}")
    connection = connect_with_retry(duckdb_path(store_dir))
    try:
        exists = connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? "
            "and table_name = ?",
            [schema, table],
        ).fetchone()[0]
        if not exists:
            raise FileNotFoundError(
                f"{schema}.{table} is not in {duckdb_path(store_dir)}: materialise {table} first"
            )
        return connection.execute(f"select * from {schema}.{table}").pl()
    finally:
        connection.close()


def group_metadata(schema: str) -> dict[str, str]:
    """Asset definition metadata that puts the asset's table in DuckDB schema ``schema``."""
    return {"schema": schema}


class TorchArtifactIOManager(ConfigurableIOManager):
    """Stores an asset's value with ``torch.save`` at ``base_dir/<asset key>.pt`` (atomically)."""

    base_dir: str

    def _path(self, context: OutputContext | InputContext) -> Path:
        return Path(self.base_dir) / ("__".join(context.asset_key.path) + ".pt")

    def handle_output(self, context: OutputContext, obj: object) -> None:
        import torch  # imported here: every step process loads this module

        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        torch.save(obj, partial)
        os.replace(partial, path)
        context.add_output_metadata(
            {
                "path": MetadataValue.path(str(path)),
                "size_mb": round(path.stat().st_size / 2**20, 2),
            }
        )

    def load_input(self, context: InputContext) -> object:
        import torch

        path = self._path(context)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: materialise {context.asset_key}")
        # Our own artifact (a HeteroData or a model bundle), so a full unpickle is expected.
        return torch.load(path, map_location="cpu", weights_only=False)


def artifact_io_manager(store_dir: Path) -> TorchArtifactIOManager:
    return TorchArtifactIOManager(base_dir=str(store_dir / "artifacts"))
