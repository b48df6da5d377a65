"""`dirsync`: sync, demo, groups and the emulator from a shell."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import dagster as dg
import duckdb

from dirsync_pipeline.config import CONFIG_ENV_VAR, ConfigError, DirsyncConfig, load_config
from dirsync_pipeline.google.errors import DirectoryError
from dirsync_pipeline.jobs import TRIGGER_TAG
from dirsync_pipeline.resources import GoogleDirectoryResource
from dirsync_pipeline.tables import SYNC_TABLES
from dirsync_pipeline.transforms import resolve_group_keys


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except (ConfigError, DirectoryError) as exc:
        print(f"dirsync: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dirsync", description="Google Workspace directory sync on Dagster.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    sync = sub.add_parser("sync", help="sync now: run the directory_sync job in-process")
    _config_args(sync)
    sync.set_defaults(command=cmd_sync)

    demo = sub.add_parser("demo", help="sync the embedded demo directory and print a summary")
    demo.set_defaults(command=cmd_demo, config=None, connection=None)

    groups = sub.add_parser("groups", help="list the groups an admin can select, with member counts")
    _config_args(groups)
    groups.add_argument("--search", help="only groups whose email or name contains TEXT")
    groups.set_defaults(command=cmd_groups)

    emulator = sub.add_parser("emulator", help="serve a synthetic directory through the Directory API emulator")
    emulator.add_argument("--users", type=int, default=2000)
    emulator.add_argument("--groups", type=int, default=150)
    emulator.add_argument("--port", type=int, default=8085)
    emulator.add_argument("--seed", type=int, default=42)
    emulator.add_argument("--latency-ms", type=float, default=0.0, help="added to every API request")
    emulator.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 503")
    emulator.add_argument("--rate-limit-qps", type=float, default=None, help="answer 429 above this rate")
    emulator.set_defaults(command=cmd_emulator)
    return parser


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: $DIRSYNC_CONFIG, else the embedded demo)")
    parser.add_argument("--connection", help="only this connection id (default: every connection)")


def cmd_sync(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ids = [config.connection(args.connection).id] if args.connection else config.connection_ids
    failed = [cid for cid in ids if not _run_sync(args.config, cid)]
    if failed:
        print(f"dirsync: sync failed for {failed}; the last published data is unchanged", file=sys.stderr)
        return 1
    return 0


def _run_sync(config_path: str | None, connection_id: str) -> bool:
    from dirsync_pipeline.definitions import build_definitions  # import late: builds the code location

    job = build_definitions(config_path).resolve_job_def("directory_sync")
    with _instance() as instance:
        result = job.execute_in_process(
            partition_key=connection_id, instance=instance, raise_on_error=False, tags={TRIGGER_TAG: "cli"},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    if result.success:
        print(f"{connection_id}: sync {result.run_id} published")
        return True
    for message in _failure_messages(result):
        print(f"{connection_id}: {message}", file=sys.stderr)
    return False


def _instance() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (runs show in the UI), else a throwaway one."""
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def _failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = [
        f"check {e.asset_key.to_user_string()}:{e.check_name} failed ({e.metadata.get('failures').value} failures)"
        for e in result.get_asset_check_evaluations() if not e.passed
    ]
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            cause = error.cause or error
            messages.append(f"step {event.step_key} failed: {cause.message.strip()}")
    return messages or ["the run failed; see the Dagster run log"]


def cmd_demo(args: argparse.Namespace) -> int:
    os.environ.pop(CONFIG_ENV_VAR, None)  # the demo is the embedded default, whatever the environment says
    config = load_config(None)
    if not _run_sync(None, "demo"):
        return 1
    print_summary(config)
    return 0


def print_summary(config: DirsyncConfig) -> None:
    with duckdb.connect(str(config.warehouse.duckdb_path), read_only=True) as conn:
        print(f"\nPublished tables in {config.warehouse.duckdb_path}:")
        for table in SYNC_TABLES:
            count = conn.execute(f"SELECT count(*) FROM {table.qualified_name}").fetchall()[0][0]
            print(f"  {table.qualified_name:<32} {count:>8} rows")
        print("\nUsers with the most roles:")
        top = conn.execute(
            "SELECT primary_email, count(*) AS roles, string_agg(role, ', ' ORDER BY role) "
            "FROM core.role_mapped_entitlements GROUP BY primary_email ORDER BY roles DESC, primary_email LIMIT 5"
        ).fetchall()
        for email, roles, names in top:
            print(f"  {email:<40} {roles} roles: {names}")


def cmd_groups(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    google = GoogleDirectoryResource(config_path=args.config)
    ids = [config.connection(args.connection).id] if args.connection else config.connection_ids
    try:
        for connection_id in ids:
            connection = config.connection(connection_id)
            with google.client(connection) as client:
                groups = client.fetch_groups().sort("email")
            selected_keys = groups["group_id"].to_list() if connection.selected_groups == "all" else connection.selected_groups
            selected = set(resolve_group_keys(groups, selected_keys).group_ids)
            roles_by_group: dict[str, list[str]] = {}
            for key, roles in connection.mapped_roles().items():
                for group_id in resolve_group_keys(groups, [key]).group_ids:
                    roles_by_group.setdefault(group_id, []).extend(roles)
            print(f"connection {connection.id}: {groups.height} groups")
            print(f"  {'email':<44} {'members':>7}  {'selected':<8}  roles")
            for row in groups.iter_rows(named=True):
                if args.search and args.search.lower() not in f"{row['email']} {row['name'] or ''}".lower():
                    continue
                mark = "yes" if row["group_id"] in selected else ""
                print(f"  {row['email']:<44} {row['direct_members_count']:>7}  {mark:<8}  {', '.join(roles_by_group.get(row['group_id'], []))}")
            _warn_unknown(groups, "selected_groups", [] if connection.selected_groups == "all" else connection.selected_groups)
            _warn_unknown(groups, "role_mapping", list(connection.role_mapping))
    finally:
        google.close()
    return 0


def _warn_unknown(groups, key: str, group_keys: list[str]) -> None:
    unknown = resolve_group_keys(groups, group_keys).unknown_keys
    if unknown:
        print(f"  warning: {key} names groups that do not exist (deleted or misspelt): {', '.join(unknown)}", file=sys.stderr)


def cmd_emulator(args: argparse.Namespace) -> int:
    from dirsync_pipeline.emulator.server import serve_forever

    serve_forever(
        users=args.users, groups=args.groups, port=args.port, seed=args.seed,
        latency_ms=args.latency_ms, error_rate=args.error_rate, rate_limit_qps=args.rate_limit_qps,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
