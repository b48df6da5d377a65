"""One connection's DuckDB warehouse with write-audit-publish: stages are written aside, published in one
transaction, then handed to readers as an immutable copy.

Every connection (organisation) has its own folder ``<warehouse>/connections/<id>/``, so syncs of different
organisations never wait for each other's DuckDB lock. Its ``warehouse.duckdb`` holds the ``raw.*`` and
``core.*`` tables, the history and change events, and each stage of the running sync beside the table it
will replace (``raw.google_users__staged``...); only the connection's sync writes it (one at a time:
``sync_lock``).

Published tables change only when ``publish`` renames every staged table into place in a single
transaction, after all checks passed: the stages' rows are already in the file, so the publish writes
only the sync's events and history. A failed check, an exception or a killed process leaves the published
tables exactly as they were (and the stages there to inspect). After the COMMIT the checkpointed file is
copied into the sync's Parquet set, and the connection's manifest then names both at once (outputs.py):
readers (warehouse/reader.py) attach that copy, never the live file, so they are never refused and never see
half a sync.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from dirsync_pipeline.config import default_parquet_dir
from dirsync_pipeline.warehouse.changes import DirectoryState, previous_state, stage_directory_changes
from dirsync_pipeline.warehouse.outputs import WAREHOUSE_COPY, connection_dir, current_manifest, published_version
from dirsync_pipeline.warehouse.publication import Publication, manifest_not_replaced, nothing_published
from dirsync_pipeline.warehouse.stage_writes import StageWrites
from dirsync_pipeline.warehouse.threads import one_thread, one_thread_below
from dirsync_pipeline.warehouse.tables import (
    DIRECTORY_CHANGES,
    HISTORY_TABLES,
    SYNC_LOG,
    SYNC_LOG_COUNTED,
    SYNC_TABLES,
    Table,
)

STAGED_SUFFIX = "__staged"  # a stage is its table's name with this suffix, in the table's schema
# The sync's change events until its publish appends them: derived from the stages, so kept in memory (an
# attached in-memory database, which every connection of the run sees) rather than written to the file twice.
STAGED_CHANGES_DATABASE = "staged_changes"
STAGED_CHANGES = f"{STAGED_CHANGES_DATABASE}.directory_changes"
CONNECTIONS_DIR = "connections"
# A publish of fewer staged rows than this runs on one DuckDB thread. A directory's tables are small for
# DuckDB: at 20,000 users (240,000 staged rows) on 2 cores its worker threads cost more coordination than they
# save, and one thread publishes in 25% less time. At 300,000 users (3.5 million rows) they pay: one thread
# took 50% longer and held the whole transaction's rows in memory (+240 MiB). bench/RESULTS.md, Q2 and Q3.
ONE_THREAD_PUBLISH_ROWS = 1_000_000
# A stage smaller than two of DuckDB's row groups (122,880 rows each) is written on one thread too: its insert
# cannot be split between threads. A larger one keeps DuckDB's threads, which write its full row groups to disk
# as they go; on one thread a 300,000-user sync's stages stayed in memory into its publish (+90 MiB at the peak).
ONE_THREAD_STAGE_ROWS = 2 * 122_880


@dataclass
class _Held:
    lock: SyncLock
    open_connection: Callable[[], duckdb.DuckDBPyConnection]
    holders: int = 0
    stage_writes: StageWrites = field(default_factory=StageWrites)
    staged_rows: dict[str, int] = field(default_factory=dict)  # the stages written in this run (table -> rows)
    _conn: duckdb.DuckDBPyConnection | None = None
    _opening: threading.Lock = field(default_factory=threading.Lock)

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        """The run's connection, opened at its first use: the fetch step opens it while Google answers."""
        with self._opening:
            if self._conn is None:
                self._conn = self.open_connection()
            return self._conn

    def close(self) -> None:
        try:
            self.stage_writes.close()
        finally:
            if self._conn is not None:
                self._conn.close()
            self.lock.release()

    def diffs_changes(self) -> bool:
        """Whether the writer diffs the change events (Warehouse.stage): the four diffed tables are staged in this
        run, with fewer than ONE_THREAD_PUBLISH_ROWS rows together. Each stage of one of them diffs them again."""
        diffed = [self.staged_rows.get(t.qualified_name) for t in DirectoryState.TABLES]
        return None not in diffed and sum(diffed) < ONE_THREAD_PUBLISH_ROWS


_held: dict[Path, _Held] = {}  # warehouse file -> the connection a run holds (Warehouse.hold)
_held_lock = threading.Lock()


def staging_name(table: Table) -> str:
    """Where a run stages ``table``: beside it, so that the publish renames the stage into place (DuckDB can
    rename a table within its schema only)."""
    return f"{table.qualified_name}{STAGED_SUFFIX}"


def connection_files(root: Path, connection_id: str) -> Path:
    """The folder of one connection's DuckDB files (and its sync lock)."""
    return root / CONNECTIONS_DIR / connection_id


