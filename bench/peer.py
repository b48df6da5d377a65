"""The peer: Airbyte's `source-google-directory`, installed in its own venv and run against our emulator.

The benchmark compares dirsync with the connector a new user would otherwise pick, in the same run and
against the same emulator. The peer is installed from PyPI into bench/out/ (never committed). Its
googleapiclient (1.12) fetches the discovery document from googleapis.com when it builds the service, so
a ``sitecustomize`` in the peer's venv builds it from the Directory API's document instead, with the
emulator as endpoint; credentials are a generated service-account key whose token URI is the emulator's.
Nothing else of the peer changes: its paging, page sizes and sequential reading are its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import googleapiclient

from bench.measure import Measured, run_measured

PEER_PACKAGE = "airbyte-source-google-directory==0.2.45"
PEER_DIR = Path(__file__).resolve().parent / "out" / "peer"
STREAMS = ("users", "groups", "group_members")
DISCOVERY_DOC = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "admin.directory_v1.json"
_ENDPOINT_VAR = "BENCH_PEER_API_ENDPOINT"
_DOCUMENT_VAR = "BENCH_PEER_DISCOVERY_DOC"
# Loaded by the peer's interpreter at start-up: `build` reads the local discovery document, not Google's.
SITECUSTOMIZE = f'''\
import os

if os.environ.get("{_ENDPOINT_VAR}"):
    import googleapiclient.discovery as _discovery

    def _build(serviceName, version, credentials=None, **kwargs):
        with open(os.environ["{_DOCUMENT_VAR}"], encoding="utf-8") as document:
            return _discovery.build_from_document(
                document.read(), credentials=credentials, client_options={{"api_endpoint": os.environ["{_ENDPOINT_VAR}"]}})

    _discovery.build = _build
'''


@dataclass(frozen=True)
class PeerRun:
    measured: Measured
    records: dict[str, int]  # records emitted per stream


def install_peer() -> Path:
    """The peer's `source-google-directory` executable, installed on first use."""
    executable = PEER_DIR / "bin" / "source-google-directory"
    if not executable.exists():
        venv.create(PEER_DIR, with_pip=True, clear=True)
        subprocess.run([str(PEER_DIR / "bin" / "python"), "-m", "pip", "install", "-q", PEER_PACKAGE], check=True)
    site_packages = subprocess.run(
        [str(PEER_DIR / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    (Path(site_packages) / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return executable


def run_peer(workdir: Path, api_endpoint: str, admin_email: str, *, timeout_seconds: float,
             on_tick: Callable[[], None] | None = None) -> PeerRun:
    """One full-refresh read of users, groups and group members, as a measured child process."""
    from tests.conftest import write_service_account_key  # a throwaway RSA key; the emulator trusts any

    executable = install_peer()
    workdir.mkdir(parents=True, exist_ok=True)
    key = write_service_account_key(workdir / "sa.json", api_endpoint + "token")
    config = workdir / "config.json"
    config.write_text(json.dumps({"credentials": {"credentials_json": key.read_text(), "email": admin_email}}))
    catalog = workdir / "catalog.json"
    catalog.write_text(json.dumps({"streams": [
        {"stream": {"name": name, "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
         "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"} for name in STREAMS]}))
    output = workdir / "records.jsonl"
    env = {**os.environ, _ENDPOINT_VAR: api_endpoint, _DOCUMENT_VAR: str(DISCOVERY_DOC)}
    env.pop("PYTHONPATH", None)
    measured = run_measured([str(executable), "read", "--config", str(config), "--catalog", str(catalog)],
                            cwd=workdir, env=env, timeout_seconds=timeout_seconds, on_tick=on_tick, stdout=output)
    return PeerRun(measured, _record_counts(output))


def _record_counts(output: Path) -> dict[str, int]:
    counts: Counter[str] = Counter()
    with output.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith('{"type": "RECORD"') or '"type": "RECORD"' in line[:40]:
                counts[json.loads(line)["record"]["stream"]] += 1
    return dict(counts)


if __name__ == "__main__":  # `python -m bench.peer`: install the peer and say where
    print(install_peer(), file=sys.stderr)
