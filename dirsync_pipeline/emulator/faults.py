"""Fault injection: the failure modes a Directory API client must survive.

A `FaultPlan` is plain data that tests may change while the server runs; the
emulator asks it, per request, whether to fail and how.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from .wire import ApiError

# What a random failure looks like: mostly the classic 503, sometimes a 500 or a 502.
_RANDOM_FAILURES = ((503, "backendError"), (500, "backendError"), (502, "badGateway"))
_RANDOM_WEIGHTS = (6, 2, 2)


@dataclass
class ScriptedFault:
    """Fail the next `times` matching requests with this status.

    `endpoint` is an API endpoint name, "token", or "*" (any API endpoint, not the
    token endpoint). `group_key` narrows a members.list fault to one group (id,
    email or alias). `body` replaces Google's JSON envelope, e.g. with a proxy's
    HTML page or truncated JSON.
    """

    endpoint: str
    status: int
    reason: str
    message: str = ""
    times: int = 1
    group_key: str | None = None
    retry_after: float | None = None
    body: str | None = None

    def matches(self, endpoint: str, target_keys: Collection[str]) -> bool:
        if self.endpoint != endpoint and not (self.endpoint == "*" and endpoint != "token"):
            return False
        return self.group_key is None or self.group_key.lower() in target_keys

    def to_error(self) -> ApiError:
        return ApiError(self.status, self.reason, self.message, retry_after=self.retry_after, raw_body=self.body)


@dataclass
class FaultPlan:
    latency_ms: float = 0.0
    # Each request's latency drawn uniformly from latency_ms to this (None: always latency_ms): Google's varies.
    latency_max_ms: float | None = None
    error_rate: float = 0.0
    rate_limit_qps: float | None = None
    seed: int = 0
    scripted: list[ScriptedFault] = field(default_factory=list)
    token_error: str | None = None
    non_admin_subjects: set[str] = field(default_factory=set)
    api_disabled: bool = False
    # The Admin console's domain-wide-delegation entry: the scopes a service account may ask for.
    # None = any scope; an empty set = no entry yet (or one still propagating).
    delegated_scopes: frozenset[str] | None = None
    # The consent screen: scopes the admin leaves ticked (None = every requested scope), and who signs in.
    consent_scopes: frozenset[str] | None = None
    consent_account: str | None = None
    repeat_page_token_on: str | None = None
    drop_fraction: float = 0.0
    drop_members_fraction: float = 0.0  # share of members.list rows silently left out (directMembersCount unchanged)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._latency_rng = random.Random(self.seed)  # its own: latencies drawn never shift the injected errors
        self._injected: Counter[str] = Counter()
        self._bucket: float | None = None
        self._bucket_time = 0.0

    @property
    def injected(self) -> dict[str, int]:
        """How many faults of each kind were injected so far, e.g. {"503": 3, "429": 10}."""
        with self._lock:
            return dict(self._injected)

    def record(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self._injected[kind] += count

    def latency_seconds(self) -> float:
        """How long after its arrival this request is answered."""
        if self.latency_max_ms is None or self.latency_max_ms <= self.latency_ms:
            return self.latency_ms / 1000
        with self._lock:
            return self._latency_rng.uniform(self.latency_ms, self.latency_max_ms) / 1000

    def next_error(self, endpoint: str, target_keys: Collection[str] = ()) -> ApiError | None:
        """The fault for this API request, if any: scripted first, then rate limit, then random."""
        error = self.take_scripted(endpoint, target_keys) or self._rate_limited() or self._random_failure()
        if error is not None:
            self.record(str(error.status))
        return error

    def take_scripted(self, endpoint: str, target_keys: Collection[str] = ()) -> ApiError | None:
        """Consume one use of the first scripted fault that matches, in list order."""
        with self._lock:
            for fault in self.scripted:
                if fault.times > 0 and fault.matches(endpoint, target_keys):
                    fault.times -= 1
                    if fault.times == 0:
                        self.scripted.remove(fault)
                    return fault.to_error()
        return None

    def drops(self, user_id: str) -> bool:
        """Whether users.list silently leaves this user out (stable for a given seed)."""
        return self.drop_fraction > 0 and _stable_draw(f"{self.seed}:{user_id}") < self.drop_fraction

    def drops_member(self, group_id: str, member_id: str) -> bool:
        """Whether members.list silently leaves this row out while still answering 200."""
        fraction = self.drop_members_fraction
        return fraction > 0 and _stable_draw(f"{self.seed}:{group_id}:{member_id}") < fraction

    def _rate_limited(self) -> ApiError | None:
        """Token bucket over all API requests: capacity and refill are `rate_limit_qps`."""
        qps = self.rate_limit_qps
        if qps is None:
            return None
        with self._lock:
            now = time.monotonic()
            capacity = max(1.0, qps)
            level = capacity if self._bucket is None else self._bucket + (now - self._bucket_time) * qps
            self._bucket, self._bucket_time = min(capacity, level), now
            if self._bucket >= 1.0:
                self._bucket -= 1.0
                return None
        return ApiError(429, "rateLimitExceeded", retry_after=1)

    def _random_failure(self) -> ApiError | None:
        with self._lock:
            if self.error_rate <= 0 or self._rng.random() >= self.error_rate:
                return None
            status, reason = self._rng.choices(_RANDOM_FAILURES, _RANDOM_WEIGHTS)[0]
        return ApiError(status, reason)


def _stable_draw(key: str) -> float:
    """A number in [0, 1) that depends only on ``key``: the same rows are dropped on every request."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
