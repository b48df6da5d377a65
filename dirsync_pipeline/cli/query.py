"""`dirsync query SQL`: read-only SQL over the published tables of every organisation.

It reads what consumers read (warehouse/reader.py): each organisation's last published sync, whole, from
immutable copies; never the files a running sync writes, so it is never refused and never waits.
"""

from __future__ import annotations

import argparse

import duckdb

from dirsync_pipeline.cli.options import open_config_registry
from dirsync_pipeline.config import ConfigError
from dirsync_pipeline.warehouse.reader import query_rows, rows_as_json


def register(subcommands: argparse._SubParsersAction) -> None:
    query = subcommands.add_parser(
        "query", help="run read-only SQL over the published tables (raw.*, core.*) and print the rows",
        description="Tables: raw.google_users, raw.google_groups, raw.google_group_members, core.* (memberships, "
                    "entitlements, explanations, directory_changes, history, sync_log, connections, "
                    "connection_events); see docs/tables.md.")
    query.add_argument("sql", help="one SQL statement, e.g. \"SELECT role, count(*) FROM "
                                   "core.role_mapped_entitlements GROUP BY ALL\"")
    query.add_argument("--json", action="store_true", help="print a JSON array of objects keyed by column name")
    query.add_argument("--config", help="config file naming the warehouse (default: $DIRSYNC_CONFIG, else ./data)")
    query.set_defaults(command=cmd_query)


def cmd_query(args: argparse.Namespace) -> int:
    config, _registry = open_config_registry(args)
    try:
        columns, rows = query_rows(config.warehouse.path, args.sql, config.warehouse.parquet_path)
    except duckdb.Error as exc:
        raise ConfigError(f"the query failed: {str(exc).strip().splitlines()[0]}") from None
    print(rows_as_json(columns, rows) if args.json else render_table(columns, rows))
    return 0


def render_table(columns: list[str], rows: list[tuple]) -> str:
    cells = [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths),
             *("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells)]
    return "\n".join(line.rstrip() for line in lines) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})"
