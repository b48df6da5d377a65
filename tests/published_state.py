"""What a consumer can read after a sync: every published row and the current Parquet set, for exact comparison."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.outputs import MANIFEST


def published_state(warehouse_dir: Path, parquet_dir: Path | None = None) -> dict[str, object]:
    """Every row a reader sees (raw.*, core.*: the published tables, history and change events) in a stable
    order, and the bytes of each connection's manifest and of the files it names: equal states are
    byte-identical reads. The registry's own tables (status, last error) are not the published data."""
    parquet_dir = parquet_dir or warehouse_dir / "parquet"
    state: dict[str, object] = {}
    with reader.connect(warehouse_dir, parquet_dir) as conn:
        for table in reader.PUBLISHED_TABLES:
            state[table.qualified_name] = conn.execute(f"SELECT * FROM {table.qualified_name} ORDER BY ALL").fetchall()
    for manifest in sorted(parquet_dir.glob(f"connection_id=*/{MANIFEST}")):
        state[str(manifest.relative_to(parquet_dir))] = manifest.read_bytes()
        for entry in json.loads(manifest.read_text())["files"].values():
            path = manifest.parent / entry["path"]
            state[str(path.relative_to(parquet_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state

