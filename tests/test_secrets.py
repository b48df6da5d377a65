"""Secrets (private keys, refresh tokens, access tokens) never reach logs, metadata, errors or the warehouse."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from tests.conftest import write_config, write_service_account_key

REFRESH_TOKEN = "1//0gDirsyncRefreshTokenThatMustNeverLeak-7Hq2ZkP4wXy"
CLIENT_SECRET = "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9"
ACCESS_TOKEN = re.compile(rb"emu-[A-Za-z0-9_-]{20,}")


def everything_written(*roots: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for root in roots for p in root.rglob("*") if p.is_file()]


def test_secrets_never_appear_in_any_output(tmp_path):
    directory = generate_directory(users=120, groups=12, seed=21, domain="acme.test")
    with DirectoryEmulator(directory, require_auth=True) as emulator:
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        key_file = write_service_account_key(secrets_dir / "sa.json", emulator.token_uri)
        private_key_body = json.loads(key_file.read_text())["private_key"].splitlines()[5]
        user_file = secrets_dir / "user.json"
        user_file.write_text(json.dumps({"type": "authorized_user", "client_id": "123.apps.googleusercontent.com",
                                         "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN,
                                         "token_uri": emulator.token_uri}))
        user_file.chmod(0o600)
        work = tmp_path / "work"
        work.mkdir()
        config = write_config(work, [
            {"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all", "default_role": "member",
             "credentials": {"type": "service_account", "file": str(key_file), "subject": "admin@acme.test"}},
            {"id": "beta", "api_endpoint": emulator.url, "selected_groups": "all", "default_role": "member",
             "credentials": {"type": "authorized_user", "file": str(user_file)}},
        ])
        env = {k: v for k, v in os.environ.items() if k != "DIRSYNC_CONFIG"} | {"DAGSTER_HOME": str(tmp_path / "dagster_home")}
        (tmp_path / "dagster_home").mkdir()
        command = [sys.executable, "-m", "dirsync_pipeline.cli", "sync", "--config", str(config)]
        ok = subprocess.run(command, capture_output=True, env=env, timeout=300, cwd=work)
        emulator.faults.token_error = "invalid_grant"  # and a failing sync: its error text must be clean too
        failed = subprocess.run(command, capture_output=True, env=env, timeout=300, cwd=work)
        grants = emulator.token_requests

    assert ok.returncode == 0, ok.stderr.decode()[-6000:]
    assert failed.returncode == 1 and b"invalid_grant" in failed.stderr
    assert {g["grant_type"] for g in grants} >= {"urn:ietf:params:oauth:grant-type:jwt-bearer", "refresh_token"}
    outputs = [(Path("stdout"), ok.stdout + failed.stdout), (Path("stderr"), ok.stderr + failed.stderr)]
    outputs += everything_written(work, tmp_path / "dagster_home")
    assert any(p.name == "warehouse.duckdb" for p, _ in outputs) and any(p.name == "registry.sqlite" for p, _ in outputs)
    assert any(p.suffix == ".db" for p, _ in outputs), "the Dagster event log was checked"
    for path, data in outputs:
        assert private_key_body.encode() not in data, f"private key in {path}"
        assert REFRESH_TOKEN.encode() not in data, f"refresh token in {path}"
        assert CLIENT_SECRET.encode() not in data, f"client secret in {path}"
        assert not ACCESS_TOKEN.search(data), f"access token in {path}"
