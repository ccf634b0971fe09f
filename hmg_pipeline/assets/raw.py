"""Raw tables read by the contract (group `raw`), the quarantine, the union of users, and the
validated tables (`valid_*`: the raw rows that passed rule 1), which every later asset reads
instead of re-validating."""

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, MetadataValue, asset

from hmg_pipeline.core import cleaning, schema
from hmg_pipeline.metadata import markdown_table
from hmg_pipeline.resources import PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAGS, table_metadata

GROUP = "raw"
QUARANTINE_COLUMNS = {
    "table": (
        "String",
        "raw table of the row (images, views, contacts, groups, group_members, users, ...)",
    ),
    "source_row": ("Int64", "1-based data row in that table's file (the header is not counted)"),
    "column": ("String", "the first column that breaks a rule"),
    "reason": ("String", "why the row is quarantined"),
    "raw_row": ("String", "the row as read, as JSON"),
}


def raw_table_asset(name: str, spec: schema.TableSpec, description: str) -> AssetsDefinition:
    """An asset that reads one raw table by the contract: every column as text + source_row.

    What the reader converted on the user's behalf (its notes) is logged as a warning and kept
    in the output metadata under ``notes``."""

    @asset(
        name=name,
        group_name=GROUP,
        metadata=table_metadata(GROUP),
        op_tags=DUCKDB_TAGS,
        description=description,
    )
    def read_table(context: AssetExecutionContext, paths: PipelinePaths) -> pl.DataFrame:
        notes: list[str] = []
        frame = schema.read_raw_table(paths.raw_path, spec, notes=notes)
        source = schema.find_table_file(paths.raw_path, spec)
        for note in notes:
            context.log.warning(note)
        context.add_output_metadata(
            {
                "dagster/row_count": frame.height,
                "source_file": source.name if source else "absent (optional)",
                "notes": MetadataValue.json(notes),
            }
        )
        return frame

    return read_table


def valid_table_asset(name: str, table: str) -> AssetsDefinition:
    """An asset with the rows of raw table `table` that are not in the quarantine."""

    @asset(
        name=name,
        group_name=GROUP,
        metadata=table_metadata(GROUP),
        op_tags=DUCKDB_TAGS,
        ins={"raw": AssetIn(f"raw_{table}")},
        description=f"The rows of `raw_{table}` that passed validation (not quarantined).",
    )
    def valid_table(
        context: AssetExecutionContext, raw: pl.DataFrame, quarantine: pl.DataFrame
    ) -> pl.DataFrame:
        rows = cleaning.valid_rows(raw, cleaning.quarantine_of(quarantine, table))
        context.add_output_metadata(
            {"dagster/row_count": rows.height, "quarantined": raw.height - rows.height}
        )
        return rows

    return valid_table


raw_images = raw_table_asset("raw_images", schema.IMAGES, "The images table, as read.")
raw_views = raw_table_asset(
    "raw_views", schema.VIEWS, "Who viewed/commented which image with which emotion, as read."
)
raw_contacts = raw_table_asset("raw_contacts", schema.CONTACTS, "User-user contacts, as read.")
raw_groups = raw_table_asset("raw_groups", schema.GROUPS, "Interest groups, as read.")
raw_group_members = raw_table_asset(
    "raw_group_members", schema.GROUP_MEMBERS, "Group memberships, as read."
)
raw_users_table = raw_table_asset(
    "raw_users_table", schema.USERS, "The optional users table, as read (empty when absent)."
)
raw_requests = raw_table_asset(
    "raw_requests",
    schema.REQUESTS,
    "The optional requests table (user_id, image_id pairs to predict), as read.",
)

valid_images = valid_table_asset("valid_images", "images")
valid_views = valid_table_asset("valid_views", "views")
valid_contacts = valid_table_asset("valid_contacts", "contacts")
valid_groups = valid_table_asset("valid_groups", "groups")
valid_group_members = valid_table_asset("valid_group_members", "group_members")
valid_requests = valid_table_asset("valid_requests", "requests")


@asset(group_name=GROUP, metadata=table_metadata(GROUP), op_tags=DUCKDB_TAGS)
def raw_users(
    context: AssetExecutionContext,
    raw_views: pl.DataFrame,
    raw_contacts: pl.DataFrame,
    raw_group_members: pl.DataFrame,
    raw_users_table: pl.DataFrame,
    raw_images: pl.DataFrame,
) -> pl.DataFrame:
    """Every user id seen in a user column of any table (image owners included), plus the
    optional users table, with flags saying where each was seen."""
    users = cleaning.collect_users(
        views=raw_views,
        contacts=raw_contacts,
        group_members=raw_group_members,
        users=raw_users_table,
        images=raw_images,
    )
    context.add_output_metadata(
        {
            "dagster/row_count": users.height,
            **{
                f"users_{flag}": int(users[flag].sum())
                for flag in ("in_views", "in_contacts", "in_groups", "in_users_table", "in_images")
            },
        }
    )
    return users


@asset(group_name=GROUP, metadata=table_metadata(GROUP, QUARANTINE_COLUMNS), op_tags=DUCKDB_TAGS)
def quarantine(
    context: AssetExecutionContext,
    paths: PipelinePaths,
    raw_images: pl.DataFrame,
    raw_views: pl.DataFrame,
    raw_contacts: pl.DataFrame,
    raw_groups: pl.DataFrame,
    raw_group_members: pl.DataFrame,
    raw_users_table: pl.DataFrame,
    raw_requests: pl.DataFrame,
) -> pl.DataFrame:
    """Raw rows that break a validation rule: table, file row, column, reason and the raw row.

    One row per bad raw row, naming its first failing column. Views of a quarantined image are
    quarantined too, with a reason that names the image's row.
    """
    rows = cleaning.build_quarantine(
        images=raw_images,
        views=raw_views,
        contacts=raw_contacts,
        groups=raw_groups,
        group_members=raw_group_members,
        users=raw_users_table,
        requests=raw_requests,
        raw_dir=paths.raw_path,
    )
    per_table = rows.group_by("table").len().sort("table")
    per_column = rows.group_by("table", "column").len().sort("table", "column")
    context.add_output_metadata(
        {
            "dagster/row_count": rows.height,
            "per_table": MetadataValue.json(dict(per_table.iter_rows())),
            "per_column": MetadataValue.md(markdown_table(per_column)),
            "preview": MetadataValue.md(markdown_table(rows.head(20).drop("raw_row"))),
        }
    )
    if rows.height:
        context.log.warning(f"{rows.height} raw row(s) quarantined: {dict(per_table.iter_rows())}")
    return rows
