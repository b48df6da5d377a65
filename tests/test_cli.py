"""The `dirsync` console script, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from dirsync_pipeline.warehouse import reader
from tests.conftest import write_config

DIRSYNC = [sys.executable, "-m", "dirsync_pipeline.cli"]


def cli_env(env: dict | None = None) -> dict[str, str]:
    """The environment of a user's shell: no DIRSYNC_CONFIG or DAGSTER_HOME unless the test sets them."""
    return {k: v for k, v in os.environ.items() if k not in ("DIRSYNC_CONFIG", "DAGSTER_HOME")} | (env or {})


def dirsync(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*DIRSYNC, *args], cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=180)


def test_demo_publishes_the_embedded_default_and_prints_a_summary(tmp_path):
    result = dirsync("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "raw.google_users                     2000 rows" in result.stdout
    assert "Users with the most roles:" in result.stdout
    with reader.connect(tmp_path / "data") as conn:
        assert conn.execute("SELECT count(*) FROM raw.google_users").fetchall() == [(2000,)]
        assert conn.execute("SELECT count(DISTINCT role) FROM core.role_mapped_entitlements").fetchall()[0][0] >= 4


def test_sync_fails_with_an_actionable_message_and_non_zero_exit(tmp_path):
    directory = generate_directory(users=80, groups=10, seed=5, domain="acme.test")
    with DirectoryEmulator(directory) as emulator:
        emulator.faults.api_disabled = True
        config = write_config(tmp_path, [{"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all"}])
        result = dirsync("sync", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "Admin SDK API is not enabled" in result.stderr
    assert "last published data is unchanged" in result.stderr


def test_sync_reports_config_errors_with_exit_2(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("connections:\n  - id: Acme\n    selected_groups: all\n")
    result = dirsync("sync", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "connections[0].id" in result.stderr and "Traceback" not in result.stderr


def test_groups_lists_selection_roles_and_warns_about_unknown_groups(tmp_path):
    directory = generate_directory(users=80, groups=10, seed=5, domain="acme.test")
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [{
            "id": "acme", "api_endpoint": emulator.url, "selected_groups": ["engineering@acme.test", "gone@acme.test"],
            "role_mapping": {"engineering@acme.test": "developer"}}])
        result = dirsync("groups", "--config", str(config), "--search", "engineering", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "engineering@acme.test" in x)
    members = len(directory.find_group("engineering@acme.test").members)
    assert line.split()[1:] == [str(members), "yes", "developer"]
    assert "sales@acme.test" not in result.stdout
    assert "selected_groups names groups that do not exist (deleted or misspelt): gone@acme.test" in result.stderr


def test_unusable_key_file_and_dead_endpoint_fail_with_clear_messages(tmp_path):
    key = tmp_path / "sa.json"
    key.write_text("not json at all")
    key.chmod(0o644)
    with DirectoryEmulator(generate_directory(users=20, groups=3, seed=5)) as emulator:
        config = write_config(tmp_path, [
            {"id": "badkey", "api_endpoint": emulator.url, "selected_groups": "all",
             "credentials": {"type": "service_account", "file": str(key), "subject": "admin@acme.test"}},
            {"id": "dead", "api_endpoint": "http://127.0.0.1:9/", "selected_groups": "all"},
        ])
        result = dirsync("sync", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{key} is readable by other users" in result.stderr and f"chmod 600 {key}" in result.stderr
    assert f"badkey: step google_directory failed: {key} is not a usable service account key" in result.stderr
    # nothing listens at the configured endpoint: said at once, naming it and the network error, no retries
    assert re.search(r"dead: step google_directory failed: nothing answers at api_endpoint http://127\.0\.0\.1:9/ "
                     r"\(\[Errno 111\] Connection refused\)", result.stderr)
    assert "still failing after" not in result.stderr
    assert "not json at all" not in result.stderr
