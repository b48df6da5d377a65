"""`dirsync connections ...` and `dirsync query`, each command a fresh process, against emulators over HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from dirsync_pipeline.emulator import DirectoryEmulator, FaultPlan, generate_directory
from tests.test_cli import DIRSYNC, cli_env, dirsync

ROLE_MAPPING = {"engineering@acme.test": "developer", "admins@acme.test": ["admin", "developer"]}


@pytest.fixture(scope="module")
def emulator():
    with DirectoryEmulator(generate_directory(users=120, groups=12, seed=3, domain="acme.test")) as running:
        yield running


def organisation(connection_id: str, endpoint: str, **overrides) -> dict:
    return {"id": connection_id, "api_endpoint": endpoint, "credentials": {"type": "none"},
            "selected_groups": "all", "role_mapping": ROLE_MAPPING, "default_role": "member", **overrides}


def write(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content) if path.suffix == ".json" else yaml.safe_dump(content))
    return path


def listed(cwd: Path) -> dict[str, dict]:
    result = dirsync("connections", "list", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return {c["id"]: c for c in json.loads(result.stdout)}


def query(cwd: Path, sql: str) -> list[dict]:
    result = dirsync("query", "--json", sql, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result, exit_code: int = 2) -> str:
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr


def test_the_admin_flow_from_a_shell(tmp_path, emulator):
    """No config: every command uses the embedded default registry and warehouse (./data)."""
    yaml_file = write(tmp_path / "acme.yaml", organisation("acme", emulator.url))
    json_file = write(tmp_path / "globex.json", organisation("globex", emulator.url, selected_groups=["admins@acme.test"]))

    added = dirsync("connections", "add", "--file", str(yaml_file), cwd=tmp_path)
    assert added.returncode == 0 and "connection acme added (validating)" in added.stdout, added.stderr
    assert dirsync("connections", "add", "--file", str(json_file), cwd=tmp_path).returncode == 0
    assert "a connection 'acme' is already registered" in one_line_error(
        dirsync("connections", "add", "--file", str(yaml_file), cwd=tmp_path))
    invalid = write(tmp_path / "bad.yaml", {"id": "Bad Id", "api_endpoint": emulator.url})
    message = one_line_error(dirsync("connections", "add", "--file", str(invalid), cwd=tmp_path))
    assert "bad.yaml is not a valid connection" in message and "selected_groups: required key is missing" in message
    assert "no connection 'nope' is registered" in one_line_error(
        dirsync("connections", "update", "nope", "--file", str(yaml_file), cwd=tmp_path))
    assert "no connection 'nope' is registered" in one_line_error(dirsync("connections", "remove", "nope", cwd=tmp_path))

    connections = listed(tmp_path)
    assert set(connections) == {"acme", "globex", "demo"}  # the embedded default's demo is registered too
    assert {k: connections["acme"][k] for k in ("enabled", "status", "last_synced_at", "last_error")} == {
        "enabled": True, "status": "validating", "last_synced_at": None, "last_error": None}

    for connection_id in ("acme", "globex"):
        synced = dirsync("sync", "--connection", connection_id, cwd=tmp_path)
        assert synced.returncode == 0, synced.stderr[-2000:]
    connections = listed(tmp_path)
    assert [connections[c]["status"] for c in ("acme", "globex", "demo")] == ["active", "active", "validating"]
    assert connections["acme"]["last_synced_at"] is not None
    users = {r["connection_id"]: r["n"] for r in query(tmp_path, "SELECT connection_id, count(*) AS n "
                                                                   "FROM raw.google_users GROUP BY ALL")}
    assert users == {"acme": 120, "globex": 120}

    # update: a new group selection counts at the next sync
    write(json_file, organisation("globex", emulator.url, selected_groups=["admins@acme.test", "engineering@acme.test"]))
    assert dirsync("connections", "update", "globex", "--file", str(json_file), cwd=tmp_path).returncode == 0
    assert dirsync("sync", "--connection", "globex", cwd=tmp_path).returncode == 0
    groups = query(tmp_path, "SELECT DISTINCT group_email FROM core.filtered_memberships WHERE connection_id = 'globex' "
                             "AND is_direct ORDER BY ALL")
    assert groups == [{"group_email": "admins@acme.test"}, {"group_email": "engineering@acme.test"}]

    # disable: no sync, a visible state
    assert dirsync("connections", "disable", "acme", cwd=tmp_path).returncode == 0
    assert listed(tmp_path)["acme"]["status"] == "inactive"
    assert "connection acme is disabled" in one_line_error(dirsync("sync", "--connection", "acme", cwd=tmp_path))
    assert dirsync("connections", "enable", "acme", cwd=tmp_path).returncode == 0
    assert listed(tmp_path)["acme"]["status"] == "active"

    # remove: every row, history and change event of the organisation, and its Parquet outputs
    removed = dirsync("connections", "remove", "acme", cwd=tmp_path)
    assert removed.returncode == 0 and "connection acme removed" in removed.stdout, removed.stderr
    assert "acme" not in listed(tmp_path)
    for table in ("raw.google_users", "core.role_mapped_entitlements", "core.directory_changes",
                  "core.entitlements_history", "core.memberships_history", "core.sync_log"):
        counts = {r["connection_id"] for r in query(tmp_path, f"SELECT DISTINCT connection_id FROM {table}")}
        assert counts == {"globex"}, table
    assert not (tmp_path / "data" / "parquet" / "connection_id=acme").exists()
    assert not (tmp_path / "data" / "connections" / "acme").exists()
    events = query(tmp_path, "SELECT event FROM core.connection_events WHERE connection_id = 'acme' ORDER BY occurred_at")
    assert [e["event"] for e in events].count("connection.removed") == 1


def test_each_status_and_its_error(tmp_path, emulator):
    refusing = DirectoryEmulator(generate_directory(users=30, groups=4, seed=1, domain="acme.test"), require_auth=True)
    failing = generate_directory(users=30, groups=4, seed=2, domain="acme.test")
    with refusing, DirectoryEmulator(failing) as failing_emulator:
        config = write(tmp_path / "dirsync.yaml", {"warehouse": {"path": str(tmp_path / "wh")}, "connections": [
            organisation("refused", refusing.url),
            organisation("shrinking", failing_emulator.url),
        ]})
        assert dirsync("sync", "--config", str(config), "--connection", "refused", cwd=tmp_path).returncode == 1
        assert dirsync("sync", "--config", str(config), "--connection", "shrinking", cwd=tmp_path).returncode == 0
        for user_id in list(failing.users)[:20]:  # two thirds of the users deleted: the breaker refuses
            failing.delete_user(user_id)
        assert dirsync("sync", "--config", str(config), "--connection", "shrinking", cwd=tmp_path).returncode == 1
        state = {c["id"]: c for c in json.loads(dirsync("connections", "--config", str(config), "list", "--json",
                                                         cwd=tmp_path).stdout)}
        assert state["refused"]["status"] == "invalid_credentials"
        assert "answered 401" in state["refused"]["last_error"]
        assert state["shrinking"]["status"] == "quarantined"
        assert "allow-mass-removal" in state["shrinking"]["last_error"]

        failing_emulator.faults.error_rate = 1.0
        write(tmp_path / "patient.yaml", organisation("impatient", failing_emulator.url,
                                                       retry={"max_attempts": 1, "total_budget_seconds": 1}))
        assert dirsync("connections", "--config", str(config), "add", "--file", str(tmp_path / "patient.yaml"),
                       cwd=tmp_path).returncode == 0
        assert dirsync("sync", "--config", str(config), "--connection", "impatient", cwd=tmp_path).returncode == 1
        impatient = json.loads(dirsync("connections", "--config", str(config), "list", "--json", cwd=tmp_path).stdout)
        assert [c["status"] for c in impatient if c["id"] == "impatient"] == ["failing"]


def test_a_corrupt_registry_fails_every_command_in_one_line_and_is_kept(tmp_path):
    registry = tmp_path / "data" / "registry.sqlite"
    registry.parent.mkdir()
    registry.write_bytes(b"not sqlite at all " * 200)
    for command in (["connections", "list"], ["query", "SELECT 1"], ["sync"]):
        message = one_line_error(dirsync(*command, cwd=tmp_path))
        assert "registry.sqlite cannot be read" in message and len(message.strip().splitlines()) == 1, message
    assert registry.read_bytes() == b"not sqlite at all " * 200


def test_query_errors_and_an_empty_warehouse(tmp_path):
    empty = dirsync("query", "SELECT count(*) AS n FROM core.role_mapped_entitlements", cwd=tmp_path)
    assert empty.returncode == 0 and "(1 row)" in empty.stdout and "\n0" in empty.stdout, empty.stderr
    assert "Table with name nope does not exist" in one_line_error(dirsync("query", "SELECT * FROM nope", cwd=tmp_path))


def test_two_syncs_of_one_organisation_started_together_run_one_after_the_other(tmp_path):
    """The second `dirsync sync` of a connection waits for the first, and says which process it waits for."""
    slow = DirectoryEmulator(generate_directory(users=300, groups=20, seed=4, domain="acme.test"),
                             faults=FaultPlan(latency_ms=300))
    with slow:
        config = write(tmp_path / "dirsync.yaml", {"warehouse": {"path": str(tmp_path / "wh")},
                                                   "connections": [organisation("acme", slow.url, max_concurrency=1)]})
        command = ["sync", "--config", str(config), "--connection", "acme"]
        first = subprocess.Popen([*DIRSYNC, *command], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not slow.request_counts().get("users.list") and time.monotonic() < deadline:
            time.sleep(0.1)  # the first one holds the connection's lock once it calls Google
        second = dirsync(*command, cwd=tmp_path)
        first_out, first_err = first.communicate(timeout=180)
    assert first.returncode == 0 and second.returncode == 0, (first_err[-2000:], second.stderr[-2000:])
    assert re.search(rf"another sync of acme is running \(pid {first.pid}, run [0-9a-f-]+\); waiting for it to end",
                     second.stderr), second.stderr[-3000:]
    state = json.loads(dirsync("query", "--config", str(config), "--json",
                               "SELECT sync_id, published_at FROM core.sync_log ORDER BY published_at",
                               cwd=tmp_path).stdout)
    assert len(state) == 2


def test_a_warehouse_folder_that_cannot_hold_a_connection_names_the_cause(tmp_path, emulator):
    (tmp_path / "wh").mkdir()
    (tmp_path / "wh" / "connections").write_text("a file where the connections' folders go")
    config = write(tmp_path / "dirsync.yaml", {"warehouse": {"path": str(tmp_path / "wh")},
                                               "connections": [organisation("acme", emulator.url)]})
    result = dirsync("sync", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert re.search(r"acme: the run failed before its first step: \[Errno 20\] Not a directory: '.*/wh/connections/acme'",
                     result.stderr), result.stderr[-3000:]
    unwritable = write(tmp_path / "elsewhere.yaml", {"warehouse": {"path": "/proc/dirsync"}, "connections": []})
    listing = dirsync("connections", "--config", str(unwritable), "list", cwd=tmp_path)  # reading creates nothing
    assert listing.returncode == 0 and "(no connection registered" in listing.stdout
    message = one_line_error(dirsync("connections", "--config", str(unwritable), "add", "--file",
                                     str(write(tmp_path / "x.yaml", organisation("x", emulator.url))), cwd=tmp_path))
    assert "the connections registry cannot be created at /proc/dirsync/registry.sqlite" in message
