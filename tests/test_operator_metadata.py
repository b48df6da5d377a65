"""What the Dagster UI shows an operator: asset definitions, per-asset metadata, the sync report, progress."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.definitions.freshness_evaluator import TimeWindowFreshnessPolicyEvaluator
from dagster._core.loader import LoadingContextForTest
from dagster._core.test_utils import freeze_time

from dirsync_pipeline.definitions import build_definitions
from dirsync_pipeline.defs import checks
from dirsync_pipeline.defs.assets import SYNC_FRESHNESS
from dirsync_pipeline.defs.checks import Outcome
from dirsync_pipeline.defs.progress import FetchProgress
from dirsync_pipeline.emulator import DirectoryEmulator, ScriptedFault, generate_directory
from dirsync_pipeline.google.retry import ApiStats
from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.tables import EVENTS, GOOGLE_GROUPS, GOOGLE_USERS
from tests.conftest import instance_with, write_config

API_ENDPOINTS = ("users.list", "groups.list", "members.list", "groups.get", "users.get")


def test_every_asset_is_described_owned_kinded_and_fresh_within_two_hours():
    graph = build_definitions().resolve_asset_graph()
    specs = [graph.get(key) for key in graph.get_all_asset_keys()]
    assert specs
    for node in specs:
        name = node.key.to_user_string()
        assert node.description and len(node.description) > 30, name
        assert node.owners == ["team:platform"], name
        assert {tag.split("/")[-1] for tag in node.tags if tag.startswith("dagster/kind/")}, name
        assert node.freshness_policy == SYNC_FRESHNESS, name
    assert SYNC_FRESHNESS.fail_window.to_timedelta() == timedelta(hours=2)  # a missed hourly sync, and a margin


def test_a_missed_hourly_sync_turns_the_published_directory_stale():
    """Dagster's own evaluator (the freshness daemon's) on the real asset: fresh, then failed after 2 h."""
    graph = build_definitions().resolve_asset_graph()
    node = graph.get(dg.AssetKey("published_directory"))
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("published_directory", partition="demo"))
        synced_at = time.time()

        def state(at: float) -> FreshnessState:
            with freeze_time(at):
                evaluator = TimeWindowFreshnessPolicyEvaluator()
                return asyncio.run(evaluator.evaluate_freshness(context=LoadingContextForTest(instance), node=node))

        assert state(synced_at + 65 * 60) == FreshnessState.PASS  # the next hourly sync is a little late
        assert state(synced_at + 2 * 3600 + 1) == FreshnessState.FAIL  # a whole sync was missed


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> tuple[dg.ExecuteInProcessResult, dict[str, int], Path]:
    """One real sync of a small directory in which one users.list page fails once (a retry)."""
    tmp_path = tmp_path_factory.mktemp("report")
    directory = generate_directory(users=300, groups=20, seed=21, domain="acme.test")
    with DirectoryEmulator(directory) as emulator:
        emulator.faults.scripted.append(ScriptedFault("users.list", 503, "backendError"))
        config = write_config(tmp_path, [{"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all",
                                          "role_mapping": {"engineering@acme.test": "developer"}}])
        job = build_definitions(str(config)).resolve_job_def("directory_sync")
        result = job.execute_in_process(partition_key="acme", instance=instance_with("acme"), raise_on_error=False)
        served = emulator.request_counts()
    return result, served, tmp_path


def test_every_materialization_has_row_count_column_schema_and_a_markdown_preview(synced):
    result, _served, _tmp = synced
    assert result.success
    events = [e.materialization for e in result.get_asset_materialization_events()]
    assert len(events) == len(build_definitions().resolve_asset_graph().get_all_asset_keys())
    for materialization in events:
        metadata = materialization.metadata
        name = materialization.asset_key.to_user_string()
        assert isinstance(metadata["dagster/row_count"].value, int), name
        assert isinstance(metadata["dagster/column_schema"].value, dg.TableSchema), name
        assert isinstance(metadata["preview"], dg.MarkdownMetadataValue) and "|" in metadata["preview"].value, name


def test_the_sync_report_matches_what_the_emulator_served_and_what_was_published(synced):
    result, served, tmp_path = synced
    publish = next(e.materialization for e in result.get_asset_materialization_events()
                   if e.materialization.asset_key == dg.AssetKey("published_directory"))
    report = {k: v.value for k, v in publish.metadata.items() if k.startswith(("sync.", "events."))}
    assert report["sync.api_requests"] == sum(served[e] for e in API_ENDPOINTS)  # counted by the server itself
    assert report["sync.api_retries"] == 1  # the scripted 503
    assert report["sync.api_pages"] == report["sync.api_requests"] - 1
    assert report["sync.duration_seconds"] > 0
    with reader.connect(tmp_path) as conn:
        users = conn.execute("SELECT count(*) FROM raw.google_users").fetchone()[0]
        entitlements = conn.execute("SELECT count(*) FROM core.role_mapped_entitlements").fetchone()[0]
        events = dict(conn.execute("SELECT event, count(*) FROM core.directory_changes GROUP BY event").fetchall())
    assert (report["sync.users"], report["sync.entitlements"]) == (users, entitlements)
    assert {e: report[f"events.{e}"] for e in EVENTS} == {e: events.get(e, 0) for e in EVENTS}
    assert report["events.user.created"] == users  # a first sync: everyone appears
    assert publish.metadata["dagster/row_count"].value == 1  # one sync in core.sync_log
    assert "API requests" in publish.metadata["preview"].value


def test_progress_logs_at_a_readable_rate_with_requests_and_eta():
    now = [0.0]
    stats, lines = ApiStats(), []
    progress = FetchProgress(lines.append, stats, interval=10, clock=lambda: now[0])
    for done in range(1, 400):  # 400 groups, one every 0.1 s: 40 s in all
        now[0] = done * 0.1
        stats.count_request("members.list")
        progress(done, 400)
    now[0] = 40.0
    stats.count_request("members.list")
    progress(400, 400)
    assert len(lines) == 4  # at 10 s, 20 s, 30 s, and the end: not 400 lines
    assert lines[0] == "members.list: 100/400 groups fetched (25%), 100 API requests, ETA 30s"
    assert lines[-1] == "members.list: all 400 groups fetched, 400 API requests in 40s"


def test_failed_checks_tell_the_operator_what_to_do(tmp_path):
    """The Checks tab of a blocked sync names the fix: here, the breaker's override for an intended removal."""
    directory = generate_directory(users=200, groups=10, seed=5, domain="acme.test")
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [{"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all"}])
        job = build_definitions(str(config)).resolve_job_def("directory_sync")
        assert job.execute_in_process(partition_key="acme", instance=instance_with("acme")).success
        for user in list(directory.users.values())[:80]:
            directory.delete_user(user.id)  # 40% of the company deleted at once (a silent drop is refused earlier)
        refused = job.execute_in_process(partition_key="acme", instance=instance_with("acme"), raise_on_error=False)
    breaker = next(e for e in refused.get_asset_check_evaluations() if e.check_name == "mass_removal_breaker")
    assert not breaker.passed
    assert "--allow-mass-removal" in breaker.description and "allow_mass_removal: true" in breaker.description


