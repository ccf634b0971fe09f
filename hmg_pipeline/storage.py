"""Storage wiring: DuckDB through dagster-duckdb-polars, one schema per asset group, and torch
artifacts for the graph and the model (in the store, or under ``HMG_ARTIFACTS_URL``, which may be
an object store). Where things live is ``PipelinePaths``' business.

DuckDB allows one writing process at a time, so every step that goes through the DuckDB IO
manager carries ``DUCKDB_TAGS`` and the executor limits that tag to one step at a time. An input
that is not in the store stops the step with one line naming the asset, the store and the
command that builds it (:class:`MissingUpstream`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import polars as pl
from dagster import (
    ConfigurableIOManager,
    ExecutorDefinition,
    InputContext,
    IOManagerDefinition,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
    in_process_executor,
    multiprocess_executor,
)
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsTypeHandler
from pydantic import Field
from upath import UPath

from hmg_pipeline.core.locations import (
    as_location,
    is_local,
    load_torch,
    save_torch,
    shown,
    size_mb,
)
from hmg_pipeline.resources import PipelinePaths, SettingError, env_setting, failing_resource

DUCKDB_TAG_KEY = "hmg/duckdb"
DUCKDB_TAGS = {DUCKDB_TAG_KEY: "writer"}

DUCKDB_WRITER_LIMITS = [{"key": DUCKDB_TAG_KEY, "value": "writer", "limit": 1}]
# Steps of one run that the Kubernetes executor runs at once (the DuckDB limit applies within).
K8S_MAX_CONCURRENT_STEPS = 4

multiprocess = multiprocess_executor.configured(
    {"tag_concurrency_limits": DUCKDB_WRITER_LIMITS}, name="hmg_executor"
)


@functools.cache
def k8s_executor() -> ExecutorDefinition:
    """dagster-k8s's ``k8s_job_executor`` (name ``k8s``): each step in its own Kubernetes Job,
    one DuckDB writer at a time within a run, CPU steps with ``CPU_STEP_K8S_CONFIG`` (a GPU
    step's ``dagster-k8s/config`` tag is merged over it). Image, namespace, environment and
    volumes come from the run launcher and the code location (deploy/). dagster_k8s is imported
    only here, so the local executors do not pay for it."""
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        raise ImportError(
            "HMG_EXECUTOR=k8s needs dagster-k8s: pip install 'hmg_pipeline[k8s]' (the image of "
            "the Dockerfile has it)"
        ) from None

    from hmg_pipeline.placement import CPU_STEP_K8S_CONFIG

    return k8s_job_executor.configured(
        {
            "max_concurrent": K8S_MAX_CONCURRENT_STEPS,
            "tag_concurrency_limits": DUCKDB_WRITER_LIMITS,
            "step_k8s_config": CPU_STEP_K8S_CONFIG,
        }
    )


def executor_from_env() -> ExecutorDefinition:
    """``HMG_EXECUTOR``: ``multiprocess`` (default; each step in its own process, one DuckDB
    writer at a time), ``in_process`` (every step in the run's process: no process start and
    torch import per step, ~2.5 s each on 2 cores; `make demo` uses it on the bundled sample) or
    ``k8s`` (each step in its own Kubernetes pod: :func:`k8s_executor`, deploy/README.md).
    A bad value keeps the default, with a warning, so the code location loads."""
    try:
        kind = env_setting("HMG_EXECUTOR")
    except SettingError as error:
        warnings.warn(f"{error}; using multiprocess", stacklevel=2)
        kind = "multiprocess"
    if kind == "k8s":
        return k8s_executor()
    return in_process_executor if kind == "in_process" else multiprocess


class MissingUpstream(FileNotFoundError):
    """An asset's input was never materialised into this store."""


def missing_upstream(asset: str, where: str) -> MissingUpstream:
    return MissingUpstream(
        f"upstream asset {asset} is not in the store ({where}): materialise it first, e.g. "
        f"`dagster asset materialize --select '*{asset}'` (it and everything above it)"
    )


def column_schema(descriptions: dict[str, str], types: dict[str, str]) -> TableSchema:
    """A table schema: the columns of ``types`` (name -> type) with their descriptions."""
    return TableSchema(
        columns=[
            TableColumn(name=name, type=kind, description=descriptions.get(name))
            for name, kind in types.items()
        ]
    )


def table_metadata(schema: str, columns: dict[str, tuple[str, str]] | None = None) -> dict:
    """Definition metadata of a DuckDB asset: its DuckDB schema (the asset's group) and, when
    given, each column's (type, description), shown in the UI before the first
    materialisation; the materialised types replace the declared ones."""
    metadata: dict = {"schema": schema}
    if columns:
        metadata["dagster/column_schema"] = column_schema(
            {name: text for name, (_, text) in columns.items()},
            {name: kind for name, (kind, _) in columns.items()},
        )
    return metadata


def table_exists(connection, schema: str, table: str) -> bool:
    return bool(
        connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? "
            "and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


class PolarsTableHandler(DuckDBPolarsTypeHandler):
    """dagster-duckdb-polars' handler, with the changes this pipeline needs.

    Empty frames are written as empty tables (upstream skips them, so an empty quarantine would
    break its readers); an unpartitioned table is replaced rather than emptied and appended
    to, so a changed schema (say, another encoder's vector dimension) is stored as it is; the
    column schema in the output metadata keeps the asset's column descriptions; and a table that
    is not there is a :class:`MissingUpstream`, not DuckDB's CatalogException.
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
        declared = context.definition_metadata.get("dagster/column_schema")
        descriptions = {c.name: c.description for c in declared.columns} if declared else {}
        context.add_output_metadata(
            {
                "dagster/row_count": obj.height,
                "dagster/column_schema": MetadataValue.table_schema(
                    column_schema(descriptions, {k: str(v) for k, v in obj.schema.items()})
                ),
                "duckdb_table": table,
            }
        )

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection
    ) -> pl.DataFrame:
        if not table_exists(connection, table_slice.schema, table_slice.table):
            database = connection.execute(
                "select path from duckdb_databases() where database_name = current_database()"
            ).fetchone()[0]
            raise missing_upstream(
                context.asset_key.to_user_string(),
                f"no table {table_slice.schema}.{table_slice.table} in {database}",
            )
        missing = missing_partition_columns(connection, table_slice)
        if missing:
            asset = context.asset_key.to_user_string()
            raise MissingUpstream(
                f"{table_slice.schema}.{table_slice.table} was stored before {asset} was "
                f"partitioned (no column {', '.join(missing)}): materialise the partitions "
                f"you need, e.g. `dagster asset materialize --select {asset} --partition "
                f"{table_slice.partition_dimensions[0].partitions[0]}`"
            )
        return super().load_input(context, table_slice, connection)


def missing_partition_columns(connection, table_slice: TableSlice) -> list[str]:
    """The partition columns of ``table_slice`` that its existing table lacks: a table stored
    before its asset was partitioned (say, the unsharded LLaVA comments)."""
    if not table_slice.partition_dimensions:
        return []
    columns = {
        row[0]
        for row in connection.execute(
            "select column_name from information_schema.columns where table_schema = ? "
            "and table_name = ?",
            [table_slice.schema, table_slice.table],
        ).fetchall()
    }
    wanted = [dimension.partition_expr for dimension in table_slice.partition_dimensions]
    return [column for column in wanted if columns and column not in columns]


class PartitionedTableClient(DuckDbClient):
    """dagster-duckdb's client, but a partitioned output whose table was stored before its
    asset was partitioned replaces that table (dropped, with a warning) instead of failing on
    the missing partition column."""

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        missing = missing_partition_columns(connection, table_slice)
        if missing:
            table = f"{table_slice.schema}.{table_slice.table}"
            context.log.warning(
                f"{table} has no column {', '.join(missing)}: it was stored before "
                f"{context.asset_key.to_user_string()} was partitioned; dropping it (every "
                "partition is re-created as it is materialised)"
            )
            connection.execute(f"drop table {table}")
            return
        DuckDbClient.delete_table_slice(context, table_slice, connection)


class HmgDuckDBIOManager(DuckDBIOManager):
    """The DuckDB IO manager for every tabular asset (polars frames in, polars frames out).

    The store directory is created when a step first uses the IO manager, not when the
    definitions load, so a bad ``HMG_STORE_DIR`` fails the steps with one line and the code
    location still loads."""

    store_dir: str = Field(
        default="", description="the store directory (HMG_STORE_DIR), created on first use"
    )

    def create_io_manager(self, context) -> DbIOManager:
        if self.store_dir:
            PipelinePaths.create_store(self.store_dir)
        return DbIOManager(  # dagster-duckdb's, with the client below
            db_client=PartitionedTableClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBIOManager",
        )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PolarsTableHandler()]

    @staticmethod
    def default_load_type() -> type:
        return pl.DataFrame


def duckdb_io_manager(paths: PipelinePaths) -> HmgDuckDBIOManager:
    """The IO manager for all tabular assets; the schema comes from each asset's metadata.
    Creates nothing: the store directory is made when a step first needs it."""
    return HmgDuckDBIOManager(database=str(paths.duckdb_file), store_dir=paths.store_dir)


def read_store_table(paths: PipelinePaths, schema: str, table: str) -> pl.DataFrame:
    """A table of the DuckDB store, for an asset that needs it only in some partitions (it
    declares the table's asset in ``deps``); a :class:`MissingUpstream` when it is not there."""
    from hmg_pipeline.core.duckdb_files import connect_with_retry

    PipelinePaths.create_store(paths.store_dir)  # a bad store: one line naming HMG_STORE_DIR
    if not paths.duckdb_file.is_file():
        raise missing_upstream(table, f"{paths.duckdb_file} does not exist")
    connection = connect_with_retry(paths.duckdb_file)
    try:
        if not table_exists(connection, schema, table):
            raise missing_upstream(table, f"no table {schema}.{table} in {paths.duckdb_file}")
        return connection.execute(f"select * from {schema}.{table}").pl()
    finally:
        connection.close()


class TorchArtifactIOManager(ConfigurableIOManager):
    """Stores an asset's value with ``torch.save`` at ``base_dir/<asset key>.pt``: a local
    directory (written beside and renamed: atomic) or an fsspec URL such as ``s3://b/p``
    (serialised in memory, then one upload), see ``core.locations``.

    ``store_dir``, when given, is checked (and created) first, so that a bad ``HMG_STORE_DIR``
    fails with one line naming it rather than an OS error on the artifacts directory."""

    base_dir: str
    store_dir: str = ""

    def _path(self, context: OutputContext | InputContext) -> UPath:
        name = "__".join(context.asset_key.path) + ".pt"
        return as_location(f"{self.base_dir.rstrip('/')}/{name}")

    def handle_output(self, context: OutputContext, obj: object) -> None:
        path = self._path(context)
        if self.store_dir:
            PipelinePaths.create_store(self.store_dir)
        save_torch(obj, path)
        # Local: a path; an object store: its URL, never with the credentials it may carry.
        where = MetadataValue.path(str(path)) if is_local(path) else MetadataValue.url(shown(path))
        context.add_output_metadata({"path": where, "size_mb": size_mb(path)})

    def load_input(self, context: InputContext) -> object:
        path = self._path(context)
        if not path.is_file():
            raise missing_upstream(context.asset_key.to_user_string(), f"no file {shown(path)}")
        return load_torch(path)


def artifact_io_manager(paths: PipelinePaths) -> TorchArtifactIOManager | IOManagerDefinition:
    """Torch artifacts at ``paths.artifacts_dir`` (``HMG_ARTIFACTS_URL``, else the store); the
    store is checked first only when they live in it."""
    try:
        base_dir = f"{paths.artifacts_root}/artifacts"
    except SettingError as error:  # a bad HMG_ARTIFACTS_URL
        return failing_resource(str(error), IOManagerDefinition)
    store_dir = "" if paths.artifacts_url.strip() else paths.store_dir
    return TorchArtifactIOManager(base_dir=base_dir, store_dir=store_dir)
