"""members.list in HTTP batch requests: the same directory, the same quota use, parts retried alone."""

from __future__ import annotations

import time

import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.http import BatchHttpRequest

from dirsync_pipeline.config import CredentialsConfig
from dirsync_pipeline.emulator import DirectoryEmulator, ScriptedFault
from dirsync_pipeline.google.auth import build_credentials
from dirsync_pipeline.google.batch import LeanBatchHttpRequest
from dirsync_pipeline.google.client import MEMBER_FIELDS, DirectoryClient
from dirsync_pipeline.google.errors import AuthorizationError, MalformedResponseError
from dirsync_pipeline.google.retry import RateLimiter, RetryPolicy
from tests.conftest import write_service_account_key
from tests.test_reliability import FakeClock

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def client(emulator: DirectoryEmulator, **kwargs) -> DirectoryClient:
    return DirectoryClient(AnonymousCredentials(), api_endpoint=emulator.url, retry_policy=FAST, **kwargs)


def all_members(emulator: DirectoryEmulator, **kwargs):
    c = client(emulator, **kwargs)
    fetched = c.fetch_members(c.fetch_groups()["group_id"].to_list())
    return c, fetched, fetched.edges.sort("group_id", "member_id")


def test_batches_read_the_same_edges_with_the_same_calls_as_single_requests(emulator, directory):
    _, single, single_edges = all_members(emulator, max_concurrency=4, batch_size=1)
    single_counts = emulator.request_counts()
    assert single_counts["batch"] == 0
    emulator.reset_counts()
    batched_client, batched, batched_edges = all_members(emulator, max_concurrency=4, batch_size=7)
    counts = emulator.request_counts()
    assert batched_edges.equals(single_edges)
    assert batched.fetched_group_ids == single.fetched_group_ids == sorted(directory.groups)
    assert counts["members.list"] == single_counts["members.list"]  # each part is a call, as Google's quota counts
    assert 0 < counts["batch"] < counts["members.list"] / 2
    assert counts["batch"] == batched_client.stats.batches
    assert batched_client.stats.requests["members.list"] == counts["members.list"]


def test_a_part_that_fails_transiently_is_sent_again_alone(emulator, directory):
    sales = directory.find_group("sales@acme.test")
    emulator.faults.scripted.append(ScriptedFault("members.list", 503, "backendError", times=2, group_key=sales.email))
    _, reference, reference_edges = all_members(emulator, batch_size=1)
    minimum = emulator.request_counts()["members.list"] - 2
    emulator.faults.scripted.append(ScriptedFault("members.list", 503, "backendError", times=2, group_key=sales.email))
    emulator.reset_counts()
    c, fetched, edges = all_members(emulator, max_concurrency=2, batch_size=20)
    assert edges.equals(reference_edges)
    assert emulator.request_counts()["members.list"] == minimum + 2  # only the failed part, twice
    assert c.stats.retries["503"] == 2
    assert c.stats.as_metadata()["api_requests.members.list"] == minimum + 2


def test_rate_limited_parts_wait_for_the_longest_retry_after(emulator, directory):
    listed = client(emulator).fetch_groups()["email"].to_list()  # one batch of up to 50 parts, in this order
    emulator.faults.scripted += [
        ScriptedFault("members.list", 429, "rateLimitExceeded", group_key=listed[0], retry_after=0.1),
        ScriptedFault("members.list", 429, "rateLimitExceeded", group_key=listed[-1], retry_after=0.5)]
    started = time.monotonic()
    c, fetched, _ = all_members(emulator, max_concurrency=1, batch_size=50)
    assert time.monotonic() - started >= 0.5
    assert len(fetched.fetched_group_ids) == len(directory.groups) and c.stats.retries["rate_limited"] == 2


def test_a_group_deleted_mid_sync_is_skipped_inside_a_batch(emulator, directory):
    sales = directory.find_group("sales@acme.test")
    doomed = next(m.id for m in sales.members if m.type == "GROUP")
    emulator.faults.scripted.append(ScriptedFault("members.list", 404, "notFound", "Resource Not Found: groupKey",
                                                  group_key=doomed))
    _, fetched, edges = all_members(emulator, batch_size=50)
    assert fetched.missing_group_ids == [doomed]
    assert doomed not in edges["group_id"].to_list() and sales.id in fetched.fetched_group_ids


