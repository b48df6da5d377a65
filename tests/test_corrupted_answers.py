"""Google's answers corrupted on the way (a proxy of our own in front of the emulator), through `dirsync sync`.

Each case runs the real CLI in a fresh process against the proxy and asserts the exit code, the message, and
that what consumers read (every published row, the Parquet manifest and its files) is byte-identical.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dirsync_pipeline.emulator import Directory, DirectoryEmulator, generate_directory
from tests.conftest import write_config
from tests.corrupting_proxy import CorruptingProxy, Exchange
from tests.published_state import published_state
from tests.test_cli import dirsync

USERS_KIND = "admin#directory#users"


@pytest.fixture(scope="module")
def directory() -> Directory:
    return generate_directory(users=600, groups=30, seed=7, domain="acme.test")  # users.list: 2 pages of 500


@pytest.fixture(scope="module")
def proxy(directory: Directory) -> Iterator[CorruptingProxy]:
    with DirectoryEmulator(directory) as emulator, CorruptingProxy(emulator.url).running() as running:
        yield running


@pytest.fixture(scope="module")
def baseline(proxy: CorruptingProxy, tmp_path_factory) -> Path:
    """A warehouse holding one good sync, copied by each test so that every case starts from the same state."""
    folder = tmp_path_factory.mktemp("baseline")
    result = dirsync("sync", "--config", str(config(folder, proxy)), cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


@pytest.fixture
def corrupt(proxy: CorruptingProxy) -> Iterator[CorruptingProxy]:
    """The proxy with its page counts reset (the test's sync pages from 0); passing answers through again after."""
    proxy.pages.clear()
    yield proxy
    proxy.rewrite = lambda exchange: None
    proxy.invented_tokens.clear()


def config(folder: Path, proxy: CorruptingProxy, **overrides) -> Path:
    return write_config(folder, [{"id": "acme", "api_endpoint": proxy.url, "selected_groups": "all", "batch_size": 1,
                                  "rate_limit_qps": None, **overrides}])


def sync_from_baseline(baseline: Path, tmp_path: Path, proxy: CorruptingProxy, **overrides):
    """`dirsync sync` on a copy of the baseline warehouse: (result, published state before, after)."""
    shutil.copytree(baseline, tmp_path, dirs_exist_ok=True)
    db = tmp_path
    before = published_state(db)
    result = dirsync("sync", "--config", str(config(tmp_path, proxy, **overrides)), cwd=tmp_path)
    return result, before, published_state(db)


def users_pages(change):
    """A rewrite of users.list pages only: ``change(exchange)`` for each."""
    return lambda exchange: change(exchange) if exchange.endpoint == "users.list" else None


def refused(result, before, after, *messages: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    for message in messages:
        assert message in result.stderr, result.stderr[-3000:]
    assert "the last published data is unchanged" in result.stderr
    assert after == before, "the published rows or Parquet files changed"


def test_a_page_of_users_without_its_users_key_is_refused(baseline, tmp_path, corrupt):
    corrupt.rewrite = users_pages(lambda x: {k: v for k, v in x.answer.items() if k != "users"} if x.page == 0 else None)
    refused(*sync_from_baseline(baseline, tmp_path, corrupt),
            "users.list: page 1 carries a next page token but no items")


def test_an_empty_object_as_the_last_page_of_users_is_refused(baseline, tmp_path, corrupt):
    corrupt.rewrite = users_pages(lambda x: {} if "nextPageToken" not in x.answer else None)
    refused(*sync_from_baseline(baseline, tmp_path, corrupt),
            "users.list: a page without Google's `kind` 'admin#directory#users'")


def test_users_that_groups_name_but_users_list_lost_are_confirmed_and_refused(baseline, tmp_path, corrupt):
    """The last page emptied but still Google-shaped: the members of the groups prove users.list incomplete."""
    corrupt.rewrite = users_pages(lambda x: {"kind": USERS_KIND} if "nextPageToken" not in x.answer else None)
    refused(*sync_from_baseline(baseline, tmp_path, corrupt),
            "users.list did not return at least 10 user(s) that groups list as members and users.get confirms exist")


def test_on_a_first_sync_a_lost_page_of_users_publishes_nothing(tmp_path, corrupt):
    corrupt.rewrite = users_pages(lambda x: {"kind": USERS_KIND} if "nextPageToken" not in x.answer else None)
    result = dirsync("sync", "--config", str(config(tmp_path, corrupt)), cwd=tmp_path)
    assert result.returncode == 1 and "users.get confirms exist" in result.stderr, result.stderr[-3000:]
    state = published_state(tmp_path)
    assert not [k for k, rows in state.items() if rows], "a first sync refused must publish nothing"


def endless(corrupt: CorruptingProxy, fresh_ids: bool):
    """Past its last page, users.list hands out new tokens forever: each lap serves the pages again (under new
    ids and emails when ``fresh_ids``), each page's token one the proxy invents."""
    def change(exchange: Exchange) -> dict:
        answer, token = exchange.answer, exchange.query.get("pageToken", "")
        lap = int(token.split("-")[1]) if token.startswith("endless-") else 0
        if lap and fresh_ids:
            answer = {**answer, "users": [{**u, "id": f"{u['id']}{lap}", "primaryEmail": f"{lap}.{u['primaryEmail']}"}
                                          for u in answer["users"]]}
        if "nextPageToken" not in answer:
            return {**answer, "nextPageToken": corrupt.invent_token(f"endless-{lap + 1}", {"pageToken": None})}
        if lap:
            real = answer["nextPageToken"]
            return {**answer, "nextPageToken": corrupt.invent_token(f"endless-{lap}-{real}", {"pageToken": real})}
        return answer
    return users_pages(change)


def test_an_endless_chain_of_new_tokens_serving_the_same_page_is_stopped(baseline, tmp_path, corrupt):
    corrupt.rewrite = endless(corrupt, fresh_ids=False)
    refused(*sync_from_baseline(baseline, tmp_path, corrupt),
            "users.list: page 3 repeats an earlier page; stopped paging to avoid an endless loop")


def test_an_endless_chain_of_new_users_stops_at_the_limit_the_config_derives(baseline, tmp_path, corrupt):
    corrupt.rewrite = endless(corrupt, fresh_ids=True)
    refused(*sync_from_baseline(baseline, tmp_path, corrupt, limits={"max_users": 1000}),
            "users.list: still handing out page tokens after 3 pages, more than the directory can hold under the "
            "connection's `limits`")


def first_members_page(change):
    """A rewrite of one members.list page, the first that lists two members or more: ``change(members)``."""
    done = []

    def rewrite(exchange: Exchange) -> dict | None:
        members = exchange.answer.get("members", [])
        if exchange.endpoint != "members.list" or len(members) < 2 or done:
            return None
        done.append(exchange)
        return {**exchange.answer, "members": change(members)}
    return rewrite


def test_a_member_listed_twice_is_named_as_such(baseline, tmp_path, corrupt):
    corrupt.rewrite = first_members_page(lambda members: [*members, members[0]])
    result, before, after = sync_from_baseline(baseline, tmp_path, corrupt)
    refused(result, before, after, "more members than Google's own directMembersCount", "listed twice")
    assert "fewer members" not in result.stderr


def test_a_duplicate_member_in_place_of_another_names_the_duplicate_key(baseline, tmp_path, corrupt):
    duplicated = {}

    def change(members: list[dict]) -> list[dict]:
        duplicated["id"] = members[0]["id"]
        return [members[0], members[0], *members[2:]]  # the count still matches directMembersCount
    corrupt.rewrite = first_members_page(change)
    result, before, after = sync_from_baseline(baseline, tmp_path, corrupt)
    refused(result, before, after, "check raw/google_group_members:matches_contract failed",
            "unique key (connection_id, group_id, member_id): acme / ", duplicated["id"])
