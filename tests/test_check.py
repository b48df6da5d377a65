"""`dirsync check` against the emulator's real error answers: each misconfiguration gets its own fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dirsync_pipeline.cli import main
from dirsync_pipeline.config import parse_config
from dirsync_pipeline.emulator import DirectoryEmulator, ScriptedFault, generate_directory
from dirsync_pipeline.google.auth import READONLY_SCOPES
from dirsync_pipeline.google.preflight import Report, Status, check_connection
from tests.conftest import write_config, write_service_account_key
from tests.oauth import consent, exchange

USER_SCOPE, GROUP_SCOPE = READONLY_SCOPES
ADMIN = "admin@acme.test"
CLIENT_ID = "109876543210987654321"  # the client_id write_service_account_key puts in the key


@pytest.fixture(scope="module")
def emulator() -> Iterator[DirectoryEmulator]:
    with DirectoryEmulator(generate_directory(users=60, groups=8, seed=3, domain="acme.test"), require_auth=True) as running:
        yield running


@pytest.fixture(autouse=True)
def healthy(emulator: DirectoryEmulator) -> Iterator[None]:
    """Every test starts from a correctly configured Workspace and changes one thing."""
    yield
    faults = emulator.faults
    faults.scripted.clear()
    faults.token_error, faults.api_disabled = None, False
    faults.non_admin_subjects.clear()
    faults.delegated_scopes = faults.consent_scopes = None


def service_account(tmp_path: Path, emulator: DirectoryEmulator, subject: str | None = ADMIN) -> dict:
    key = write_service_account_key(tmp_path / "sa.json", emulator.token_uri)
    return {"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all",
            "credentials": {"type": "service_account", "file": str(key), **({"subject": subject} if subject else {})}}


def check(connection: dict) -> Report:
    config = parse_config({"connections": [connection]}, source="test")
    return check_connection(config.connections[0], connection.get("api_endpoint"))


def lines(report: Report, status: Status) -> str:
    return "\n".join(f"{f.step}: {f.detail}" for f in report.findings if f.status is status)


def test_a_working_service_account_passes_every_step(tmp_path, emulator):
    report = check(service_account(tmp_path, emulator))
    assert report.sync_would_work, report.render()
    assert [f.step for f in report.findings] == ["credentials", "token", "users.list", "groups.list", "members.list"]
    assert f"{ADMIN} can read users" in report.render()
    calls = emulator.request_log[-3:]
    assert [(path.rsplit("/", 1)[-1], query["maxResults"]) for _, path, query in calls] == [
        ("users", "1"), ("groups", "1"), ("members", "1")]


def test_delegation_missing_one_scope_names_that_scope_and_the_client_id(tmp_path, emulator):
    emulator.faults.delegated_scopes = frozenset({USER_SCOPE})
    report = check(service_account(tmp_path, emulator))
    assert not report.sync_would_work
    failed = lines(report, Status.FAIL)
    assert f"delegation entry for client id {CLIENT_ID} lacks {GROUP_SCOPE}" in failed
    assert USER_SCOPE + "." not in failed and "Manage Domain Wide Delegation" in failed


def test_no_delegation_yet_says_add_it_or_wait_for_propagation(tmp_path, emulator):
    emulator.faults.delegated_scopes = frozenset()
    failed = lines(check(service_account(tmp_path, emulator)), Status.FAIL)
    assert f"no domain-wide delegation for client id {CLIENT_ID}" in failed
    assert "less than 24 h ago and is still propagating" in failed


def test_subject_that_is_not_an_admin_is_named_with_the_privileges_it_needs(tmp_path, emulator):
    emulator.faults.non_admin_subjects.add(ADMIN)
    report = check(service_account(tmp_path, emulator))
    failed = lines(report, Status.FAIL)
    assert f"{ADMIN} cannot read users" in failed and "Users > Read" in failed
    assert f"{ADMIN} cannot read groups" in failed and "Groups > Read" in failed


def test_admin_who_reads_users_but_not_groups_is_told_exactly_that(tmp_path, emulator):
    emulator.faults.scripted.append(ScriptedFault("groups.list", 403, "forbidden"))
    report = check(service_account(tmp_path, emulator))
    assert lines(report, Status.OK).count(f"{ADMIN} can read users") == 1
    assert "Groups > Read" in lines(report, Status.FAIL) and "Users > Read" not in lines(report, Status.FAIL)
    assert "members.list: not tried: groups.list failed" in lines(report, Status.WARN)


def test_disabled_api_names_the_project_and_stops_probing(tmp_path, emulator):
    emulator.faults.api_disabled = True
    before = emulator.request_counts()
    report = check(service_account(tmp_path, emulator))
    failed = lines(report, Status.FAIL)
    assert failed.count("Admin SDK API is disabled in Cloud project 123") == 1 and "enable admin.googleapis.com" in failed
    after = emulator.request_counts()
    assert after["members.list"] == before["members.list"]


def test_invalid_subject_is_named(tmp_path, emulator):
    emulator.faults.token_error = "invalid_grant"
    failed = lines(check(service_account(tmp_path, emulator, subject="ghost@acme.test")), Status.FAIL)
    assert "subject ghost@acme.test is not an active user" in failed


def test_consent_that_left_a_scope_unticked_names_the_scope(tmp_path, emulator):
    report = check(authorized_user(tmp_path, emulator, consented={USER_SCOPE}))
    assert f"the consent did not grant {GROUP_SCOPE}" in lines(report, Status.FAIL)


def test_an_authorized_admin_passes_and_is_named(tmp_path, emulator):
    report = check(authorized_user(tmp_path, emulator, consented=set(READONLY_SCOPES)))
    assert report.sync_would_work, report.render()
    assert f"{ADMIN} can read groups" in lines(report, Status.OK)


def test_transient_errors_are_retried_not_reported(tmp_path, emulator):
    emulator.faults.scripted.append(ScriptedFault("users.list", 503, "backendError"))
    assert check(service_account(tmp_path, emulator)).sync_would_work


def test_world_readable_key_warns_but_a_sync_would_still_work(tmp_path, emulator):
    connection = service_account(tmp_path, emulator)
    Path(connection["credentials"]["file"]).chmod(0o644)
    report = check(connection)
    assert report.sync_would_work
    assert "mode 644" in lines(report, Status.WARN) and "chmod 600" in lines(report, Status.WARN)


def test_revoked_refresh_token_says_authorize_again(tmp_path, emulator):
    connection = authorized_user(tmp_path, emulator, consented=set(READONLY_SCOPES))
    emulator.faults.token_error = "invalid_grant"
    failed = lines(check(connection), Status.FAIL)
    assert "refresh token was revoked or expired" in failed and "dirsync authorize --connection acme" in failed


def test_authorized_user_without_a_token_yet_points_to_authorize(tmp_path, emulator):
    connection = {"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all",
                  "credentials": {"type": "authorized_user", "file": str(tmp_path / "not-yet.json")}}
    failed = lines(check(connection), Status.FAIL)
    assert "no authorized-user token" in failed and "dirsync authorize --connection" in failed


def test_cli_exit_code_is_zero_only_when_a_sync_would_work(tmp_path, emulator, capsys):
    config = write_config(tmp_path, [service_account(tmp_path, emulator)])
    assert main(["check", "--config", str(config), "--connection", "acme"]) == 0
    assert "=> a sync would work" in capsys.readouterr().out
    emulator.faults.non_admin_subjects.add(ADMIN)
    assert main(["check", "--config", str(config), "--connection", "acme"]) == 1
    out = capsys.readouterr().out
    assert "=> a sync would FAIL" in out and "BEGIN PRIVATE KEY" not in out


def test_check_on_the_embedded_demo_passes(capsys, monkeypatch):
    monkeypatch.delenv("DIRSYNC_CONFIG", raising=False)
    assert main(["check", "--connection", "demo"]) == 0


def authorized_user(tmp_path: Path, emulator: DirectoryEmulator, consented: set[str]) -> dict:
    """An admin's consent obtained from the emulator's OAuth server, saved as dirsync authorize saves it."""
    emulator.faults.consent_scopes = frozenset(consented)
    _status, answer = exchange(emulator, consent(emulator, access_type="offline")["code"][0])
    token = tmp_path / "token.json"
    token.write_text(json.dumps({"type": "authorized_user", "client_id": "cid", "client_secret": "s",
                                 "refresh_token": answer["refresh_token"], "token_uri": emulator.token_uri,
                                 "account": ADMIN}))
    token.chmod(0o600)
    return {"id": "acme", "api_endpoint": emulator.url, "selected_groups": "all",
            "credentials": {"type": "authorized_user", "file": str(token)}}
