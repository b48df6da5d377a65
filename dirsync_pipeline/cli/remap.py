"""`dirsync remap`: recompute roles from the last published snapshot with the current config, no Google call.

Runs the ``directory_remap`` job: memberships, entitlements and explanations are recomputed from the
Parquet snapshot of the connection's last published sync (replay.py) with the config as it is now
(role_mapping, default_role, role_assignment, role_priority), then published with their change events.
"""

from __future__ import annotations

import argparse

import polars as pl

from dirsync_pipeline.cli.options import add_config_args
from dirsync_pipeline.cli.sync import add_mass_removal_arg, run_connections
from dirsync_pipeline.config import DirsyncConfig
from dirsync_pipeline.warehouse.outputs import connection_dir, current_manifest


def register(subcommands: argparse._SubParsersAction) -> None:
    remap = subcommands.add_parser(
        "remap", help="recompute roles from the last published snapshot with the current config (no Google call)")
    add_config_args(remap)
    add_mass_removal_arg(remap)
    remap.set_defaults(command=cmd_remap)


def cmd_remap(args: argparse.Namespace) -> int:
    return run_connections(args, "directory_remap", "remap", on_success=print_changes)


def print_changes(config: DirsyncConfig, connection_id: str) -> None:
    """The change events the run just published, counted by event."""
    parquet_dir = config.warehouse.parquet_path
    manifest = current_manifest(parquet_dir, connection_id)
    changes = pl.read_parquet(connection_dir(parquet_dir, connection_id) / manifest["files"]["changes"]["path"])
    counts = changes.group_by("event").len().sort("event").iter_rows()
    print(f"{connection_id}: {', '.join(f'{n} {event}' for event, n in counts) or 'no change'}")
