"""`dirsync groups`: the groups an admin chooses from, with member counts, selection and roles."""

from __future__ import annotations

import argparse
import sys

import polars as pl

from dirsync_pipeline.cli.options import add_config_args, selected_connection_ids
from dirsync_pipeline.config import ConnectionConfig, load_config
from dirsync_pipeline.defs.resources import GoogleDirectoryResource
from dirsync_pipeline.transforms.directory import resolve_group_keys


def register(subcommands: argparse._SubParsersAction) -> None:
    groups = subcommands.add_parser("groups", help="list the groups an admin can select, with member counts")
    add_config_args(groups)
    groups.add_argument("--search", help="only groups whose email or name contains TEXT")
    groups.set_defaults(command=cmd_groups)


def cmd_groups(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    google = GoogleDirectoryResource(config_path=args.config)
    ids = selected_connection_ids(config, args)
    try:
        for connection_id in ids:
            connection = config.connection(connection_id)
            with google.client(connection) as client:
                groups = client.fetch_groups().sort("email")
            print_groups(connection, groups, args.search)
    finally:
        google.close()
    return 0


def print_groups(connection: ConnectionConfig, groups: pl.DataFrame, search: str | None) -> None:
    selected_keys = groups["group_id"].to_list() if connection.selected_groups == "all" else connection.selected_groups
    selected = set(resolve_group_keys(groups, selected_keys).group_ids)
    roles_by_group: dict[str, list[str]] = {}
    for key, roles in connection.mapped_roles().items():
        for group_id in resolve_group_keys(groups, [key]).group_ids:
            roles_by_group.setdefault(group_id, []).extend(roles)
    print(f"connection {connection.id}: {groups.height} groups")
    print(f"  {'email':<44} {'members':>7}  {'selected':<8}  roles")
    for row in groups.iter_rows(named=True):
        if search and search.lower() not in f"{row['email']} {row['name'] or ''}".lower():
            continue
        mark = "yes" if row["group_id"] in selected else ""
        roles = ", ".join(roles_by_group.get(row["group_id"], []))
        print(f"  {row['email']:<44} {row['direct_members_count']:>7}  {mark:<8}  {roles}")
    if connection.selected_groups != "all":
        _warn_unknown(groups, "selected_groups", connection.selected_groups)
    _warn_unknown(groups, "role_mapping", list(connection.role_mapping))


def _warn_unknown(groups: pl.DataFrame, key: str, group_keys: list[str]) -> None:
    unknown = resolve_group_keys(groups, group_keys).unknown_keys
    if unknown:
        print(f"  warning: {key} names groups that do not exist (deleted or misspelt): {', '.join(unknown)}", file=sys.stderr)
