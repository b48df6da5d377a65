"""dirsync on Dagster's production machinery, as deploy/ configures it, against a real PostgreSQL.

One deployment for the module (tests/production_stack.py): Postgres storage and the queued run coordinator of
deploy/dagster.yaml, the code location as a gRPC server, `dagster-daemon run` and `dagster-webserver`, two
organisations served by Directory API emulators over HTTP. The tests run in order, as an operator would:
organisations added at run time are picked up by the sensor and synced side by side; two syncs of one
organisation queue behind each other; the hourly schedule's tick launches one run per enabled organisation
after a daemon restart; `dirsync sync` records its run in the same Postgres.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from tests.postgres_cluster import wait_until
from tests.production_stack import (
    BIN,
    REPO,
    backdate_hourly_schedule,
    connection_file,
    dagster_stack,
    run_failure_reason,
    wait_for_runs,
)

ORGS = {"acme": dict(users=300, groups=25, seed=11), "globex": dict(users=200, groups=15, seed=12)}
RUN_SECONDS = 240


@pytest.fixture(scope="module")
def emulators():
    servers = {org: DirectoryEmulator(generate_directory(**size, domain=f"{org}.test")) for org, size in ORGS.items()}
    for server in servers.values():
        server.__enter__()
    yield {org: server.url for org, server in servers.items()}
    for server in servers.values():
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def stack(postgres, emulators, tmp_path_factory):
    cluster = postgres.create_database("dirsync_production")
    with dagster_stack(tmp_path_factory.mktemp("production"), cluster) as running:
        yield running


def runs(stack, **tags):
    from dagster import RunsFilter

    with stack.instance() as instance:
        return sorted(instance.get_run_records(RunsFilter(tags=tags)), key=lambda r: r.start_time or 0)


def assert_succeeded(stack, records):
    for record in records:
        run = record.dagster_run
        assert run.status.value == "SUCCESS", f"run {run.run_id} {run.status}: {run_failure_reason(stack, run.run_id)}"


def test_instance_of_deploy_yaml_is_postgres(postgres, tmp_path):
    """`dagster instance info` with deploy/dagster.yaml as is: Postgres storage, migrated, queue and limits."""
    cluster = postgres.create_database("dirsync_instance_info")
    shutil.copy(REPO / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {**os.environ, **cluster.env(), "DAGSTER_HOME": str(tmp_path)}
    info = subprocess.run([str(BIN / "dagster"), "instance", "info"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert info.returncode == 0, info.stderr
    for storage in ("PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"):
        assert f": {storage}" in info.stdout
    assert "dagster/partition" in info.stdout
    schema_state = info.stdout.split("Storage schema state:", 1)[1]
    for storage in ("event_log_storage", "run_storage", "schedule_storage"):
        block = schema_state.split(f"{storage}:", 1)[1].split("\n")[1:3]
        current, latest = (line.split(":", 1)[1].strip() for line in block)
        assert current == latest, f"{storage} not migrated: {block}"
    probe = ("import dagster as dg; i = dg.DagsterInstance.get(); "
             "print(type(i.run_coordinator).__name__, type(i.run_launcher).__name__, i.get_concurrency_config().run_queue_config.max_concurrent_runs)")
    classes = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert classes.stdout.split() == ["QueuedRunCoordinator", "DefaultRunLauncher", "4"], classes.stderr


def test_added_organisations_sync_side_by_side_and_are_recorded_in_postgres(stack, emulators):
    """`dirsync connections add` twice; the sensor makes each a partition (in Postgres) and launches its first
    sync; both queue, run at the same time (one limit per organisation, not one for all) and publish."""
    for org, url in emulators.items():
        added = stack.dirsync("connections", "add", "--file", str(connection_file(stack.workdir / f"{org}.yaml", org, url)))
        assert added.returncode == 0, added.stderr

    with stack.instance() as instance:
        wait_until(lambda: set(instance.get_dynamic_partitions("connections")) == set(ORGS), 90, 1,
                   "the sensor to add both partitions")
    first = wait_until(lambda: (r := runs(stack, **{"dirsync/trigger": "added"})) and len(r) == 2 and r, 90, 1,
                       "the sensor's first syncs")
    records = wait_for_runs(stack, [r.dagster_run.run_id for r in first], RUN_SECONDS)
    assert_succeeded(stack, records)
    assert {r.dagster_run.tags["dagster/partition"] for r in records} == set(ORGS)
    a, b = sorted(records, key=lambda r: r.start_time)
    assert b.start_time < a.end_time, "different organisations' syncs ran one after the other"

    # Recorded in Postgres: the runs table of the deployment's database, read with SQL.
    import psycopg2

    with psycopg2.connect(host=stack.env["DAGSTER_POSTGRES_HOST"], port=stack.env["DAGSTER_POSTGRES_PORT"],
                          user=stack.env["DAGSTER_POSTGRES_USER"], password=stack.env["DAGSTER_POSTGRES_PASSWORD"],
                          dbname=stack.env["DAGSTER_POSTGRES_DB"]) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", ([r.dagster_run.run_id for r in records],))
        assert {status for _, status in cursor.fetchall()} == {"SUCCESS"}
        cursor.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'connections'")
        assert {row[0] for row in cursor.fetchall()} == set(ORGS)
        # docs/scaling.md sizes Postgres on "a few hundred event-log rows per sync"
        cursor.execute("SELECT run_id, count(*) FROM event_logs WHERE run_id = ANY(%s) GROUP BY run_id",
                       ([r.dagster_run.run_id for r in records],))
        rows_per_run = dict(cursor.fetchall())
        assert all(50 < n < 1000 for n in rows_per_run.values()), rows_per_run

    listed = json.loads(stack.dirsync("connections", "list", "--json").stdout)
    assert {c["id"]: c["last_synced_at"] is not None for c in listed} == {org: True for org in ORGS}
    counts = stack.dirsync("query", "--json", "SELECT connection_id, count(*) AS users FROM raw.google_users GROUP BY 1")
    assert counts.returncode == 0, counts.stderr
    assert {row["connection_id"]: row["users"] for row in json.loads(counts.stdout)} == \
        {org: size["users"] for org, size in ORGS.items()}


def test_two_syncs_of_one_organisation_never_overlap(stack):
    """Sync Now twice for acme (two launches through the webserver): the second waits in the queue until the
    first has finished, while the queue's global limit would allow both."""
    run_ids = [stack.launch_sync_now("acme"), stack.launch_sync_now("acme")]
    with stack.instance() as instance:
        def one_waits():
            statuses = sorted(instance.get_run_by_id(run_id).status.value for run_id in run_ids)
            return statuses in (["QUEUED", "STARTED"], ["QUEUED", "STARTING"]) or None
        wait_until(one_waits, 60, 0.5, "one acme run started while the other waits in the queue")
    first, second = sorted(wait_for_runs(stack, run_ids, RUN_SECONDS), key=lambda r: r.start_time)
    assert_succeeded(stack, [first, second])
    assert second.start_time >= first.end_time, (
        f"acme ran twice at once: {first.start_time}-{first.end_time} and {second.start_time}-{second.end_time}")


