"""Helpers that turn results into Dagster metadata (markdown tables, PNG plots)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl


def markdown_table(frame: pl.DataFrame) -> str:
    """A small polars frame as a markdown table."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = [
        "| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |"
        for row in frame.rows()
    ]
    return "\n".join([header, rule, *body])


def counts_table(counts: Mapping[str, int], key: str, total: int | None = None) -> str:
    """A markdown table of counts with their share of ``total`` (default: their sum)."""
    total = total if total is not None else sum(counts.values())
    frame = pl.DataFrame(
        {
            key: list(counts),
            "count": list(counts.values()),
            "share_%": [round(100 * v / total, 2) if total else 0.0 for v in counts.values()],
        }
    )
    return markdown_table(frame)


def png_markdown(png: bytes, title: str) -> str:
    """A PNG embedded in markdown metadata (the Dagster UI renders data URIs)."""
    import base64

    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
