"""Shared fixtures: a small synthetic directory served over real HTTP by the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dirsync_pipeline.defs.partitions import CONNECTIONS
from dirsync_pipeline.emulator import Directory, DirectoryEmulator, generate_directory


@pytest.fixture
def directory() -> Directory:
    return generate_directory(users=600, groups=40, seed=7, domain="acme.test")


@pytest.fixture
def emulator(directory: Directory) -> Iterator[DirectoryEmulator]:
    with DirectoryEmulator(directory) as running:
        yield running


@pytest.fixture
def service_account_file(tmp_path: Path, emulator: DirectoryEmulator) -> Path:
    """A real-looking service-account key whose token_uri is the emulator's fake OAuth endpoint."""
    return write_service_account_key(tmp_path / "sa.json", emulator.token_uri)


def write_service_account_key(path: Path, token_uri: str) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {
        "type": "service_account", "project_id": "acme-sync", "private_key_id": "0123456789abcdef",
        "private_key": pem.decode(), "client_email": "dirsync@acme-sync.iam.gserviceaccount.com",
        "client_id": "109876543210987654321", "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    return path


def instance_with(*connection_ids: str) -> dg.DagsterInstance:
    """An ephemeral Dagster instance that knows the connections as partitions, as the sensor makes them."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(CONNECTIONS.name, list(connection_ids))
    return instance


def write_config(tmp_path: Path, connections: list[dict], name: str = "dirsync.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"warehouse": {"path": str(tmp_path)}, "connections": connections}))
    return path


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL cluster of Debian's packages for the whole session (tests/postgres_cluster.py).

    Missing PostgreSQL skips on a laptop and fails in CI (`CI` set): `.ci/run` installs it.
    """
    import os

    from tests.postgres_cluster import running_cluster, server_bin_dir

    bin_dir = server_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run must install it")
        pytest.skip(f"{message}; set CI=1 to make this a failure")
    with running_cluster(bin_dir) as cluster:
        yield cluster
