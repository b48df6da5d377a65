"""Organisations added at run time to a running `dagster dev` (webserver + daemon), from a shell, no restart.

Three emulated organisations are added with the CLI, one with credentials its emulator refuses. The sensor
picks them up and syncs each; the two healthy ones publish exactly what the semantics define, the third is
``invalid_credentials``; a reader queries the whole time and is never refused nor sees half a sync; disable
takes an organisation out of the hourly schedule; remove purges its rows.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from bench.dagster_dev import graphql, running_dagster_dev, wait_for_location
from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.tables import SYNC_LOG_COUNTED
from tests.oracle import expected_entitlements
from tests.test_cli import dirsync

SELECTED = ["all-staff@{d}", "engineering@{d}", "admins@{d}"]
MAPPING = {"engineering@{d}": ["developer"], "admins@{d}": ["admin", "developer"]}


def organisation(connection_id: str, domain: str, endpoint: str) -> dict:
    return {"id": connection_id, "api_endpoint": endpoint, "credentials": {"type": "none"},
            "selected_groups": [g.format(d=domain) for g in SELECTED],
            "role_mapping": {k.format(d=domain): v for k, v in MAPPING.items()}, "default_role": "member"}


class Reader(threading.Thread):
    """Reads the published warehouse in a loop, as a consumer does: the Python helper, and `dirsync query` in a
    fresh process every few reads. Each read checks that every organisation's tables are one whole sync: the row
    counts equal what core.sync_log recorded for its last sync."""

    def __init__(self, home: Path):
        super().__init__(daemon=True)
        self.home, self.stop = home, threading.Event()
        self.reads, self.cli_reads, self.errors, self.slowest = 0, 0, [], 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self._read()
                if self.reads % 10 == 0:
                    self._read_with_the_cli()
            except (duckdb.Error, AssertionError, OSError, ValueError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.reads += 1
            time.sleep(0.2)

    def _read(self) -> None:
        with reader.connect(self.home / "data") as conn:
            counts = ", ".join(f"(SELECT count(*) FROM {t.qualified_name} WHERE connection_id = l.connection_id)"
                               for t in SYNC_LOG_COUNTED)
            logged = ", ".join(c for c in ("users", "groups", "group_members", "memberships", "entitlements"))
            rows = conn.execute(f"""SELECT connection_id, [{logged}] = [{counts}] FROM core.sync_log l
                QUALIFY row_number() OVER (PARTITION BY connection_id ORDER BY published_at DESC) = 1""").fetchall()
        half = [connection_id for connection_id, whole in rows if not whole]
        assert not half, f"half a sync seen for {half}"

    def _read_with_the_cli(self) -> None:
        result = dirsync("query", "--json", "SELECT count(*) AS n FROM raw.google_users", cwd=self.home)
        assert result.returncode == 0, result.stderr
        json.loads(result.stdout)
        self.cli_reads += 1


def connections(home: Path) -> dict[str, dict]:
    result = dirsync("connections", "list", "--json", cwd=home)
    assert result.returncode == 0, result.stderr
    return {c["id"]: c for c in json.loads(result.stdout)}


def wait_for_status(home: Path, wanted: dict[str, str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = connections(home)
        if all(state.get(c, {}).get("status") == s for c, s in wanted.items()):
            return state
        time.sleep(2)
    pytest.fail(f"statuses never became {wanted}: {state}\n{(home / 'dagster.log').read_text()[-4000:]}")


def runs_of(url: str, connection_id: str) -> list[dict]:
    query = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { ... on Runs { results {
        runId status creationTime startTime endTime tags { key value } } } } }"""
    return graphql(url, query, {"tags": [{"key": "dagster/partition", "value": connection_id}]})["runsOrError"]["results"]