def test_hourly_schedule_tick_runs_each_enabled_organisation(stack):
    """The daemon was down over the hour (an upgrade, say): back up, it runs the missed tick of
    hourly_directory_sync from its state in Postgres, one run per enabled organisation."""
    assert stack.dirsync("connections", "disable", "globex").returncode == 0
    stack.stop("daemon")
    origin_id, selector_id = backdate_hourly_schedule(stack, 3600 + 120)  # started before the last :00
    before = {r.dagster_run.run_id for r in runs(stack, **{"dirsync/trigger": "schedule"})}
    stack.start_daemon()
    scheduled = wait_until(lambda: [r for r in runs(stack, **{"dirsync/trigger": "schedule"})
                                    if r.dagster_run.run_id not in before] or None, 120, 1, "the schedule's tick")
    records = wait_for_runs(stack, [r.dagster_run.run_id for r in scheduled], RUN_SECONDS)
    assert_succeeded(stack, records)
    assert [r.dagster_run.tags["dagster/partition"] for r in records] == ["acme"], "globex is disabled"
    with stack.instance() as instance:
        ticks = instance.get_ticks(origin_id, selector_id)
    assert ticks and ticks[0].status.value == "SUCCESS" and ticks[0].run_ids == [records[0].dagster_run.run_id]
    assert stack.dirsync("connections", "enable", "globex").returncode == 0


def test_cli_sync_is_recorded_in_the_deployment_postgres(stack):
    """`dirsync sync` with DAGSTER_HOME set: its run (trigger cli) is in the same Postgres as the daemon's."""
    synced = stack.dirsync("sync", "--connection", "globex", timeout=RUN_SECONDS)
    assert synced.returncode == 0, synced.stderr
    (record,) = runs(stack, **{"dirsync/trigger": "cli"})
    assert record.dagster_run.tags["dagster/partition"] == "globex"
    assert_succeeded(stack, [record])
    assert record.dagster_run.run_id in synced.stdout

