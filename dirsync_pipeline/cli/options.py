"""Options several commands share: which config, which connection(s)."""

from __future__ import annotations

import argparse

from dirsync_pipeline.config import DirsyncConfig


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: $DIRSYNC_CONFIG, else the embedded demo)")
    parser.add_argument("--connection", help="only this connection id (default: every connection)")


def selected_connection_ids(config: DirsyncConfig, args: argparse.Namespace) -> list[str]:
    """``--connection`` (checked against the config), else every connection of the config."""
    return [config.connection(args.connection).id] if args.connection else config.connection_ids
