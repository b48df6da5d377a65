"""Real Dagster runs of the whole graph: emulator over HTTP -> staged, checked, published DuckDB tables."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dirsync_pipeline.config import load_config
from dirsync_pipeline.definitions import build_definitions
from dirsync_pipeline.defs.assets import SYNC_ASSETS
from dirsync_pipeline.defs.checks import publish_gate_failures
from dirsync_pipeline.defs.resources import StagingIOManager, loads_in_run
from dirsync_pipeline.emulator import DirectoryEmulator, FaultPlan, Member, ScriptedFault, generate_directory
from dirsync_pipeline.registry import open_registry
from dirsync_pipeline.warehouse import publication, reader
from dirsync_pipeline.warehouse.store import Warehouse
from dirsync_pipeline.warehouse.tables import (
    GOOGLE_GROUP_MEMBERS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    SYNC_TABLES,
    TABLES_BY_ASSET_KEY,
)
from tests.conftest import instance_with, write_config
from tests.oracle import expected_entitlements, expected_memberships

SELECTED = ["all-staff@acme.test", "engineering@acme.test", "admins@acme.test", "everyone-nested@acme.test"]
MAPPING = {"engineering@acme.test": ["developer"], "admins@acme.test": ["admin", "developer"]}


def connection(emulator: DirectoryEmulator, connection_id: str = "acme", **overrides) -> dict:
    return {"id": connection_id, "api_endpoint": emulator.url, "credentials": {"type": "none"},
            "selected_groups": SELECTED, "role_mapping": MAPPING, "max_concurrency": 4, **overrides}


def run_sync(config_path: Path, connection_id: str = "acme") -> dg.ExecuteInProcessResult:
    job = build_definitions(str(config_path)).resolve_job_def("directory_sync")
    return job.execute_in_process(partition_key=connection_id, instance=instance_with(connection_id), raise_on_error=False)


def published(db: Path, table: str, connection_id: str | None = None) -> list[tuple]:
    where = f"WHERE connection_id = '{connection_id}'" if connection_id else ""
    with reader.connect(db) as conn:
        return sorted(conn.execute(f"SELECT * FROM {table} {where}").fetchall(), key=repr)


def snapshot(db: Path) -> dict[str, list[tuple]]:
    return {t.qualified_name: published(db, t.qualified_name) for t in SYNC_TABLES}


@pytest.mark.parametrize("seed", [11, 12])
def test_sync_publishes_exactly_what_the_semantics_define(tmp_path, seed):
    directory = generate_directory(users=500, groups=30, seed=seed, domain="acme.test")
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator, default_role="member")])
        result = run_sync(config)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 12 and all(e.passed for e in evaluations)

    db = tmp_path
    memberships = {(u, g, d, a) for _c, u, _e, g, _ge, d, a in published(db, "core.filtered_memberships")}
    assert memberships == expected_memberships(directory, SELECTED)
    entitlements = {(u, r, tuple(via)) for _c, u, _e, r, via in published(db, "core.role_mapped_entitlements")}
    assert entitlements == expected_entitlements(directory, SELECTED, MAPPING, default_role="member")
    users = published(db, "raw.google_users")
    assert len(users) == sum(not u.deleted for u in directory.users.values())
    assert len(published(db, "raw.google_groups")) == len(directory.groups)
    assert published(db, "core.sync_log")[0][1] == result.run_id


def test_highest_priority_through_the_pipeline(tmp_path, emulator, directory):
    priority = ["admin", "developer", "member"]
    config = write_config(tmp_path, [connection(emulator, default_role="member", role_assignment="highest_priority",
                                                role_priority=priority)])
    assert run_sync(config).success
    rows = {(u, r, tuple(via)) for _c, u, _e, r, via in published(tmp_path, "core.role_mapped_entitlements")}
    assert rows == expected_entitlements(directory, SELECTED, MAPPING, default_role="member", priority=priority)
    assert len({u for u, _r, _v in rows}) == len(rows)


def test_a_failing_check_leaves_the_published_tables_unchanged(tmp_path, emulator, directory):
    config = write_config(tmp_path, [connection(emulator)])
    assert run_sync(config).success
    db = tmp_path
    before = snapshot(db)

    engineering = directory.find_group("engineering@acme.test")
    directory.add_member(engineering.id, Member(id="999", email="ghost@acme.test", type="USER", role="SUPERVISOR", status="ACTIVE"))
    directory.suspend_user(next(iter(directory.users)))  # a real change that must NOT be published either
    result = run_sync(config)

    assert not result.success
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == [("raw/google_group_members", "matches_contract")]
    assert snapshot(db) == before
    with Warehouse(db, "acme").connect() as conn:
        staged_bad = conn.execute("SELECT count(*) FROM raw.google_group_members__staged WHERE role = 'SUPERVISOR'").fetchall()
    assert staged_bad == [(1,)], "the bad stage was written aside, not published"
    # the publish gate, for stages a run did not check itself (replayed ones), refuses the same stage
    store = Warehouse(db, "acme")
    problems = publish_gate_failures(store, "acme", unchecked=[GOOGLE_GROUP_MEMBERS])
    assert len(problems) == 1 and problems[0].startswith("raw.google_group_members: ")
    assert publish_gate_failures(store, "acme", unchecked=[GOOGLE_USERS, GOOGLE_GROUPS]) == []


def test_a_failed_users_listing_stops_the_members_fetch_and_is_the_error_reported(tmp_path):
    directory = generate_directory(users=300, groups=300, seed=5, domain="acme.test")
    with DirectoryEmulator(directory, faults=FaultPlan(latency_ms=10)) as emulator:
        emulator.faults.scripted.append(ScriptedFault("users.list", 403, "forbidden", "Not Authorized to access this resource/api"))
        result = run_sync(write_config(tmp_path, [connection(emulator, selected_groups="all", max_concurrency=2)]))
        members_calls = emulator.request_counts().get("members.list", 0)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "users.list" in str(failure.step_failure_data.error.cause or failure.step_failure_data.error)
    assert members_calls < 20, f"{members_calls} members.list calls after users.list had failed (300 groups)"
    assert not (tmp_path).exists() or published(tmp_path, "raw.google_users") == []


@pytest.mark.parametrize("attempt", range(3))
def test_a_refused_groups_listing_is_the_error_reported_not_the_users_listing_it_stopped(tmp_path, attempt):
    """groups.list refused: its error stops the client, so users.list (still paging) ends with FetchStoppedError;
    whichever the step looks at first, the refusal is what the operator reads, and the status it sets."""
    directory = generate_directory(users=3000, groups=20, seed=5, domain="acme.test")  # users.list: 6 pages
    with DirectoryEmulator(directory, faults=FaultPlan(latency_ms=10)) as emulator:
        emulator.faults.scripted.append(ScriptedFault("groups.list", 403, "forbidden", "Not Authorized to access this resource/api"))
        result = run_sync(write_config(tmp_path, [connection(emulator, selected_groups="all")]))
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    message = str(failure.cause or failure)
    assert "groups.list" in message and "fetch was stopped" not in message, message


def test_max_concurrency_1_reads_strictly_one_request_at_a_time(tmp_path):
    directory = generate_directory(users=300, groups=450, seed=5, domain="acme.test")  # groups.list: 3 pages
    with DirectoryEmulator(directory) as emulator:
        assert run_sync(write_config(tmp_path, [connection(emulator, max_concurrency=1, batch_size=1)])).success
        paths = [path for _method, path, _query in emulator.request_log]
    users = [i for i, path in enumerate(paths) if path.endswith("/users")]
    groups = [i for i, path in enumerate(paths) if path.endswith("/groups")]
    members = [i for i, path in enumerate(paths) if path.endswith("/members")]
    assert users and max(users) < min(groups)  # every users.list page before the first group call
    assert len(groups) == 3 and max(groups) < min(members)  # every groups.list page before the first members.list
    assert not any("batch" in path for path in paths)


def test_each_connection_is_a_partition_and_other_connections_stay_intact(tmp_path, directory):
    other_directory = generate_directory(users=150, groups=12, seed=99, domain="globex.test")
    with DirectoryEmulator(directory) as acme, DirectoryEmulator(other_directory) as globex:
        config = write_config(tmp_path, [
            connection(acme), connection(globex, "globex", selected_groups="all", role_mapping={}, default_role="member")])
        assert run_sync(config, "acme").success
        assert run_sync(config, "globex").success
        db = tmp_path
        globex_before = published(db, "core.role_mapped_entitlements", "globex")
        directory.delete_user(next(iter(directory.users)))
        assert run_sync(config, "acme").success
    assert published(db, "core.role_mapped_entitlements", "globex") == globex_before
    assert len(published(db, "raw.google_users", "acme")) == sum(not u.deleted for u in directory.users.values())
    assert len(published(db, "raw.google_users", "globex")) == len(other_directory.users)
    assert {r[0] for r in published(db, "core.sync_log")} == {"acme", "globex"}


def test_materialize_the_asset_graph_with_dagster_materialize(tmp_path, emulator):
    defs = build_definitions(str(write_config(tmp_path, [connection(emulator)])))
    result = dg.materialize(
        SYNC_ASSETS, partition_key="acme", resources=defs.resources, instance=instance_with("acme"), raise_on_error=False,
    )
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw/google_users", "raw/google_groups", "raw/google_group_members",
                            "core/filtered_memberships", "core/role_mapped_entitlements",
                            "core/entitlement_explanations", "published_directory"}
    fetched = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("google_directory")}
    assert fetched["raw/google_users"]["dagster/row_count"].value == 600
    assert fetched["raw/google_group_members"]["api_requests.users.list"].value == 2  # one client, one set of counters
    assert fetched["raw/google_group_members"]["api_requests.members.list"].value > 0  # on the output yielded last
    assert fetched["raw/google_group_members"]["members_deleted_since_listed"].value == 0


def test_definitions_load_and_schedule_fans_out_over_enabled_connections(tmp_path, emulator):
    config = write_config(tmp_path, [connection(emulator), connection(emulator, "beta"), connection(emulator, "gamma")])
    defs = build_definitions(str(config))
    dg.Definitions.validate_loadable(defs)
    schedule = defs.resolve_schedule_def("hourly_directory_sync")
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    open_registry(load_config(config)).set_enabled("beta", False)
    from datetime import UTC, datetime

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("connections", ["acme", "beta", "gamma"])
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 11, 28, 15, 0, tzinfo=UTC),
                                       resources={"connections": defs.resources["connections"]},
                                       repository_def=defs.get_repository_def()) as context:
            requests = schedule.evaluate_tick(context).run_requests
    assert [(r.partition_key, r.tags["dirsync/trigger"]) for r in requests] == [("acme", "schedule"), ("gamma", "schedule")]
    assert len({r.run_key for r in requests}) == 2


def test_steps_load_the_frames_this_run_staged_exactly_as_staging_holds_them(tmp_path, emulator, monkeypatch):
    """A stage is handed to the run's later steps from memory: the same frame a read of the stage returns (after
    the run, the publish has renamed each stage into place)."""
    job = build_definitions(str(write_config(tmp_path, [connection(emulator)]))).resolve_job_def("directory_sync")
    expected_loads = {GOOGLE_USERS: 1, GOOGLE_GROUPS: 3, GOOGLE_GROUP_MEMBERS: 2}
    assert {t: loads_in_run(job, t.asset_key) for t in expected_loads} == expected_loads
    assert [loads_in_run(job, t.asset_key) for t in SYNC_TABLES[3:]] == [2, 1, 0]  # memberships, entitlements, why
    loaded, staged_reads = [], []
    load_input, read_staged = StagingIOManager.load_input, Warehouse.read_staged

    def spy_load(self, context):
        frame = load_input(self, context)
        loaded.append((TABLES_BY_ASSET_KEY[context.asset_key], frame))
        return frame

    monkeypatch.setattr(StagingIOManager, "load_input", spy_load)
    monkeypatch.setattr(Warehouse, "read_staged", lambda self, *a: staged_reads.append(a) or read_staged(self, *a))
    assert job.execute_in_process(partition_key="acme", instance=instance_with("acme")).success
    assert len(loaded) == 9 and staged_reads == []
    store = Warehouse(tmp_path, "acme")
    for table, frame in loaded:
        assert frame.equals(store.read_published(table, "acme")), table.name


def test_a_small_sync_publishes_the_change_events_its_writer_thread_diffed(tmp_path, emulator, monkeypatch):
    """Below ONE_THREAD_PUBLISH_ROWS the run diffs the events as soon as its stages are written (store.py): the
    publish only appends them, and never diffs them itself."""
    def diffed_in_the_publish(*args, **kwargs):
        raise AssertionError("the publish diffed the change events itself")

    monkeypatch.setattr(publication, "insert_directory_changes", diffed_in_the_publish)
    assert run_sync(write_config(tmp_path, [connection(emulator)])).success
    events = published(tmp_path, "core.directory_changes")
    assert events and published(tmp_path, "core.sync_log")[0][1] == events[0][1]  # the sync's own id on its events
