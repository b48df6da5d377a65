"""Options several commands share: which config, which connection(s)."""

from __future__ import annotations

import argparse

from dirsync_pipeline.config import DirsyncConfig, load_config
from dirsync_pipeline.registry import Registry, RegistryError, open_registry


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: $DIRSYNC_CONFIG, else the embedded demo)")
    parser.add_argument("--connection", help="only this connection id (default: every registered connection)")


def open_config_registry(args: argparse.Namespace) -> tuple[DirsyncConfig, Registry]:
    """The config (``--config``) and its warehouse's registry, the config file's connections registered."""
    config = load_config(getattr(args, "config", None))
    return config, open_registry(config)


def selected_connection_ids(registry: Registry, args: argparse.Namespace, *, enabled_only: bool = False) -> list[str]:
    """``--connection`` (checked against the registry), else every registered (or every enabled) connection.

    With ``enabled_only`` (the commands that sync), a disabled ``--connection`` is refused with how to enable it.
    """
    if args.connection:
        connection = registry.get(args.connection)
        if enabled_only and not connection.enabled:
            raise RegistryError(f"connection {connection.id} is disabled, so it is not synced; enable it with "
                                f"`dirsync connections enable {connection.id}`")
        return [connection.id]
    return registry.enabled_ids() if enabled_only else [c.id for c in registry.list()]
