"""The results as a console table and as bench/RESULTS.md: figures per run, then PASS/FAIL per target."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime

import psutil

from bench.scenarios import Figures, Outcome, Target

_HEADER = ("scenario", "run", "wall s", "1st request at s", "API busy s", "requests / minimum", "429s", "peak RSS MiB", "CPU s", "rows = truth")


def figures_rows(figures: list[Figures]) -> list[tuple[str, ...]]:
    return [_HEADER, *(_row(f) for f in figures)]


def _row(f: Figures) -> tuple[str, ...]:
    requests = f"{f.requests:,} / {f.min_requests:,}" if f.requests is not None and f.min_requests is not None else "–"
    return (
        f.scenario, f.run, f"{f.wall_seconds:.1f}", _opt(f.before_first_request, "{:.1f}"), _opt(f.api_seconds, "{:.1f}"), requests, _opt(f.rate_limited, "{}"),
        f"{f.peak_rss_bytes / 2**20:.0f}", f"{f.cpu_seconds:.1f}", {True: "yes", False: "NO", None: "–"}[f.correct],
    )


def _opt(value: object, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def verdict(target: Target) -> str:
    return {True: "PASS", False: "FAIL", None: "not judged (small)"}[target.passed]


def console(outcome: Outcome) -> str:
    rows = figures_rows(outcome.figures)
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines += ["", *(f"{verdict(t):<5} {t.scenario:<5} {t.name}: {t.measured}" for t in outcome.targets)]
    return "\n".join([*lines, *([""] + outcome.details if outcome.details else [])])


def markdown(outcome: Outcome, command: str) -> str:
    rows = figures_rows(outcome.figures)
    table = [_md_row(rows[0]), _md_row(tuple("---" for _ in rows[0])), *(_md_row(r) for r in rows[1:])]
    targets = ["| verdict | scenario | target | measured |", "| --- | --- | --- | --- |",
               *(f"| {verdict(t)} | {t.scenario} | {t.name} | {t.measured} |" for t in outcome.targets)]
    return "\n".join([
        "# dirsync benchmark results", "",
        f"Command: `{command}`  ", f"Machine: {machine()}  ", f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "",
        "Each sync is the real `dirsync sync --config FILE` (Dagster included) in its own process, against "
        "`dirsync emulator` in another process. *wall* is the whole process, Python start-up included; "
        "*1st request at* is when the emulator saw the process's first request, *API busy* the time between the "
        "emulator's first and last request (both ±0.2 s), so the rest of *wall* came after the last request; "
        "*requests* and *429s* are counted by the emulator; *peak RSS* is the sync's whole process tree.", "",
        *table, "", "## Targets", "", *targets, "",
        *(["## Diagnostics", "", *outcome.details, ""] if outcome.details else []),
    ])


def _md_row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def machine() -> str:
    """Cores, memory, Python, and the load average: other work on the machine slows every figure."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()} on {platform.system()} {platform.release()}; "
            f"load average (1, 5, 15 min) when written: {load}")
