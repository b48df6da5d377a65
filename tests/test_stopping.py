"""SIGTERM and SIGINT stop a running sync within seconds, the published state as it was: `dirsync sync` and
a run under `dagster dev` terminated from the UI (GraphQL, as the UI's Terminate button does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from tests.conftest import write_config
from tests.published_state import published_state
from tests.test_cli import dirsync

LATENCY_MS = 1000  # each request answers after a second: a sync of this directory takes ~20 s
STOP_WITHIN_SECONDS = 5


def slow_directory_config(tmp_path: Path, emulator: DirectoryEmulator) -> Path:
    return write_config(tmp_path, [{"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all",
                                    "rate_limit_qps": None, "max_concurrency": 2, "batch_size": 1}])


def wait_until_fetching(emulator: DirectoryEmulator, timeout: float = 60) -> None:
    """Until the sync has listed two pages of users (the count goes on from earlier syncs)."""
    deadline, start = time.monotonic() + timeout, emulator.request_counts().get("users.list", 0)
    while emulator.request_counts().get("users.list", 0) < start + 2:
        assert time.monotonic() < deadline, "the sync never started listing users"
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_running_sync_within_seconds_and_publishes_nothing(tmp_path, signum):
    directory = generate_directory(users=6000, groups=30, seed=3, domain="acme.test")
    with DirectoryEmulator(directory) as emulator:
        config = slow_directory_config(tmp_path, emulator)
        assert dirsync("sync", "--config", str(config), cwd=tmp_path).returncode == 0
        before = published_state(tmp_path)
        directory.suspend_user(next(iter(directory.users)))  # a change the stopped sync must not publish
        emulator.faults.latency_ms = LATENCY_MS
        env = {k: v for k, v in os.environ.items() if k not in ("DIRSYNC_CONFIG", "DAGSTER_HOME")}
        sync = subprocess.Popen([sys.executable, "-m", "dirsync_pipeline.cli", "sync", "--config", str(config)],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until_fetching(emulator)
            sent = time.monotonic()
            sync.send_signal(signum)
            out, err = sync.communicate(timeout=60)
            stopped_after = time.monotonic() - sent
        finally:
            sync.kill()
    assert stopped_after < STOP_WITHIN_SECONDS, f"stopped {stopped_after:.1f} s after the signal"
    assert sync.returncode == 128 + signum, err[-3000:]
    assert f"acme: sync stopped by {signal.Signals(signum).name}" in err, err[-3000:]
    assert "the last published data is unchanged" in err
    assert published_state(tmp_path) == before


def test_a_run_terminated_from_the_dagster_ui_stops_within_seconds_and_publishes_nothing(tmp_path):
    """Under `dagster dev`: Sync Now, then Terminate (the UI's GraphQL mutation) while users.list pages."""
    from tests.test_dagster_dev import graphql, launch_sync_now, running_dagster_dev, wait_for_location, wait_for_runs

    directory = generate_directory(users=6000, groups=30, seed=3, domain="acme.test")
    with DirectoryEmulator(directory) as emulator:
        config = slow_directory_config(tmp_path, emulator)
        assert dirsync("sync", "--config", str(config), cwd=tmp_path).returncode == 0
        before = published_state(tmp_path)
        directory.suspend_user(next(iter(directory.users)))
        emulator.faults.latency_ms = LATENCY_MS
        home = tmp_path / "dagster_home"
        home.mkdir()
        with running_dagster_dev(home, {"DIRSYNC_CONFIG": str(config)}) as url:
            wait_for_location(url)
            run = launch_sync_now(url, partition="acme")
            wait_until_fetching(emulator)
            sent = time.monotonic()
            terminated = graphql(url, """mutation($id: String!) { terminateRun(runId: $id) { __typename
                ... on TerminateRunFailure { message } ... on PythonError { message } } }""", {"id": run["runId"]})
            assert terminated["terminateRun"]["__typename"] == "TerminateRunSuccess", terminated
            [finished] = wait_for_runs(url, [run["runId"]], home)
            stopped_after = time.monotonic() - sent
            log = (home / "dagster.log").read_text()
    assert finished["status"] == "CANCELED", log[-3000:]
    assert stopped_after < STOP_WITHIN_SECONDS + 2, f"the run ended {stopped_after:.1f} s after Terminate"  # + polling
    assert published_state(tmp_path) == before
