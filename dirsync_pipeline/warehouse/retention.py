"""Parquet retention: how long a connection's published sets stay on disk.

Every publish writes a new set (outputs.py), 16-26 MB at 100,000 users, so without pruning the Parquet
folder grows by ~0.5 GB a day at the hourly schedule. A set is kept while any of these holds:

- it is one of the connection's ``keep_last`` newest sets (by publish time);
- the connection's manifest names it (the current set, whatever its age);
- it was replaced by the next set less than ``grace`` ago: a consumer that resolved the manifest just
  before may still be reading it.

Everything else is deleted: a set is first renamed to a hidden name and then removed, so nobody ever sees
half a set. A kept set's ``warehouse.duckdb`` (the connection's whole published DuckDB file, which readers
attach) stays only while the set is current or within ``grace`` of being replaced: it is the largest file of
a set, and only the newest one is attached by new readers. A ``.sync-*.partial`` folder (a set being written) is left alone until it is ``grace`` old: by
then it is the leftover of a publish that died.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dirsync_pipeline.config import ParquetRetentionConfig
from dirsync_pipeline.warehouse.outputs import MANIFEST, WAREHOUSE_COPY, connection_dir, current_manifest

SET_PREFIX = "sync-"
PRUNING_SUFFIX = ".pruning"


@dataclass(frozen=True)
class Retention:
    keep_last: int
    grace: timedelta

    @classmethod
    def of(cls, config: ParquetRetentionConfig) -> Retention:
        return cls(config.keep_last, timedelta(minutes=config.grace_minutes))


@dataclass(frozen=True)
class ParquetSet:
    directory: Path
    sync_id: str
    published_at: datetime

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.rglob("*") if f.is_file())


@dataclass(frozen=True)
class Pruned:
    """What one prune of one connection kept and removed."""

    kept: list[ParquetSet]
    removed: list[ParquetSet]
    freed_bytes: int


def published_sets(parquet_dir: Path, connection_id: str) -> list[ParquetSet]:
    """The connection's complete sets, oldest first, as their own manifests date them.

    A folder without a readable manifest is not a set this code wrote: it is never listed, so never deleted.
    """
    sets = []
    for directory in connection_dir(parquet_dir, connection_id).glob(f"{SET_PREFIX}*"):
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
            sets.append(ParquetSet(directory, manifest["sync_id"], datetime.fromisoformat(manifest["published_at"])))
        except (OSError, ValueError, KeyError):
            continue
    return sorted(sets, key=lambda s: s.published_at)


def sets_to_remove(sets: list[ParquetSet], current_sync_id: str | None, retention: Retention,
                   now: datetime) -> list[ParquetSet]:
    """The sets (oldest first) that no rule keeps; see the module's docstring."""
    newest = {s.sync_id for s in sets[-retention.keep_last:]} if retention.keep_last else set()
    return [s for s in _replaced_long_ago(sets, current_sync_id, retention, now) if s.sync_id not in newest]


def _replaced_long_ago(sets: list[ParquetSet], current_sync_id: str | None, retention: Retention,
                       now: datetime) -> list[ParquetSet]:
    """The sets that are not current and were replaced at least ``grace`` ago: no new reader starts on them."""
    replaced_at = {s.sync_id: successor.published_at for s, successor in zip(sets, sets[1:])}
    return [s for s in sets
            if s.sync_id != current_sync_id and now - replaced_at.get(s.sync_id, now) >= retention.grace]


def prune_connection(parquet_dir: Path, connection_id: str, retention: Retention, *, dry_run: bool = False,
                     now: datetime | None = None) -> Pruned:
    """Remove the connection's sets that no rule keeps (nothing with ``dry_run``), and dead partial writes."""
    now = now or datetime.now(UTC)
    sets = published_sets(parquet_dir, connection_id)
    manifest = current_manifest(parquet_dir, connection_id)
    removed = sets_to_remove(sets, manifest and manifest["sync_id"], retention, now)
    freed = sum(s.size_bytes for s in removed)
    if not dry_run:
        for parquet_set in removed:
            _remove(parquet_set.directory)
        for parquet_set in _replaced_long_ago(sets, manifest and manifest["sync_id"], retention, now):
            (parquet_set.directory / WAREHOUSE_COPY).unlink(missing_ok=True)
        _remove_dead_partials(connection_dir(parquet_dir, connection_id), retention.grace, now)
    return Pruned([s for s in sets if s not in removed], removed, freed)


def _remove(directory: Path) -> None:
    """Hide the whole set at once (a rename), then delete it; a prune that dies midway is finished next time."""
    hidden = directory.with_name(f".{directory.name}{PRUNING_SUFFIX}")
    try:
        directory.rename(hidden)
    except FileNotFoundError:  # another prune took it
        return
    shutil.rmtree(hidden, ignore_errors=True)


def _remove_dead_partials(directory: Path, grace: timedelta, now: datetime) -> None:
    for leftover in [*directory.glob(f".{SET_PREFIX}*.partial"), *directory.glob(f".{SET_PREFIX}*{PRUNING_SUFFIX}")]:
        modified = datetime.fromtimestamp(leftover.stat().st_mtime, UTC)
        if leftover.name.endswith(PRUNING_SUFFIX) or now - modified >= grace:
            shutil.rmtree(leftover, ignore_errors=True)
