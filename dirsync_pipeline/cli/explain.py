"""`dirsync explain USER`: why a user holds each role, from the current Parquet outputs.

It reads the Parquet set named by each connection's manifest, never the DuckDB file, so it works (and
shows a consistent published state) while a sync is running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from dirsync_pipeline.cli.options import add_config_args, open_config_registry, selected_connection_ids
from dirsync_pipeline.transforms.explain import describe_rule, no_role_reason
from dirsync_pipeline.warehouse.outputs import connection_dir, current_manifest


def register(subcommands: argparse._SubParsersAction) -> None:
    explain = subcommands.add_parser("explain", help="why a user holds each role: the rule and the group paths")
    explain.add_argument("user", help="primary email, alias or Google user id")
    add_config_args(explain)
    explain.set_defaults(command=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    config, registry = open_config_registry(args)
    ids = selected_connection_ids(registry, args)
    found = False
    for connection_id in ids:
        manifest = current_manifest(config.warehouse.parquet_path, connection_id)
        if manifest is None:
            print(f"{connection_id}: never published; run `dirsync sync` first", file=sys.stderr)
            continue
        found |= explain_user(connection_dir(config.warehouse.parquet_path, connection_id), manifest, args.user)
    if not found:
        print(f"dirsync: no user {args.user!r} in the published directory of {ids}", file=sys.stderr)
        return 1
    return 0


def explain_user(directory: Path, manifest: dict, key: str) -> bool:
    """Print the explanation of the user matching ``key`` in one connection's set; False when not there."""
    def read(name: str) -> pl.DataFrame:
        return pl.read_parquet(directory / manifest["files"][name]["path"])

    wanted = key.lower()
    users = read("users").filter(
        (pl.col("primary_email") == wanted) | (pl.col("user_id") == key) | pl.col("aliases").list.contains(wanted))
    if users.is_empty():
        return False
    user = users.row(0, named=True)
    print(f"{user['primary_email']} (user {user['user_id']}, connection {manifest['connection_id']}, "
          f"sync {manifest['sync_id']} published {manifest['published_at']})")
    roles = read("explanations").filter(pl.col("user_id") == user["user_id"]).sort("role")
    if roles.is_empty():
        print(f"  no role: {no_role_reason(user, read('memberships').filter(pl.col('user_id') == user['user_id']))}")
    for row in roles.iter_rows(named=True):
        print(f"  {row['role']}\n    rule: {describe_rule(row)}")
        for index, path in enumerate(row["paths"]):
            print(f"    {'via: ' if index == 0 else '     '}{path}")
    return True
