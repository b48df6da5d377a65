"""The Directory API emulator, mostly through the real google-api-python-client."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httplib2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import Resource, build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from dirsync_pipeline.emulator import (
    Directory,
    DirectoryEmulator,
    FaultPlan,
    Member,
    ScriptedFault,
    generate_directory,
)
from dirsync_pipeline.emulator import endpoints, paging
from dirsync_pipeline.emulator.fields import select
from dirsync_pipeline.emulator.render import USERS_SCHEMA
from dirsync_pipeline.emulator.service import STATS_PATH
from dirsync_pipeline.emulator.wire import ApiError

SCOPES = [
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
]
DOMAIN = "demo.example.com"


def client(emulator: DirectoryEmulator, credentials: Any = None, **transport: Any) -> Resource:
    """The real discovery client; pass http= for a transport without google-auth's 401 refresh."""
    return build(
        "admin",
        "directory_v1",
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": emulator.url},
        **(transport or {"credentials": credentials or AnonymousCredentials()}),
    )


def error_of(exc: pytest.ExceptionInfo[HttpError]) -> dict[str, Any]:
    return json.loads(exc.value.content)["error"]


def list_all(request: Any, next_page: Any, items_key: str) -> tuple[list[dict[str, Any]], int]:
    items, pages = [], 0
    while request is not None:
        response = request.execute()
        pages += 1
        items += response.get(items_key, [])
        request = next_page(request, response)
    return items, pages


@pytest.fixture(scope="module")
def directory() -> Directory:
    return generate_directory(1200, 40, seed=7)


@pytest.fixture(scope="module")
def shared(directory: Directory) -> Iterator[DirectoryEmulator]:
    """One read-only emulator for the module; tests that mutate data use `fresh`."""
    with DirectoryEmulator(directory) as emulator:
        yield emulator


@pytest.fixture
def emu(shared: DirectoryEmulator) -> DirectoryEmulator:
    shared.faults = FaultPlan()
    shared.require_auth = False
    shared.reset_counts()
    return shared


@pytest.fixture(scope="module")
def svc(shared: DirectoryEmulator) -> Resource:
    return client(shared)


@pytest.fixture
def fresh() -> Iterator[DirectoryEmulator]:
    with DirectoryEmulator(generate_directory(60, 12, seed=3)) as emulator:
        yield emulator


# ----- generator -------------------------------------------------------------------------


def test_generator_is_deterministic_per_seed() -> None:
    first = generate_directory(300, 30, seed=11)
    assert first.to_json() == generate_directory(300, 30, seed=11).to_json()
    assert first.to_json() != generate_directory(300, 30, seed=12).to_json()


def test_generated_ids_and_emails_look_like_googles(directory: Directory) -> None:
    assert re.fullmatch(r"C0[0-9a-z]{7}", directory.customer_id)
    assert all(re.fullmatch(r"1\d{20}", uid) for uid in directory.users)
    assert all(re.fullmatch(r"0[0-9a-z]{14}", gid) for gid in directory.groups)
    emails = [u.primary_email for u in directory.users.values()] + [
        a for u in directory.users.values() for a in u.aliases
    ]
    assert len(emails) == len(set(emails))
    assert directory.find_user(f"admin@{DOMAIN}").is_admin


def test_generated_users_cover_every_account_state(directory: Directory) -> None:
    users = list(directory.users.values())
    share = {
        "suspended": sum(u.suspended for u in users) / len(users),
        "archived": sum(u.archived for u in users) / len(users),
        "admin": sum(u.is_admin for u in users) / len(users),
        "never": sum(u.last_login_time == "1970-01-01T00:00:00.000Z" for u in users) / len(users),
        "aliases": sum(bool(u.aliases) for u in users) / len(users),
    }
    assert 0.01 < share["suspended"] < 0.06
    assert 0.003 < share["archived"] < 0.04
    assert 0.005 < share["admin"] < 0.05
    assert 0.04 < share["never"] < 0.13
    assert 0.05 < share["aliases"] < 0.16
    assert {"/Engineering", "/Sales/EMEA"} <= {u.org_unit_path for u in users}


