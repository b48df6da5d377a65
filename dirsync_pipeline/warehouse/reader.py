"""How consumers read the warehouse: one DuckDB connection over every organisation's published tables.

``connect(warehouse_dir)`` returns an in-memory DuckDB connection in which ``raw.*`` and ``core.*`` are the
union of every connection's current published copy (the ``warehouse.duckdb`` of the set its manifest
names), attached read-only, plus ``core.connections`` and ``core.connection_events`` from the registry.
Each copy is an immutable file that no sync writes, so a reader is never refused, whatever syncs run, and
sees each organisation's last published sync whole: the manifest is resolved once, at ``connect``. A
connection stays valid for as long as it is open (a replaced copy is removed only after the retention's
grace period, and an open file outlives its removal).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl

from dirsync_pipeline.config import default_parquet_dir
from dirsync_pipeline.registry import REGISTRY_FILE, Registry
from dirsync_pipeline.warehouse.outputs import connection_dir, current_manifests
from dirsync_pipeline.warehouse.tables import HISTORY_TABLES, SYNC_LOG, SYNC_TABLES, Table, sql_literal

PUBLISHED_TABLES: tuple[Table, ...] = (*SYNC_TABLES, SYNC_LOG, *HISTORY_TABLES)
CONNECTIONS_COLUMNS = {"id": pl.String, "enabled": pl.Boolean, "status": pl.String, "last_synced_at": pl.String,
                       "last_sync_id": pl.String, "last_error": pl.String, "source": pl.String,
                       "created_at": pl.String, "updated_at": pl.String}
EVENTS_COLUMNS = {"occurred_at": pl.String, "connection_id": pl.String, "event": pl.String, "detail": pl.String}


def connect(warehouse_dir: str | Path, parquet_dir: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only view of the published warehouse (see the module's docstring); close it when done."""
    warehouse_dir = Path(warehouse_dir)
    parquet_dir = Path(parquet_dir) if parquet_dir else default_parquet_dir(warehouse_dir)
    conn = duckdb.connect()
    try:
        conn.execute("SET TimeZone = 'UTC'")
        catalogs = [_attach(conn, parquet_dir, manifest) for manifest in current_manifests(parquet_dir)]
        _create_views(conn, [c for c in catalogs if c])
        _load_registry(conn, Registry(warehouse_dir / REGISTRY_FILE))
    except BaseException:
        conn.close()
        raise
    return conn


def _attach(conn: duckdb.DuckDBPyConnection, parquet_dir: Path, manifest: dict) -> str | None:
    """Attach the connection's published copy read-only; its catalog name (None for a set without a copy)."""
    if "duckdb" not in manifest:  # published before copies existed: readable as Parquet only
        return None
    catalog = f"published_{manifest['connection_id'].replace('-', '_')}"
    path = connection_dir(parquet_dir, manifest["connection_id"]) / manifest["duckdb"]
    conn.execute(f"ATTACH {sql_literal(str(path))} AS {catalog} (READ_ONLY)")
    return catalog


def _create_views(conn: duckdb.DuckDBPyConnection, catalogs: list[str]) -> None:
    for schema in sorted({t.schema for t in PUBLISHED_TABLES}):
        conn.execute(f"CREATE SCHEMA {schema}")
    for table in PUBLISHED_TABLES:
        if not catalogs:  # nothing published yet: the contract's empty tables
            conn.execute(table.ddl())
            continue
        columns = ", ".join(table.column_names)
        union = " UNION ALL ".join(f"SELECT {columns} FROM {c}.{table.qualified_name}" for c in catalogs)
        conn.execute(f"CREATE VIEW {table.qualified_name} AS {union}")


def _load_registry(conn: duckdb.DuckDBPyConnection, registry: Registry) -> None:
    """``core.connections`` (one row per registered organisation) and ``core.connection_events``."""
    connections = pl.DataFrame([c.as_record() for c in registry.list()], schema=CONNECTIONS_COLUMNS)
    events = pl.DataFrame(registry.events(), schema=EVENTS_COLUMNS)
    for name, frame in (("connections", connections), ("connection_events", events)):
        conn.register("registry_rows", frame)
        conn.execute(f"CREATE TABLE core.{name} AS SELECT * FROM registry_rows")
        conn.unregister("registry_rows")


def query_rows(warehouse_dir: str | Path, sql: str, parquet_dir: str | Path | None = None) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` over the published warehouse: its column names and rows."""
    with connect(warehouse_dir, parquet_dir) as conn:
        result = conn.execute(sql)
        columns = [d[0] for d in result.description] if result.description else []
        return columns, result.fetchall()


def rows_as_json(columns: list[str], rows: list[tuple]) -> str:
    return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, indent=1)
