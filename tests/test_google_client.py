"""The real google-api-python-client code path against the emulator over HTTP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials

from dirsync_pipeline.config import CredentialsConfig
from dirsync_pipeline.emulator import DirectoryEmulator, ScriptedFault, generate_directory
from dirsync_pipeline.google.auth import READONLY_SCOPES, build_credentials
from dirsync_pipeline.google.client import DirectoryClient
from dirsync_pipeline.google.errors import AuthorizationError, MalformedResponseError
from dirsync_pipeline.google.retry import RetryPolicy
from tests.conftest import write_service_account_key

FAST_RETRIES = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def anonymous_client(emulator: DirectoryEmulator, **kwargs) -> DirectoryClient:
    return DirectoryClient(AnonymousCredentials(), api_endpoint=emulator.url, retry_policy=FAST_RETRIES, **kwargs)


def test_users_and_groups_are_listed_completely_with_maximum_pages(emulator, directory):
    client = anonymous_client(emulator)
    users = client.fetch_users()
    groups = client.fetch_groups()
    live_users = [u for u in directory.users.values() if not u.deleted]
    assert sorted(users["user_id"].to_list()) == sorted(u.id for u in live_users)
    assert users["user_id"].n_unique() == users.height
    assert sorted(groups["group_id"].to_list()) == sorted(directory.groups)
    counts = emulator.request_counts()
    assert counts["users.list"] == math.ceil(len(live_users) / 500)
    assert counts["groups.list"] == math.ceil(len(directory.groups) / 200)


def test_user_fields_are_typed_and_never_logged_in_is_null(emulator, directory):
    users = anonymous_client(emulator).fetch_users()
    by_id = {row["user_id"]: row for row in users.iter_rows(named=True)}
    for user in directory.users.values():
        row = by_id[user.id]
        assert row["primary_email"] == user.primary_email.lower()
        assert row["suspended"] == user.suspended and row["archived"] == user.archived
        never = user.last_login_time.startswith("1970-01-01")
        assert (row["last_login_time"] is None) == never
    assert users["last_login_time"].null_count() > 0


def test_members_are_fetched_for_selected_and_nested_groups_only(emulator, directory):
    engineering = directory.find_group("engineering@acme.test")
    client = anonymous_client(emulator, max_concurrency=4)
    fetched = client.fetch_members([engineering.id])
    expected, stack = set(), [engineering.id]
    while stack:  # nested groups reachable from engineering@
        group = directory.groups[stack.pop()]
        if group.id not in expected:
            expected.add(group.id)
            stack.extend(m.id for m in group.members if m.type == "GROUP")
    assert set(fetched.fetched_group_ids) == expected
    assert len(expected) > 1, "the demo directory nests teams under engineering@"
    assert emulator.request_counts()["members.list"] >= len(expected)
    for group_id in expected:
        got = fetched.edges.filter(fetched.edges["group_id"] == group_id)["member_id"].to_list()
        assert sorted(got) == sorted(m.id for m in directory.groups[group_id].members)


def test_big_groups_are_paged_at_200(emulator, directory):
    big = max(directory.groups.values(), key=lambda g: len(g.members))
    assert len(big.members) > 200
    emulator.reset_counts()
    fetched = anonymous_client(emulator).fetch_members([big.id])
    nested = {m.id for m in big.members if m.type == "GROUP"}
    assert fetched.edges.filter(fetched.edges["group_id"] == big.id).height == len(big.members)
    assert emulator.request_counts()["members.list"] >= math.ceil(len(big.members) / 200) + len(nested)


def test_customer_member_has_no_email(emulator, directory):
    all_staff = directory.find_group("all-staff@acme.test")
    edges = anonymous_client(emulator).fetch_members([all_staff.id]).edges
    customer = edges.filter(edges["member_type"] == "CUSTOMER")
    assert customer.height == 1 and customer["member_email"].to_list() == [None]


def test_repeated_page_token_stops_with_a_clear_error(emulator):
    emulator.faults.repeat_page_token_on = "users.list"
    with pytest.raises(MalformedResponseError, match="users.list: page 2 repeats an earlier page token; stopped paging"):
        anonymous_client(emulator).fetch_users()


def test_transient_errors_are_retried_and_counted(emulator):
    emulator.faults.scripted.append(ScriptedFault(endpoint="groups.list", status=503, reason="backendError", times=2))
    client = anonymous_client(emulator)
    groups = client.fetch_groups()
    assert groups.height == 40
    assert client.stats.retries["503"] == 2
    assert client.stats.as_metadata()["api_retries"] == 2


def test_a_group_deleted_mid_sync_is_skipped_and_reported(emulator, directory):
    sales = directory.find_group("sales@acme.test")
    doomed = next(m.id for m in sales.members if m.type == "GROUP")
    emulator.faults.scripted.append(ScriptedFault(endpoint="members.list", status=404, reason="notFound",
                                                  message="Resource Not Found: groupKey", group_key=doomed))
    fetched = anonymous_client(emulator).fetch_members([sales.id])
    assert fetched.missing_group_ids == [doomed]
    assert sales.id in fetched.fetched_group_ids


def test_html_answer_from_a_proxy_is_a_clear_error(emulator):
    emulator.faults.scripted.append(ScriptedFault(endpoint="users.list", status=200, reason="",
                                                  body="<html><body>Proxy login</body></html>"))
    with pytest.raises(MalformedResponseError, match="not a JSON object"):
        anonymous_client(emulator).fetch_users()


# -- authorization, with real google-auth credentials and the emulator's token endpoint ------------

def service_account_client(emulator: DirectoryEmulator, key_file: Path, subject: str) -> DirectoryClient:
    credentials = build_credentials(CredentialsConfig(type="service_account", file=key_file, subject=subject))
    return DirectoryClient(credentials, api_endpoint=emulator.url, subject=subject, retry_policy=FAST_RETRIES)


@pytest.fixture
def authenticated_emulator(directory) -> DirectoryEmulator:
    with DirectoryEmulator(directory, require_auth=True) as running:
        yield running


def test_service_account_with_delegation_asks_only_read_only_scopes(authenticated_emulator, tmp_path):
    key = write_service_account_key(tmp_path / "sa.json", authenticated_emulator.token_uri)
    users = service_account_client(authenticated_emulator, key, "admin@acme.test").fetch_users()
    assert users.height > 0
    grants = authenticated_emulator.token_requests
    assert grants and all(sorted(g["scopes"]) == sorted(READONLY_SCOPES) for g in grants)
    assert grants[0]["subject"] == "admin@acme.test"


def test_missing_delegation_is_explained(emulator, service_account_file):
    emulator.faults.token_error = "unauthorized_client"
    with pytest.raises(AuthorizationError, match="domain-wide delegation is not set up") as excinfo:
        service_account_client(emulator, service_account_file, "admin@acme.test").fetch_users()
    assert "admin.directory.user.readonly" in str(excinfo.value)


def test_subject_without_admin_rights_is_explained(emulator, service_account_file):
    emulator.faults.non_admin_subjects.add("intern@acme.test")
    with pytest.raises(AuthorizationError, match="intern@acme.test is not a Google Workspace admin"):
        service_account_client(emulator, service_account_file, "intern@acme.test").fetch_groups()


def test_disabled_api_is_explained(emulator):
    emulator.faults.api_disabled = True
    with pytest.raises(AuthorizationError, match="Admin SDK API is not enabled"):
        anonymous_client(emulator).fetch_groups()


def test_missing_credentials_give_401_explained(directory):
    with DirectoryEmulator(directory, require_auth=True) as locked:
        with pytest.raises(AuthorizationError, match="401"):
            anonymous_client(locked).fetch_users()


def test_unreadable_key_file_is_explained_without_its_content(tmp_path):
    key = tmp_path / "sa.json"
    key.write_text('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----SECRETSECRET"}')
    key.chmod(0o600)
    with pytest.raises(AuthorizationError, match="is not a usable service account key") as excinfo:
        build_credentials(CredentialsConfig(type="service_account", file=key, subject="admin@acme.test"))
    assert "SECRETSECRET" not in str(excinfo.value)


def test_key_readable_by_others_is_warned(tmp_path, caplog, service_account_file):
    service_account_file.chmod(0o644)
    build_credentials(CredentialsConfig(type="service_account", file=service_account_file, subject="admin@acme.test"))
    assert "readable by other users" in caplog.text and "chmod 600" in caplog.text


def test_members_of_each_groups_page_are_read_before_groups_list_ends_and_match_a_listing_first():
    directory = generate_directory(users=300, groups=450, seed=11, domain="acme.test")  # groups.list: 3 pages
    with DirectoryEmulator(directory) as emulator:
        listed_first = anonymous_client(emulator).fetch_members(directory.groups)
        emulator.reset_counts()
        groups, streamed = anonymous_client(emulator).fetch_groups_and_members(
            lambda page: page["group_id"].to_list())
        calls = [path.rsplit("/", 1)[-1] if "/members" not in path else "members" for _, path, _ in emulator.request_log]
    assert sorted(groups["group_id"].to_list()) == sorted(directory.groups)
    assert streamed.fetched_group_ids == listed_first.fetched_group_ids
    assert streamed.edges.sort("group_id", "member_id").equals(listed_first.edges.sort("group_id", "member_id"))
    last_groups_page = max(i for i, call in enumerate(calls) if call == "groups")
    assert calls.index("members") < last_groups_page  # the first page's members did not wait for the last page


def test_a_groups_list_refusal_while_members_are_read_is_the_error_raised(emulator):
    emulator.faults.scripted.append(ScriptedFault("groups.list", 403, "forbidden", "Not Authorized to access this resource/api"))
    with pytest.raises(AuthorizationError, match="groups.list"):
        anonymous_client(emulator).fetch_groups_and_members(lambda page: page["group_id"].to_list())
    assert emulator.request_counts()["members.list"] == 0