def test_generated_well_known_groups(directory: Directory) -> None:
    emails = [g.email for g in directory.groups.values()][:8]
    assert [e.split("@")[0] for e in emails] == [
        "all-staff", "admins", "engineering", "sales", "support", "finance", "contractors", "everyone-nested",
    ]  # fmt: skip
    all_staff = directory.find_group(f"all-staff@{DOMAIN}")
    assert [(m.id, m.email, m.type) for m in all_staff.members] == [(directory.customer_id, None, "CUSTOMER")]
    contractors = directory.find_group(f"contractors@{DOMAIN}").members
    outsiders = [m for m in contractors if m.type == "USER"]
    assert outsiders and all(
        m.id not in directory.users and m.email.endswith("@partner.example.org") for m in outsiders
    )
    assert [m.type for m in contractors].count("EXTERNAL") == 1
    nested = directory.find_group(f"everyone-nested@{DOMAIN}").members
    assert {(m.email, m.type) for m in nested} == {(f"engineering@{DOMAIN}", "GROUP"), (f"sales@{DOMAIN}", "GROUP")}


def _depth(directory: Directory, group_id: str, path: tuple[str, ...] = ()) -> int:
    """Longest chain of nested groups below this one; fails on a cycle."""
    assert group_id not in path, f"cycle through {group_id}"
    children = [m.id for m in directory.groups[group_id].members if m.type == "GROUP"]
    return max((1 + _depth(directory, c, (*path, group_id)) for c in children), default=0)


def test_generated_group_graph_is_a_deep_dag_with_big_groups(directory: Directory) -> None:
    depths = [_depth(directory, gid) for gid in directory.groups]
    assert max(depths) >= 3  # everyone-nested -> department -> team -> team
    sizes = [len(g.members) for g in directory.groups.values()]
    assert max(sizes) > 200 and min(sizes) == 0
    rows = [m for g in directory.groups.values() for m in g.members]
    assert {"OWNER", "MANAGER", None} <= {m.role for m in rows}
    assert None in {m.status for m in rows}
    suspended = {u.id for u in directory.users.values() if u.suspended}
    assert any(m.id in suspended and m.status == "SUSPENDED" for m in rows)


