"""The mass-removal circuit breaker: never let a suspiciously destructive sync through unnoticed.

The worst failure in this field is Google answering incompletely while saying success, and the syncer
then revoking everyone's access. Like Okta (pauses imports above 20% unassigned) and Entra
(quarantines a job over its deletion threshold), dirsync compares a sync with the last published
snapshot of the same connection and refuses to publish when too much would disappear.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from dirsync_pipeline.warehouse.tables import FILTERED_MEMBERSHIPS, GOOGLE_USERS, ROLE_MAPPED_ENTITLEMENTS, Table
from dirsync_pipeline.warehouse.store import Warehouse, staging_name

SAMPLE_SIZE = 10

# What the breaker watches: the table, and the columns that describe a removed row to a person.
GUARDED_TABLES: tuple[tuple[Table, tuple[str, ...]], ...] = (
    (GOOGLE_USERS, ("primary_email",)),
    (FILTERED_MEMBERSHIPS, ("primary_email", "group_email")),
    (ROLE_MAPPED_ENTITLEMENTS, ("primary_email", "role")),
)


@dataclass(frozen=True)
class Removal:
    """Rows of a published table that the new sync would remove."""

    table: str
    published: int
    removed: int
    sample: tuple[str, ...]

    @property
    def share(self) -> float:
        return self.removed / self.published if self.published else 0.0

    def exceeds(self, max_share: float, max_count: int | None) -> bool:
        too_many = max_count is not None and self.removed > max_count
        return self.published > 0 and (self.share > max_share or too_many)

    def describe(self) -> str:
        return f"{self.table}: {self.removed} of {self.published} rows ({self.share:.0%})"


def removal(
    conn: duckdb.DuckDBPyConnection, table: Table, describe_by: tuple[str, ...], connection_id: str, *,
    published: str, staged: str,
) -> Removal:
    """Rows of ``published`` whose key is absent from ``staged`` (keys are immutable ids), counted in DuckDB."""
    matches = " AND ".join(f"s.{k} = p.{k}" for k in table.key)
    gone = (f"FROM {published} p WHERE p.connection_id = $id AND NOT EXISTS "
            f"(SELECT 1 FROM {staged} s WHERE s.connection_id = $id AND {matches})")
    params = {"id": connection_id}
    total = conn.execute(f"SELECT count(*) FROM {published} WHERE connection_id = $id", params).fetchone()[0]
    removed = conn.execute(f"SELECT count(*) {gone}", params).fetchone()[0] if total else 0
    if not removed:  # a first sync, or nothing gone: no sample to look for
        return Removal(table.qualified_name, total, 0, ())
    described = ", ".join(f"p.{c}" for c in describe_by)
    sample = conn.execute(f"SELECT concat_ws(' / ', {described}) {gone} ORDER BY ALL LIMIT {SAMPLE_SIZE}", params).fetchall()
    return Removal(table.qualified_name, total, removed, tuple(row[0] for row in sample))


def breaker_message(tripped: list[Removal], max_share: float, max_count: int | None) -> str:
    limit = f"{max_share:.0%}" + (f" or {max_count} rows" if max_count is not None else "")
    details = "; ".join(r.describe() + f" e.g. {', '.join(r.sample[:3])}" for r in tripped)
    return (
        f"Mass-removal breaker: this sync would remove more than {limit} of the published data ({details}). "
        "Nothing was published; the last good data is kept. If Google's answer is right and the removal is "
        "intended, let this one sync through with `dirsync sync --allow-mass-removal`, or launch the job with "
        "run config `ops: {published_directory: {config: {allow_mass_removal: true}}}`."
    )


def staged_removals(warehouse: Warehouse, connection_id: str) -> list[Removal]:
    """What publishing the connection's staged sync would remove from each guarded table."""
    with warehouse.connect() as conn:
        return [removal(conn, table, describe_by, connection_id, published=table.qualified_name, staged=staging_name(table))
                for table, describe_by in GUARDED_TABLES]
