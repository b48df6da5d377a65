"""`dirsync groups`: the groups an admin chooses from, with member counts, selection and roles."""

from __future__ import annotations

import argparse
import sys

import polars as pl

from dirsync_pipeline.cli.options import add_config_args, open_config_registry, selected_connection_ids
from dirsync_pipeline.config import ConnectionConfig
from dirsync_pipeline.defs.resources import GoogleDirectoryResource
from dirsync_pipeline.transforms.directory import resolve_group_keys


def register(subcommands: argparse._SubParsersAction) -> None:
    groups = subcommands.add_parser("groups", help="list the groups an admin can select, with member counts")
    add_config_args(groups)
    groups.add_argument("--search", help="only groups whose email or name contains TEXT")
    groups.set_defaults(command=cmd_groups)


def cmd_groups(args: argparse.Namespace) -> int:
    _config, registry = open_config_registry(args)
    google = GoogleDirectoryResource()
    ids = selected_connection_ids(registry, args)
    shown = 0
    try:
        for connection_id in ids:
            connection = registry.connection(connection_id)
            with google.client(connection) as client:
                groups = client.fetch_groups().sort("email")
            shown += print_groups(connection, groups, args.search)
    finally:
        google.close()
    return 0 if shown or not args.search else 1  # like grep: a search that matched nothing is exit code 1


def print_groups(connection: ConnectionConfig, groups: pl.DataFrame, search: str | None) -> int:
    """Print the connection's groups (those matching ``search`` if given); returns how many were listed."""
    selected_keys = groups["group_id"].to_list() if connection.selected_groups == "all" else connection.selected_groups
    selected = set(resolve_group_keys(groups, selected_keys).group_ids)
    roles_by_group: dict[str, list[str]] = {}
    for key, roles in connection.mapped_roles().items():
        for group_id in resolve_group_keys(groups, [key]).group_ids:
            roles_by_group.setdefault(group_id, []).extend(roles)
    listed = groups if search is None else matching(groups, search)
    if search is None:
        print(f"connection {connection.id}: {groups.height} groups")
    elif listed.is_empty():
        print(f"connection {connection.id}: no group's email or name contains {search!r} ({groups.height} groups)")
    else:
        print(f"connection {connection.id}: {listed.height} of {groups.height} groups match {search!r}")
    if not listed.is_empty():
        print(f"  {'email':<44} {'members':>7}  {'selected':<8}  roles")
    for row in listed.iter_rows(named=True):
        mark = "yes" if row["group_id"] in selected else ""
        roles = ", ".join(roles_by_group.get(row["group_id"], []))
        print(f"  {row['email']:<44} {row['direct_members_count']:>7}  {mark:<8}  {roles}")
    if connection.selected_groups != "all":
        _warn_unknown(groups, "selected_groups", connection.selected_groups)
    _warn_unknown(groups, "role_mapping", list(connection.role_mapping))
    return listed.height


def matching(groups: pl.DataFrame, search: str) -> pl.DataFrame:
    """The groups whose email or name contains ``search``, case-insensitively."""
    text = pl.concat_str(pl.col("email"), pl.col("name").fill_null(""), separator=" ").str.to_lowercase()
    return groups.filter(text.str.contains(search.lower(), literal=True))


def _warn_unknown(groups: pl.DataFrame, key: str, group_keys: list[str]) -> None:
    unknown = resolve_group_keys(groups, group_keys).unknown_keys
    if unknown:
        print(f"  warning: {key} names groups that do not exist (deleted or misspelt): {', '.join(unknown)}", file=sys.stderr)