def test_group_membership_is_skewed_so_some_users_are_everywhere(directory: Directory) -> None:
    per_user: dict[str, int] = {}
    for group in directory.groups.values():
        for m in group.members:
            per_user[m.id] = per_user.get(m.id, 0) + 1
    counts = sorted(per_user.values())
    assert counts[-1] >= 3 * counts[len(counts) // 2]


def test_directory_json_round_trip(directory: Directory) -> None:
    copy = Directory.from_json(directory.to_json())
    assert (copy.customer_id, copy.domain) == (directory.customer_id, directory.domain)
    assert list(copy.users.values()) == list(directory.users.values())
    assert list(copy.groups.values()) == list(directory.groups.values())
    alias_owner = next(u for u in directory.users.values() if u.aliases)
    assert copy.find_user(alias_owner.aliases[0].upper()).id == alias_owner.id


@pytest.mark.slow
def test_generator_scales_to_benchmark_size() -> None:
    """The benchmark's S2 directory (its generation time is reported by bench/run.py, not judged here)."""
    big = generate_directory(100_000, 10_000)
    assert (len(big.users), len(big.groups)) == (100_000, 10_000)


# ----- listing and paging ------------------------------------------------------------------


def test_users_paging_returns_each_user_once(emu: DirectoryEmulator, svc: Resource, directory: Directory) -> None:
    request = svc.users().list(customer="my_customer", maxResults=500, orderBy="email")
    users, pages = list_all(request, svc.users().list_next, "users")
    assert pages == 3
    assert sorted(u["id"] for u in users) == sorted(directory.users)
    assert [u["primaryEmail"] for u in users] == sorted(u["primaryEmail"] for u in users)
    assert emu.request_counts()["users.list"] == 3


def test_member_listings_do_not_evict_the_users_listing_between_its_pages(
    emu: DirectoryEmulator, svc: Resource, directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync reads members.list of every group while users.list pages: the users listing is not sorted again."""
    users = svc.users()
    request = users.list(customer="my_customer", maxResults=500, orderBy="email")
    first = request.execute()  # the sorted users listing is cached now
    sorts: list[int] = []
    real_sorted = endpoints._sorted
    monkeypatch.setattr(endpoints, "_sorted", lambda items, *a: sorts.append(len(items)) or real_sorted(items, *a))
    assert len(directory.groups) > paging.LISTINGS_CACHED  # enough listings to evict any shared cache entry
    for group_id in directory.groups:
        svc.members().list(groupKey=group_id).execute()
    rest, _pages = list_all(users.list_next(request, first), users.list_next, "users")
    assert len(first["users"]) + len(rest) == len(directory.active_users())
    assert len(directory.active_users()) not in sorts, "the users listing was rebuilt and sorted between its pages"


def test_users_sorted_by_given_name_descending(svc: Resource) -> None:
    users = svc.users().list(customer="my_customer", orderBy="givenName", sortOrder="DESCENDING", maxResults=500)
    names = [u["name"]["givenName"].lower() for u in users.execute()["users"]]
    assert names == sorted(names, reverse=True) and names[0] != names[-1]


def test_user_resource_shape(svc: Resource, directory: Directory) -> None:
    suspended = next(u for u in directory.users.values() if u.suspended)
    body = svc.users().get(userKey=suspended.id).execute()
    assert body["kind"] == "admin#directory#user"
    assert body["customerId"] == directory.customer_id
    assert body["name"]["fullName"] == f"{suspended.given_name} {suspended.family_name}"
    assert (body["suspended"], body["suspensionReason"], body["isDelegatedAdmin"]) == (True, "ADMIN", False)
    assert body["etag"].startswith('"') and body["etag"].endswith('"')
    plain = next(u for u in directory.users.values() if not u.aliases and not u.suspended)
    assert "aliases" not in svc.users().get(userKey=plain.primary_email.upper()).execute()


def test_fields_mask_keeps_or_drops_next_page_token(svc: Resource) -> None:
    with_token = svc.users().list(customer="my_customer", fields="nextPageToken,users(id,name/givenName)").execute()
    assert "nextPageToken" in with_token and len(with_token["users"]) == 100
    assert set(with_token["users"][0]) == {"id", "name"} and set(with_token["users"][0]["name"]) == {"givenName"}
    without = svc.users().list(customer="my_customer", fields="users(id)").execute()
    assert set(without) == {"users"} and len(without["users"]) == 100


def test_fields_mask_grammar() -> None:
    payload = {"kind": "k", "users": [{"id": "1", "name": {"givenName": "A", "familyName": "B"}, "isAdmin": True}]}
    assert select(payload, "users/name/familyName,kind", USERS_SCHEMA) == {
        "kind": "k",
        "users": [{"name": {"familyName": "B"}}],
    }
    assert select(payload, "users(id,name(givenName))", USERS_SCHEMA) == {
        "users": [{"id": "1", "name": {"givenName": "A"}}]
    }
    assert select(payload, "users(*)", USERS_SCHEMA) == {"users": payload["users"]}
    assert select(payload, "users/name/givenName,users(name)", USERS_SCHEMA)["users"][0] == {
        "name": payload["users"][0]["name"]
    }
    for bad in ("users(id", "users()", "users/", ",id", "users(id))", "bogus", "users(nope)"):
        with pytest.raises(ApiError) as error:
            select(payload, bad, USERS_SCHEMA)
        assert (error.value.status, error.value.reason) == (400, "invalidParameter")


def test_bad_fields_mask_over_http(svc: Resource) -> None:
    with pytest.raises(HttpError) as exc:
        svc.users().list(customer="my_customer", fields="users(shoeSize)").execute()
    assert exc.value.status_code == 400
    assert error_of(exc)["message"] == "Invalid field selection shoeSize"


def test_groups_carry_string_member_counts(svc: Resource, directory: Directory) -> None:
    groups, pages = list_all(svc.groups().list(customer="my_customer", maxResults=15), svc.groups().list_next, "groups")
    assert pages == 3 and len(groups) == len(directory.groups)
    for group in groups:
        assert group["directMembersCount"] == str(len(directory.groups[group["id"]].members))


def test_member_pages_and_shapes(svc: Resource, directory: Directory) -> None:
    big = max(directory.groups.values(), key=lambda g: len(g.members))
    members, pages = list_all(svc.members().list(groupKey=big.id), svc.members().list_next, "members")
    assert len(big.members) > 200 and pages == -(-len(big.members) // 200)
    assert [m["id"] for m in members] == [m.id for m in big.members]
    customer_row = svc.members().list(groupKey=f"all-staff@{DOMAIN}").execute()["members"][0]
    assert customer_row["type"] == "CUSTOMER" and "email" not in customer_row
    group, row = next((g, m) for g in directory.groups.values() for m in g.members if m.status is None)
    rows = svc.members().list(groupKey=group.email).execute()["members"]
    assert "status" not in next(r for r in rows if r["id"] == row.id)


def test_empty_group_omits_members_key(svc: Resource, directory: Directory) -> None:
    empty = next(g for g in directory.groups.values() if not g.members)
    body = svc.members().list(groupKey=empty.email).execute()
    assert set(body) == {"kind", "etag"}


def test_roles_filter(svc: Resource, directory: Directory) -> None:
    group = next(g for g in directory.groups.values() if any(m.role == "OWNER" for m in g.members))
    rows = svc.members().list(groupKey=group.id, roles="OWNER,MANAGER").execute()["members"]
    assert rows and [r["id"] for r in rows] == [m.id for m in group.members if m.role in ("OWNER", "MANAGER")]


def test_include_derived_membership_expands_groups_and_customer(svc: Resource, directory: Directory) -> None:
    engineering = directory.find_group(f"engineering@{DOMAIN}")
    team = directory.groups[next(m.id for m in engineering.members if m.type == "GROUP")]
    derived, _ = list_all(
        svc.members().list(groupKey=f"everyone-nested@{DOMAIN}", includeDerivedMembership=True),
        svc.members().list_next,
        "members",
    )
    ids = [m["id"] for m in derived]
    assert engineering.id in ids and team.id in ids  # intermediate groups are still listed
    assert {m.id for m in team.members} <= set(ids)
    assert len(svc.members().list(groupKey=f"everyone-nested@{DOMAIN}").execute()["members"]) == 2
    staff, _ = list_all(
        svc.members().list(groupKey=f"all-staff@{DOMAIN}", includeDerivedMembership=True),
        svc.members().list_next,
        "members",
    )
    assert len(staff) == 1 + len(directory.active_users())


def test_groups_list_by_user_key(svc: Resource, directory: Directory) -> None:
    user = next(
        u for u in directory.users.values() if any(m.id == u.id for g in directory.groups.values() for m in g.members)
    )
    expected = {g.id for g in directory.groups.values() if any(m.id == user.id for m in g.members)}
    assert {g["id"] for g in svc.groups().list(userKey=user.primary_email).execute()["groups"]} == expected
    with pytest.raises(HttpError) as exc:
        svc.groups().list(userKey=user.id, customer="my_customer").execute()
    assert exc.value.status_code == 400


# ----- errors ----------------------------------------------------------------------------


def test_unknown_group_is_googles_404(svc: Resource) -> None:
    with pytest.raises(HttpError) as exc:
        svc.members().list(groupKey="nope@demo.example.com").execute()
    assert exc.value.resp["content-type"].startswith("application/json")
    assert error_of(exc) == {
        "code": 404,
        "message": "Resource Not Found: groupKey",
        "errors": [{"message": "Resource Not Found: groupKey", "domain": "global", "reason": "notFound"}],
        "status": "NOT_FOUND",
    }


@pytest.mark.parametrize(
    ("call", "status", "reason", "message"),
    [
        (lambda s: s.users().list(customer="my_customer", maxResults=501), 400, "invalid", "Invalid Input"),
        (lambda s: s.groups().list(customer="my_customer", maxResults=201), 400, "invalid", "Invalid Input"),
        (lambda s: s.users().list(maxResults=10), 400, "badRequest", "Bad Request"),
        (lambda s: s.users().list(customer="C0someoneelse"), 400, "badRequest", "Bad Request"),
        (lambda s: s.users().list(customer="my_customer", pageToken="garbage"), 400, "invalid", "Invalid page token"),
        (lambda s: s.users().get(userKey="ghost@demo.example.com"), 404, "notFound", "Resource Not Found: userKey"),
        (
            lambda s: s.users().list(customer="my_customer", query="isSuspended=true"),
            400,
            "invalid",
            "Invalid query: the emulator does not implement search queries",
        ),
    ],
)
def test_error_envelopes(svc: Resource, call: Any, status: int, reason: str, message: str) -> None:
    with pytest.raises(HttpError) as exc:
        call(svc).execute()
    error = error_of(exc)
    assert (error["code"], error["errors"][0]["reason"], error["message"]) == (status, reason, message)
    assert error["status"] == {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status]


def test_page_token_belongs_to_its_listing(svc: Resource) -> None:
    token = svc.users().list(customer="my_customer", orderBy="email").execute()["nextPageToken"]
    assert svc.users().list(customer="my_customer", orderBy="email", pageToken=token).execute()["users"]
    for other in (
        svc.users().list(customer="my_customer", pageToken=token),
        svc.groups().list(customer="my_customer", pageToken=token),
    ):
        with pytest.raises(HttpError) as exc:
            other.execute()
        assert error_of(exc)["message"] == "Invalid page token"


# ----- faults ----------------------------------------------------------------------------


def test_scripted_faults_hit_only_their_group(emu: DirectoryEmulator, svc: Resource, directory: Directory) -> None:
    target, other = [g for g in directory.groups.values() if g.members][:2]
    emu.faults.scripted.append(ScriptedFault("members.list", 503, "backendError", times=2, group_key=target.email))
    assert svc.members().list(groupKey=other.id).execute()["members"]
    for _ in range(2):
        with pytest.raises(HttpError) as exc:
            svc.members().list(groupKey=target.id).execute()
        assert (exc.value.status_code, error_of(exc)["errors"][0]["reason"]) == (503, "backendError")
    assert svc.members().list(groupKey=target.id).execute()["members"]
    assert emu.faults.injected == {"503": 2}
    assert emu.request_counts()["members.list"] == 4


def test_scripted_raw_body_and_retry_after(emu: DirectoryEmulator, svc: Resource) -> None:
    emu.faults.scripted += [
        ScriptedFault("*", 502, "badGateway", body="<html><body>502 Bad Gateway</body></html>"),
        ScriptedFault("users.list", 403, "quotaExceeded", retry_after=7),
    ]
    with pytest.raises(HttpError) as exc:
        svc.groups().get(groupKey=f"finance@{DOMAIN}").execute()
    assert exc.value.status_code == 502 and exc.value.content.startswith(b"<html>")
    with pytest.raises(HttpError) as exc:
        svc.users().list(customer="my_customer").execute()
    assert exc.value.resp["retry-after"] == "7"
    assert error_of(exc)["errors"][0] == {
        "message": error_of(exc)["message"], "domain": "usageLimits", "reason": "quotaExceeded",
    }  # fmt: skip


def test_rate_limit_answers_429_with_retry_after(emu: DirectoryEmulator, svc: Resource) -> None:
    emu.faults = FaultPlan(rate_limit_qps=2)
    outcomes = []
    for _ in range(6):
        try:
            svc.groups().get(groupKey=f"admins@{DOMAIN}").execute()
            outcomes.append(200)
        except HttpError as exc:
            assert exc.resp["retry-after"] == "1"
            assert json.loads(exc.content)["error"]["status"] == "RESOURCE_EXHAUSTED"
            outcomes.append(exc.status_code)
    assert outcomes[:2] == [200, 200] and outcomes.count(429) >= 3
    assert emu.faults.injected["429"] == outcomes.count(429)


def test_random_errors_are_server_errors(emu: DirectoryEmulator, svc: Resource) -> None:
    emu.faults = FaultPlan(error_rate=1.0, seed=5)
    statuses = set()
    for _ in range(20):
        with pytest.raises(HttpError) as exc:
            svc.groups().get(groupKey=f"admins@{DOMAIN}").execute()
        statuses.add(exc.value.status_code)
    assert 503 in statuses and statuses <= {500, 502, 503}
    assert sum(emu.faults.injected.values()) == 20


def test_latency_is_the_time_to_answer_including_the_emulators_own_work(
    emu: DirectoryEmulator, svc: Resource, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.faults = FaultPlan(latency_ms=120)
    started = time.perf_counter()
    svc.groups().get(groupKey=f"admins@{DOMAIN}").execute()
    assert time.perf_counter() - started >= 0.12
    emu.faults = FaultPlan(latency_ms=400)
    real_groups_get = endpoints.Endpoints.groups_get
    monkeypatch.setattr(endpoints.Endpoints, "groups_get", lambda self, key: time.sleep(0.3) or real_groups_get(self, key))
    started = time.perf_counter()
    svc.groups().get(groupKey=f"admins@{DOMAIN}").execute()  # 0.3 s of the emulator's work, within the 0.4 s
    assert 0.4 <= time.perf_counter() - started < 0.65, "latency is added on top of the emulator's work"


def test_repeated_page_token_quirk(emu: DirectoryEmulator, svc: Resource) -> None:
    emu.faults = FaultPlan(repeat_page_token_on="users.list")
    first = svc.users().list(customer="my_customer", maxResults=500).execute()
    second = svc.users().list(customer="my_customer", maxResults=500, pageToken=first["nextPageToken"]).execute()
    last = svc.users().list(customer="my_customer", maxResults=500, pageToken=second["nextPageToken"]).execute()
    assert len(last["users"]) == 200 and last["nextPageToken"] == second["nextPageToken"]
    assert emu.faults.injected == {"repeated_page_token": 1}


def test_drop_fraction_answers_incomplete_pages(emu: DirectoryEmulator, svc: Resource, directory: Directory) -> None:
    emu.faults = FaultPlan(drop_fraction=0.2, seed=1)
    users, pages = list_all(svc.users().list(customer="my_customer", maxResults=500), svc.users().list_next, "users")
    assert pages == 3 and 0.7 * len(directory.users) < len(users) < 0.9 * len(directory.users)
    assert emu.faults.injected["dropped_users"] == len(directory.users) - len(users)


def test_api_disabled(emu: DirectoryEmulator, svc: Resource) -> None:
    emu.faults = FaultPlan(api_disabled=True)
    with pytest.raises(HttpError) as exc:
        svc.users().list(customer="my_customer").execute()
    error = error_of(exc)
    assert (exc.value.status_code, error["errors"][0]["reason"], error["errors"][0]["domain"]) == (
        403,
        "accessNotConfigured",
        "usageLimits",
    )
    assert error["message"].startswith("Admin SDK API has not been used in project")


# ----- authentication --------------------------------------------------------------------


def test_require_auth_rejects_anonymous_calls(emu: DirectoryEmulator) -> None:
    emu.require_auth = True
    with pytest.raises(HttpError) as exc:
        client(emu, http=httplib2.Http()).users().list(customer="my_customer").execute()
    error = error_of(exc)
    assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")
    assert error["errors"][0] == {
        "message": "Login Required.", "domain": "global", "reason": "required",
        "location": "Authorization", "locationType": "header",
    }  # fmt: skip


def test_require_auth_rejects_tokens_it_did_not_issue(emu: DirectoryEmulator) -> None:
    emu.require_auth = True
    response, content = httplib2.Http().request(
        emu.url + "admin/directory/v1/users?customer=my_customer", headers={"Authorization": "Bearer forged"}
    )
    error = json.loads(content)["error"]
    assert (response.status, error["errors"][0]["reason"], error["errors"][0]["message"]) == (
        401,
        "authError",
        "Invalid Credentials",
    )


@pytest.fixture(scope="module")
def service_account_info(shared: DirectoryEmulator) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {
        "type": "service_account",
        "project_id": "dirsync-test",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "dirsync@dirsync-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": shared.token_uri,
    }


def test_service_account_delegation_grant(emu: DirectoryEmulator, service_account_info: dict[str, str]) -> None:
    emu.require_auth = True
    before = len(emu.token_requests)
    credentials = service_account.Credentials.from_service_account_info(
        service_account_info, scopes=SCOPES, subject=f"admin@{DOMAIN}"
    )
    svc = client(emu, credentials)
    assert svc.users().get(userKey=f"admin@{DOMAIN}").execute()["isAdmin"] is True
    record = emu.token_requests[before]
    assert record == {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "scopes": SCOPES,
        "subject": f"admin@{DOMAIN}",
        "client": "dirsync@dirsync-test.iam.gserviceaccount.com",
    }
    assert emu.request_counts()["token"] == 1

    emu.faults.non_admin_subjects.add(f"ADMIN@{DOMAIN}")
    with pytest.raises(HttpError) as exc:
        svc.users().list(customer="my_customer").execute()
    assert error_of(exc) == {
        "code": 403,
        "message": "Not Authorized to access this resource/api",
        "errors": [
            {"message": "Not Authorized to access this resource/api", "domain": "global", "reason": "forbidden"}
        ],
        "status": "PERMISSION_DENIED",
    }


def test_authorized_user_refresh_grant(emu: DirectoryEmulator) -> None:
    emu.require_auth = True
    before = len(emu.token_requests)
    credentials = Credentials(
        token=None,
        refresh_token="secret-refresh",
        client_id="cid-1",
        client_secret="s3cret",
        token_uri=emu.token_uri,
        scopes=SCOPES,
    )
    assert client(emu, credentials).groups().list(customer="my_customer", maxResults=1).execute()["groups"]
    records = emu.token_requests[before:]
    assert records == [{"grant_type": "refresh_token", "scopes": SCOPES, "subject": None, "client": "cid-1"}]
    assert "secret-refresh" not in json.dumps(emu.token_requests)


@pytest.mark.parametrize(
    ("token_error", "expected"),
    [
        ("unauthorized_client", "unauthorized_client: Client is unauthorized"),
        ("invalid_grant", "invalid_grant: Invalid email or User ID"),
    ],
)
def test_token_errors_surface_as_refresh_errors(
    emu: DirectoryEmulator, service_account_info: dict[str, str], token_error: str, expected: str
) -> None:
    emu.faults = FaultPlan(token_error=token_error)
    credentials = service_account.Credentials.from_service_account_info(
        service_account_info, scopes=SCOPES, subject=f"x@{DOMAIN}"
    )
    with pytest.raises(RefreshError, match=expected):
        client(emu, credentials).users().list(customer="my_customer").execute()
    assert emu.request_counts()["users.list"] == 0


def test_scripted_token_fault_then_recovery(emu: DirectoryEmulator) -> None:
    emu.faults.scripted.append(ScriptedFault("token", 400, "invalid_grant", "Not a valid email"))
    credentials = Credentials(
        token=None, refresh_token="r", client_id="c", client_secret="s", token_uri=emu.token_uri, scopes=SCOPES
    )
    with pytest.raises(RefreshError, match="invalid_grant: Not a valid email"):
        client(emu, credentials).groups().get(groupKey=f"admins@{DOMAIN}").execute()
    assert client(emu, credentials).groups().get(groupKey=f"admins@{DOMAIN}").execute()["email"] == f"admins@{DOMAIN}"
    assert emu.request_counts()["token"] == 2


# ----- batch -----------------------------------------------------------------------------


def test_batch_answers_each_part(emu: DirectoryEmulator, svc: Resource, directory: Directory) -> None:
    groups = [g for g in directory.groups.values() if g.members][:3]
    answers: dict[str, Any] = {}

    def collect(request_id: str, response: Any, exception: Exception | None) -> None:
        answers[request_id] = exception or response

    batch = BatchHttpRequest(callback=collect, batch_uri=emu.url + "batch")
    for group in groups:
        batch.add(svc.members().list(groupKey=group.email, maxResults=5), request_id=group.id)
    batch.add(svc.groups().get(groupKey="missing@demo.example.com"), request_id="missing")
    batch.execute()

    for group in groups:
        assert [m["id"] for m in answers[group.id]["members"]] == [m.id for m in group.members[:5]]
    assert isinstance(answers["missing"], HttpError) and answers["missing"].status_code == 404
    counts = emu.request_counts()
    assert (counts["batch"], counts["members.list"], counts["groups.get"]) == (1, 3, 1)


# ----- mutations -------------------------------------------------------------------------


def test_user_mutations_are_visible(fresh: DirectoryEmulator) -> None:
    svc, d = client(fresh), fresh.directory
    group, row = next((g, m) for g in d.groups.values() for m in g.members if m.status == "ACTIVE" and m.id in d.users)
    user = d.users[row.id]
    old_email = user.primary_email

    d.suspend_user(user.id)
    assert svc.users().get(userKey=user.id).execute()["suspensionReason"] == "ADMIN"
    rows = svc.members().list(groupKey=group.id).execute()["members"]
    assert next(r for r in rows if r["id"] == user.id)["status"] == "SUSPENDED"

    d.rename_user(user.id, f"renamed@{DOMAIN}")
    body = svc.users().get(userKey=old_email).execute()
    assert (body["primaryEmail"], body["aliases"][-1]) == (f"renamed@{DOMAIN}", old_email)

    d.delete_user(user.id)
    with pytest.raises(HttpError):
        svc.users().get(userKey=user.id).execute()
    deleted = svc.users().list(customer="my_customer", showDeleted="true").execute()["users"]
    assert [(u["id"], "deletionTime" in u) for u in deleted] == [(user.id, True)]
    assert all(r["id"] != user.id for r in svc.members().list(groupKey=group.id).execute().get("members", []))
    assert len(svc.users().list(customer="my_customer").execute()["users"]) == len(d.users) - 1


def test_group_mutations_are_visible(fresh: DirectoryEmulator) -> None:
    svc, d = client(fresh), fresh.directory
    parent = d.add_group(f"new-team@{DOMAIN}", "New team")
    child = d.add_group(f"sub-team@{DOMAIN}", "Sub team")
    user = next(iter(d.users.values()))
    d.add_member(parent.email, child.email)
    d.add_member(child.id, user.primary_email, role="OWNER")
    outsider = d.add_member(child.id, "guest@elsewhere.example.net")
    assert outsider.id not in d.users and outsider.type == "USER"
    d.add_member(child.id, parent.id)  # a cycle: allowed by the model for negative tests

    derived = svc.members().list(groupKey=parent.email, includeDerivedMembership=True).execute()["members"]
    assert [m["id"] for m in derived] == [child.id, user.id, outsider.id, parent.id]
    assert svc.groups().get(groupKey=child.id).execute()["directMembersCount"] == "3"

    d.remove_member(child.id, "GUEST@elsewhere.example.net")
    d.delete_group(parent.id)
    with pytest.raises(HttpError) as exc:
        svc.groups().get(groupKey=parent.email).execute()
    assert exc.value.status_code == 404
    assert [m["id"] for m in svc.members().list(groupKey=child.email).execute()["members"]] == [user.id]
    with pytest.raises(ValueError):
        d.add_member(child.id, user.id)


def test_model_rejects_inconsistent_changes(fresh: DirectoryEmulator) -> None:
    d = fresh.directory
    taken = next(iter(d.users.values())).primary_email
    with pytest.raises(ValueError):
        d.add_user(taken, "Dup", "Licate")
    with pytest.raises(KeyError):
        d.suspend_user("nobody@demo.example.com")
    with pytest.raises(KeyError):
        d.add_member(next(iter(d.groups)), f"nobody@{DOMAIN}")
    with pytest.raises(TypeError):
        d.update_user(taken, id="1")
    added = d.add_user(f"new.person@{DOMAIN}", "New", "Person", aliases=[f"np@{DOMAIN}"])
    assert d.find_user("NP@demo.example.com") is added and re.fullmatch(r"1\d{20}", added.id)
    assert d.add_member(next(iter(d.groups)), Member(added.id, added.primary_email, "USER", None, None)).role is None


def test_stopped_emulator_stops_answering(fresh: DirectoryEmulator) -> None:
    svc = client(fresh)
    assert svc.groups().list(customer="my_customer").execute()["groups"]  # opens a keep-alive connection
    fresh.stop()
    with pytest.raises(OSError):
        svc.groups().list(customer="my_customer").execute()


def test_a_burst_of_connections_is_accepted_at_once() -> None:
    """Like a 32-thread client's start: no connection waits for the retransmission of a dropped handshake (1 s)."""
    with DirectoryEmulator(generate_directory(20, 3, seed=1)) as emulator:
        started = time.monotonic()
        connections = [http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10) for _ in range(40)]
        for connection in connections:
            connection.request("GET", STATS_PATH)
        statuses = [connection.getresponse().status for connection in connections]
        elapsed = time.monotonic() - started
        for connection in connections:
            connection.close()
    assert statuses == [200] * 40
    assert elapsed < 1.0


# ----- command line ----------------------------------------------------------------------


def test_serve_forever_prints_its_address_and_stops_on_sigterm() -> None:
    code = "from dirsync_pipeline.emulator.server import serve_forever; serve_forever(50, 10, 0, seed=4)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.fullmatch(
            r"Directory API emulator on (http://127\.0\.0\.1:\d+/) \(50 users, 10 groups, customer (C0\w{7})\)\n", line
        )
        assert match, line
        assert match.group(2) == generate_directory(50, 10, seed=4).customer_id
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
