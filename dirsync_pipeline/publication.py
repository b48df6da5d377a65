"""What a publish records besides the tables themselves: change events, history and the Parquet set.

``Warehouse.publish`` drives one ``Publication`` inside its transaction: the state before is read
first, the staged tables are copied, then ``record`` appends the change events, advances the SCD2
history and writes the Parquet set, all before the COMMIT. So a publish that fails or is refused
records nothing, and a published sync always has its events, its history and its snapshot.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from dirsync_pipeline.changes import DirectoryState, directory_changes
from dirsync_pipeline.history import ENTITLEMENTS, MEMBERSHIPS, advance_history
from dirsync_pipeline.outputs import PendingVersion, write_version
from dirsync_pipeline.tables import DIRECTORY_CHANGES, SYNC_LOG, Table


class Publication:
    """One publish of one connection, bound to the open transaction of ``conn``."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, parquet_dir: Path, connection_id: str, sync_id: str):
        self.conn = conn
        self.parquet_dir = parquet_dir
        self.connection_id = connection_id
        self.sync_id = sync_id
        self.published_at = datetime.now(UTC)
        self.previous = published_state(conn, connection_id)  # read before the copy replaces it
        self.version: PendingVersion | None = None

    def record(self) -> int:
        """After the copy: append the events, advance the history, write the Parquet set. Returns the event count."""
        current = _read_state(self.conn, self.connection_id)
        events = directory_changes(
            self.previous or DirectoryState.empty(), current, connection_id=self.connection_id,
            sync_id=self.sync_id, changed_at=self.published_at, initial=self.previous is None,
        )
        _append(self.conn, DIRECTORY_CHANGES, events)
        for spec, rows in ((ENTITLEMENTS, current.entitlements), (MEMBERSHIPS, current.memberships)):
            open_versions = spec.table.read(self.conn, self.connection_id, condition="valid_to IS NULL")
            self.conn.execute(f"DELETE FROM {spec.table.qualified_name} WHERE connection_id = ? AND valid_to IS NULL",
                              [self.connection_id])
            versions = advance_history(spec, open_versions, rows, connection_id=self.connection_id,
                                       sync_id=self.sync_id, at=self.published_at)
            _append(self.conn, spec.table, versions)
        self.version = write_version(self.conn, self.parquet_dir, self.connection_id, self.sync_id, self.published_at)
        return events.height

    def activate(self) -> None:
        """After the COMMIT: make the new Parquet set the current one."""
        if self.version is not None:
            self.version.activate()


def published_state(conn: duckdb.DuckDBPyConnection, connection_id: str) -> DirectoryState | None:
    """The connection's published state, or None before its first published sync."""
    synced = conn.execute(f"SELECT count(*) FROM {SYNC_LOG.qualified_name} WHERE connection_id = ?",
                          [connection_id]).fetchall()[0][0]
    return _read_state(conn, connection_id) if synced else None


def _read_state(conn: duckdb.DuckDBPyConnection, connection_id: str) -> DirectoryState:
    return DirectoryState.from_tables({t: t.read(conn, connection_id) for t in DirectoryState.TABLES})


def _append(conn: duckdb.DuckDBPyConnection, table: Table, frame: pl.DataFrame) -> None:
    """Validate against the contract, then insert: nothing outside the contract is ever published."""
    table.pandera_schema().validate(frame)
    conn.register("appended_rows", frame)
    try:
        conn.execute(f"INSERT INTO {table.qualified_name} BY NAME SELECT * FROM appended_rows")
    finally:
        conn.unregister("appended_rows")
