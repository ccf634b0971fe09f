"""Opening the pipeline's own DuckDB side files (Flickr state, embedding cache)."""

from __future__ import annotations

import time
from pathlib import Path

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
