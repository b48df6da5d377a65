"""The code location: every Dagster definition of dirsync, assembled in one place."""

import os
from pathlib import Path

import dagster as dg

from dirsync_pipeline.config import CONFIG_ENV_VAR, load_config
from dirsync_pipeline.defs.assets import SYNC_ASSETS
from dirsync_pipeline.defs.jobs import hourly_directory_sync, remap_job, sync_job
from dirsync_pipeline.defs.resources import (
    ConnectionsResource,
    GoogleDirectoryResource,
    StagingIOManager,
    WarehouseResource,
)
from dirsync_pipeline.defs.sensors import connections_sensor


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    """Definitions for a dirsync config file (None: $DIRSYNC_CONFIG, else the embedded demo default).

    The config names the warehouse folder; which connections exist is read from its registry at run time.
    """
    config_path = config_path or os.environ.get(CONFIG_ENV_VAR)
    config = load_config(config_path)
    warehouse_dir = str(config.warehouse.path.resolve())
    parquet_dir = str(config.warehouse.parquet_path.resolve())
    retention = config.warehouse.parquet_retention
    return dg.Definitions(
        assets=SYNC_ASSETS,
        jobs=[sync_job, remap_job],
        schedules=[hourly_directory_sync],
        sensors=[connections_sensor],
        resources={
            "connections": ConnectionsResource(config_path=str(Path(config_path).resolve()) if config_path else None,
                                               warehouse_dir=warehouse_dir),
            "google": GoogleDirectoryResource(),
            "warehouse": WarehouseResource(warehouse_dir=warehouse_dir, parquet_dir=parquet_dir,
                                           parquet_keep_last=retention.keep_last,
                                           parquet_grace_minutes=retention.grace_minutes),
            "staging_io_manager": StagingIOManager(warehouse_dir=warehouse_dir, parquet_dir=parquet_dir),
        },
        executor=dg.in_process_executor,
    )


defs = build_definitions()
