"""Smoke test of the real UI stack: `dagster dev` (webserver + daemon) on the demo, driven over GraphQL."""

from __future__ import annotations

import json

from dirsync_pipeline.warehouse import reader
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`dagster dev` from a scratch folder holding the repo's dagster.yaml, on the embedded demo."""
    home = tmp_path_factory.mktemp("dagster_dev")
    with running_dagster_dev(home) as url:
        yield url, home


@contextmanager
def running_dagster_dev(home: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`dagster dev` in ``home`` (with the repo's dagster.yaml) until the block ends; yields its URL."""
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DIRSYNC_CONFIG")} | (env or {})
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=home, env=environment, stdout=open(home / "dagster.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if graphql(url, "{ version }")["version"]:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"dagster dev did not answer: {(home / 'dagster.log').read_text()[-3000:]}")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the orphaned code server lives on otherwise
        except ProcessLookupError:
            pass


def wait_for_location(url: str) -> dict:
    query = """{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name
        location { name } jobs { name } schedules { name cronSchedule scheduleState { status } } } } } }"""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = graphql(url, query)["repositoriesOrError"]
        if data.get("nodes"):
            return data["nodes"][0]
        time.sleep(1)
    pytest.fail("the code location never loaded")


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


def launch_sync_now(url: str, *, materialize_all: bool = False, partition: str = "demo") -> dict:
    """Sync Now for the demo connection: the directory_sync job, or the asset graph's "Materialize all"."""
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
    """Sync Now + "Materialize all" at once: the second run waits in Dagster's run queue (the warehouse pool)."""
    url, home = dagster_dev
    wait_for_location(url)
    first, second = launch_sync_now(url), launch_sync_now(url, materialize_all=True)
    runs = sorted(wait_for_runs(url, [first["runId"], second["runId"]], home), key=lambda r: r["startTime"])
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], (home / "dagster.log").read_text()[-3000:]
    assert runs[1]["startTime"] >= runs[0]["endTime"], f"the runs overlapped: {runs}"
