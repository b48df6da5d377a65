"""The pieces of one benchmark run: the emulator in its own process, a config, the real `dirsync sync`.

The emulator runs as a separate `dirsync emulator` process so that its memory and CPU are not counted
as the sync's; the sync runs exactly as an operator runs it, as `dirsync sync --config FILE`, Dagster
included. What the sync asked of the API is read from the emulator's counters, not from the client.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

from bench.measure import Measured, run_measured
from dirsync_pipeline.config import CONFIG_ENV_VAR
from dirsync_pipeline.emulator.service import API_ENDPOINTS, STATS_PATH
from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.tables import (
    FILTERED_MEMBERSHIPS,
    GOOGLE_GROUP_MEMBERS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    ROLE_MAPPED_ENTITLEMENTS,
)

PUBLISHED_TABLES = (GOOGLE_USERS, GOOGLE_GROUPS, GOOGLE_GROUP_MEMBERS, FILTERED_MEMBERSHIPS, ROLE_MAPPED_ENTITLEMENTS)
CONNECTION_ID = "bench"
EMULATOR_START_SECONDS = 180
_READY = re.compile(r"on (http://\S+/) \((\d+) users, (\d+) groups, customer (\S+)\)")
_WINDOW_POLL_SECONDS = 0.2


def dirsync_command(*args: str) -> list[str]:
    """The `dirsync` CLI of this interpreter (same venv as the benchmark)."""
    return [sys.executable, "-m", "dirsync_pipeline.cli", *args]


def clean_env() -> dict[str, str]:
    """No DAGSTER_HOME (an ephemeral instance, like a fresh install) and no ambient config file."""
    return {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", CONFIG_ENV_VAR)}


class EmulatorProcess:
    """`dirsync emulator` on a free port, with latency and rate limit; its counters over HTTP."""

    def __init__(self, users: int, groups: int, *, seed: int, latency_ms: float, rate_limit_qps: float | None,
                 latency_max_ms: float | None = None):
        args = ["emulator", "--users", str(users), "--groups", str(groups), "--seed", str(seed), "--port", "0",
                "--latency-ms", str(latency_ms)]
        if latency_max_ms is not None:
            args += ["--latency-max-ms", str(latency_max_ms)]
        if rate_limit_qps is not None:
            args += ["--rate-limit-qps", str(rate_limit_qps)]
        self._argv = dirsync_command(*args)
        self._process: subprocess.Popen[str] | None = None
        self.url = ""
        self.customer_id = ""

    def __enter__(self) -> EmulatorProcess:
        self._process = subprocess.Popen(self._argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         env=clean_env())
        match = self._wait_ready(self._process)
        self.url, self.customer_id = match.group(1), match.group(4)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._process is not None:
            self._process.terminate()  # the emulator stops cleanly on SIGTERM
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    @staticmethod
    def _wait_ready(process: subprocess.Popen[str]) -> re.Match[str]:
        """The emulator prints its address once it serves; generating 100k users takes a few seconds."""
        assert process.stdout is not None
        deadline = time.monotonic() + EMULATOR_START_SECONDS
        lines: list[str] = []
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=1):
                    continue
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if match := _READY.search(line):
                    return match
        process.kill()
        raise RuntimeError(f"the emulator did not start: {''.join(lines)[-2000:]}")

    def stats(self) -> dict[str, dict[str, int]]:
        with urllib.request.urlopen(self.url.rstrip("/") + STATS_PATH, timeout=10) as answer:
            return json.load(answer)


@dataclass
class ApiWindow:
    """When the API was busy during a run, seen from the emulator's counters (±0.2 s)."""

    emulator: EmulatorProcess
    baseline: int
    started: float = field(default_factory=time.monotonic)  # created as the measured process starts
    first_seen: float | None = None
    last_change: float | None = None
    _last_count: int = 0
    _last_poll: float = field(default=0.0, repr=False)

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._last_poll < _WINDOW_POLL_SECONDS:
            return
        self._last_poll = now
        count = api_requests(self.emulator.stats()) - self.baseline
        if count and self.first_seen is None:
            self.first_seen = now
        if count != self._last_count:
            self._last_count, self.last_change = count, now

    @property
    def before_first(self) -> float | None:
        """From the process's start to its first request: Python, Dagster and the step's set-up."""
        return None if self.first_seen is None else self.first_seen - self.started

    @property
    def seconds(self) -> float | None:
        if self.first_seen is None or self.last_change is None:
            return None
        return self.last_change - self.first_seen


def api_requests(stats: dict[str, dict[str, int]]) -> int:
    """Directory API calls the emulator received (batch parts included, token calls excluded)."""
    return sum(stats["requests"].get(endpoint, 0) for endpoint in API_ENDPOINTS)


@dataclass(frozen=True)
class SyncRun:
    measured: Measured
    api_requests: dict[str, int]  # per endpoint, during this run only
    faults: dict[str, int]  # injected by the emulator during this run, e.g. {"429": 3}
    api_seconds: float | None
    published: dict[str, int]  # rows per published table
    before_first_request: float | None = None

    @property
    def total_requests(self) -> int:
        return sum(self.api_requests.values())

    @property
    def rate_limited(self) -> int:
        return self.faults.get("429", 0)


def write_config(workdir: Path, emulator: EmulatorProcess, *, role_mapping: dict[str, list[str]], default_role: str,
                 **settings: object) -> Path:
    """A config of one connection to ``emulator``; ``settings`` (max_concurrency, rate_limit_qps...) left out
    are dirsync's defaults."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "warehouse": {"path": str(workdir)},
        "connections": [{
            "id": CONNECTION_ID, "api_endpoint": emulator.url, "credentials": {"type": "none"},
            "selected_groups": "all", "role_mapping": role_mapping, "default_role": default_role, **settings,
        }],
    }
    path = workdir / "dirsync.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_sync(config_path: Path, emulator: EmulatorProcess, *, timeout_seconds: float) -> SyncRun:
    """`dirsync sync --config FILE` as a measured child process; API use is the emulator's counter delta."""
    before = emulator.stats()
    window = ApiWindow(emulator, baseline=api_requests(before))
    measured = run_measured(dirsync_command("sync", "--config", str(config_path)), cwd=config_path.parent,
                            env=clean_env(), timeout_seconds=timeout_seconds, on_tick=window.poll)
    after = emulator.stats()
    requests = {e: after["requests"].get(e, 0) - before["requests"].get(e, 0) for e in API_ENDPOINTS}
    faults = {k: n - before["faults"].get(k, 0) for k, n in after["faults"].items() if n - before["faults"].get(k, 0)}
    published = published_counts(config_path.parent) if measured.ok else {}
    return SyncRun(measured, {e: n for e, n in requests.items() if n}, faults, window.seconds, published,
                   window.before_first)


def published_counts(warehouse_dir: Path) -> dict[str, int]:
    with reader.connect(warehouse_dir) as conn:
        return {
            table.name: conn.execute(f"SELECT count(*) FROM {table.qualified_name} WHERE connection_id = ?",
                                     [CONNECTION_ID]).fetchone()[0]
            for table in PUBLISHED_TABLES
        }
