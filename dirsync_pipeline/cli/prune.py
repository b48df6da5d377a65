"""`dirsync prune`: remove the Parquet sets the retention no longer keeps, as each publish does.

Safe while syncs run and consumers read: the current set, the newest ones and those replaced within the
grace period are kept (warehouse/retention.py), and it reads no DuckDB file (a sync holds it).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from dirsync_pipeline.cli.options import add_config_args, open_config_registry, selected_connection_ids
from dirsync_pipeline.warehouse.retention import Retention, prune_connection


def register(subcommands: argparse._SubParsersAction) -> None:
    prune = subcommands.add_parser(
        "prune", help="remove old Parquet sets now (each publish prunes too), keeping what consumers may read",
        description="Keep each connection's newest warehouse.parquet_retention.keep_last sets (default 24), its "
                    "current set, and sets replaced less than grace_minutes (default 60) ago; remove the rest.",
    )
    add_config_args(prune)
    prune.add_argument("--keep-last", type=int, metavar="N",
                       help="keep the N newest sets this time (default: warehouse.parquet_retention.keep_last)")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    prune.set_defaults(command=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    config, registry = open_config_registry(args)
    retention = Retention.of(config.warehouse.parquet_retention)
    if args.keep_last is not None:
        if args.keep_last < 1:
            raise SystemExit("dirsync: --keep-last must be at least 1 (the current set is always kept)")
        retention = replace(retention, keep_last=args.keep_last)
    verb = "would remove" if args.dry_run else "removed"
    for connection_id in selected_connection_ids(registry, args):
        pruned = prune_connection(config.warehouse.parquet_path, connection_id, retention, dry_run=args.dry_run)
        print(f"{connection_id}: {verb} {len(pruned.removed)} Parquet set(s) ({pruned.freed_bytes / 1e6:.1f} MB), "
              f"kept {len(pruned.kept)}")
        for parquet_set in pruned.removed:
            print(f"  {verb} {parquet_set.directory.name} (published {parquet_set.published_at:%Y-%m-%d %H:%M:%S} UTC)")
    return 0
