"""Every rough edge of issue 15, each command run as a user runs it: a fresh `dirsync` process per command.

In-process tests share a process that already ran a sync, which hid `remap`'s KeyError; here nothing is
shared but the emulator, and the environment has no DIRSYNC_CONFIG or DAGSTER_HOME.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from dirsync_pipeline.warehouse.outputs import connection_dir, current_manifest
from tests.test_cli import DIRSYNC, dirsync

DOMAIN = "acme.test"


@pytest.fixture(scope="module")
def directory():
    return generate_directory(users=80, groups=10, seed=5, domain=DOMAIN)


@pytest.fixture(scope="module")
def emulator(directory):
    with DirectoryEmulator(directory) as running:
        yield running


def write_config(tmp_path: Path, connection: dict, retention: dict | None = None) -> Path:
    warehouse = {"path": str(tmp_path)}
    if retention is not None:
        warehouse["parquet_retention"] = retention
    path = tmp_path / "dirsync.yaml"
    path.write_text(yaml.safe_dump({"warehouse": warehouse, "connections": [{"id": "acme", **connection}]}))
    return path


def parquet_sets(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in connection_dir(tmp_path / "parquet", "acme").glob("sync-*"))


def test_remap_after_demo_in_fresh_processes(tmp_path):
    demo = dirsync("demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-2000:]
    remap = dirsync("remap", cwd=tmp_path)
    assert remap.returncode == 0, remap.stderr[-3000:]
    assert "KeyError" not in remap.stderr
    assert re.search(r"^demo: sync \S+ published$", remap.stdout, re.M)
    assert re.search(r"^demo: (no change|\d+ \w+)", remap.stdout, re.M)


def test_explain_into_a_closed_pipe_ends_quietly_with_sigpipe_code(tmp_path, emulator, directory):
    config = write_config(tmp_path, {"api_endpoint": emulator.url, "selected_groups": "all"})
    sync = dirsync("sync", "--config", str(config), cwd=tmp_path)
    assert sync.returncode == 0, sync.stderr[-2000:]
    user = next(iter(directory.users.values())).primary_email
    environment = {k: v for k, v in os.environ.items() if k not in ("DIRSYNC_CONFIG", "DAGSTER_HOME")}
    # The reader is gone before dirsync writes (as `| head -1` once it has its line): every write fails.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run([*DIRSYNC, "explain", user, "--config", str(config)], cwd=tmp_path, env=environment,
                                 stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert process.returncode == 141, process.stderr[-2000:]
    assert "Traceback" not in process.stderr and "BrokenPipeError" not in process.stderr
    # and read normally, its first line names the user
    explained = dirsync("explain", user, "--config", str(config), cwd=tmp_path)
    assert explained.returncode == 0 and explained.stdout.splitlines()[0].startswith(f"{user} (user ")


def test_groups_search_counts_matches_and_says_when_none_match(tmp_path, emulator, directory):
    config = write_config(tmp_path, {"api_endpoint": emulator.url, "selected_groups": "all"})
    found = dirsync("groups", "--config", str(config), "--search", "ENGINEERING@", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    total = len(directory.groups)
    assert f"connection acme: 1 of {total} groups match 'ENGINEERING@'" in found.stdout
    assert "engineering@acme.test" in found.stdout
    none = dirsync("groups", "--config", str(config), "--search", "no-such-group", cwd=tmp_path)
    assert none.returncode == 1
    assert f"connection acme: no group's email or name contains 'no-such-group' ({total} groups)" in none.stdout
    assert "email" not in none.stdout.split("\n", 1)[1]  # no table header under the message


def test_emulator_help_describes_each_option_with_its_default(tmp_path):
    result = dirsync("emulator", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option, default in [("--users", "2000"), ("--groups", "150"), ("--port", "8085"), ("--host", "127.0.0.1"),
                            ("--seed", "42")]:
        assert re.search(rf"{option} [A-Z_]+ \w(?:(?! --).)*? \(default: {re.escape(default)}\)", text), option


def test_emulator_on_a_port_in_use_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = dirsync("emulator", "--port", str(port), "--users", "10", "--groups", "2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dirsync: port {port} on 127.0.0.1 is already in use (another emulator?): pick another with --port, "
        "or --port 0 for any free one"]


def test_check_names_each_unknown_selected_and_mapped_group(tmp_path, emulator):
    config = write_config(tmp_path, {
        "api_endpoint": emulator.url, "selected_groups": ["engineering@acme.test", "gone@acme.test"],
        "role_mapping": {"engineering@acme.test": "developer", "misspelt@acme.test": "admin"}})
    result = dirsync("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "no group 'gone@acme.test' in the directory" in result.stdout
    assert "no group 'misspelt@acme.test' in the directory" in result.stdout
    assert "engineering@acme.test' in the directory" not in result.stdout
    assert "a sync would FAIL" in result.stdout and "Traceback" not in result.stderr


def test_syncs_keep_the_configured_number_of_parquet_sets(tmp_path, emulator):
    config = write_config(tmp_path, {"api_endpoint": emulator.url, "selected_groups": "all"},
                          retention={"keep_last": 2, "grace_minutes": 0})
    for _ in range(4):
        result = dirsync("sync", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    sets = parquet_sets(tmp_path)
    assert len(sets) == 2  # keep_last counts the current set
    current = current_manifest(tmp_path / "parquet", "acme")
    assert f"sync-{current['sync_id']}" in sets
    # the published DuckDB copy readers attach stays only in the current set (grace 0): it is a set's largest file
    with_copy = [p.parent.name for p in (tmp_path / "parquet" / "connection_id=acme").glob("sync-*/warehouse.duckdb")]
    assert with_copy == [f"sync-{current['sync_id']}"]


def test_prune_dry_run_removes_nothing_and_keep_last_0_is_refused(tmp_path, emulator):
    config = write_config(tmp_path, {"api_endpoint": emulator.url, "selected_groups": "all"},
                          retention={"keep_last": 24, "grace_minutes": 0})
    for _ in range(3):
        assert dirsync("sync", "--config", str(config), cwd=tmp_path).returncode == 0
    before = parquet_sets(tmp_path)
    assert len(before) == 3
    dry = dirsync("prune", "--config", str(config), "--keep-last", "1", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"^acme: would remove 2 Parquet set\(s\) \([\d.]+ MB\), kept 1$", dry.stdout, re.M)
    assert parquet_sets(tmp_path) == before
    refused = dirsync("prune", "--config", str(config), "--keep-last", "0", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "dirsync: --keep-last must be at least 1 (the current set is always kept)"
    assert parquet_sets(tmp_path) == before
    pruned = dirsync("prune", "--config", str(config), "--keep-last", "1", cwd=tmp_path)
    assert pruned.returncode == 0 and "acme: removed 2 Parquet set(s)" in pruned.stdout
    assert parquet_sets(tmp_path) == [f"sync-{current_manifest(tmp_path / 'parquet', 'acme')['sync_id']}"]
