"""Run a command as a child process and measure it like an operator would see it.

Wall time from start to exit, CPU seconds of the process and every child it waited for (from
``wait4``), and the peak resident memory of the whole process tree: sampled every 50 ms with psutil,
and never below the kernel's own high-water mark of the process (``ru_maxrss``), which a sample
could miss.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.05
OUTPUT_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Measured:
    returncode: int
    timed_out: bool
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    output_tail: str  # the end of stdout+stderr, to explain a failure

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run_measured(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str], timeout_seconds: float,
    on_tick: Callable[[], None] | None = None, stdout: Path | None = None,
) -> Measured:
    """Run ``argv`` to completion (killed after ``timeout_seconds``), calling ``on_tick`` between samples.

    ``stdout``: a file for the standard output (a peer's records), else it joins stderr in the output tail."""
    with tempfile.TemporaryFile() as output, open(stdout or os.devnull, "wb") as records:
        started = time.monotonic()
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=records if stdout else output, stderr=output)
        tree = psutil.Process(process.pid)
        peak, timed_out = 0, False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_rss(tree))
            if on_tick:
                on_tick()
            if not timed_out and time.monotonic() - started > timeout_seconds:
                timed_out = True
                kill_tree(tree)
            time.sleep(SAMPLE_SECONDS)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
        output.seek(0)
        tail = output.read().decode(errors="replace")[-OUTPUT_TAIL_CHARS:]
    return Measured(
        returncode=process.returncode, timed_out=timed_out, wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime, peak_rss_bytes=max(peak, usage.ru_maxrss * 1024),
        output_tail=tail,
    )


def tree_rss(root: psutil.Process) -> int:
    """Resident bytes of ``root`` and all its descendants right now (processes that just exited count 0)."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def kill_tree(root: psutil.Process) -> None:
    try:
        processes = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue
