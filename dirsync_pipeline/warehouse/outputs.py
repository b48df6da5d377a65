"""Parquet outputs: one immutable file set per published sync, and a manifest naming the current one.

Layout (hive-partitioned by connection)::

    <parquet_dir>/connection_id=<id>/manifest.json          <- the current set; replaced atomically
    <parquet_dir>/connection_id=<id>/sync-<sync_id>/*.parquet + manifest.json + warehouse.duckdb

A set is written completely under a temporary name, renamed into place, and only then named by the
connection's manifest (``os.replace``), so a reader that resolves the manifest once never sees half a
set and never waits for a lock. ``warehouse.duckdb`` is the connection's whole DuckDB warehouse as that
sync published it (history and change events included), an immutable copy that readers attach
(warehouse/reader.py). The sets double as the raw snapshots that replay (``dirsync remap``)
recomputes from without calling Google.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from dirsync_pipeline.warehouse.tables import (
    DIRECTORY_CHANGES,
    ENTITLEMENT_EXPLANATIONS,
    FILTERED_MEMBERSHIPS,
    GOOGLE_GROUP_MEMBERS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    ROLE_MAPPED_ENTITLEMENTS,
    SCHEMA_VERSION,
    Table,
    sql_literal,
)
from dirsync_pipeline.warehouse.threads import one_thread

MANIFEST = "manifest.json"
WAREHOUSE_COPY = "warehouse.duckdb"  # in each set: the connection's published DuckDB file, for readers
# File name (without .parquet) -> the published table it holds. `changes` holds only the sync's own events.
OUTPUT_FILES: dict[str, Table] = {
    "users": GOOGLE_USERS,
    "groups": GOOGLE_GROUPS,
    "group_members": GOOGLE_GROUP_MEMBERS,
    "memberships": FILTERED_MEMBERSHIPS,
    "entitlements": ROLE_MAPPED_ENTITLEMENTS,
    "explanations": ENTITLEMENT_EXPLANATIONS,
    "changes": DIRECTORY_CHANGES,
}
# The synced tables' files, written from their stages beside the publish transaction (version_alongside), and
# the file of the sync's change events, written from the transaction or from the events the run diffed.
TABLE_FILES = [name for name, table in OUTPUT_FILES.items() if table is not DIRECTORY_CHANGES]
EVENT_FILES = [name for name, table in OUTPUT_FILES.items() if table is DIRECTORY_CHANGES]


class SnapshotMissingError(Exception):
    """The Parquet set of a published sync is not on disk (deleted, or parquet_dir changed)."""


def connection_dir(parquet_dir: Path, connection_id: str) -> Path:
    return parquet_dir / f"connection_id={connection_id}"


def version_dir(parquet_dir: Path, connection_id: str, sync_id: str) -> Path:
    return connection_dir(parquet_dir, connection_id) / f"sync-{sync_id}"


@dataclass(frozen=True)
class PendingVersion:
    """A complete file set on disk that readers cannot see until ``activate`` names it in the manifest."""

    directory: Path
    manifest: dict

    def activate(self) -> None:
        _write_atomically(self.directory.parent / MANIFEST, json.dumps(self.manifest, indent=2))


@contextmanager
def version_alongside(
    conn: duckdb.DuckDBPyConnection, parquet_dir: Path, connection_id: str, sync_id: str, staged: Callable[[Table], str],
    events: str | None = None,
) -> Iterator[Callable[[datetime], PendingVersion]]:
    """Write a sync's new file set while the block runs the rest of the publish transaction on ``conn``.

    The synced tables' files are written from their staged rows (``staged`` names each table's staging
    relation) on a second connection, in a thread: those rows are committed, and they are exactly what the
    transaction puts in place, since the run holding the warehouse is its only writer. So is the file of the
    sync's change events when ``events`` names a committed relation holding them (the events a run diffed
    beside its steps, store.py). Otherwise they exist only inside the transaction: the block calls what this
    yields once the transaction has appended them, and it writes them. Either way it waits for the other files
    and renames the complete set into place.
    """
    writer = _VersionWriter(parquet_dir, connection_id, sync_id)
    side = conn.cursor()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="parquet") as pool:
            if events is None:
                beside = pool.submit(writer.write, side, TABLE_FILES, staged)
            else:
                beside = pool.submit(writer.write, side, TABLE_FILES + EVENT_FILES,
                                     lambda table: events if table is DIRECTORY_CHANGES else staged(table))

            def complete(published_at: datetime) -> PendingVersion:
                files = beside.result()
                if events is None:
                    with one_thread(conn):  # on DuckDB's threads, 2.6 million events took +600 MiB to keep their order
                        files |= writer.write(conn, EVENT_FILES, lambda table: table.qualified_name)
                return writer.finish(files, published_at)

            yield complete
    finally:
        side.close()


class _VersionWriter:
    """One sync's set under a temporary name, renamed into place once complete."""

    def __init__(self, parquet_dir: Path, connection_id: str, sync_id: str):
        self.connection_id, self.sync_id = connection_id, sync_id
        self.final = version_dir(parquet_dir, connection_id, sync_id)
        self.partial = self.final.with_name(f".{self.final.name}.partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)

    def write(self, conn: duckdb.DuckDBPyConnection, names: list[str], source: Callable[[Table], str]) -> dict[str, dict]:
        """The files ``names``, each from the relation ``source`` names for its table; their manifest entries."""
        files = {}
        for name in names:
            table = OUTPUT_FILES[name]
            query = (f"SELECT {', '.join(table.column_names)} FROM {source(table)} "
                     f"WHERE connection_id = {sql_literal(self.connection_id)}")
            if table is DIRECTORY_CHANGES:
                query += f" AND sync_id = {sql_literal(self.sync_id)}"
            target = sql_literal(str(self.partial / f"{name}.parquet"))
            rows = conn.execute(f"COPY ({query}) TO {target} (FORMAT parquet)").fetchall()[0][0]
            files[name] = {"path": f"{self.final.name}/{name}.parquet", "rows": rows, "table": table.qualified_name}
        return files

    def finish(self, files: dict[str, dict], published_at: datetime) -> PendingVersion:
        manifest = {"schema_version": SCHEMA_VERSION, "connection_id": self.connection_id, "sync_id": self.sync_id,
                    "published_at": published_at.isoformat(), "files": {name: files[name] for name in OUTPUT_FILES},
                    "duckdb": f"{self.final.name}/{WAREHOUSE_COPY}"}
        (self.partial / MANIFEST).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(self.final, ignore_errors=True)  # a re-executed publish of the same run replaces its own set
        self.partial.rename(self.final)
        return PendingVersion(self.final, manifest)


def published_version(parquet_dir: Path, connection_id: str, sync_id: str) -> PendingVersion | None:
    """The complete set of a published sync, from its own manifest (None when it is not on disk)."""
    own = version_dir(parquet_dir, connection_id, sync_id) / MANIFEST
    return PendingVersion(own.parent, json.loads(own.read_text())) if own.is_file() else None


def current_manifest(parquet_dir: Path, connection_id: str) -> dict | None:
    """The manifest of the connection's current file set, or None before its first published sync."""
    path = connection_dir(parquet_dir, connection_id) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def current_manifests(parquet_dir: Path) -> list[dict]:
    """The current manifest of every published connection, each read once (a consistent view of each)."""
    return [json.loads(p.read_text()) for p in sorted(parquet_dir.glob(f"connection_id=*/{MANIFEST}"))]


def current_files(parquet_dir: Path, name: str) -> list[Path]:
    """The current file ``name`` (e.g. ``entitlements``) of every connection, for one consistent read each."""
    return [connection_dir(parquet_dir, m["connection_id"]) / m["files"][name]["path"]
            for m in current_manifests(parquet_dir)]


def read_snapshot(parquet_dir: Path, connection_id: str, sync_id: str, table: Table) -> pl.DataFrame:
    """``table`` as the published sync ``sync_id`` left it, from its Parquet set."""
    name = next(n for n, t in OUTPUT_FILES.items() if t is table)
    path = version_dir(parquet_dir, connection_id, sync_id) / f"{name}.parquet"
    if not path.is_file():
        raise SnapshotMissingError(
            f"the Parquet snapshot of sync {sync_id} ({path}) is missing; run a full sync (directory_sync) "
            f"of connection {connection_id} to take a new one"
        )
    return table.typed(pl.read_parquet(path))


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
