"""`dirsync check`: would a sync work right now? One token and three tiny calls per connection."""

from __future__ import annotations

import argparse

from dirsync_pipeline.config import load_config
from dirsync_pipeline.google.preflight import check_connection
from dirsync_pipeline.resources import GoogleDirectoryResource


def register(subcommands: argparse._SubParsersAction) -> None:
    from dirsync_pipeline.cli import add_config_args

    check = subcommands.add_parser(
        "check", help="verify credentials, scopes and admin rights with one small call per endpoint",
        description="Exit 0 only if a sync would work; otherwise each FAIL line says what to fix.",
    )
    add_config_args(check)
    check.set_defaults(command=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ids = [config.connection(args.connection).id] if args.connection else config.connection_ids
    return 0 if all(check_and_print(args.config, connection_id) for connection_id in ids) else 1


def check_and_print(config_path: str | None, connection_id: str) -> bool:
    """Print the connection's diagnosis; True when a sync would work."""
    connection = load_config(config_path).connection(connection_id)
    google = GoogleDirectoryResource(config_path=config_path)
    try:
        report = check_connection(connection, google.endpoint(connection))
    finally:
        google.close()
    print(report.render())
    return report.sync_would_work