def hourly_tick_partitions(url: str) -> list[str]:
    """What the running code location's hourly schedule would launch at the next hour (a dry run of a tick)."""
    query = """query($s: ScheduleSelector!, $t: Int!) { scheduleOrError(scheduleSelector: $s) { ... on Schedule {
        futureTick(tickTimestamp: $t) { evaluationResult { runRequests { tags { key value } } skipReason
        error { message } } } } } }"""
    selector = {"repositoryLocationName": "dirsync_pipeline", "repositoryName": "__repository__",
                "scheduleName": "hourly_directory_sync"}
    next_hour = (int(time.time()) // 3600 + 1) * 3600
    result = graphql(url, query, {"s": selector, "t": next_hour})["scheduleOrError"]["futureTick"]["evaluationResult"]
    assert result["error"] is None, result["error"]
    return sorted(next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition") for r in result["runRequests"])


def observed_statuses(url: str, connection_id: str, expected: str, timeout: float = 60) -> list[str]:
    """The statuses the connections sensor recorded on the partition's published_directory (the UI's Events), once
    they include ``expected`` or at the timeout: the sensor records a new state at its next tick, so an earlier
    one (``validating``) may be all there is for a while."""
    query = """query($p: [String!]) { assetNodes(assetKeys: [{path: ["published_directory"]}]) {
        assetObservations(partitions: $p, limit: 20) { metadataEntries { label ... on TextMetadataEntry { text } } } } }"""
    deadline = time.monotonic() + timeout
    while True:
        observations = graphql(url, query, {"p": [connection_id]})["assetNodes"][0]["assetObservations"]
        statuses = [e.get("text") for o in observations for e in o["metadataEntries"] if e["label"] == "connection.status"]
        if expected in statuses or time.monotonic() > deadline:
            return statuses
        time.sleep(2)


def published_entitlements(home: Path, connection_id: str) -> set[tuple]:
    with reader.connect(home / "data") as conn:
        rows = conn.execute("SELECT user_id, role, granted_via FROM core.role_mapped_entitlements "
                            "WHERE connection_id = ?", [connection_id]).fetchall()
    return {(user, role, tuple(via)) for user, role, via in rows}


def test_organisations_come_and_go_while_dagster_dev_runs(tmp_path):
    acme = generate_directory(users=400, groups=30, seed=21, domain="acme.test")
    globex = generate_directory(users=250, groups=20, seed=22, domain="globex.test")
    initech = generate_directory(users=50, groups=5, seed=23, domain="initech.test")
    home = tmp_path
    with DirectoryEmulator(acme) as acme_api, DirectoryEmulator(globex) as globex_api, \
            DirectoryEmulator(initech, require_auth=True) as initech_api, running_dagster_dev(home) as url:
        wait_for_location(url)
        watcher = Reader(home)
        watcher.start()
        try:
            added_at = {}
            for connection_id, domain, api in (("acme", "acme.test", acme_api), ("globex", "globex.test", globex_api),
                                               ("initech", "initech.test", initech_api)):
                path = home / f"{connection_id}.yaml"
                path.write_text(yaml.safe_dump(organisation(connection_id, domain, api.url)))
                result = dirsync("connections", "add", "--file", str(path), cwd=home)
                assert result.returncode == 0, result.stderr
                added_at[connection_id] = datetime.now(UTC).timestamp()

            state = wait_for_status(home, {"acme": "active", "globex": "active", "initech": "invalid_credentials"},
                                    timeout=240)
            assert "answered 401" in state["initech"]["last_error"]
            assert "invalid_credentials" in observed_statuses(url, "initech", "invalid_credentials")  # the UI shows the organisation's state
            for connection_id in ("acme", "globex", "initech"):  # the sensor launched each first sync at once
                first = min(runs_of(url, connection_id), key=lambda r: r["creationTime"])
                assert first["creationTime"] - added_at[connection_id] < 60, (connection_id, first)
                assert {t["key"]: t["value"] for t in first["tags"]}["dirsync/trigger"] == "added"

            for connection_id, directory, domain in (("acme", acme, "acme.test"), ("globex", globex, "globex.test")):
                expected = expected_entitlements(directory, [g.format(d=domain) for g in SELECTED],
                                                 {k.format(d=domain): v for k, v in MAPPING.items()},
                                                 default_role="member")
                assert published_entitlements(home, connection_id) == expected, connection_id

            assert {"acme", "globex"} <= set(hourly_tick_partitions(url))
            assert dirsync("connections", "disable", "globex", cwd=home).returncode == 0
            assert "globex" not in hourly_tick_partitions(url) and "acme" in hourly_tick_partitions(url)

            assert dirsync("connections", "remove", "acme", cwd=home).returncode == 0
            with reader.connect(home / "data") as conn:
                for table in ("raw.google_users", "core.directory_changes", "core.entitlements_history", "core.sync_log"):
                    ids = {r[0] for r in conn.execute(f"SELECT DISTINCT connection_id FROM {table}").fetchall()}
                    assert "acme" not in ids and "globex" in ids, table
            time.sleep(1)
        finally:
            watcher.stop.set()
            watcher.join(timeout=60)
    assert watcher.errors == [], watcher.errors[:5]
    assert watcher.reads >= 30 and watcher.cli_reads >= 3, (watcher.reads, watcher.cli_reads)
    assert watcher.slowest < 10, f"a read took {watcher.slowest:.1f} s"
