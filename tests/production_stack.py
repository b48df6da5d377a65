"""dirsync as deployed (deploy/), minus the containers: real processes on this machine.

The same three Dagster processes as deploy/docker-compose.yaml, on a Postgres cluster of this machine:
- the code location, `dagster api grpc -m dirsync_pipeline.definitions` (the Compose `dirsync-code`
  service; the default run launcher starts each run as one of its subprocesses);
- `dagster-daemon run` (schedule, sensor, run queue, run monitoring);
- `dagster-webserver` (the UI, and the GraphQL API Sync Now goes through).
All three, and every `dirsync` command a test runs, share a DAGSTER_HOME whose dagster.yaml is
deploy/dagster.yaml (its settings from DAGSTER_POSTGRES_*), a workspace naming the gRPC server (as
deploy/workspace.yaml does), and one DIRSYNC_CONFIG whose warehouse folder they all see.
Used by tests/test_production.py and bench/production_tick.py.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from tests.postgres_cluster import PostgresCluster, free_port, wait_until
from bench.dagster_dev import graphql

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "dirsync_pipeline"
START_SECONDS = 120


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else copy.deepcopy(value)
    return merged


@dataclass
class Stack:
    workdir: Path
    home: Path
    config: Path
    env: dict[str, str]
    grpc_port: int
    url: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    # --- processes ---------------------------------------------------------------------------------------
    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "a")
        process = subprocess.Popen(argv, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes[name] = process
        return process

    def stop(self, name: str, timeout: float = 30) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        tree = _tree(process.pid)
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        for child in tree:  # run workers the code server started, in their own sessions or not
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def start_daemon(self) -> None:
        self.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")])

    def restart_daemon(self) -> None:
        self.stop("daemon")
        self.start_daemon()

    # --- the instance and the CLI -----------------------------------------------------------------------
    @contextmanager
    def instance(self):
        """A DagsterInstance of deploy/dagster.yaml in this process (the stack's env, for its duration)."""
        import dagster as dg

        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            with dg.DagsterInstance.from_config(str(self.home)) as instance:
                yield instance
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def dirsync(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """A `dirsync` command with the deployment's environment (DAGSTER_HOME, DIRSYNC_CONFIG, Postgres)."""
        return subprocess.run([str(BIN / "dirsync"), *args], cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.url, query, variables)

    def launch_sync_now(self, connection_id: str) -> str:
        """Sync Now from the UI: launch directory_sync for one partition; it goes through the run queue."""
        launched = self.graphql(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
            {"p": {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                                "jobName": "directory_sync"},
                   "executionMetadata": {"tags": [{"key": "dagster/partition", "value": connection_id},
                                                  {"key": "dirsync/trigger", "value": "manual"}]}}})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def code_server_tree(self) -> list[psutil.Process]:
        process = self.processes.get("grpc")
        return _tree(process.pid) if process else []


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def write_home(home: Path, grpc_port: int, instance_overrides: dict | None = None) -> None:
    """DAGSTER_HOME: deploy/dagster.yaml (plus overrides: the bench's run limit), and a workspace naming the
    gRPC server as deploy/workspace.yaml does."""
    home.mkdir(parents=True, exist_ok=True)
    instance = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    (home / "dagster.yaml").write_text(yaml.safe_dump(deep_merge(instance, instance_overrides or {}), sort_keys=False))
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace, sort_keys=False))