def test_a_failed_validation_check_carries_its_action():
    failed = Outcome(False, 1, pl.DataFrame({"user_id": ["u1"]})).check_result(GOOGLE_USERS, "c", "run Sync Now again")
    assert failed.description == "run Sync Now again" and failed.metadata["what_to_do"].value == "run Sync Now again"
    assert (failed.asset_key, failed.check_name) == (GOOGLE_USERS.asset_key, "c")
    assert Outcome(True, 0).check_result(GOOGLE_USERS, "c", "run Sync Now again").description is None


def test_contract_validated_in_slices_still_finds_every_failure_at_its_row(monkeypatch):
    monkeypatch.setattr(checks, "VALIDATED_ROWS_PER_CHUNK", 2)
    rows = [{"connection_id": "c", "group_id": f"g{i}", "email": f"g{i}@x.test", "name": "G", "description": None,
             "direct_members_count": 1, "admin_created": True, "synced_at": datetime(2026, 1, 1, tzinfo=UTC)}
            for i in range(5)]
    rows[4]["group_id"] = "g0"  # the same key in the first and the last slice
    rows[3]["email"] = "not-an-email"
    frame = pl.DataFrame(rows, schema={c.name: c.dtype for c in GOOGLE_GROUPS.columns})
    outcome = checks.validate_contract(GOOGLE_GROUPS, frame)
    assert not outcome.passed
    failing = sorted(zip(outcome.sample["index"].to_list(), outcome.sample["check"].to_list(), strict=True))
    assert [i for i, _ in failing] == [0, 3, 4] and "unique key (connection_id, group_id)" in dict(failing)[4]
    assert checks.validate_contract(GOOGLE_GROUPS, frame.head(3)).passed
    empty_but_wrong = pl.DataFrame({"connection_id": []}, schema={"connection_id": pl.Utf8})
    assert not checks.validate_contract(GOOGLE_GROUPS, empty_but_wrong).passed  # columns are checked on no rows too
