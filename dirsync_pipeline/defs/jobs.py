"""Sync Now (a job), the hourly sync (a schedule over every enabled connection), and the remap job."""

from __future__ import annotations

import dagster as dg

from dirsync_pipeline.defs.assets import GROUP_NAME
from dirsync_pipeline.defs.partitions import CONNECTIONS
from dirsync_pipeline.defs.resources import ConnectionsResource
from dirsync_pipeline.warehouse.tables import GOOGLE_ASSET_KEYS

TRIGGER_TAG = "dirsync/trigger"
HOURLY_CRON = "0 * * * *"

sync_job = dg.define_asset_job(
    "directory_sync",
    selection=dg.AssetSelection.groups(GROUP_NAME),
    executor_def=dg.in_process_executor,  # one process: no per-step Python start, one DuckDB writer
    tags={TRIGGER_TAG: "manual"},
    description="Sync one Google Workspace connection end to end (Sync Now). Pick the connection as the partition.",
)

remap_job = dg.define_asset_job(
    "directory_remap",
    selection=dg.AssetSelection.groups(GROUP_NAME) - dg.AssetSelection.assets(*GOOGLE_ASSET_KEYS),
    executor_def=dg.in_process_executor,
    tags={TRIGGER_TAG: "manual"},
    description="Replay the connection's last published snapshot with the current config (role_mapping, "
                "default_role, role_assignment): no Google call. Pick the connection as the partition.",
)


@dg.schedule(
    name="hourly_directory_sync", job=sync_job, cron_schedule=HOURLY_CRON, execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour, one run per enabled connection of the registry (a disabled one is skipped).",
)
def hourly_directory_sync(
    context: dg.ScheduleEvaluationContext, connections: ConnectionsResource
) -> list[dg.RunRequest] | dg.SkipReason:
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    # A connection added seconds ago becomes a partition at the sensor's next tick, which also syncs it.
    partitions = set(context.instance.get_dynamic_partitions(CONNECTIONS.name))
    enabled = [c for c in connections.registry.enabled_ids() if c in partitions]
    return [
        dg.RunRequest(run_key=f"{connection_id}-{tick}", partition_key=connection_id, tags={TRIGGER_TAG: "schedule"})
        for connection_id in enabled
    ] or dg.SkipReason("no enabled connection is registered")
