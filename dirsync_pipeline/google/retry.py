"""One retry policy and one rate limiter for every Directory API call.

The client library's own ``num_retries`` misses 403 ``quotaExceeded`` and ignores ``Retry-After``, so
dirsync retries itself: exponential backoff with full jitter, capped, bounded in attempts and in total
time. The limiter paces all workers of one sync together and backs off as a whole when Google says "slow down",
because Google's quota is per admin and Cloud project, not per thread; each sync has its own.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

import httplib2
from googleapiclient.errors import HttpError

from dirsync_pipeline.google.errors import RetriesExhaustedError, api_error_info

T = TypeVar("T")
# Backoff jitter: one generator for every call, rather than one seeded from the OS per request.
_JITTER = random.Random()

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
TRANSIENT_NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.timeout, httplib2.ServerNotFoundError)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 32.0
    total_budget: float = 900.0

    def backoff(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Full jitter (uniform up to the capped exponential), never shorter than ``Retry-After``."""
        jittered = rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
        return max(jittered, retry_after or 0.0)


@dataclass
class ApiStats:
    """What a sync did on the wire; shown as run metadata and checked by the benchmark."""

    requests: Counter = field(default_factory=Counter)  # API calls, each part of a batch counted (Google's quota does)
    retries: Counter = field(default_factory=Counter)
    batches: int = 0  # HTTP batch requests, each carrying several calls
    rate_limit_wait_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self, endpoint: str, calls: int = 1) -> None:
        with self._lock:
            self.requests[endpoint] += calls

    def count_batch(self) -> None:
        with self._lock:
            self.batches += 1

    def count_retry(self, cause: str, calls: int = 1) -> None:
        with self._lock:
            self.retries[cause] += calls

    def add_wait(self, seconds: float) -> None:
        with self._lock:
            self.rate_limit_wait_seconds += seconds

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "api_requests": sum(self.requests.values()),
            **{f"api_requests.{k}": v for k, v in sorted(self.requests.items())},
            "api_retries": sum(self.retries.values()),
            **{f"api_retries.{k}": v for k, v in sorted(self.retries.items())},
            "api_batch_requests": self.batches,
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
        }


class Slot(NamedTuple):
    """When a call (or a batch) was let go, how long its worker waited, and at which pace (decreases so far)."""

    at: float
    waited: float
    pace: int = 0


class RateLimiter:
    """One organisation's pace: it starts at the quota, backs off when Google refuses, and wins the rate back.

    Every call of a sync counts against one quota (its admin's, per Cloud project), so the workers of a sync
    share one limiter and each sync has its own: one organisation's refusals never slow another's sync.

    - Calls are spaced evenly at ``qps``; a batch leaves at its last part's slot, so no part runs ahead.
    - A refusal (429, 403 rate limit) of a call sent at the current pace halves the pace. Refusals of calls
      sent before that decrease say nothing new and change nothing, so a burst of them halves it once. Each
      refusal's Retry-After holds every call of the sync until it has passed.
    - Successes win the pace back over time, since quotas are rates over time: within ``RECOVER_SECONDS`` up
      to ``RECOVER_SHARE`` of the refused pace, then over ``PROBE_SECONDS`` (Google meters per minute) up to
      it, so that finding the quota again costs one burst of refusals a minute at most. A pace that reaches
      the refused one unrefused climbs on to ``max_qps`` (never above), and there forgets the refusal.
    """

    DECREASE = 0.5
    RECOVER_SHARE = 0.8
    RECOVER_SECONDS = 5.0
    PROBE_SECONDS = 60.0

    def __init__(
        self, qps: float | None, *, floor_qps: float = 1.0,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ):
        self.max_qps = qps
        self.qps = qps
        self.refused_qps: float | None = None  # the last pace Google refused, until the pace is back at it
        self.floor_qps = min(floor_qps, qps) if qps else floor_qps
        self._clock = clock
        self._sleep = sleep
        self._next_slot = clock()
        self._paused_until = self._next_slot  # no call leaves before: the longest Retry-After asked so far
        self._ahead_slot = self._next_slot  # the next slot of a page chain's call (see acquire)
        self._slowed_at = self._next_slot  # when the last decrease's pace began (after its pause)
        self._slowed_to = qps  # the pace the last refusal set
        self._decreases = 0
        self._generation = 0  # counts the refusals that voided the slots given so far
        self._lock = threading.Lock()

    def acquire(self, calls: int = 1, *, ahead: bool = False) -> Slot:
        """Wait for the slots of ``calls`` API calls (a batch takes one per part).

        ``ahead``: a page of a chain (each page needs the previous one's token: the sync's longest path) takes
        the first free slot instead of queuing behind the slots the workers took, up to ``max_concurrency``
        batches ahead; the slots given after it move back by its share, so the pace holds. A worker whose slot
        was given before a refusal takes a new one when it wakes: slots given at the old pace would otherwise
        all go out into an exhausted quota."""
        started = self._clock()
        if not self.qps:
            return Slot(started, 0.0)
        while True:
            with self._lock:
                now, generation, pace = self._clock(), self._generation, self._decreases
                share = calls / self.qps
                if ahead:
                    first = max(now, self._paused_until, self._ahead_slot)
                    self._ahead_slot = first + share
                    self._next_slot = max(self._next_slot, now) + share
                else:
                    first = max(now, self._next_slot)
                    self._next_slot = first + share
                slot = first + share - 1 / self.qps
            if slot > now:
                self._sleep(slot - now)
            if self._generation == generation:
                return Slot(slot, max(0.0, slot - started), pace)

    def throttled(self, sent: Slot, retry_after: float | None = None) -> None:
        """Google refused a call sent in the slot ``sent``: slow down, and pause for ``retry_after``."""
        if not self.qps:
            return
        with self._lock:
            fresh = sent.pace == self._decreases  # sent at the current pace, not before the last decrease
            if not fresh and not retry_after:
                return
            self._paused_until = max(self._paused_until, self._clock() + (retry_after or 0.0))
            if fresh:
                self.refused_qps = self.qps
                self.qps = self._slowed_to = max(self.floor_qps, self.qps * self.DECREASE)
                self._slowed_at = self._paused_until
                self._decreases += 1
            # Every slot given so far is void: the waiting workers take new ones, at this pace, after the pause.
            self._next_slot = self._paused_until
            self._generation += 1

    def succeeded(self) -> None:
        """A call was answered: win back the pace that the time since the last refusal allows."""
        if not self.qps or (self.qps >= self.max_qps and self.refused_qps is None):
            return
        with self._lock:
            since = max(0.0, self._clock() - self._slowed_at)
            refused, slowed_to = self.refused_qps or self.max_qps, self._slowed_to
            recovered = self.RECOVER_SHARE * refused
            if since < self.RECOVER_SECONDS:
                qps = slowed_to + (recovered - slowed_to) * since / self.RECOVER_SECONDS
            else:
                qps = recovered + (refused - recovered) * (since - self.RECOVER_SECONDS) / self.PROBE_SECONDS
            if qps >= refused:  # the refused pace holds now: climb on to the ceiling as fast as we came
                probed = self.RECOVER_SECONDS + self.PROBE_SECONDS
                qps = refused + self.max_qps * (since - probed) / self.RECOVER_SECONDS
            self.qps = min(self.max_qps, max(self.qps, qps))
            if self.qps >= self.max_qps:
                self.refused_qps = None


