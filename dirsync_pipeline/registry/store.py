"""The registry store: one SQLite file in the warehouse folder.

Why SQLite: it ships with Python, every process on the machine (the CLI, ``dagster dev``'s code server, the
daemon's sensor, each run) reads and writes it at once with its own locking, a change is one atomic
transaction, and it needs no server. It holds little (a row per organisation) and changes rarely, so a
writer holds its lock for milliseconds. Settings are stored as the validated connection JSON with the
credentials *referenced* (a file path or an environment variable's name), never their content.

A connection's ``status`` is derived: ``inactive`` while disabled, else the outcome of its last sync
(``validating`` until one has finished).
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dirsync_pipeline.config import ConnectionConfig, DirsyncConfig, parse_connection

REGISTRY_FILE = "registry.sqlite"
LOCK_WAIT_SECONDS = 10.0
MAX_ERROR_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS connections (
  id TEXT PRIMARY KEY,
  settings TEXT NOT NULL,          -- the connection's validated config as JSON (credentials referenced only)
  source TEXT NOT NULL,            -- 'cli', or 'config' when a config file registers it
  enabled INTEGER NOT NULL,
  sync_status TEXT NOT NULL,       -- outcome of the last finished sync: validating before the first
  last_synced_at TEXT,             -- publish time of the last published sync (UTC, ISO 8601)
  last_sync_id TEXT,
  last_error TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS connection_events (
  occurred_at TEXT NOT NULL, connection_id TEXT NOT NULL, event TEXT NOT NULL, detail TEXT
);
CREATE TABLE IF NOT EXISTS removed_config_connections (id TEXT PRIMARY KEY, removed_at TEXT NOT NULL);
"""


class RegistryError(Exception):
    """The registry cannot be used (corrupt, locked, an unknown or duplicate id): the message says what to do."""


class Status(enum.StrEnum):
    VALIDATING = "validating"  # added, no sync finished yet
    ACTIVE = "active"  # the last sync published
    INVALID_CREDENTIALS = "invalid_credentials"  # Google refused the credentials
    FAILING = "failing"  # the last sync failed otherwise
    QUARANTINED = "quarantined"  # the mass-removal breaker refused the last sync
    INACTIVE = "inactive"  # disabled


@dataclass(frozen=True)
class RegisteredConnection:
    id: str
    settings: dict
    source: str
    enabled: bool
    sync_status: str
    last_synced_at: str | None
    last_sync_id: str | None
    last_error: str | None
    created_at: str
    updated_at: str

    @property
    def status(self) -> str:
        return Status.INACTIVE.value if not self.enabled else self.sync_status

    @property
    def config(self) -> ConnectionConfig:
        """The settings, validated again (a key file deleted since it was added is named here)."""
        return parse_connection(self.settings, source=f"registered connection {self.id}")

    def as_record(self) -> dict:
        return {"id": self.id, "enabled": self.enabled, "status": self.status, "last_synced_at": self.last_synced_at,
                "last_sync_id": self.last_sync_id, "last_error": self.last_error, "source": self.source,
                "created_at": self.created_at, "updated_at": self.updated_at}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _settings(connection: ConnectionConfig) -> dict:
    return connection.model_dump(mode="json", exclude_defaults=True) | {"id": connection.id}


