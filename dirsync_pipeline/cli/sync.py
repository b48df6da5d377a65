"""`dirsync sync` and `dirsync demo`: run the directory_sync job in-process, like Sync Now in the UI."""

from __future__ import annotations

import argparse
import enum
import os
import re
import sys
from collections.abc import Callable

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

from dirsync_pipeline.cli.heap import freeze_long_lived
from dirsync_pipeline.cli.options import add_config_args, open_config_registry, selected_connection_ids
from dirsync_pipeline.cli.stopping import SyncStopped, stopped_by_signals
from dirsync_pipeline.config import CONFIG_ENV_VAR, DirsyncConfig, load_config
from dirsync_pipeline.defs.jobs import TRIGGER_TAG
from dirsync_pipeline.defs.partitions import CONNECTIONS
from dirsync_pipeline.defs.resources import PARTITION_TAG
from dirsync_pipeline.registry import open_registry
from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.publication import PartlyPublishedError
from dirsync_pipeline.warehouse.tables import SYNC_TABLES


def register(subcommands: argparse._SubParsersAction) -> None:
    sync = subcommands.add_parser(
        "sync", help="sync now: run the directory_sync job in-process (every enabled connection, or --connection)")
    add_config_args(sync)
    add_mass_removal_arg(sync)
    sync.set_defaults(command=cmd_sync)

    demo = subcommands.add_parser("demo", help="sync the embedded demo directory and print a summary")
    demo.set_defaults(command=cmd_demo)


def add_mass_removal_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-mass-removal", action="store_true",
        help="let this run through the mass-removal breaker on purpose (recorded on the run)",
    )


def cmd_sync(args: argparse.Namespace) -> int:
    return run_connections(args, "directory_sync", "sync")


def run_connections(
    args: argparse.Namespace, job_name: str, what: str,
    on_success: Callable[[DirsyncConfig, str], None] | None = None,
) -> int:
    """Run ``job_name`` for the selected connection(s) (``--connection``, else every enabled one); exit code 0 or 1."""
    config, registry = open_config_registry(args)
    ids = selected_connection_ids(registry, args, enabled_only=True)
    overrides = mass_removal_override() if args.allow_mass_removal else {}
    failed, partly = [], []
    for connection_id in ids:
        try:
            outcome = run_sync(args.config, connection_id, job_name=job_name, **overrides)
        except SyncStopped as stopped:
            print(f"{connection_id}: sync stopped by {stopped}; the last published data is unchanged", file=sys.stderr)
            return stopped.exit_code
        if outcome is SyncOutcome.PUBLISHED and on_success:
            on_success(config, connection_id)
        {SyncOutcome.UNCHANGED: failed, SyncOutcome.PARTLY_PUBLISHED: partly}.get(outcome, []).append(connection_id)
    if failed:
        print(f"dirsync: {what} failed for {failed}; the last published data is unchanged", file=sys.stderr)
    if partly:
        print(f"dirsync: {what} of {partly} committed but not yet visible to readers (see above); the next sync "
              "repairs the manifest", file=sys.stderr)
    return 1 if failed or partly else 0


def cmd_demo(args: argparse.Namespace) -> int:
    os.environ.pop(CONFIG_ENV_VAR, None)  # the demo is the embedded default, whatever the environment says
    config = load_config(None)
    open_registry(config)  # registers the demo connection
    try:
        if run_sync(None, "demo") is not SyncOutcome.PUBLISHED:
            return 1
    except SyncStopped as stopped:
        print(f"demo: sync stopped by {stopped}; the last published data is unchanged", file=sys.stderr)
        return stopped.exit_code
    print_summary(config)
    return 0


def mass_removal_override() -> dict[str, dict]:
    """Run config that lets one sync through the breaker, and the tag that records it on the run."""
    return {
        "run_config": {"ops": {"published_directory": {"config": {"allow_mass_removal": True}}}},
        "tags": {"dirsync/allow_mass_removal": "true"},
    }


