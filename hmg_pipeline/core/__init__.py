"""The computing core: plain typed Python with no Dagster import."""
