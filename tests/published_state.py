"""What a consumer can read after a sync: every published row and the current Parquet set, for exact comparison."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb

from dirsync_pipeline.warehouse.outputs import MANIFEST


def published_state(db: Path, parquet_dir: Path | None = None) -> dict[str, object]:
    """Every row of every published schema (raw, core, history: all but staging) in a stable order, and the
    bytes of each connection's manifest and of the files it names: equal states are byte-identical reads."""
    parquet_dir = parquet_dir or db.parent / "parquet"
    state: dict[str, object] = {}
    if db.exists():
        with duckdb.connect(str(db), read_only=True) as conn:
            tables = conn.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE schema_name <> 'staging' "
                                  "ORDER BY ALL").fetchall()
            for schema, table in tables:
                state[f"{schema}.{table}"] = conn.execute(f"SELECT * FROM {schema}.{table} ORDER BY ALL").fetchall()
    for manifest in sorted(parquet_dir.glob(f"connection_id=*/{MANIFEST}")):
        state[str(manifest.relative_to(parquet_dir))] = manifest.read_bytes()
        for entry in json.loads(manifest.read_text())["files"].values():
            path = manifest.parent / entry["path"]
            state[str(path.relative_to(parquet_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state

