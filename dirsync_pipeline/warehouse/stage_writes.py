"""A run's stage writes, on a thread of their own: the step that staged goes on while DuckDB writes.

Writing a stage takes DuckDB up to ~0.1 s at 20,000 users (its commit may checkpoint the file), and nothing
in the run reads it back until the publish: the steps that load a stage get the frame itself
(StagingIOManager). So a run hands each write to one writer thread, in order, and goes on with its checks
and the next steps on the other core (the same thread diffs a small sync's change events: store.py).
Every other use of the run's DuckDB connection first waits for the writes given so far (``settle``): the
publish, a read of a stage, the end of the run. A write that failed fails the first of them, so nothing is
published from a stage that was not written.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class StageWriteError(Exception):
    """A stage could not be written; the run publishes nothing."""


class StageWrites:
    """The stage writes of the run that holds one connection's warehouse, in the order they were given."""

    def __init__(self) -> None:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-writes")
        self._pending: list[tuple[str, Future[None]]] = []

    def submit(self, stage_name: str, write: Callable[[], None]) -> None:
        self._pending.append((stage_name, self._writer.submit(write)))

    def settle(self) -> None:
        """Wait for every write given so far; raise for the first that failed."""
        pending, self._pending = self._pending, []
        failed = [(name, error) for name, future in pending if (error := future.exception()) is not None]
        if failed:
            name, error = failed[0]
            raise StageWriteError(
                f"writing the stage {name} failed ({type(error).__name__}: {error}); nothing was "
                "published from this run. Fix the cause (disk space, file permissions) and sync again."
            ) from error

    def close(self) -> None:
        try:
            self.settle()
        finally:
            self._writer.shutdown()
