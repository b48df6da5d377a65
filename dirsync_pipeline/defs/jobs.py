"""Sync Now (a job) and the hourly sync (a schedule over every connection)."""

from __future__ import annotations


import dagster as dg

from dirsync_pipeline.defs.assets import GROUP_NAME
from dirsync_pipeline.warehouse.tables import GOOGLE_ASSET_KEYS

TRIGGER_TAG = "dirsync/trigger"
HOURLY_CRON = "0 * * * *"


def build_sync_job() -> dg.UnresolvedAssetJobDefinition:
    """``directory_sync``: the whole graph for one connection; launching it from the UI is Sync Now."""
    return dg.define_asset_job(
        "directory_sync",
        selection=dg.AssetSelection.groups(GROUP_NAME),
        executor_def=dg.in_process_executor,  # one process: no per-step Python start, one DuckDB writer
        tags={TRIGGER_TAG: "manual"},
        description="Sync one Google Workspace connection end to end (Sync Now). Pick the connection as the partition.",
    )


def build_remap_job() -> dg.UnresolvedAssetJobDefinition:
    """``directory_remap``: recompute memberships, entitlements and their changes without calling Google."""
    return dg.define_asset_job(
        "directory_remap",
        selection=dg.AssetSelection.groups(GROUP_NAME) - dg.AssetSelection.assets(*GOOGLE_ASSET_KEYS),
        executor_def=dg.in_process_executor,
        tags={TRIGGER_TAG: "manual"},
        description="Replay the connection's last published snapshot with the current config (role_mapping, "
                    "default_role, role_assignment): no Google call. Pick the connection as the partition.",
    )


def build_hourly_schedule(job: dg.UnresolvedAssetJobDefinition, connection_ids: list[str]) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="hourly_directory_sync", job=job, cron_schedule=HOURLY_CRON, execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every hour, sync every connection of the config (one run each).",
    )
    def hourly_directory_sync(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
        return [
            dg.RunRequest(run_key=f"{connection_id}-{tick}", partition_key=connection_id, tags={TRIGGER_TAG: "schedule"})
            for connection_id in connection_ids
        ]

    return hourly_directory_sync
