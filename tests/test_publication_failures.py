"""Each write step of a publish failing, and what the sync then says against what consumers can read.

The faults are the OS's and DuckDB's own errors, raised where they would arise: a DuckDB connection that
fails one statement (as a full disk would), and file operations that fail (as a read-only disk would).
The pipeline itself runs for real, in process, against the emulator.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dirsync_pipeline.cli.sync import failure_messages, partly_published
from dirsync_pipeline.definitions import build_definitions
from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.outputs import current_manifest
from dirsync_pipeline.warehouse.store import Warehouse
from tests.conftest import instance_with, write_config
from tests.published_state import published_state

REAL_CONNECT = duckdb.connect


class FailingConnection:
    """A real DuckDB connection whose first statement matching ``pattern`` (once ``armed_by`` has run, when
    given) fails with DuckDB's own IOException, as a full disk makes it fail."""

    def __init__(self, conn, fault: dict):
        self._conn, self._fault = conn, fault

    def execute(self, query, *args, **kwargs):
        fault = self._fault
        if fault.get("armed_by") and re.search(fault["armed_by"], str(query)):
            fault["armed"] = True
        if not fault.get("fired") and fault.get("armed", not fault.get("armed_by")) and re.search(fault["pattern"], str(query)):
            fault["fired"] = True
            raise duckdb.IOException("Could not write file \"dirsync.duckdb.wal\": No space left on device")
        return self._conn.execute(query, *args, **kwargs)

    def cursor(self):
        return FailingConnection(self._conn.cursor(), self._fault)

    def __getattr__(self, name):
        return getattr(self._conn, name)


DUCKDB_STEPS = {  # the publish transaction's write steps, and the Parquet set's written beside it
    "staged Parquet files": {"pattern": r"^COPY .*\.partial/users\.parquet"},
    "change events": {"pattern": r"INSERT INTO core\.directory_changes"},
    "history": {"pattern": r"INSERT INTO core\.entitlements_history"},
    "published tables": {"pattern": r"ALTER TABLE core\.role_mapped_entitlements__staged RENAME"},
    "sync log": {"pattern": r"INSERT INTO core\.sync_log"},
    "changes Parquet file": {"pattern": r"^COPY .*\.partial/changes\.parquet"},
    "COMMIT": {"pattern": r"^COMMIT$", "armed_by": r"INSERT INTO core\.sync_log"},
}


def sync(config: Path) -> dg.ExecuteInProcessResult:
    job = build_definitions(str(config)).resolve_job_def("directory_sync")
    return job.execute_in_process(partition_key="acme", instance=instance_with("acme"), raise_on_error=False)


@pytest.fixture
def synced_once(tmp_path, emulator, directory):
    """A published first sync, then a change in the directory for the next sync to publish."""
    config = write_config(tmp_path, [{"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all",
                                      "role_mapping": {"engineering@acme.test": "developer"}}])
    first = sync(config)
    assert first.success
    for user in list(directory.users.values())[:5]:
        directory.suspend_user(user.id)
    return config, first.run_id, tmp_path


def message(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(failure_messages(result))


@pytest.mark.parametrize("step", list(DUCKDB_STEPS))
def test_a_failed_write_inside_the_transaction_publishes_nothing_and_says_so(synced_once, monkeypatch, step):
    config, first_sync, db = synced_once
    before = published_state(db)
    fault = dict(DUCKDB_STEPS[step])
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: FailingConnection(REAL_CONNECT(*a, **k), fault))
    result = sync(config)
    monkeypatch.undo()
    assert fault.get("fired") and not result.success and not partly_published(result)
    assert (f"publishing sync {result.run_id} of acme failed (Could not write file \"dirsync.duckdb.wal\": "
            f"No space left on device): nothing was published, the DuckDB tables and the Parquet manifest still hold "
            f"sync {first_sync}") in message(result)
    assert published_state(db) == before


def test_a_stage_that_could_not_be_written_fails_the_run_and_publishes_nothing(synced_once, monkeypatch):
    """Stages are written by the run's writer thread while the run goes on (stage_writes.py): a failed write
    still stops the run before anything is published, and the message names the stage."""
    config, _first_sync, db = synced_once
    before = published_state(db)
    fault = {"pattern": r"INSERT INTO core\.filtered_memberships__staged"}
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: FailingConnection(REAL_CONNECT(*a, **k), fault))
    result = sync(config)
    monkeypatch.undo()
    assert fault.get("fired") and not result.success and not partly_published(result)
    assert ("writing the stage core.filtered_memberships__staged failed (IOException: Could not "
            "write file \"dirsync.duckdb.wal\": No space left on device); nothing was published") in message(result)
    assert not result.is_node_success("published_directory")
    assert published_state(db) == before


def test_a_set_that_cannot_be_renamed_into_place_publishes_nothing(synced_once, monkeypatch):
    config, first_sync, db = synced_once
    before = published_state(db)
    real_rename = Path.rename

    def rename(self, target):
        if self.name.endswith(".partial"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_rename(self, target)
    monkeypatch.setattr(Path, "rename", rename)
    result = sync(config)
    monkeypatch.undo()
    assert "Read-only file system" in message(result) and f"still hold sync {first_sync}" in message(result)
    assert published_state(db) == before


def test_a_manifest_that_cannot_be_replaced_says_what_was_published_and_the_next_sync_repairs_it(
    synced_once, monkeypatch, emulator
):
    config, first_sync, db = synced_once
    real_replace = os.replace

    def replace(source, target):
        if str(target).endswith("manifest.json"):
            raise OSError(errno.EROFS, "Read-only file system", str(target))
        return real_replace(source, target)
    monkeypatch.setattr(os, "replace", replace)
    result = sync(config)
    monkeypatch.undo()
    text = message(result)
    assert partly_published(result)
    assert f"sync {result.run_id} of acme was committed to its DuckDB file (raw.*, core.*, its change events" in text
    assert "[Errno 30] Read-only file system" in text and f"the Parquet files) still see sync {first_sync}" in text
    assert "nothing was published" not in text
    with Warehouse(db, "acme").connect(read_only=True) as conn:  # the message against the state
        logged = [r[0] for r in conn.execute("SELECT sync_id FROM core.sync_log ORDER BY published_at").fetchall()]
    assert logged == [first_sync, result.run_id]
    with reader.connect(db) as conn:
        assert conn.execute("SELECT sync_id FROM core.sync_log").fetchall() == [(first_sync,)]
    assert current_manifest(db / "parquet", "acme")["sync_id"] == first_sync

    emulator.faults.api_disabled = True  # the next sync fails at Google, yet repairs the manifest first
    assert not sync(config).success
    assert current_manifest(db / "parquet", "acme")["sync_id"] == result.run_id
    with reader.connect(db) as conn:
        assert {r[0] for r in conn.execute("SELECT sync_id FROM core.sync_log").fetchall()} == {first_sync, result.run_id}
