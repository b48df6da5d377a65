"""What one sync did, in the Dagster UI: API work, duration, published counts and change events.

It is attached to the ``published_directory`` materialization, the event that *is* the sync from an
operator's point of view, so the asset page charts every number over time and the run log shows it.
The API counters are summed from this run's own fetch materializations (each fetch asset records its
client's counters); the counts and change events are read back from what the publish just committed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
import duckdb

from dirsync_pipeline.warehouse.tables import DIRECTORY_CHANGES, EVENTS, SYNC_LOG
from dirsync_pipeline.warehouse.store import Warehouse

API_COUNTERS = ("api_requests", "api_retries", "rate_limit_wait_seconds")
COUNTED = ("users", "groups", "memberships", "entitlements")  # columns of core.sync_log


@dataclass(frozen=True)
class SyncReport:
    api_requests: int
    api_retries: int
    rate_limit_wait_seconds: float
    duration_seconds: float
    counts: Mapping[str, int]
    events: Mapping[str, int]

    @property
    def api_pages(self) -> int:
        """Every request that did not fail returned one page; each retry stands for one failed request."""
        return self.api_requests - self.api_retries

    def metadata(self, syncs_published: int) -> dict[str, object]:
        """The report as materialization metadata; ``core.sync_log`` is the table the publish appends to."""
        return {
            "dagster/row_count": syncs_published,
            "dagster/column_schema": SYNC_LOG.dagster_column_schema(),
            "dagster/table_name": SYNC_LOG.qualified_name,
            "preview": dg.MetadataValue.md(self.markdown()),
            "sync.api_requests": self.api_requests,
            "sync.api_pages": self.api_pages,
            "sync.api_retries": self.api_retries,
            # Every worker thread waits for its own slot: the sum can exceed the sync's wall-clock duration.
            "sync.rate_limit_wait_worker_seconds": round(self.rate_limit_wait_seconds, 3),
            "sync.duration_seconds": round(self.duration_seconds, 3),
            **{f"sync.{name}": n for name, n in self.counts.items()},
            **{f"events.{event}": n for event, n in self.events.items()},
        }

    def markdown(self) -> str:
        changed = ", ".join(f"{event} {n}" for event, n in self.events.items() if n) or "none"
        rows = [
            ("duration", f"{self.duration_seconds:.1f} s"),
            ("API requests", f"{self.api_requests} ({self.api_pages} pages, {self.api_retries} retries)"),
            ("rate-limit waits", f"{self.rate_limit_wait_seconds:.1f} s, summed over the concurrent workers"),
            *((name, str(n)) for name, n in self.counts.items()),
            ("change events", changed),
        ]
        return "\n".join(["| this sync | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def sync_report_metadata(context: dg.AssetExecutionContext, warehouse: Warehouse, connection_id: str) -> dict[str, object]:
    """Metadata for the publish materialization of this run (call it after the publish committed)."""
    instance, run_id = context.instance, context.run.run_id
    record = instance.get_run_record_by_id(run_id)
    totals = api_totals(instance, run_id)
    with warehouse.connect(read_only=True) as conn:
        counts = published_counts(conn, connection_id, run_id)
        events = change_counts(conn, connection_id, run_id)
        syncs = conn.execute(f"SELECT count(*) FROM {SYNC_LOG.qualified_name} WHERE connection_id = ?",
                             [connection_id]).fetchone()[0]
    report = SyncReport(
        api_requests=int(totals["api_requests"]), api_retries=int(totals["api_retries"]),
        rate_limit_wait_seconds=totals["rate_limit_wait_seconds"],
        duration_seconds=time.time() - record.start_time if record and record.start_time else 0.0,
        counts=counts, events=events,
    )
    return report.metadata(syncs)


def api_totals(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """The API counters of every materialization of the run, summed."""
    totals = dict.fromkeys(API_COUNTERS, 0.0)
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        metadata = materialization.metadata if materialization else {}
        for key in API_COUNTERS:
            if key in metadata:
                totals[key] += float(metadata[key].value)
    return totals


def published_counts(conn: duckdb.DuckDBPyConnection, connection_id: str, sync_id: str) -> dict[str, int]:
    row = conn.execute(
        f"SELECT {', '.join(COUNTED)} FROM {SYNC_LOG.qualified_name} WHERE connection_id = ? AND sync_id = ?",
        [connection_id, sync_id],
    ).fetchone()
    return dict(zip(COUNTED, row or (0,) * len(COUNTED), strict=True))


def change_counts(conn: duckdb.DuckDBPyConnection, connection_id: str, sync_id: str) -> dict[str, int]:
    """Events of every kind this sync appended to core.directory_changes (zeros too, so charts line up)."""
    found = dict(conn.execute(
        f"SELECT event, count(*) FROM {DIRECTORY_CHANGES.qualified_name} WHERE connection_id = ? AND sync_id = ? "
        "GROUP BY event", [connection_id, sync_id],
    ).fetchall())
    return {event: int(found.get(event, 0)) for event in EVENTS}
