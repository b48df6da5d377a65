"""SIGTERM and SIGINT stop a running sync: `timeout`, systemd, Kubernetes and Ctrl-C all end it within seconds.

Python dies of SIGTERM without running any cleanup, and turns SIGINT into a KeyboardInterrupt wherever the main
thread is. Both become a KeyboardInterrupt here, and during a step Dagster's own handler (which takes SIGINT
over and maps SIGTERM to it) turns them into its run interruption: either way the run unwinds, the fetch
stops its threads (DirectoryClient.stop), an open publish transaction rolls back, and the command says which
signal stopped it and exits with the shell's code for it (128 + the signal's number).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SyncStopped(Exception):
    """A signal stopped the sync before it finished."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class ReceivedSignals:
    """The stop signals delivered since the block began, whichever Python handler ran for them.

    Dagster replaces the handlers during a run, so they cannot record the signal; the interpreter's wakeup fd
    receives every delivered signal's number whatever the handler is.
    """

    def __init__(self, read_fd: int):
        self._read_fd = read_fd
        self._seen: list[int] = []

    def first(self) -> int | None:
        try:
            self._seen.extend(s for s in os.read(self._read_fd, 512) if s in STOP_SIGNALS)
        except BlockingIOError:
            pass
        return self._seen[0] if self._seen else None


@contextmanager
def stopped_by_signals() -> Iterator[ReceivedSignals]:
    """Within the block, SIGTERM and SIGINT raise KeyboardInterrupt in the main thread (unless Dagster handles
    them); a KeyboardInterrupt that leaves the block becomes SyncStopped, naming the first signal."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    read_fd, write_fd = os.pipe()
    for fd in (read_fd, write_fd):
        os.set_blocking(fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    received = ReceivedSignals(read_fd)
    try:
        yield received
    except KeyboardInterrupt:
        raise SyncStopped(received.first() or signal.SIGINT) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(read_fd)
        os.close(write_fd)
