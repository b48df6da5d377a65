"""A real `dagster dev` (webserver + daemon) in a folder of its own, driven over GraphQL: for the tests and the
many-organisations benchmark alike."""

from __future__ import annotations

import json
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

REPO = Path(__file__).resolve().parents[1]


class DagsterDevError(RuntimeError):
    """`dagster dev` did not come up, or a run did not end in time; the message ends with its log."""


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
            raise DagsterDevError(f"dagster dev did not answer: {(home / 'dagster.log').read_text()[-3000:]}")
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
    raise DagsterDevError("the code location never loaded")
