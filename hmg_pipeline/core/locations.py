"""Where artifacts and reports live: a local path or an fsspec URL (``s3://bucket/prefix``,
``gs://...``, ``memory://...``), as a ``upath.UPath``.

A local location is a ``PosixUPath`` (a ``pathlib.Path``): files are written beside their
target and renamed, so a reader never sees half a file. For a URL the object is serialised in
memory first and uploaded in one put, which an object store applies whole or not at all.
URLs may carry credentials (``scheme://user:password@host``); :func:`redact_url` removes them
from anything shown.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from upath import UPath

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
LOCAL_PROTOCOLS = frozenset({"file", "local"})


def url_protocol(text: str) -> str | None:
    """The protocol of ``text`` (``s3://b/p`` -> ``s3``), or None for a plain path."""
    match = _URL.match(text)
    return match.group(1).lower() if match else None


def as_location(location: str | os.PathLike[str] | UPath) -> UPath:
    """``location`` as a UPath: a plain path (or ``file://``) a local ``PosixUPath``, a URL
    the path of its fsspec file system."""
    if isinstance(location, UPath) and not is_local(location):
        return UPath(Path(location.path)) if location.protocol in LOCAL_PROTOCOLS else location
    if isinstance(location, os.PathLike):
        return UPath(Path(location))
    protocol = url_protocol(location)
    if protocol is None:
        return UPath(Path(location))
    if protocol in LOCAL_PROTOCOLS:
        return UPath(Path(UPath(location).path))
    return UPath(location)


def is_local(path: object) -> bool:
    """Whether ``path`` is on the local file system (a ``pathlib.Path``, as local UPaths are)."""
    return isinstance(path, Path)


def redact_url(text: str) -> str:
    """``text`` without the credentials a URL can carry: ``user:password@`` becomes ``***@``
    and a query (signatures, tokens) ``***``; a plain path is returned as it is."""
    if url_protocol(text) is None:
        return text
    parts = urlsplit(text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))


def shown(path: str | os.PathLike[str] | UPath) -> str:
    """``path`` as text for messages and metadata (a URL without credentials)."""
    return redact_url(str(path))


def save_torch(obj: Any, path: UPath) -> None:
    """``torch.save(obj)`` at ``path``: locally into ``<name>.part`` then renamed (atomic, the
    directory created as needed); in an object store serialised in memory, then one upload (a
    failure while serialising leaves the stored object as it was)."""
    import torch  # imported here: loading this module stays cheap

    if is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        torch.save(obj, partial)
        os.replace(partial, path)
    else:  # serialised first: a failure leaves the stored object as it was
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        path.write_bytes(buffer.getvalue())


def load_torch(path: UPath) -> Any:
    """What :func:`save_torch` stored at ``path``, on the CPU. Our own artifacts (a HeteroData,
    a model bundle), so a full unpickle is expected. A remote file is read in one request."""
    import torch

    if is_local(path):
        return torch.load(path, map_location="cpu", weights_only=False)
    return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=False)


def size_mb(path: UPath) -> float:
    """The size of the file at ``path`` in MiB, two decimals."""
    return round(path.stat().st_size / 2**20, 2)
