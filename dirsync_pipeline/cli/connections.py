"""`dirsync connections ...`: the admin flow of an organisation, at run time.

An organisation's admin authorises read-only access, picks the groups to sync, maps them to roles and enables
sync: ``add`` registers it (validated as a config file's ``connections:`` entry), and the running Dagster
instance picks it up at its sensor's next tick (connections_sensor) and syncs it at once; nothing restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dirsync_pipeline.cli.options import open_config_registry
from dirsync_pipeline.config import load_connection_file
from dirsync_pipeline.registry import RegisteredConnection, RegistryError
from dirsync_pipeline.warehouse.outputs import connection_dir
from dirsync_pipeline.warehouse.store import Warehouse

LIST_COLUMNS = ("id", "enabled", "status", "last_synced_at", "last_error")


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "connections", help="add, change, enable, disable, remove and list the organisations dirsync syncs",
        description="The connections registry (registry.sqlite in the warehouse folder). Changes count at once: "
                    "a running `dagster dev` or daemon syncs an added connection within a minute.")
    parser.add_argument("--config", help="config file naming the warehouse (default: $DIRSYNC_CONFIG, else the "
                                         "embedded default, whose warehouse is ./data)")
    actions = parser.add_subparsers(required=True, metavar="ACTION")

    add = actions.add_parser("add", help="register a connection from a YAML or JSON file (refused if its id exists)")
    add.add_argument("--file", required=True, help="one connection, in the schema of a config's `connections:` entry")
    add.set_defaults(command=cmd_add)

    update = actions.add_parser("update", help="replace a connection's settings (groups, role mapping, credentials, "
                                               "limits) from a file")
    update.add_argument("id")
    update.add_argument("--file", required=True, help="the connection's new settings (its `id` may be left out)")
    update.set_defaults(command=cmd_update)

    listing = actions.add_parser("list", help="every connection with its status, last sync and last error")
    listing.add_argument("--json", action="store_true", help="a JSON array of objects")
    listing.set_defaults(command=cmd_list)

    for action, enabled in (("enable", True), ("disable", False)):
        toggle = actions.add_parser(action, help=f"{action} the hourly and first syncs of a connection")
        toggle.add_argument("id")
        toggle.set_defaults(command=cmd_enable if enabled else cmd_disable)

    remove = actions.add_parser("remove", help="unregister a connection and purge all its rows (history and change "
                                               "events included) and its Parquet outputs")
    remove.add_argument("id")
    remove.set_defaults(command=cmd_remove)


def cmd_add(args: argparse.Namespace) -> int:
    connection = load_connection_file(args.file)
    _config, registry = open_config_registry(args)
    added = registry.add(connection)
    print(f"connection {added.id} added ({added.status}): a running dagster dev or daemon syncs it within a minute; "
          f"or sync it now with `dirsync sync --connection {added.id}`")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    _config, registry = open_config_registry(args)
    registry.get(args.id)  # an unknown id first: the file may be right for another connection
    connection = load_connection_file(args.file, default_id=args.id)
    if connection.id != args.id:
        raise RegistryError(f"{args.file} is for connection {connection.id!r}, not {args.id!r}; fix its `id` or "
                            "leave it out")
    registry.update(connection)
    print(f"connection {args.id} updated: the next sync uses the new settings (`dirsync sync --connection {args.id}` "
          "now, or the hourly schedule)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    _config, registry = open_config_registry(args)
    connections = registry.list()
    if args.json:
        print(json.dumps([c.as_record() for c in connections], indent=1))
        return 0
    rows = [[_cell(c, column) for column in LIST_COLUMNS] for c in connections]
    widths = [max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(LIST_COLUMNS[:-1])]
    for row in [list(LIST_COLUMNS), *rows]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False)) + "  " + row[-1])
    if not connections:
        print("(no connection registered: `dirsync connections add --file F`)")
    return 0


def _cell(connection: RegisteredConnection, column: str) -> str:
    value = connection.as_record()[column]
    if column == "last_error" and value:
        first_line = value.splitlines()[0]
        return first_line if len(first_line) <= 100 else first_line[:97] + "..."
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_enabled(args, True)


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_enabled(args, False)


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    _config, registry = open_config_registry(args)
    connection = registry.set_enabled(args.id, enabled)
    print(f"connection {connection.id} {'enabled' if enabled else 'disabled'} ({connection.status})"
          + ("" if enabled else ": no scheduled or manual sync runs until it is enabled again"))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    config, registry = open_config_registry(args)
    registry.get(args.id)  # an unknown id is refused before anything is touched
    warehouse = Warehouse(config.warehouse.path, args.id, config.warehouse.parquet_path)
    with warehouse.sync_lock("dirsync connections remove", on_wait=lambda m: print(m, file=sys.stderr)):
        freed = _size(warehouse)
        warehouse.purge()
        registry.remove(args.id, detail=f"purged {freed / 1e6:.1f} MB of tables, history, change events and Parquet")
    _forget_partition(args.id)
    print(f"connection {args.id} removed: its rows, history, change events and Parquet outputs are purged "
          f"({freed / 1e6:.1f} MB)")
    return 0


def _size(warehouse: Warehouse) -> int:
    folders = [warehouse.folder, connection_dir(warehouse.parquet_dir, warehouse.connection_id)]
    return sum(f.stat().st_size for folder in folders if folder.exists() for f in folder.rglob("*") if f.is_file())


def _forget_partition(connection_id: str) -> None:
    """With DAGSTER_HOME set, drop the partition from that instance now (the sensor would at its next tick)."""
    if not os.environ.get("DAGSTER_HOME"):
        return
    import dagster as dg

    from dirsync_pipeline.defs.partitions import CONNECTIONS

    with dg.DagsterInstance.get() as instance:
        if instance.has_dynamic_partition(CONNECTIONS.name, connection_id):
            instance.delete_dynamic_partition(CONNECTIONS.name, connection_id)
