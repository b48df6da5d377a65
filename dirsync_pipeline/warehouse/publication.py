"""What a publish records besides the tables themselves: change events, history and the Parquet set.

``Warehouse.publish`` drives one ``Publication`` inside its transaction: ``record`` appends the change
events (the published rows against the staged ones) and advances the SCD2 history before the stages
replace the published tables, and writes the Parquet set of the result meanwhile, all before the COMMIT.
So a publish that fails or is refused records nothing, and a published sync always has its events, its
history and its snapshot. Everything runs as SQL in DuckDB, which spills to disk, so the publish needs no
memory in proportion to the directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dirsync_pipeline.warehouse.changes import (
    DirectoryState,
    append_changes,
    insert_directory_changes,
    named_staged_changes,
    previous_state,
)
from dirsync_pipeline.warehouse.history import ENTITLEMENTS, MEMBERSHIPS, advance_history
from dirsync_pipeline.warehouse.outputs import MANIFEST, PendingVersion, connection_dir, version_alongside
from dirsync_pipeline.warehouse.tables import DIRECTORY_CHANGES, Table


class PublishFailedError(Exception):
    """The publish failed before its COMMIT took effect: nothing of it is visible, in DuckDB or in Parquet."""


class PartlyPublishedError(Exception):
    """DuckDB committed the sync, but the Parquet manifest still names the previous one (repaired next sync)."""


def describe_sync(sync_id: str | None) -> str:
    return f"sync {sync_id}" if sync_id else "no sync yet"


def nothing_published(connection_id: str, sync_id: str, previous: str | None, cause: BaseException) -> PublishFailedError:
    """What a publish that failed before its COMMIT left: exactly what was there."""
    return PublishFailedError(
        f"publishing sync {sync_id} of {connection_id} failed ({_cause(cause)}): nothing was published, the DuckDB "
        f"tables and the Parquet manifest still hold {describe_sync(previous)}. Fix the cause and sync again."
    )


def manifest_not_replaced(
    parquet_dir: Path, connection_id: str, sync_id: str, previous: str | None, cause: BaseException
) -> PartlyPublishedError:
    """What a publish whose manifest could not be replaced after the COMMIT left: the connection's DuckDB file
    new, what readers see (its published copy and the Parquet files, both named by the manifest) old."""
    return PartlyPublishedError(
        f"sync {sync_id} of {connection_id} was committed to its DuckDB file (raw.*, core.*, its change events and "
        f"history), but the manifest {connection_dir(parquet_dir, connection_id) / MANIFEST} could not be replaced "
        f"({_cause(cause)}): readers (dirsync query, the reader helper, the Parquet files) still see "
        f"{describe_sync(previous)}. The next sync of {connection_id} publishes it to them once the cause is fixed."
    )


def _cause(error: BaseException) -> str:
    """The OS's or DuckDB's own words for what failed (e.g. "[Errno 30] Read-only file system: '...'")."""
    return f"{type(error).__name__}: {error}" if not str(error) else str(error).strip().splitlines()[0]


class Publication:
    """One publish of one connection, bound to the open transaction of ``conn``."""

    def __init__(
        self, conn: duckdb.DuckDBPyConnection, parquet_dir: Path, connection_id: str, sync_id: str,
        staged_changes: str | None = None,
    ):
        self.conn = conn
        self.parquet_dir = parquet_dir
        self.connection_id = connection_id
        self.sync_id = sync_id
        self.published_at = datetime.now(UTC)
        self.version: PendingVersion | None = None
        # The events the run diffed beside its steps (store.py), in ``staged_changes``, named as this sync's.
        self.staged_events = (named_staged_changes(staged_changes, sync_id=sync_id, changed_at=self.published_at)
                              if staged_changes else None)

    def record(self, staging: Callable[[Table], str]) -> int:
        """Before the stages (``staging`` names each) replace the published tables: the sync's change events, its
        history and its Parquet set; returns how many events.

        The set's files are written beside the rest of the transaction (outputs.version_alongside). Events the
        run diffed already are too, from the start. Otherwise they are diffed here first: that sort is the
        publish's largest use of memory (at 100,000 users, the sort and the files at once peaked ~70 MiB higher).
        """
        staged = DirectoryState.from_names(staging)
        if self.staged_events is None:
            events = self._record_changes(staged)
            with self._parquet_alongside(staging):
                self._record_history(staged)
            return events
        with self._parquet_alongside(staging):
            events = self._record_changes(staged)
            self._record_history(staged)
        return events

    def _record_changes(self, staged: DirectoryState) -> int:
        """Append the events from the published rows to ``staged`` (a connection without a published sync gets its
        first, ``initial`` events), or the events the run diffed from them already; returns their count."""
        if self.staged_events:
            events = append_changes(self.conn, self.staged_events)
        else:
            events = insert_directory_changes(
                self.conn, previous_state(self.conn, self.connection_id), staged, connection_id=self.connection_id,
                sync_id=self.sync_id, changed_at=self.published_at,
            )
        self._validate_written(DIRECTORY_CHANGES)
        return events

    def _record_history(self, staged: DirectoryState) -> None:
        """Advance the history from the published rows to ``staged``."""
        for spec, rows in ((ENTITLEMENTS, staged.entitlements), (MEMBERSHIPS, staged.memberships)):
            advance_history(self.conn, spec, rows, connection_id=self.connection_id, sync_id=self.sync_id,
                            at=self.published_at)
            self._validate_written(spec.table)

    @contextmanager
    def _parquet_alongside(self, staging: Callable[[Table], str]) -> Iterator[None]:
        """Around the rest of the transaction: the Parquet set of what it publishes, complete before the block ends."""
        with version_alongside(self.conn, self.parquet_dir, self.connection_id, self.sync_id, staging,
                               events=self.staged_events) as complete:
            yield
            self.version = complete(self.published_at)

    def activate(self) -> None:
        """After the COMMIT: make the new Parquet set the current one."""
        if self.version is not None:
            self.version.activate()

    def _validate_written(self, table: Table) -> None:
        """Check the rows this sync wrote to ``table`` against the contract, in DuckDB.

        Nothing outside the contract is ever published: a failure raises and the transaction rolls back.
        The table's DDL holds the contract's columns and types; ``Table.sql_rules`` are its rules on values,
        with pandera's verdicts, counted in one pass without fetching the rows (pandera over them took 0.2 s
        of a first S1 publish); a second query checks the key.
        """
        where = f"FROM {table.qualified_name} WHERE connection_id = $connection_id AND sync_id = $sync_id"
        params = {"connection_id": self.connection_id, "sync_id": self.sync_id}
        rules = table.sql_rules()
        counts = self.conn.execute(
            f"SELECT {', '.join(f'count(*) FILTER (WHERE {r.broken})' for r in rules)} {where}", params).fetchall()[0]
        if broken_rules := [f"{r.column}: {r.rule} ({n} rows)" for r, n in zip(rules, counts, strict=True) if n]:
            raise ValueError(f"{table.qualified_name}: rows written by sync {self.sync_id} break the contract: "
                             + "; ".join(broken_rules))
        key = ", ".join(table.key)
        duplicated = self.conn.execute(
            f"SELECT count(*) FROM (SELECT {key} {where} GROUP BY {key} HAVING count(*) > 1)", params).fetchall()[0][0]
        if duplicated:
            raise ValueError(f"{table.qualified_name}: {duplicated} key(s) {table.key} written more than once "
                             f"by sync {self.sync_id}")
