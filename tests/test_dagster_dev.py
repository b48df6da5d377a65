"""Smoke test of the real UI stack: `dagster dev` (webserver + daemon) on the demo, driven over GraphQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.dagster_dev import graphql, running_dagster_dev, wait_for_location
from dirsync_pipeline.warehouse import reader


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`dagster dev` from a scratch folder holding the repo's dagster.yaml, on the embedded demo."""
    home = tmp_path_factory.mktemp("dagster_dev")
    with running_dagster_dev(home) as url:
        yield url, home


def test_ui_shows_graph_checks_schedule_and_job(dagster_dev):
    url, _home = dagster_dev
    repository = wait_for_location(url)
    assert repository["location"]["name"] == "dirsync_pipeline"
    assert "directory_sync" in {j["name"] for j in repository["jobs"]}
    schedule = next(s for s in repository["schedules"] if s["name"] == "hourly_directory_sync")
    assert schedule["cronSchedule"] == "0 * * * *" and schedule["scheduleState"]["status"] == "RUNNING"

    nodes = graphql(url, "{ assetNodes { assetKey { path } groupName hasAssetChecks } }")["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert set(keys) >= {"raw/google_users", "raw/google_groups", "raw/google_group_members",
                         "core/filtered_memberships", "core/role_mapped_entitlements", "published_directory"}
    assert all(n["groupName"] == "directory" for n in nodes)
    assert keys["core/role_mapped_entitlements"]["hasAssetChecks"]


def wait_for_partition(url: str, partition: str) -> None:
    """Until the connections sensor has made ``partition`` a partition (its first tick after the daemon starts)."""
    query = """{ assetNodes(assetKeys: [{path: ["published_directory"]}]) { partitionKeys } }"""
    deadline = time.monotonic() + 90
    while partition not in graphql(url, query)["assetNodes"][0]["partitionKeys"]:
        if time.monotonic() > deadline:
            pytest.fail(f"the connections sensor never added the partition {partition}")
        time.sleep(1)


def launch_sync_now(url: str, *, materialize_all: bool = False, partition: str = "demo") -> dict:
    """Sync Now for the demo connection: the directory_sync job, or the asset graph's "Materialize all"."""
    wait_for_partition(url, partition)
    selector = {"repositoryLocationName": "dirsync_pipeline", "repositoryName": "__repository__", "jobName": "directory_sync"}
    if materialize_all:
        nodes = graphql(url, "{ assetNodes { assetKey { path } } }")["assetNodes"]
        selector |= {"jobName": "__ASSET_JOB", "assetSelection": [n["assetKey"] for n in nodes]}
    launched = graphql(url, """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
        __typename ... on LaunchRunSuccess { run { runId tags { key value } } } ... on PythonError { message } } }""",
        {"p": {"selector": selector,
               "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]}}})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]


def wait_for_runs(url: str, run_ids: list[str], home: Path) -> list[dict]:
    """Poll until every run ends; also records whether one run ever waited QUEUED while another ran."""
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { runId status startTime endTime } } }"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        runs = [graphql(url, query, {"id": run_id})["runOrError"] for run_id in run_ids]
        if all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return runs
        time.sleep(0.5)
    pytest.fail(f"runs did not finish: {(home / 'dagster.log').read_text()[-3000:]}")


def test_sync_now_from_the_ui_runs_through_the_queue_and_publishes(dagster_dev):
    url, home = dagster_dev
    wait_for_location(url)
    run = launch_sync_now(url)
    assert {t["key"]: t["value"] for t in run["tags"]}["dirsync/trigger"] == "manual"
    [finished] = wait_for_runs(url, [run["runId"]], home)
    assert finished["status"] == "SUCCESS", (home / "dagster.log").read_text()[-3000:]
    with reader.connect(home / "data") as conn:
        assert (run["runId"],) in conn.execute("SELECT sync_id FROM core.sync_log").fetchall()


def test_two_syncs_of_one_connection_never_write_at_once(dagster_dev):
    """Sync Now + "Materialize all" at once: the second run waits in Dagster's run queue (one run per partition)."""
    url, home = dagster_dev
    wait_for_location(url)
    first, second = launch_sync_now(url), launch_sync_now(url, materialize_all=True)
    runs = sorted(wait_for_runs(url, [first["runId"], second["runId"]], home), key=lambda r: r["startTime"])
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], (home / "dagster.log").read_text()[-3000:]
    assert runs[1]["startTime"] >= runs[0]["endTime"], f"the runs overlapped: {runs}"
