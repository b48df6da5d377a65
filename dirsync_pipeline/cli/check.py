"""`dirsync check`: would a sync work right now? One token and three tiny calls per connection."""

from __future__ import annotations

import argparse

from dirsync_pipeline.cli.options import add_config_args, open_config_registry, selected_connection_ids
from dirsync_pipeline.config import ConnectionConfig
from dirsync_pipeline.defs.resources import GoogleDirectoryResource
from dirsync_pipeline.google.preflight import check_connection


def register(subcommands: argparse._SubParsersAction) -> None:
    check = subcommands.add_parser(
        "check", help="verify credentials, scopes and admin rights with one small call per endpoint",
        description="Exit 0 only if a sync would work; otherwise each FAIL line says what to fix.",
    )
    add_config_args(check)
    check.set_defaults(command=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    _config, registry = open_config_registry(args)
    verdicts = [check_and_print(registry.connection(cid)) for cid in selected_connection_ids(registry, args)]
    return 0 if all(verdicts) else 1  # every connection is diagnosed, even after a failing one


def check_and_print(connection: ConnectionConfig) -> bool:
    """Print the connection's diagnosis; True when a sync would work."""
    google = GoogleDirectoryResource()
    try:
        report = check_connection(connection, google.endpoint(connection))
    finally:
        google.close()
    print(report.render())
    return report.sync_would_work
