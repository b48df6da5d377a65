"""Replay without Google: a stage a run does not recompute is the last published sync's, from its snapshot.

Re-materializing only the downstream assets (in the UI, or ``dirsync remap``, which runs the
``directory_remap`` job) must not call Google, and must not pick up whatever a failed run left in
staging. So before a stage that this run does not materialize is read or published, it is restored
from the Parquet set of the connection's last published sync: the run recomputes memberships,
entitlements and explanations with the current config from exactly what was last published.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from dirsync_pipeline.warehouse.outputs import read_snapshot
from dirsync_pipeline.warehouse.tables import SYNC_LOG, SYNC_TABLES, Table
from dirsync_pipeline.transforms.directory import nested_group_closure
from dirsync_pipeline.warehouse.store import Warehouse


def materialized_in_run(job: dg.JobDefinition) -> set[dg.AssetKey]:
    """The assets the current run materializes: its job's, or the subset selected in the UI or CLI.

    Dagster builds a run's job from the selection, so its asset layer lists exactly those assets.
    """
    return set(job.asset_layer.executable_asset_keys)


def last_published_sync(warehouse: Warehouse, connection_id: str) -> str:
    log = warehouse.read_published(SYNC_LOG, connection_id)
    if log.is_empty():
        raise dg.Failure(
            description=f"Connection {connection_id} has never been published, so there is no snapshot to replay: "
                        "run the full `directory_sync` job (or `dirsync sync`) first."
        )
    return log.sort("published_at")["sync_id"][-1]


def restore_stage(warehouse: Warehouse, table: Table, connection_id: str) -> pl.DataFrame:
    """Stage ``table`` as the connection's last published sync left it, and return it."""
    frame = read_snapshot(warehouse.parquet_dir, connection_id, last_published_sync(warehouse, connection_id), table)
    warehouse.stage(table, frame)
    return frame


def restore_unmaterialized_stages(
    warehouse: Warehouse, connection_id: str, materialized: set[dg.AssetKey]
) -> list[Table]:
    """Restore every stage this run does not materialize, so the publish step publishes one consistent set."""
    restored = [t for t in SYNC_TABLES if t.asset_key not in materialized]
    for table in restored:
        restore_stage(warehouse, table, connection_id)
    return restored


def require_members_in_snapshot(groups: pl.DataFrame, edges: pl.DataFrame, selected_group_ids: list[str]) -> None:
    """Refuse a replay whose selected groups (or groups nested in them) had no members fetched.

    A snapshot holds the members of the groups selected when it was taken. A group selected since then
    that is not empty would silently lose its members, so replay stops and asks for a full sync.
    """
    reached = nested_group_closure(edges, selected_group_ids).select("group_id").unique()
    missing = (
        reached.join(edges.select("group_id").unique(), on="group_id", how="anti")
        .join(groups.filter(pl.col("direct_members_count") > 0), on="group_id")
        .sort("email")["email"].to_list()
    )
    if missing:
        raise dg.Failure(
            description=f"The snapshot lacks the members of {len(missing)} selected or nested group(s) "
                        f"({', '.join(missing[:10])}): selected_groups changed since the last full sync. "
                        "Replay can only remap roles; run the full `directory_sync` job (or `dirsync sync`).",
        )
