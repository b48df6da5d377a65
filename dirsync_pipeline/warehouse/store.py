"""DuckDB warehouse with write-audit-publish: stages are written aside, published in one transaction.

Each pipeline stage writes its rows for one connection into ``staging.<schema>__<table>``. Consumers
read ``raw.*`` and ``core.*``, which change only when ``publish`` copies every staged table of a
connection in a single transaction, after all checks passed. A failed check, an exception or a killed
process therefore leaves the published tables exactly as they were.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from dirsync_pipeline.warehouse.changes import DirectoryState
from dirsync_pipeline.config import default_parquet_dir
from dirsync_pipeline.warehouse.outputs import current_manifest, published_version
from dirsync_pipeline.warehouse.publication import Publication, manifest_not_replaced, nothing_published
from dirsync_pipeline.warehouse.tables import DIRECTORY_CHANGES, HISTORY_TABLES, SYNC_LOG, SYNC_LOG_COUNTED, SYNC_TABLES, Table

STAGING_SCHEMA = "staging"


@dataclass
class _Held:
    conn: duckdb.DuckDBPyConnection
    holders: int = 0


_held: dict[Path, _Held] = {}  # warehouse file -> the connection a run holds (Warehouse.hold)
_held_lock = threading.Lock()


def staging_name(table: Table) -> str:
    return f"{STAGING_SCHEMA}.{table.schema}__{table.name}"


class Warehouse:
    def __init__(self, duckdb_path: str | Path, parquet_dir: str | Path | None = None):
        self.path = Path(duckdb_path)
        self.parquet_dir = Path(parquet_dir) if parquet_dir else default_parquet_dir(self.path)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection a run holds (see ``hold``), else a short-lived one: DuckDB allows one writer process."""
        held = _held.get(self.path.resolve())
        if held is not None:
            yield held.conn
            return
        conn = self._open(read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()

    def hold(self) -> None:
        """Keep one connection open until the matching ``release``: a run's steps share it.

        Opening and closing the file costs a checkpoint each time (~30 ms); a sync used to do it ~40 times.
        Dagster runs one sync at a time per warehouse (the dirsync_warehouse pool), and the run is the writer.
        """
        key = self.path.resolve()
        with _held_lock:
            if key not in _held:
                _held[key] = _Held(self._open(read_only=False))
            _held[key].holders += 1

    def release(self) -> None:
        key = self.path.resolve()
        with _held_lock:
            held = _held.get(key)
            if held is None:
                return
            held.holders -= 1
            if held.holders == 0:
                del _held[key]
                held.conn.close()

    def _open(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(str(self.path), read_only=read_only)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            if not read_only:
                self._ensure_tables(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
        for schema in ("raw", "core", STAGING_SCHEMA):
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in SYNC_TABLES:
            conn.execute(table.ddl())
            conn.execute(table.ddl(staging_name(table)))
        for table in (SYNC_LOG, *HISTORY_TABLES):
            conn.execute(table.ddl())

    def stage(self, table: Table, connection_id: str, frame: pl.DataFrame) -> None:
        """Replace the connection's staged rows of ``table`` (atomically; other connections untouched)."""
        with self.connect() as conn:
            _replace_rows(conn, staging_name(table), connection_id, frame.select(table.column_names))

    def read_staged(self, table: Table, connection_id: str) -> pl.DataFrame:
        return self._read(staging_name(table), table, connection_id)

    def read_published(self, table: Table, connection_id: str) -> pl.DataFrame:
        return self._read(table.qualified_name, table, connection_id)

    def _read(self, qualified_name: str, table: Table, connection_id: str) -> pl.DataFrame:
        with self.connect() as conn:
            return table.read(conn, connection_id, source=qualified_name)

    def publish(self, connection_id: str, sync_id: str) -> dict[str, int]:
        """Copy every staged table of the connection to its published table in ONE transaction.

        The same transaction first appends the sync's change events and advances the history (from the
        published rows to the staged ones, before the copy replaces them); the Parquet set is written
        before the COMMIT and becomes the current one right after it (publication.py).
        """
        counts: dict[str, int] = {}
        previous = self.manifest_sync_id(connection_id)
        try:
            publication, events = self._publish_transaction(connection_id, sync_id, counts)
        except Exception as exc:  # nothing committed: the transaction rolled back, the manifest never moved
            raise nothing_published(connection_id, sync_id, previous, exc) from exc
        try:
            publication.activate()
        except Exception as exc:
            raise manifest_not_replaced(self.parquet_dir, connection_id, sync_id, previous, exc) from exc
        return counts | {DIRECTORY_CHANGES.name: events}

    def manifest_sync_id(self, connection_id: str) -> str | None:
        """The sync that the connection's Parquet manifest names (None before the first)."""
        manifest = current_manifest(self.parquet_dir, connection_id)
        return manifest["sync_id"] if manifest else None

    def repair_manifest(self, connection_id: str) -> str | None:
        """Name the last sync DuckDB published in the Parquet manifest when a failed publish left it behind;
        returns the sync it now names, or None when they agreed (or the sync's set is gone)."""
        with self.connect() as conn:
            last = conn.execute(f"SELECT sync_id FROM {SYNC_LOG.qualified_name} WHERE connection_id = ? "
                                "ORDER BY published_at DESC LIMIT 1", [connection_id]).fetchall()
        if not last or last[0][0] == self.manifest_sync_id(connection_id):
            return None
        version = published_version(self.parquet_dir, connection_id, last[0][0])
        if version is None:
            return None
        version.activate()
        return last[0][0]

    def _publish_transaction(self, connection_id: str, sync_id: str, counts: dict[str, int]) -> tuple[Publication, int]:
        """The publish's one transaction, committed; ``counts`` receives the published row counts."""
        with self.connect() as conn, _transaction(conn):
            publication = Publication(conn, self.parquet_dir, connection_id, sync_id)
            staged = DirectoryState.from_names(staging_name)
            events = publication.record_changes(staged)
            with publication.parquet_alongside(staging_name):
                publication.record_history(staged)
                for table in SYNC_TABLES:
                    conn.execute(f"DELETE FROM {table.qualified_name} WHERE connection_id = ?", [connection_id])
                    conn.execute(
                        f"INSERT INTO {table.qualified_name} BY NAME "
                        f"SELECT * FROM {staging_name(table)} WHERE connection_id = ?",
                        [connection_id],
                    )
                    counts[table.name] = _count(conn, table.qualified_name, connection_id)
                conn.execute(
                    f"INSERT INTO {SYNC_LOG.qualified_name} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [connection_id, sync_id, publication.published_at, *(counts[t.name] for t in SYNC_LOG_COUNTED)],
                )
        return publication, events


@contextmanager
def _transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """COMMIT when the block ends, ROLLBACK when it raises: all of it is written, or none."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _replace_rows(conn: duckdb.DuckDBPyConnection, qualified_name: str, connection_id: str, frame: pl.DataFrame) -> None:
    conn.register("incoming_rows", frame)
    try:
        with _transaction(conn):
            conn.execute(f"DELETE FROM {qualified_name} WHERE connection_id = ?", [connection_id])
            conn.execute(f"INSERT INTO {qualified_name} BY NAME SELECT * FROM incoming_rows")
    finally:
        conn.unregister("incoming_rows")


def _count(conn: duckdb.DuckDBPyConnection, qualified_name: str, connection_id: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {qualified_name} WHERE connection_id = ?", [connection_id]).fetchall()[0][0]
