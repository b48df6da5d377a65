"""SCD type 2 history of entitlements and memberships, advanced by DuckDB inside the publish.

A history table holds one row per *version* of a key: the key appears (a version opens), one of its
tracked attributes changes (the version closes and a new one opens at the same instant) or it
disappears (the version closes). ``advance_history`` only inserts versions and sets ``valid_to`` on
open ones, so closed versions are never rewritten and unchanged ones are not touched at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from dirsync_pipeline.warehouse.tables import ENTITLEMENTS_HISTORY, MEMBERSHIPS_HISTORY, Table


@dataclass(frozen=True)
class HistorySpec:
    """A history table, the key of what it versions, and the attributes whose change opens a version."""

    table: Table
    key: tuple[str, ...]
    tracked: tuple[str, ...]


ENTITLEMENTS = HistorySpec(ENTITLEMENTS_HISTORY, ("user_id", "role"), ("primary_email", "granted_via"))
MEMBERSHIPS = HistorySpec(MEMBERSHIPS_HISTORY, ("user_id", "group_id"), ("primary_email", "group_email", "is_direct"))


def advance_history(
    conn: duckdb.DuckDBPyConnection, spec: HistorySpec, current: str, *, connection_id: str, sync_id: str,
    at: datetime,
) -> None:
    """Advance the connection's versions in ``spec.table`` to the rows of ``current`` (a relation) published at ``at``.

    Changed and new keys get a version opened at ``at``, ``held_since`` carried over from the open
    version while the key stays held; then every open version that no longer matches ``current``
    (changed or vanished) is closed at ``at``. Opening first lets the new versions read ``held_since``.
    """
    params = {"connection_id": connection_id, "at": at}
    table = spec.table.qualified_name
    same_key = " AND ".join(f"h.{k} = c.{k}" for k in spec.key)
    same_version = " AND ".join([same_key, *(f"h.{a} IS NOT DISTINCT FROM c.{a}" for a in spec.tracked)])
    conn.execute(f"""
        INSERT INTO {table} BY NAME
        SELECT c.*, $at AS valid_from, NULL AS valid_to, coalesce(h.held_since, $at) AS held_since, $sync_id AS sync_id
        FROM (SELECT connection_id, {', '.join(spec.key + spec.tracked)} FROM {current}
              WHERE connection_id = $connection_id) c
        LEFT JOIN (SELECT * FROM {table} WHERE connection_id = $connection_id AND valid_to IS NULL) h ON {same_key}
        WHERE h.{spec.key[0]} IS NULL OR NOT ({same_version})
    """, {**params, "sync_id": sync_id})
    conn.execute(f"""
        UPDATE {table} AS h SET valid_to = $at
        WHERE h.connection_id = $connection_id AND h.valid_to IS NULL AND NOT EXISTS (
            SELECT 1 FROM {current} c WHERE c.connection_id = $connection_id AND {same_version})
    """, params)