@contextmanager
def dagster_stack(workdir: Path, cluster: PostgresCluster, *, instance_overrides: dict | None = None,
                  before_daemon=None) -> Iterator[Stack]:
    """Code server, daemon and webserver of a deployment whose warehouse is ``workdir/warehouse``.

    ``before_daemon(stack)`` runs once the code server answers and before the daemon starts.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "dirsync.yaml"
    deployment = yaml.safe_load((REPO / "deploy" / "dirsync.yaml").read_text())
    deployment["warehouse"]["path"] = str(workdir / "warehouse")
    config.write_text(yaml.safe_dump(deployment, sort_keys=False))
    grpc_port, web_port = free_port(), free_port()
    home = workdir / "dagster_home"
    write_home(home, grpc_port, instance_overrides)
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DIRSYNC_CONFIG")}
    env |= cluster.env() | {"DAGSTER_HOME": str(home), "DIRSYNC_CONFIG": str(config)}
    stack = Stack(workdir, home, config, env, grpc_port, url=f"http://127.0.0.1:{web_port}")
    try:
        stack.start("grpc", [str(BIN / "dagster"), "api", "grpc", "--module-name", "dirsync_pipeline.definitions",
                             "--host", "127.0.0.1", "--port", str(grpc_port)])
        wait_until(lambda: _grpc_healthy(stack), START_SECONDS, 1, "the code server")
        if before_daemon:
            before_daemon(stack)
        stack.start_daemon()
        stack.start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                                  "-w", str(home / "workspace.yaml")])
        wait_until(lambda: _location_loaded(stack), START_SECONDS, 1, "the webserver to load the code location")
        yield stack
    except Exception:
        for name in list(stack.processes):
            print(f"--- {name}.log ---\n{stack.log(name)}", file=sys.stderr)
        raise
    finally:
        for name in ("daemon", "webserver", "grpc"):
            stack.stop(name)


def _grpc_healthy(stack: Stack) -> bool:
    if stack.processes["grpc"].poll() is not None:
        raise RuntimeError(f"the code server exited: {stack.log('grpc')}")
    from dagster._grpc.client import DagsterGrpcClient

    try:
        socket.create_connection(("127.0.0.1", stack.grpc_port), timeout=1).close()
    except OSError:
        return False  # not listening yet (asking gRPC now would log a connection error)
    try:
        return DagsterGrpcClient(port=stack.grpc_port, host="127.0.0.1").health_check_query() == "SERVING"
    except Exception:
        return False


def _location_loaded(stack: Stack) -> bool:
    try:
        data = stack.graphql("""{ workspaceOrError { ... on Workspace { locationEntries { name
            locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
    except OSError:
        return False
    entries = data["workspaceOrError"]["locationEntries"]
    loaded = [e for e in entries if e["name"] == LOCATION and e["locationOrLoadError"]]
    if loaded and loaded[0]["locationOrLoadError"]["__typename"] == "PythonError":
        raise RuntimeError(f"the code location failed to load: {loaded[0]['locationOrLoadError']['message']}")
    return bool(loaded)


def wait_for_runs(stack: Stack, run_ids: list[str], timeout: float) -> list:
    """The RunRecords of ``run_ids`` once all have finished (success, failure or cancel)."""
    from dagster import DagsterRunStatus, RunsFilter

    done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    with stack.instance() as instance:
        def finished():
            records = instance.get_run_records(RunsFilter(run_ids=run_ids))
            return records if len(records) == len(run_ids) and all(r.dagster_run.status in done for r in records) \
                else None

        try:
            return wait_until(finished, timeout, 1, f"runs {run_ids}")
        except AssertionError:
            raise AssertionError(f"runs did not finish: {[(r.dagster_run.run_id, r.dagster_run.status) for r in instance.get_run_records(RunsFilter(run_ids=run_ids))]}\n"
                                 f"daemon: {stack.log('daemon')}\ngrpc: {stack.log('grpc')}") from None


def run_failure_reason(stack: Stack, run_id: str) -> str:
    with stack.instance() as instance:
        events = instance.all_logs(run_id)
    return "\n".join(e.message for e in events if e.is_dagster_event and e.dagster_event.is_failure)[-3000:] \
        or "\n".join(e.message for e in events[-15:])


def connection_file(path: Path, connection_id: str, endpoint: str, **settings) -> Path:
    """One connection (a config's `connections:` entry) on an emulator over HTTP."""
    entry = {"id": connection_id, "api_endpoint": endpoint, "credentials": {"type": "none"},
             "selected_groups": "all", "default_role": "member", "rate_limit_qps": None, **settings}
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return path


def backdate_hourly_schedule(stack: Stack, seconds: float) -> tuple[str, str]:
    """Mark hourly_directory_sync as started ``seconds`` ago, with no tick since, in the instance's schedule
    storage: a daemon started now runs the tick it missed (the last :00), as after a daemon outage.
    Returns the schedule's (origin id, selector id), to read its ticks."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, ScheduleInstigatorData
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    assert "daemon" not in stack.processes, "the daemon keeps its own last tick in memory: stop it first"
    with stack.instance() as instance, \
            WorkspaceProcessContext(instance, WorkspaceFileTarget([str(stack.home / "workspace.yaml")])) as context:
        location = context.create_request_context().get_code_location(LOCATION)
        (repository,) = location.get_repositories().values()
        schedule = repository.get_schedule("hourly_directory_sync")
        state = InstigatorState(schedule.get_remote_origin(), InstigatorType.SCHEDULE, InstigatorStatus.RUNNING,
                                ScheduleInstigatorData(schedule.cron_schedule, start_timestamp=time.time() - seconds))
        stored = instance.get_instigator_state(schedule.get_remote_origin_id(), schedule.selector_id)
        (instance.update_instigator_state if stored else instance.add_instigator_state)(state)
        return schedule.get_remote_origin_id(), schedule.selector_id
