"""Surviving Google's failures: retries, quota pacing, completeness proofs and the mass-removal breaker."""

from __future__ import annotations

import random
import time

import httplib2
import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.errors import HttpError

from dirsync_pipeline.emulator import DirectoryEmulator, ScriptedFault
from dirsync_pipeline.google.client import DirectoryClient
from dirsync_pipeline.google.errors import (
    AuthorizationError,
    DirectoryApiError,
    IncompleteResponseError,
    MalformedResponseError,
    RetriesExhaustedError,
)
from dirsync_pipeline.google.retry import RetryPolicy, retry_cause

FAST = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05, total_budget=10)


def http_error(status: int, reason: str | None, body: bytes | None = None) -> HttpError:
    content = body if body is not None else (
        b'{"error": {"code": %d, "message": "m", "errors": [{"reason": "%s", "domain": "usageLimits"}]}}' % (status, reason.encode()))
    return HttpError(httplib2.Response({"status": status}), content)


@pytest.mark.parametrize(("status", "reason", "cause"), [
    (503, "backendError", "503"), (500, "internalError", "500"), (502, "nonJson", "502"),
    (429, "rateLimitExceeded", "rate_limited"), (403, "rateLimitExceeded", "rate_limited"),
    (403, "userRateLimitExceeded", "rate_limited"), (403, "quotaExceeded", "rate_limited"),
    (403, "forbidden", None), (401, "authError", None), (404, "notFound", None), (400, "invalid", None),
])
def test_retry_policy_classifies_google_errors(status, reason, cause):
    assert retry_cause(http_error(status, reason)) == cause


def test_network_errors_are_retried_and_html_5xx_bodies_too():
    assert retry_cause(ConnectionRefusedError()) == "network"
    assert retry_cause(http_error(502, None, b"<html>Bad Gateway</html>")) == "502"
    assert retry_cause(ValueError("bug")) is None


def test_backoff_is_full_jitter_capped_and_honours_retry_after():
    policy = RetryPolicy(base_delay=1, max_delay=8)
    rng = random.Random(1)
    delays = [policy.backoff(attempt, None, rng) for attempt in range(10) for _ in range(50)]
    assert max(delays) <= 8 and min(delays) >= 0
    assert len({round(d, 3) for d in delays}) > 400, "jittered, not a fixed schedule"
    assert policy.backoff(0, 5.0, rng) >= 5.0


class FakeClock:
    """Time that moves only when the limiter sleeps: pacing is checked exactly, without timing the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def client(emulator: DirectoryEmulator, **kwargs) -> DirectoryClient:
    return DirectoryClient(AnonymousCredentials(), api_endpoint=emulator.url, retry_policy=FAST, **kwargs)


def test_quota_exceeded_403_is_retried_unlike_the_client_library(emulator):
    emulator.faults.scripted.append(ScriptedFault("users.list", 403, "quotaExceeded", "Quota exceeded", times=2))
    c = client(emulator)
    assert c.fetch_users().height == 600
    assert c.stats.retries["rate_limited"] == 2


@pytest.mark.parametrize(("status", "reason", "error"), [
    (400, "invalid", DirectoryApiError), (403, "forbidden", AuthorizationError), (401, "authError", AuthorizationError)])
def test_permanent_errors_are_not_retried(emulator, status, reason, error):
    emulator.faults.scripted.append(ScriptedFault("groups.list", status, reason, "no", times=3))
    with pytest.raises(error):
        client(emulator).fetch_groups()
    assert emulator.request_counts()["groups.list"] == 1


def test_retry_after_is_honoured(emulator):
    emulator.faults.scripted.append(ScriptedFault("groups.list", 429, "rateLimitExceeded", "slow down", retry_after=0.4))
    started = time.monotonic()
    client(emulator).fetch_groups()
    assert time.monotonic() - started >= 0.4


def test_persistent_outage_exhausts_the_bounded_policy(emulator):
    emulator.faults.scripted.append(ScriptedFault("users.list", 503, "backendError", "down", times=100))
    with pytest.raises(RetriesExhaustedError, match="still failing after 5 attempts"):
        client(emulator).fetch_users()
    assert emulator.request_counts()["users.list"] == 5


def test_an_endpoint_that_does_not_answer_is_a_clear_error():
    dead = DirectoryClient(AnonymousCredentials(), api_endpoint="http://127.0.0.1:9/", retry_policy=FAST)
    with pytest.raises(RetriesExhaustedError, match="network"):
        dead.fetch_groups()


def test_truncated_json_is_refused(emulator):
    emulator.faults.scripted.append(ScriptedFault("groups.list", 200, "", body='{"groups": [{"id": "0ab'))
    with pytest.raises(MalformedResponseError):
        client(emulator).fetch_groups()


def test_members_missing_while_google_says_success_are_detected(emulator, directory):
    groups = client(emulator).fetch_groups()
    emulator.faults.drop_members_fraction = 0.2
    c = client(emulator)
    fetched = c.fetch_members(groups["group_id"].to_list())
    with pytest.raises(IncompleteResponseError, match="fewer members than Google's own directMembersCount"):
        c.verify_member_counts(fetched, groups)


def test_a_membership_change_during_the_sync_is_recounted_not_refused(emulator, directory):
    c = client(emulator)
    groups = c.fetch_groups()
    sales = directory.find_group("sales@acme.test")
    newcomer = next(u for u in directory.users.values() if not any(m.id == u.id for m in sales.members))
    directory.add_member(sales.id, newcomer.id)  # after groups.list, before members.list
    fetched = c.fetch_members([sales.id])
    assert c.verify_member_counts(fetched, groups) == 1
    assert emulator.request_counts()["groups.get"] == 1