class Warehouse:
    """One connection's tables, in the warehouse folder ``root``."""

    def __init__(self, root: str | Path, connection_id: str, parquet_dir: str | Path | None = None):
        self.root = Path(root)
        self.connection_id = connection_id
        self.folder = connection_files(self.root, connection_id)
        self.path = self.folder / "warehouse.duckdb"
        self.parquet_dir = Path(parquet_dir) if parquet_dir else default_parquet_dir(self.root)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection a run holds (see ``hold``), once the run's stage writes are done; else a short-lived
        one: DuckDB allows one writer process."""
        held = self._run_hold()
        if held is not None:
            held.stage_writes.settle()
            yield held.conn
            return
        conn = self._open(read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()

    def hold(self, holder: str = "", on_wait: Callable[[str], None] = print) -> None:
        """Take the connection's sync lock and keep one DuckDB connection, opened at its first use, until the
        matching ``release``: a run's steps share it, and it is the file's only writer.

        Opening and closing the file costs a checkpoint each time (~30 ms); a sync used to do it ~40 times.
        """
        key = self.path.resolve()
        with _held_lock:
            if key not in _held:
                lock = SyncLock(self.folder / "sync.lock", self.connection_id).acquire(holder, on_wait)
                _held[key] = _Held(lock, lambda: self._open(read_only=False))
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
                held.close()

    def _run_hold(self) -> _Held | None:
        """The run's hold on this file, if a run holds it in this process."""
        return _held.get(self.path.resolve())

    def _open(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        if not read_only:
            self.folder.mkdir(parents=True, exist_ok=True)
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
        for schema in ("raw", "core"):
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in SYNC_TABLES:
            conn.execute(table.ddl())
            conn.execute(table.ddl(staging_name(table)))
        conn.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {STAGED_CHANGES_DATABASE}")
        conn.execute(DIRECTORY_CHANGES.ddl(STAGED_CHANGES))
        for table in (SYNC_LOG, *HISTORY_TABLES):
            conn.execute(table.ddl())

    def stage(self, table: Table, frame: pl.DataFrame) -> None:
        """Replace the connection's stage of ``table`` (atomically) with ``frame``.

        In a run (``hold``), the write is the run's writer thread's (stage_writes.py), on a cursor of its own.
        Once the four diffed tables are staged, with fewer than ONE_THREAD_PUBLISH_ROWS rows together, the
        writer diffs the sync's change events from them too, into memory beside the run's next steps; a larger
        sync's publish diffs them itself, on disk.
        """
        frame = frame.select(table.column_names)
        held = self._run_hold()
        if held is None:
            with self.connect() as conn:
                _stage_rows(conn, staging_name(table), frame)
            return
        held.stage_writes.submit(staging_name(table), _on_cursor(held.conn, _stage_rows, staging_name(table), frame))
        held.staged_rows[table.qualified_name] = frame.height
        if table in DirectoryState.TABLES and held.diffs_changes():
            held.stage_writes.submit(STAGED_CHANGES, _on_cursor(held.conn, self._stage_changes_on_one_thread))

    def _stage_changes_on_one_thread(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """The change events from the published tables to the stages, in memory (STAGED_CHANGES), on the
        writer's share of the machine: one core, beside the run's next steps."""
        with one_thread(cursor):
            stage_directory_changes(cursor, STAGED_CHANGES, previous_state(cursor, self.connection_id),
                                    DirectoryState.from_names(staging_name), connection_id=self.connection_id)

    def read_staged(self, table: Table, connection_id: str) -> pl.DataFrame:
        return self._read(staging_name(table), table, connection_id)

    def read_published(self, table: Table, connection_id: str) -> pl.DataFrame:
        return self._read(table.qualified_name, table, connection_id)

    def _read(self, qualified_name: str, table: Table, connection_id: str) -> pl.DataFrame:
        with self.connect() as conn:
            return table.read(conn, connection_id, source=qualified_name)

    def publish(self, connection_id: str, sync_id: str) -> dict[str, int]:
        """Put every stage of the connection in place of its published table in ONE transaction.

        The same transaction first appends the sync's change events and advances the history (from the
        published rows to the staged ones, before the stages replace them); the Parquet set is written
        before the COMMIT. Right after it the committed file is copied into the set for readers, and the
        set becomes the current one (publication.py).
        """
        counts: dict[str, int] = {}
        previous = self.manifest_sync_id(connection_id)
        held = self._run_hold()
        diffed = held is not None and held.diffs_changes() and connection_id == self.connection_id
        staged_changes = STAGED_CHANGES if diffed else None  # the events the run's writer diffed (stage), if it did
        with self.connect() as conn, \
                one_thread_below(conn, ONE_THREAD_PUBLISH_ROWS, rows=_staged_rows(conn, connection_id)):
            try:
                publication, events = self._publish_transaction(conn, connection_id, sync_id, counts, staged_changes)
            except Exception as exc:  # nothing committed: the transaction rolled back, the manifest never moved
                raise nothing_published(connection_id, sync_id, previous, exc) from exc
            try:
                if publication.version is not None:
                    self._copy_for_readers(conn, publication.version.directory)
                publication.activate()
            except Exception as exc:
                raise manifest_not_replaced(self.parquet_dir, connection_id, sync_id, previous, exc) from exc
        return counts | {DIRECTORY_CHANGES.name: events}

    def _copy_for_readers(self, conn: duckdb.DuckDBPyConnection, set_directory: Path) -> None:
        """Put the committed warehouse file, checkpointed (nothing left in its WAL), into the sync's set.

        The run is the file's only writer and writes nothing during the copy, so the copy is exactly the
        published state; it is written aside and renamed, so a reader never attaches half a file.
        """
        conn.execute("CHECKPOINT")
        partial = set_directory / f".{WAREHOUSE_COPY}.partial"
        shutil.copyfile(self.path, partial)
        os.replace(partial, set_directory / WAREHOUSE_COPY)

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
            if not (version.directory / WAREHOUSE_COPY).is_file():  # nothing was written since that publish
                self._copy_for_readers(conn, version.directory)
        version.activate()
        return last[0][0]

    @contextmanager
    def sync_lock(self, holder: str, on_wait: Callable[[str], None]) -> Iterator[None]:
        """Hold the connection's sync lock for a block (``dirsync connections remove``), as a run does."""
        lock = SyncLock(self.folder / "sync.lock", self.connection_id).acquire(holder, on_wait)
        try:
            yield
        finally:
            lock.release()

    def purge(self) -> None:
        """Delete every row of the connection: its DuckDB files (history and change events included) and its
        Parquet sets. Readers that attached a copy before keep their open file until they close it."""
        shutil.rmtree(connection_dir(self.parquet_dir, self.connection_id), ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _publish_transaction(
        self, conn: duckdb.DuckDBPyConnection, connection_id: str, sync_id: str, counts: dict[str, int],
        staged_changes: str | None,
    ) -> tuple[Publication, int]:
        """The publish's one transaction, committed; ``counts`` receives the published row counts."""
        with _transaction(conn):
            publication = Publication(conn, self.parquet_dir, connection_id, sync_id, staged_changes)
            events = publication.record(staging_name)
            for table in SYNC_TABLES:  # the stage replaces the table: its rows are in the file already
                conn.execute(f"DROP TABLE {table.qualified_name}")
                conn.execute(f"ALTER TABLE {staging_name(table)} RENAME TO {table.name}")
                counts[table.name] = _count(conn, table.qualified_name, connection_id)
            conn.execute(
                f"INSERT INTO {SYNC_LOG.qualified_name} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [connection_id, sync_id, publication.published_at, *(counts[t.name] for t in SYNC_LOG_COUNTED)],
            )
        return publication, events


class SyncLock:
    """One sync (or removal) of a connection at a time, across processes: an advisory lock on a file.

    Dagster's queue already runs one run per connection at a time (dagster.yaml); this also covers two
    `dirsync sync` started by hand. The second says who holds the lock (``on_wait``) and waits for it; the
    operating system releases it when its holder dies, so a killed sync never leaves it behind.
    """

    def __init__(self, path: Path, connection_id: str):
        self.path, self.connection_id = path, connection_id
        self._handle = None

    def acquire(self, holder: str, on_wait: Callable[[str], None]) -> SyncLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            on_wait(f"another sync of {self.connection_id} is running ({handle.read().strip() or 'holder unknown'}); "
                    "waiting for it to end")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}{', ' + holder if holder else ''}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.truncate(0)
            self._handle.close()  # closing the file releases the lock
            self._handle = None


def _staged_rows(conn: duckdb.DuckDBPyConnection, connection_id: str) -> int:
    return conn.execute("SELECT " + " + ".join(
        f"(SELECT count(*) FROM {staging_name(t)} WHERE connection_id = $id)" for t in SYNC_TABLES),
        {"id": connection_id}).fetchall()[0][0]


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


def _on_cursor(conn: duckdb.DuckDBPyConnection, write: Callable[..., None], *args: object) -> Callable[[], None]:
    """``write(cursor, *args)`` for the run's writer thread, on a cursor of ``conn`` (a transaction of its own)."""
    cursor = conn.cursor()

    def on_cursor() -> None:
        try:
            write(cursor, *args)
        finally:
            cursor.close()
    return on_cursor


def _stage_rows(conn: duckdb.DuckDBPyConnection, qualified_name: str, frame: pl.DataFrame) -> None:
    conn.register("incoming_rows", frame)
    try:
        with one_thread_below(conn, ONE_THREAD_STAGE_ROWS, rows=frame.height), _transaction(conn):
            conn.execute(f"DELETE FROM {qualified_name}")  # the file is the connection's, and so is the whole stage
            conn.execute(f"INSERT INTO {qualified_name} BY NAME SELECT * FROM incoming_rows")
    finally:
        conn.unregister("incoming_rows")


def _count(conn: duckdb.DuckDBPyConnection, qualified_name: str, connection_id: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {qualified_name} WHERE connection_id = ?", [connection_id]).fetchall()[0][0]