def test_a_permanent_part_error_fails_the_fetch_with_its_explanation(emulator, directory):
    sales = directory.find_group("sales@acme.test")
    emulator.faults.scripted.append(ScriptedFault("members.list", 403, "forbidden", group_key=sales.email))
    with pytest.raises(AuthorizationError, match=f"members.list of group {sales.id}: .* not a Google Workspace admin"):
        all_members(emulator, batch_size=50)


def test_a_part_that_is_not_json_is_a_clear_error(emulator, directory):
    sales = directory.find_group("sales@acme.test")
    emulator.faults.scripted.append(ScriptedFault("members.list", 200, "", body="<html>Proxy login</html>",
                                                  group_key=sales.email))
    with pytest.raises(MalformedResponseError, match=f"members.list of group {sales.id}: the answer is not a JSON"):
        all_members(emulator, batch_size=50)


def test_a_batch_carries_at_most_a_quarter_second_of_the_quota(emulator, directory):
    all_members(emulator, max_concurrency=1, batch_size=50, rate_limiter=RateLimiter(1000))  # up to 50 parts
    counts = emulator.request_counts()
    assert counts["batch"] <= counts["members.list"] / 10
    emulator.reset_counts()
    all_members(emulator, max_concurrency=1, batch_size=50, rate_limiter=RateLimiter(8))  # 2 parts per batch
    counts = emulator.request_counts()
    assert counts["batch"] >= counts["members.list"] / 2 - 1


def test_the_limiter_sends_a_batch_at_its_last_parts_slot():
    clock = FakeClock()
    limiter = RateLimiter(50, clock=lambda: clock.now, sleep=clock.sleep)
    start = clock.now
    limiter.acquire(5)
    assert round(clock.now - start, 9) == 0.08  # parts 1..5 at 0, 0.02, ..., 0.08: sent with the fifth
    limiter.acquire()
    assert round(clock.now - start, 9) == 0.1


def test_lean_batch_reads_what_the_library_batch_reads_from_an_authenticated_api(tmp_path, directory):
    with DirectoryEmulator(directory, require_auth=True) as emulator:
        subject = next(u.primary_email for u in directory.users.values() if u.is_admin and not u.suspended)
        key = write_service_account_key(tmp_path / "sa.json", emulator.token_uri)
        credentials = build_credentials(CredentialsConfig(type="service_account", file=key, subject=subject))
        members = DirectoryClient(credentials, api_endpoint=emulator.url)._members
        group_ids = sorted(directory.groups)[:12] + ["missing@acme.test"]
        answers = {}
        for batch_class in (BatchHttpRequest, LeanBatchHttpRequest):
            received = answers[batch_class.__name__] = {}
            batch = batch_class(batch_uri=emulator.url + "batch/admin/directory_v1")
            for group_id in group_ids:
                batch.add(members.list(groupKey=group_id, maxResults=200, fields=MEMBER_FIELDS), request_id=group_id,
                          callback=lambda rid, response, error, received=received: received.update(
                              {rid: without_token(response) if error is None else error.resp.status}))
            batch.execute()
        assert answers["LeanBatchHttpRequest"] == answers["BatchHttpRequest"]
        lean = answers["LeanBatchHttpRequest"]
        assert lean["missing@acme.test"] == 404
        for group_id in group_ids[:12]:
            size = len(directory.groups[group_id].members)
            assert (len(lean[group_id].get("members", [])), lean[group_id]["more"]) == (min(size, 200), size > 200)
        assert emulator.request_counts()["batch"] == 2


def without_token(page: dict) -> dict:
    """A page without its token, which the emulator signs afresh for every answer."""
    return {**{k: v for k, v in page.items() if k != "nextPageToken"}, "more": "nextPageToken" in page}
