"""The code location: every Dagster definition of dirsync, assembled in one place."""


import os
from pathlib import Path

import dagster as dg

from dirsync_pipeline.defs.assets import build_sync_assets
from dirsync_pipeline.config import CONFIG_ENV_VAR, load_config
from dirsync_pipeline.defs.jobs import build_hourly_schedule, build_remap_job, build_sync_job
from dirsync_pipeline.defs.resources import GoogleDirectoryResource, StagingIOManager, WarehouseResource


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    """Definitions for a dirsync config file (None: $DIRSYNC_CONFIG, else the embedded demo default)."""
    config_path = config_path or os.environ.get(CONFIG_ENV_VAR)
    config = load_config(config_path)
    duckdb_path = str(config.warehouse.duckdb_path.resolve())
    parquet_dir = str(config.warehouse.parquet_path.resolve())
    retention = config.warehouse.parquet_retention
    partitions = dg.StaticPartitionsDefinition(config.connection_ids)
    job = build_sync_job()
    return dg.Definitions(
        assets=build_sync_assets(partitions),
        jobs=[job, build_remap_job()],
        schedules=[build_hourly_schedule(job, config.connection_ids)],
        resources={
            "google": GoogleDirectoryResource(config_path=str(Path(config_path).resolve()) if config_path else None),
            "warehouse": WarehouseResource(duckdb_path=duckdb_path, parquet_dir=parquet_dir,
                                           parquet_keep_last=retention.keep_last,
                                           parquet_grace_minutes=retention.grace_minutes),
            "staging_io_manager": StagingIOManager(duckdb_path=duckdb_path, parquet_dir=parquet_dir),
        },
        executor=dg.in_process_executor,
    )


defs = build_definitions()