def retry_cause(exc: BaseException) -> str | None:
    """Why ``exc`` deserves a retry (a short label for stats), or None when it must fail at once."""
    if isinstance(exc, HttpError):
        info = api_error_info(exc)
        if info.status >= 500:
            return str(info.status)
        if info.status == 429 or (info.status == 403 and info.reason in RATE_LIMIT_REASONS):
            return "rate_limited"
        return None
    if isinstance(exc, TRANSIENT_NETWORK_ERRORS):
        return "network"
    return None


def retry_after(exc: BaseException) -> float | None:
    """The seconds Google asked to wait before trying again (`Retry-After`), if it said."""
    if isinstance(exc, HttpError):
        value = exc.resp.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None
    return None


def call_with_retry(
    call: Callable[[], T],
    *,
    endpoint: str,
    policy: RetryPolicy,
    limiter: RateLimiter,
    stats: ApiStats,
    rng: random.Random | None = None,
    calls: Callable[[], int] = lambda: 1,
    sleep: Callable[[float], None] = time.sleep,
    ahead: bool = False,
) -> T:
    """Run ``call`` under the policy; non-retryable errors propagate unchanged for the caller to explain.

    ``calls`` says how many API calls the next attempt sends: a batch re-sends only its parts still
    unanswered, and each part counts against the quota, the limiter and the statistics. ``sleep`` waits
    between attempts (the client's own raises once the sync is stopped, so a retry wait never delays a stop).
    ``ahead``: a page of a chain, paced ahead of the workers' calls (RateLimiter.acquire).
    """
    rng = rng or _JITTER
    # The attempts of this one call: a sync runs many calls, so name when they began, not only how long.
    started, first_attempt_at = time.monotonic(), datetime.now(UTC)
    for attempt in range(policy.max_attempts):
        sending = calls()
        slot = limiter.acquire(sending, ahead=ahead)
        stats.add_wait(slot.waited)
        stats.count_request(endpoint, sending)
        try:
            result = call()
        except Exception as exc:
            cause = retry_cause(exc)
            if cause is None:
                raise
            asked_wait = retry_after(exc)
            if cause == "rate_limited":
                limiter.throttled(slot, asked_wait)
            delay = policy.backoff(attempt, asked_wait, rng)
            out_of_attempts = attempt + 1 >= policy.max_attempts
            if out_of_attempts or time.monotonic() - started + delay > policy.total_budget:
                hint = "could not reach the API endpoint: check api_endpoint and the network" if cause == "network" \
                    else "Google may be degraded"
                raise RetriesExhaustedError(
                    f"{endpoint}: still failing after {attempt + 1} attempts over {time.monotonic() - started:.0f} s, "
                    f"from {first_attempt_at:%H:%M:%S} UTC on (last: {cause}); {hint}. Nothing was published; the next "
                    "sync retries."
                ) from None
            stats.count_retry(cause, calls())
            sleep(delay)
            continue
        limiter.succeeded()
        return result
    raise AssertionError("unreachable: the loop returns or raises")