class SyncOutcome(enum.Enum):
    """What a sync left for consumers to read."""

    PUBLISHED = "published"
    UNCHANGED = "unchanged"  # failed, and the last published data is exactly as it was
    PARTLY_PUBLISHED = "partly published"  # DuckDB has the sync, the Parquet manifest still names the previous one


def run_sync(
    config_path: str | None, connection_id: str, run_config: dict | None = None, tags: dict | None = None,
    job_name: str = "directory_sync",
) -> SyncOutcome:
    """Run ``job_name`` for one connection; print the actionable failure messages when it fails.

    ``execute_job`` runs the job in this process like a run launched from the UI. ``execute_in_process``
    would also keep every step's output (each stage's frame) in memory until the run ends, for tests.
    """
    job = dg.build_reconstructable_job(__name__, sync_job.__name__, reconstructable_args=(config_path, job_name))
    freeze_long_lived()  # the job's definitions and Dagster's execution modules: the run's collections skip them
    with _instance() as instance, stopped_by_signals() as signals:
        instance.add_dynamic_partitions(CONNECTIONS.name, [connection_id])  # as the sensor does; a no-op if known
        result = dg.execute_job(
            job, instance=instance, raise_on_error=False,
            tags={TRIGGER_TAG: "cli", PARTITION_TAG: connection_id, **(tags or {})},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}, **(run_config or {})},
        )
        if result.success:
            print(f"{connection_id}: sync {result.run_id} published")
            return SyncOutcome.PUBLISHED
        if (signum := signals.first()) is not None:  # Dagster turned the signal into the run's interruption
            raise SyncStopped(signum)
        for message in failure_messages(result):
            print(f"{connection_id}: {message}", file=sys.stderr)
        return SyncOutcome.PARTLY_PUBLISHED if partly_published(result) else SyncOutcome.UNCHANGED


def sync_job(config_path: str | None, job_name: str) -> dg.JobDefinition:
    """The job of a config, rebuilt by reference (module and function name) as ``execute_job`` requires."""
    from dirsync_pipeline.definitions import build_definitions  # import late: builds the code location

    return build_definitions(config_path).resolve_job_def(job_name)


def _instance() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (runs show in the UI), else a throwaway one."""
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


CLASS_PREFIX = re.compile(r"^[\w.]+: ")


def failure_messages(result: dg.JobExecutionResult) -> list[str]:
    messages = [
        f"check {e.asset_key.to_user_string()}:{e.check_name} failed ({e.metadata['failures'].value} failures"
        + (f": {e.metadata['first_failures'].value})" if "first_failures" in e.metadata else ")")
        for e in result.get_asset_check_evaluations() if not e.passed and "failures" in e.metadata
    ]
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            messages.append(f"step {event.step_key} failed: {_explanation(error.cause or error)}")
        elif event.is_run_failure and not messages and (error := event.event_specific_data.error) is not None:
            while error.cause is not None:  # the OS's or DuckDB's own words, not Dagster's wrapper
                error = error.cause
            messages.append(f"the run failed before its first step: {_explanation(error)} (a resource could not "
                            "start: check warehouse.path and that this process may write there)")
    return messages or ["the run failed; see the Dagster run log"]


def _explanation(error: SerializableErrorInfo) -> str:
    """"package.module.SomeError: what to do" -> "what to do": the class path helps no operator."""
    return CLASS_PREFIX.sub("", error.message.strip())


def partly_published(result: dg.JobExecutionResult) -> bool:
    """Whether the publish committed to DuckDB and then failed to name its Parquet set (PartlyPublishedError)."""
    return any(
        (event.step_failure_data.error.cause or event.step_failure_data.error).cls_name == PartlyPublishedError.__name__
        for event in result.all_events if event.is_step_failure
    )


def print_summary(config: DirsyncConfig) -> None:
    with reader.connect(config.warehouse.path, config.warehouse.parquet_path) as conn:
        print(f"\nPublished tables in {config.warehouse.path}/ (read them with `dirsync query`):")
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
