"""One retry policy and one rate limiter for every Directory API call.

The client library's own ``num_retries`` misses 403 ``quotaExceeded`` and ignores ``Retry-After``, so
dirsync retries itself: exponential backoff with full jitter, capped, bounded in attempts and in total
time. The limiter is a token bucket shared by all workers of a sync, and it backs off as a whole when
Google says "slow down", because Google's rate limits are per account, not per thread.
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
from typing import TypeVar

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


class RateLimiter:
    """Thread-safe token bucket; ``throttled()`` halves the rate, each success wins a little back."""

    def __init__(
        self, qps: float | None, *, floor_qps: float = 1.0,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ):
        self.max_qps = qps
        self.qps = qps
        self.floor_qps = min(floor_qps, qps) if qps else floor_qps
        self._clock = clock
        self._sleep = sleep
        self._next_slot = clock()
        self._lock = threading.Lock()

    def acquire(self, calls: int = 1) -> float:
        """Wait for the slots of ``calls`` API calls (a batch takes one per part); returns the seconds waited.

        A batch leaves at its last part's slot, so its parts never arrive ahead of the pace."""
        if not self.qps:
            return 0.0
        with self._lock:
            now = self._clock()
            first = max(now, self._next_slot)
            self._next_slot = first + calls / self.qps
            slot = first + (calls - 1) / self.qps
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait

    def throttled(self) -> None:
        if self.qps:
            with self._lock:
                self.qps = max(self.floor_qps, self.qps / 2)

    def succeeded(self) -> None:
        if self.qps and self.max_qps and self.qps < self.max_qps:
            with self._lock:
                self.qps = min(self.max_qps, self.qps + self.max_qps / 50)


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
) -> T:
    """Run ``call`` under the policy; non-retryable errors propagate unchanged for the caller to explain.

    ``calls`` says how many API calls the next attempt sends: a batch re-sends only its parts still
    unanswered, and each part counts against the quota, the limiter and the statistics. ``sleep`` waits
    between attempts (the client's own raises once the sync is stopped, so a retry wait never delays a stop).
    """
    rng = rng or _JITTER
    # The attempts of this one call: a sync runs many calls, so name when they began, not only how long.
    started, first_attempt_at = time.monotonic(), datetime.now(UTC)
    for attempt in range(policy.max_attempts):
        sending = calls()
        stats.add_wait(limiter.acquire(sending))
        stats.count_request(endpoint, sending)
        try:
            result = call()
        except Exception as exc:
            cause = retry_cause(exc)
            if cause is None:
                raise
            if cause == "rate_limited":
                limiter.throttled()
            delay = policy.backoff(attempt, retry_after(exc), rng)
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
