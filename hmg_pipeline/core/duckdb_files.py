"""The pipeline's own DuckDB side files (Flickr state, embedding cache)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Self

import duckdb


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
    """A DuckDB file used as ``with Subclass(path) as store:``; ``SCHEMA`` is created on open."""

    SCHEMA = ""

    def __init__(self, path: Path, connect_timeout_s: float = 60.0) -> None:
        self.path = path
        self._connect_timeout_s = connect_timeout_s
        self._connection: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> Self:
        self._connection = connect_with_retry(self.path, self._connect_timeout_s)
        if self.SCHEMA:
            self._connection.execute(self.SCHEMA)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        if self._connection is None:
            raise RuntimeError(f"{type(self).__name__} used outside its 'with' block")
        return self._connection
