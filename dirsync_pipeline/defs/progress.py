"""Progress of a long fetch, in the run log at a pace a person can read.

A large Workspace has thousands of groups; a line per group would bury the log, and silence for ten
minutes looks like a hang. So: one line every ``interval`` seconds, and always one at the end, with
groups done of known total, API requests so far and an ETA from the rate so far. The total grows while
nested groups are discovered, so the ETA is a lower bound until the last ones are found.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dirsync_pipeline.google.retry import ApiStats

DEFAULT_INTERVAL_SECONDS = 10.0


class FetchProgress:
    """An ``on_progress(done, total)`` callback for ``DirectoryClient.fetch_members`` that logs sparingly."""

    def __init__(
        self, log: Callable[[str], None], stats: ApiStats, *, interval: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._log = log
        self._stats = stats
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._last_logged = self._started

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if done < total and now - self._last_logged < self._interval:
            return
        self._last_logged = now
        self._log(self.line(done, total, now - self._started))

    def line(self, done: int, total: int, elapsed: float) -> str:
        requests = self._stats.as_metadata()["api_requests"]
        share = f"{done / total:.0%}" if total else "100%"
        if done >= total:
            return f"members.list: all {total} groups fetched, {requests} API requests in {elapsed:.0f}s"
        eta = elapsed / done * (total - done) if done else None
        left = f"ETA {eta:.0f}s" if eta is not None else "ETA unknown"
        return f"members.list: {done}/{total} groups fetched ({share}), {requests} API requests, {left}"
