"""The pipeline's own DuckDB side files (Flickr state, embedding and generation caches)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import duckdb
import pyarrow as pa


def connect_with_retry(path: Path, timeout_s: float = 60.0) -> duckdb.DuckDBPyConnection:
    """Open ``path`` read-write, waiting while another process holds its lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} is locked by another process") from error
            time.sleep(1.0)


class DuckDBFile:
    """A DuckDB file used as ``with Subclass(path) as store:``; ``SCHEMA`` is created on open.

    DuckDB lets one process write a file at a time. A store that holds its connection for the
    whole block (``BRIEF = False``) keeps other processes out until the block ends; a brief
    one (the caches) opens the file for each operation (``session``) and closes it after, so
    the steps of concurrent runs (a backfill's shards on one shared volume) take turns between
    batches instead of waiting for each other's whole step."""

    SCHEMA = ""
    BRIEF = False

    def __init__(self, path: Path, connect_timeout_s: float = 60.0) -> None:
        self.path = path
        self._connect_timeout_s = connect_timeout_s
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._open = False

    def __enter__(self) -> Self:
        connection = connect_with_retry(self.path, self._connect_timeout_s)
        if self.SCHEMA:
            connection.execute(self.SCHEMA)
        if self.BRIEF:
            connection.close()
        else:
            self._connection = connection
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._open = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        """The held connection (``BRIEF = False`` stores)."""
        if self._connection is None:
            raise RuntimeError(f"{type(self).__name__} used outside its 'with' block")
        return self._connection

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation: the held one, or one opened for it (brief)."""
        if not self._open:
            raise RuntimeError(f"{type(self).__name__} used outside its 'with' block")
        if self._connection is not None:
            yield self._connection
            return
        connection = connect_with_retry(self.path, self._connect_timeout_s)
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def with_table(self, name: str, table: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
        """A :meth:`session` in which the Arrow ``table`` can be queried as ``name``."""
        with self.session() as db:
            db.register(name, table)
            try:
                yield db
            finally:
                db.unregister(name)
