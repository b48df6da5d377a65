"""The mass-removal circuit breaker: never let a suspiciously destructive sync through unnoticed.

The worst failure in this field is Google answering incompletely while saying success, and the syncer
then revoking everyone's access. Like Okta (pauses imports above 20% unassigned) and Entra
(quarantines a job over its deletion threshold), dirsync compares a sync with the last published
snapshot of the same connection and refuses to publish when too much would disappear.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from dirsync_pipeline.tables import FILTERED_MEMBERSHIPS, GOOGLE_USERS, ROLE_MAPPED_ENTITLEMENTS, Table
from dirsync_pipeline.warehouse import Warehouse

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


def removal(table: Table, describe_by: tuple[str, ...], published: pl.DataFrame, staged: pl.DataFrame) -> Removal:
    """Rows of ``published`` whose key is absent from ``staged`` (keys are immutable ids)."""
    gone = published.join(staged.select(table.key), on=list(table.key), how="anti")
    sample = gone.head(SAMPLE_SIZE).select(pl.concat_str(list(describe_by), separator=" / "))
    return Removal(table.qualified_name, published.height, gone.height, tuple(sample.to_series().to_list()))


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
    return [
        removal(table, describe_by, warehouse.read_published(table, connection_id), warehouse.read_staged(table, connection_id))
        for table, describe_by in GUARDED_TABLES
    ]
