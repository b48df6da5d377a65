"""SCD type 2 history of entitlements and memberships (pure polars, no I/O).

A history table holds one row per *version* of a key: the key appears (a version opens), one of its
tracked attributes changes (the version closes and a new one opens at the same instant) or it
disappears (the version closes). The publish transaction replaces a connection's open versions with
what ``advance_history`` returns, so closed versions are never rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from dirsync_pipeline.tables import ENTITLEMENTS_HISTORY, MEMBERSHIPS_HISTORY, TIMESTAMP, Table, timestamp_literal


@dataclass(frozen=True)
class HistorySpec:
    """A history table, the key of what it versions, and the attributes whose change opens a version."""

    table: Table
    key: tuple[str, ...]
    tracked: tuple[str, ...]


ENTITLEMENTS = HistorySpec(ENTITLEMENTS_HISTORY, ("user_id", "role"), ("primary_email", "granted_via"))
MEMBERSHIPS = HistorySpec(MEMBERSHIPS_HISTORY, ("user_id", "group_id"), ("primary_email", "group_email", "is_direct"))


def advance_history(
    spec: HistorySpec, open_versions: pl.DataFrame, current: pl.DataFrame, *, connection_id: str, sync_id: str,
    at: datetime,
) -> pl.DataFrame:
    """The rows that replace a connection's open versions once ``current`` is published at ``at``.

    Unchanged versions stay open as they were; changed and vanished ones are closed at ``at``; changed
    and new keys get a version opened at ``at``. ``held_since`` carries over while the key stays held.
    """
    at_column = timestamp_literal(at)
    key = list(spec.key)
    was = open_versions.with_columns(_fingerprint(spec))
    now = current.select(*key, *spec.tracked).with_columns(_fingerprint(spec))
    unchanged = was.join(now.select(*key, "_fingerprint"), on=[*key, "_fingerprint"], how="semi")
    closed = was.join(unchanged.select(key), on=key, how="anti").with_columns(valid_to=at_column)
    opened = (
        now.join(unchanged.select(key), on=key, how="anti")
        .join(was.select(*key, pl.col("held_since").alias("held_before")), on=key, how="left")
        .with_columns(
            connection_id=pl.lit(connection_id), sync_id=pl.lit(sync_id), valid_from=at_column,
            valid_to=pl.lit(None, dtype=TIMESTAMP),
            held_since=pl.coalesce("held_before", at_column),
        )
    )
    columns = spec.table.column_names
    return pl.concat([frame.select(columns) for frame in (unchanged, closed, opened)]).sort(key + ["valid_from"])


def _fingerprint(spec: HistorySpec) -> pl.Expr:
    """The tracked attributes as one comparable value (list columns cannot be join keys)."""
    return pl.struct(*spec.tracked).struct.json_encode().alias("_fingerprint")
