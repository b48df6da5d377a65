"""`dirsync authorize` end to end: the consent URL, the loopback redirect, the token exchange, the file.

The emulator plays Google's consent screen (it approves at once, as the admin would) and token
endpoint; this test plays the admin's browser by opening the printed URL.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from dirsync_pipeline.google.auth import READONLY_SCOPES
from tests.conftest import write_config

ADMIN = "admin@acme.test"


@pytest.fixture
def emulator():
    with DirectoryEmulator(generate_directory(users=60, groups=8, seed=3, domain="acme.test"), require_auth=True) as running:
        yield running


def client_secrets(tmp_path: Path, emulator: DirectoryEmulator) -> Path:
    """A Desktop-app OAuth client as Google Cloud console downloads it, pointed at the emulator."""
    path = tmp_path / "client_secret.json"
    path.write_text(json.dumps({"installed": {
        "client_id": "1234-abc.apps.googleusercontent.com", "client_secret": "GOCSPX-not-a-real-secret",
        "auth_uri": emulator.auth_uri, "token_uri": emulator.token_uri, "redirect_uris": ["http://localhost"]}}))
    return path


def run_authorize(tmp_path: Path, emulator: DirectoryEmulator, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    """Start `dirsync authorize --no-browser`, open the URL it prints like a browser, wait for the exit."""
    config = write_config(tmp_path, [{"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all",
                                      "credentials": {"type": "authorized_user", "file": "secrets/acme-token.json"}}])
    env = {k: v for k, v in os.environ.items() if k not in ("DIRSYNC_CONFIG", "DAGSTER_HOME")}
    env["OAUTHLIB_INSECURE_TRANSPORT"] = "1"  # the emulator's token endpoint is plain http on loopback
    process = subprocess.Popen(
        [sys.executable, "-m", "dirsync_pipeline.cli", "authorize", "--config", str(config), "--connection", "acme",
         "--client-secrets", str(client_secrets(tmp_path, emulator)), "--no-browser", "--timeout", "60", *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = ""
    for line in process.stdout:
        if line.strip().startswith(emulator.auth_uri):
            url = line.strip()
            break
    assert url, process.stderr.read()
    with urllib.request.urlopen(url, timeout=30) as landing:  # consent screen -> 302 -> dirsync's loopback server
        page = landing.read().decode()
    assert "dirsync is authorized" in page
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), url


def test_consent_saves_a_private_refresh_token_and_the_connection_then_checks_out(tmp_path, emulator):
    result, url = run_authorize(tmp_path, emulator, "--admin", ADMIN)
    assert result.returncode == 0, result.stderr
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["scope"] == [" ".join(READONLY_SCOPES)]  # read-only, nothing else
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["code_challenge_method"] == ["S256"] and query["login_hint"] == [ADMIN]

    token_file = tmp_path / "secrets" / "acme-token.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    saved = json.loads(token_file.read_text())
    assert saved["type"] == "authorized_user" and saved["refresh_token"].startswith("emu-refresh-")
    assert saved["token_uri"] == emulator.token_uri and saved["account"] == ADMIN
    assert "token" not in saved  # the short-lived access token is not kept
    assert saved["refresh_token"] not in result.stdout + result.stderr

    assert f"{ADMIN} can read the members of" in result.stdout and "=> a sync would work" in result.stdout
    grants = [r for r in emulator.token_requests if r["grant_type"] == "refresh_token"]
    assert grants and grants[-1]["subject"] == ADMIN and grants[-1]["scopes"] == list(READONLY_SCOPES)


@pytest.mark.parametrize(("ticked", "message"), [
    ({READONLY_SCOPES[0]}, f"missing {READONLY_SCOPES[1]}; run again and leave every permission ticked"),
    (set(), "Google did not grant access (access_denied)"),
])
def test_partial_or_refused_consent_saves_nothing_and_says_why(tmp_path, emulator, ticked, message):
    emulator.faults.consent_scopes = frozenset(ticked)
    result, _url = run_authorize(tmp_path, emulator)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "secrets" / "acme-token.json").exists()


def test_authorize_refuses_a_service_account_connection(tmp_path):
    config = write_config(tmp_path, [{"id": "acme", "emulator": {"users": 5, "groups": 2}, "selected_groups": "all"}])
    from dirsync_pipeline.cli import main

    assert main(["authorize", "--config", str(config), "--connection", "acme",
                 "--client-secrets", str(tmp_path / "client.json")]) == 2