class Registry:
    def __init__(self, path: Path):
        self.path = path
        # Seconds this object spent in write transactions, waiting for the lock included: the one part of a
        # sync that is serialised with other organisations' syncs (shown as sync metadata and in bench/).
        self.write_seconds = 0.0

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; a writer takes the lock at BEGIN, so read-then-write is never interleaved."""
        # Reading a registry that does not exist yet reads an empty one, and creates no file.
        target = self.path if write or self.path.exists() else ":memory:"
        started = time.perf_counter()
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(target, timeout=LOCK_WAIT_SECONDS, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"the connections registry cannot be created at {self.path} ({exc}): set "
                                "warehouse.path to a folder this process can write") from None
        conn.row_factory = sqlite3.Row
        try:
            if write or target == ":memory:" or not _has_schema(conn):
                conn.executescript(_SCHEMA)  # before BEGIN: executescript commits what is pending
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            _rollback(conn)
            if "locked" in str(exc):
                raise RegistryError(f"the connections registry {self.path} stayed locked by another process for "
                                    f"{LOCK_WAIT_SECONDS:.0f} s; try again (nothing was changed)") from None
            raise self._unusable(exc) from None
        except sqlite3.DatabaseError as exc:
            _rollback(conn)
            raise self._unusable(exc) from None
        except BaseException:
            _rollback(conn)
            raise
        finally:
            conn.close()
            if write:
                self.write_seconds += time.perf_counter() - started

    def _unusable(self, exc: Exception) -> RegistryError:
        return RegistryError(f"the connections registry {self.path} cannot be read ({exc}): restore it from a "
                             "backup, or move it aside to start an empty one (nothing was changed)")

    # --- reading ---

    def list(self) -> list[RegisteredConnection]:
        with self._transaction(write=False) as conn:
            return [_row(r) for r in conn.execute("SELECT * FROM connections ORDER BY id")]

    def get(self, connection_id: str) -> RegisteredConnection:
        with self._transaction(write=False) as conn:
            return self._get(conn, connection_id)

    def connection(self, connection_id: str) -> ConnectionConfig:
        return self.get(connection_id).config

    def enabled_ids(self) -> list[str]:
        return [c.id for c in self.list() if c.enabled]

    def events(self) -> list[dict]:
        with self._transaction(write=False) as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM connection_events ORDER BY occurred_at")]

    @staticmethod
    def _get(conn: sqlite3.Connection, connection_id: str) -> RegisteredConnection:
        row = conn.execute("SELECT * FROM connections WHERE id = ?", [connection_id]).fetchone()
        if row is None:
            known = [r[0] for r in conn.execute("SELECT id FROM connections ORDER BY id")]
            raise RegistryError(f"no connection {connection_id!r} is registered; known: {known or 'none'} "
                                "(`dirsync connections list`)")
        return _row(row)

    # --- the admin flow ---

    def add(self, connection: ConnectionConfig, *, source: str = "cli") -> RegisteredConnection:
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM connections WHERE id = ?", [connection.id]).fetchone():
                raise RegistryError(f"a connection {connection.id!r} is already registered; change it with "
                                    f"`dirsync connections update {connection.id} --file F`, or pick another id")
            now = _now()
            conn.execute("INSERT INTO connections (id, settings, source, enabled, sync_status, created_at, updated_at) "
                         "VALUES (?, ?, ?, 1, ?, ?, ?)",
                         [connection.id, json.dumps(_settings(connection)), source, Status.VALIDATING, now, now])
            conn.execute("DELETE FROM removed_config_connections WHERE id = ?", [connection.id])
            _event(conn, connection.id, "connection.added", source)
            return self._get(conn, connection.id)

    def update(self, connection: ConnectionConfig) -> RegisteredConnection:
        with self._transaction() as conn:
            current = self._get(conn, connection.id)
            if current.source == "config":
                raise RegistryError(f"connection {connection.id!r} is defined in the config file; change it there "
                                    "(it is registered again from the file each time the file is read)")
            conn.execute("UPDATE connections SET settings = ?, updated_at = ? WHERE id = ?",
                         [json.dumps(_settings(connection)), _now(), connection.id])
            _event(conn, connection.id, "connection.updated", None)
            return self._get(conn, connection.id)

    def set_enabled(self, connection_id: str, enabled: bool) -> RegisteredConnection:
        with self._transaction() as conn:
            current = self._get(conn, connection_id)
            if current.enabled != enabled:
                conn.execute("UPDATE connections SET enabled = ?, updated_at = ? WHERE id = ?",
                             [int(enabled), _now(), connection_id])
                _event(conn, connection_id, "connection.enabled" if enabled else "connection.disabled", None)
            return self._get(conn, connection_id)

    def remove(self, connection_id: str, detail: str) -> None:
        """Unregister; a connection of a config file stays removed (the file does not register it again)."""
        with self._transaction() as conn:
            current = self._get(conn, connection_id)
            conn.execute("DELETE FROM connections WHERE id = ?", [connection_id])
            if current.source == "config":
                conn.execute("INSERT OR REPLACE INTO removed_config_connections VALUES (?, ?)", [connection_id, _now()])
            _event(conn, connection_id, "connection.removed", detail)

    def register_config(self, config: DirsyncConfig) -> None:
        """Register the config file's connections: new ones are added, changed ones updated (the file is their
        source of truth); one removed with ``dirsync connections remove`` stays removed. Cheap when unchanged."""
        if not config.connections:
            return
        wanted = {c.id: json.dumps(_settings(c)) for c in config.connections}
        with self._transaction(write=False) as conn:
            current = {r["id"]: (r["settings"], r["source"]) for r in conn.execute("SELECT * FROM connections")}
            removed = {r[0] for r in conn.execute("SELECT id FROM removed_config_connections")}
        if all(current.get(i, (None,))[0] == s or i in removed for i, s in wanted.items()):
            return
        with self._transaction() as conn:
            removed = {r[0] for r in conn.execute("SELECT id FROM removed_config_connections")}
            for connection_id, settings in wanted.items():
                row = conn.execute("SELECT settings, source FROM connections WHERE id = ?", [connection_id]).fetchone()
                now = _now()
                if row is None and connection_id not in removed:
                    conn.execute("INSERT INTO connections (id, settings, source, enabled, sync_status, created_at, "
                                 "updated_at) VALUES (?, ?, 'config', 1, ?, ?, ?)",
                                 [connection_id, settings, Status.VALIDATING, now, now])
                    _event(conn, connection_id, "connection.added", "config")
                elif row is not None and row["source"] == "config" and row["settings"] != settings:
                    conn.execute("UPDATE connections SET settings = ?, updated_at = ? WHERE id = ?",
                                 [settings, now, connection_id])
                    _event(conn, connection_id, "connection.updated", "config")

    # --- what syncs report ---

    def record_published(self, connection_id: str, sync_id: str, published_at: datetime) -> None:
        self._record(connection_id, "sync_status = ?, last_synced_at = ?, last_sync_id = ?, last_error = NULL",
                     [Status.ACTIVE, published_at.isoformat(timespec="milliseconds"), sync_id])

    def record_failure(self, connection_id: str, status: Status, error: str) -> None:
        self._record(connection_id, "sync_status = ?, last_error = ?", [status, error[:MAX_ERROR_CHARS]])

    def _record(self, connection_id: str, assignments: str, values: list) -> None:
        with self._transaction() as conn:  # a connection removed meanwhile has nothing to record
            conn.execute(f"UPDATE connections SET {assignments}, updated_at = ? WHERE id = ?",
                         [*values, _now(), connection_id])


def _has_schema(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'connections'").fetchone() is not None


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _event(conn: sqlite3.Connection, connection_id: str, event: str, detail: str | None) -> None:
    conn.execute("INSERT INTO connection_events VALUES (?, ?, ?, ?)", [_now(), connection_id, event, detail])


def _row(row: sqlite3.Row) -> RegisteredConnection:
    values = dict(row)
    return RegisteredConnection(**{**values, "settings": json.loads(values["settings"]),
                                   "enabled": bool(values["enabled"])})


def open_registry(config: DirsyncConfig, warehouse_dir: Path | None = None) -> Registry:
    """The registry of the config's warehouse, with the config file's connections registered."""
    registry = Registry((warehouse_dir or config.warehouse.path) / REGISTRY_FILE)
    registry.register_config(config)
    return registry
