"""Parquet outputs: each published sync's set equals the published tables, and a consumer reading them while
syncs run is never blocked and never sees half of one set and half of another."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import duckdb
import polars as pl
import pytest

from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.outputs import (
    MANIFEST,
    OUTPUT_FILES,
    current_files,
    current_manifest,
    version_alongside,
    version_dir,
)
from dirsync_pipeline.warehouse.store import Warehouse, staging_name
from dirsync_pipeline.warehouse.tables import DIRECTORY_CHANGES, SCHEMA_VERSION
from tests.conftest import write_config
from tests.test_pipeline import connection, run_sync


def test_each_published_sync_writes_its_tables_and_changes_with_a_manifest(tmp_path):
    acme = generate_directory(users=150, groups=14, seed=3, domain="acme.test")
    globex = generate_directory(users=60, groups=10, seed=4, domain="globex.test")
    with DirectoryEmulator(acme) as acme_api, DirectoryEmulator(globex) as globex_api:
        config = write_config(tmp_path, [connection(acme_api, default_role="member"),
                                         connection(globex_api, "globex", selected_groups="all", role_mapping={})])
        results = {cid: run_sync(config, cid) for cid in ("acme", "globex")}
    assert all(r.success for r in results.values())
    parquet_dir = tmp_path / "parquet"
    with reader.connect(tmp_path) as conn:
        for connection_id, result in results.items():
            manifest = current_manifest(parquet_dir, connection_id)
            assert (manifest["schema_version"], manifest["connection_id"], manifest["sync_id"]) == (
                SCHEMA_VERSION, connection_id, result.run_id)
            published_at = conn.execute("SELECT published_at FROM core.sync_log WHERE sync_id = ?", [result.run_id]).fetchall()
            assert manifest["published_at"] == published_at[0][0].isoformat()
            for name, table in OUTPUT_FILES.items():
                condition = f"AND sync_id = '{result.run_id}'" if table is DIRECTORY_CHANGES else ""
                expected = table.typed(conn.sql(f"SELECT * FROM {table.qualified_name} WHERE connection_id = ? {condition}",
                                                params=[connection_id]).pl())
                written = table.typed(pl.read_parquet(
                    parquet_dir / f"connection_id={connection_id}" / manifest["files"][name]["path"]))
                assert manifest["files"][name]["rows"] == written.height == expected.height, name
                assert sorted(written.rows(), key=repr) == sorted(expected.rows(), key=repr), name
            assert manifest["files"]["changes"]["rows"] > 0, "a first sync reports its whole directory"
            with duckdb.connect(str(Warehouse(tmp_path, connection_id).path), read_only=True) as warehouse:
                appended = warehouse.sql(f"SELECT * FROM {DIRECTORY_CHANGES.qualified_name} ORDER BY rowid").pl()
            written = pl.read_parquet(parquet_dir / f"connection_id={connection_id}" / manifest["files"]["changes"]["path"])
            assert DIRECTORY_CHANGES.typed(written).equals(DIRECTORY_CHANGES.typed(appended)), "events out of order"

    everyone = duckdb.sql(f"SELECT connection_id, count(*) FROM read_parquet({[str(p) for p in current_files(parquet_dir, 'users')]},"
                          " hive_partitioning = true) GROUP BY ALL ORDER BY ALL").fetchall()
    assert everyone == [("acme", 150), ("globex", 60)]


READER = """
import json, sys, time
from pathlib import Path
import pyarrow.parquet as pq

root, stop, report = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
reads, errors, seen, slowest = 0, [], set(), 0.0
while not stop.exists():
    started = time.monotonic()
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        for name, entry in manifest["files"].items():
            table = pq.read_table(root / entry["path"])
            if table.num_rows != entry["rows"]:
                errors.append(f"{name}: {table.num_rows} rows, manifest says {entry['rows']}")
            if name == "changes" and set(table.column("sync_id").to_pylist()) - {manifest["sync_id"]}:
                errors.append("changes of another sync in this set")
        reads += 1
        seen.add(manifest["sync_id"])
    except Exception as exc:  # a consumer must never fail: any error is a finding
        errors.append(repr(exc))
    slowest = max(slowest, time.monotonic() - started)
report.write_text(json.dumps({"reads": reads, "errors": errors[:10], "syncs_seen": len(seen), "slowest": slowest}))
"""


def test_a_reader_is_never_blocked_nor_shown_a_partial_set_while_syncs_run(tmp_path):
    directory = generate_directory(users=200, groups=16, seed=9, domain="acme.test")
    root, stop, report = tmp_path / "parquet" / "connection_id=acme", tmp_path / "stop", tmp_path / "report.json"
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator, default_role="member")])
        assert run_sync(config).success
        reader = subprocess.Popen([sys.executable, "-c", READER, str(root), str(stop), str(report)])
        try:
            for round_number in range(3):  # every sync changes the row counts, so a mixed set cannot pass
                for index in range(3):
                    hire = directory.add_user(f"hire{round_number}.{index}@acme.test", "New", "Hire")
                    directory.add_member(directory.find_group("engineering@acme.test").id, hire.id)
                assert run_sync(config).success
            live = Warehouse(tmp_path, "acme").path
            with duckdb.connect(str(live)):  # while a sync holds the connection's DuckDB file, DuckDB readers ...
                query = ("from dirsync_pipeline.warehouse import reader; "
                         f"print(reader.connect({str(tmp_path)!r}).sql('SELECT count(*) FROM raw.google_users').fetchall())")
                attached = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, timeout=60)
                time.sleep(0.5)  # ... and the Parquet reader keep reading
        finally:
            stop.touch()
            reader.wait(timeout=60)
    assert attached.returncode == 0 and attached.stdout.strip() == "[(209,)]", attached.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["errors"] == []
    assert result["reads"] >= 10 and result["syncs_seen"] >= 3, result
    assert result["slowest"] < 2.0, f"a read took {result['slowest']:.2f} s: readers must not wait for syncs"
    assert len([p for p in root.iterdir() if p.name.startswith("sync-")]) == 4, "one immutable set per published sync"
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no partial set left behind"
    assert json.loads((root / MANIFEST).read_text())["files"]["users"]["rows"] == 209


def test_a_staged_file_that_cannot_be_written_fails_the_set_and_no_set_is_completed(tmp_path):
    """The synced tables' files are written in another thread, alongside the transaction: its error is the
    publish's error, and the set is never renamed into place."""
    warehouse = Warehouse(tmp_path, "acme")
    parquet_dir = tmp_path / "parquet"
    with warehouse.connect() as conn:
        with pytest.raises(duckdb.CatalogException, match="no_such_relation"):
            with version_alongside(conn, parquet_dir, "acme", "sync-1", staged=lambda table: "no_such_relation") as complete:
                complete(datetime.now(UTC))
        with version_alongside(conn, parquet_dir, "acme", "sync-2", staged=staging_name) as complete:
            version = complete(datetime.now(UTC))
    assert not version_dir(parquet_dir, "acme", "sync-1").exists()
    assert list(version.manifest["files"]) == list(OUTPUT_FILES)
    assert all((version.directory / f"{name}.parquet").is_file() for name in OUTPUT_FILES)
