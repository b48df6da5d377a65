"""The scenarios of issue 5 (S1, S2, S3 and `dirsync demo`), their ground truth and their targets.

Ground truth never comes from the code under test: row counts come from tests/oracle.py (plain loops
over the emulator's own model) or, for S3, from a DuckDB recursive CTE; the minimum number of requests
comes from the directory's sizes and Google's maximum page sizes.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (
    CONNECTION_ID,
    EmulatorProcess,
    SyncRun,
    clean_env,
    dirsync_command,
    run_sync,
    write_config,
)
from bench.measure import run_measured
from dirsync_pipeline.config import DEMO_DOMAIN
from dirsync_pipeline.emulator import Directory, generate_directory
from dirsync_pipeline.google.client import GROUPS_PAGE_SIZE, MEMBERS_PAGE_SIZE, USERS_PAGE_SIZE
from tests.oracle import expected_entitlements, expected_memberships

SEED = 42
GOOGLE_QPS = 40.0  # 2,400 queries per minute per user per project, Google's default quota
ROLE_MAPPING = {f"admins@{DEMO_DOMAIN}": ["admin"], f"engineering@{DEMO_DOMAIN}": ["developer"],
                f"sales@{DEMO_DOMAIN}": ["sales"], f"support@{DEMO_DOMAIN}": ["support"]}
DEFAULT_ROLE = "member"
GB = 1024**3


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: the issue's figures, or a small version for CI."""

    s1: tuple[int, int, float]  # users, groups, latency ms
    s2: tuple[int, int, float]
    s3: tuple[int, int, int, int]  # users, direct edges, nesting depth, groups
    small: bool


FULL = Sizes(s1=(20_000, 2_000, 20.0), s2=(100_000, 10_000, 50.0), s3=(100_000, 1_000_000, 6, 10_000), small=False)
SMALL = Sizes(s1=(2_000, 200, 2.0), s2=(2_000, 200, 5.0), s3=(10_000, 100_000, 6, 1_000), small=True)


@dataclass(frozen=True)
class Reader:
    """How one sync reads the API (its connection's settings), and how the tables name it."""

    concurrency: int
    batch_size: int
    qps: float | None  # None: no client-side pacing, for an emulator without a rate limit
    label: str


# Few large batches: with batches, 4 requests in flight carry 400 calls, and more worker threads only
# compete for the client's one GIL with the users.list page chain, the fetch's longest path (measured:
# 32 x 50 took ~0.5 s longer end to end than 4 x 100).
S1_READER = Reader(4, 100, None, "concurrency 4, batches of ≤ 100")
# One request in flight at a time, no batch: the reader the issue measures the speed-up against.
S1_SEQUENTIAL = Reader(1, 1, None, "sequential baseline (concurrency 1, no batches)")
# Exactly the quota: the limiter spaces calls evenly and caps a batch at a quarter second of it (10 parts);
# the emulator's 1-second bucket absorbs the jitter.
S2_READER = Reader(8, 50, GOOGLE_QPS, "concurrency 8, limiter 40 q/s, batches of ≤ 10")
S1_RUNS = 5  # odd: the median is one of the runs
TIMEOUTS = {"S1": 600.0, "S2": 1200.0, "S3": 300.0, "demo": 120.0}


@dataclass(frozen=True)
class Target:
    scenario: str
    name: str
    measured: str
    passed: bool | None  # None: a timing target, not judged on the small version
    timing: bool = False


@dataclass(frozen=True)
class Figures:
    """One line of the results table."""

    scenario: str
    run: str
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    api_seconds: float | None = None
    requests: int | None = None
    min_requests: int | None = None
    rate_limited: int | None = None
    correct: bool | None = None
    before_first_request: float | None = None


@dataclass
class Outcome:
    figures: list[Figures]
    targets: list[Target]
    details: list[str] = field(default_factory=list)  # markdown: diagnostics that are not targets


@dataclass(frozen=True)
class Truth:
    customer_id: str
    min_requests: int
    rows: dict[str, int]


def directory_truth(directory: Directory) -> Truth:
    """What a sync of every group must publish and the fewest requests it can make."""
    group_ids = list(directory.groups)
    users = len(directory.active_users())
    member_pages = sum(max(1, math.ceil(len(g.members) / MEMBERS_PAGE_SIZE)) for g in directory.groups.values())
    return Truth(
        customer_id=directory.customer_id,
        min_requests=math.ceil(users / USERS_PAGE_SIZE) + math.ceil(len(group_ids) / GROUPS_PAGE_SIZE) + member_pages,
        rows={
            "google_users": users,
            "google_groups": len(group_ids),
            "google_group_members": sum(len(g.members) for g in directory.groups.values()),
            "filtered_memberships": len(expected_memberships(directory, group_ids)),
            "role_mapped_entitlements": len(expected_entitlements(directory, group_ids, ROLE_MAPPING, DEFAULT_ROLE)),
        },
    )


def _judge(scenario: str, name: str, measured: str, passed: bool, *, timing: bool, small: bool) -> Target:
    return Target(scenario, name, measured, None if timing and small else passed, timing)


def _sync_figures(scenario: str, label: str, run: SyncRun, truth: Truth) -> Figures:
    m = run.measured
    return Figures(scenario, label, m.wall_seconds, m.cpu_seconds, m.peak_rss_bytes, run.api_seconds,
                   run.total_requests, truth.min_requests, run.rate_limited, m.ok and run.published == truth.rows,
                   run.before_first_request)


def _sync_targets(scenario: str, label: str, run: SyncRun, truth: Truth, small: bool) -> list[Target]:
    """Correct rows, and exactly the minimum requests plus one retry per injected fault."""
    if not run.measured.ok:
        failure = "timed out" if run.measured.timed_out else f"exit {run.measured.returncode}"
        return [Target(scenario, f"{label}: sync succeeds", f"{failure}: {run.measured.output_tail[-500:]}", False)]
    retries = sum(n for kind, n in run.faults.items() if kind.isdigit())
    return [
        _judge(scenario, f"{label}: rows = truth", _rows_text(run.published, truth.rows),
               run.published == truth.rows, timing=False, small=small),
        _judge(scenario, f"{label}: requests = minimum + retries of injected faults",
               f"{run.total_requests} = {truth.min_requests} + {retries}",
               run.total_requests == truth.min_requests + retries, timing=False, small=small),
    ]


def _rows_text(published: dict[str, int], expected: dict[str, int]) -> str:
    wrong = {k: f"{published.get(k)} (expected {v})" for k, v in expected.items() if published.get(k) != v}
    return "all equal" if not wrong else "; ".join(f"{k} {v}" for k, v in wrong.items())


def _config(workdir: Path, emulator: EmulatorProcess, reader: Reader) -> Path:
    return write_config(workdir, emulator, max_concurrency=reader.concurrency, batch_size=reader.batch_size,
                        rate_limit_qps=reader.qps, role_mapping=ROLE_MAPPING, default_role=DEFAULT_ROLE)


def _sync_runs(users: int, groups: int, latency_ms: float, emulator_qps: float | None,
               runs: list[tuple[Path, Reader]], timeout_seconds: float) -> tuple[Truth, list[SyncRun]]:
    """The oracle's directory, the same one served by an emulator process, and one sync per (folder, reader)."""
    truth = directory_truth(generate_directory(users, groups, seed=SEED))  # the emulator's own call
    with EmulatorProcess(users, groups, seed=SEED, latency_ms=latency_ms, rate_limit_qps=emulator_qps) as emulator:
        if emulator.customer_id != truth.customer_id:
            raise RuntimeError(f"the emulator serves customer {emulator.customer_id}, the oracle generated "
                               f"{truth.customer_id}: the generator is not deterministic")
        return truth, [run_sync(_config(folder, emulator, reader), emulator, timeout_seconds=timeout_seconds)
                       for folder, reader in runs]


def run_s1(sizes: Sizes, workdir: Path) -> Outcome:
    """20k users / 2k groups at 20 ms: the concurrent sync S1_RUNS times, then the sequential baseline, against
    the same emulator. Each sync is a first sync into its own folder. A run of a few seconds on a shared
    2-core machine varies by a second or more, so the concurrent figure is the median run (all runs shown)."""
    users, groups, latency = sizes.s1
    truth, runs = _sync_runs(
        users, groups, latency, None,
        [*((workdir / f"s1-run{i}", S1_READER) for i in range(1, S1_RUNS + 1)), (workdir / "s1-sequential", S1_SEQUENTIAL)],
        TIMEOUTS["S1"])
    *concurrent_runs, sequential = runs
    name = f"S1 {users:,} users / {groups:,} groups, {latency:g} ms"
    walls = ", ".join(f"{run.measured.wall_seconds:.1f}" for run in concurrent_runs)
    conc_label = f"{S1_READER.label} (median of {S1_RUNS} runs: {walls} s)"
    seq_label = S1_SEQUENTIAL.label
    targets = [target for run in concurrent_runs for target in _sync_targets("S1", S1_READER.label, run, truth, sizes.small)]
    targets += _sync_targets("S1", seq_label, sequential, truth, sizes.small)
    concurrent = sorted(concurrent_runs, key=lambda run: run.measured.wall_seconds)[S1_RUNS // 2]
    if all(run.measured.ok for run in runs):
        wall, base = concurrent.measured.wall_seconds, sequential.measured.wall_seconds
        targets += [
            _judge("S1", "wall < 10 s (median run)", f"{wall:.1f} s", wall < 10, timing=True, small=sizes.small),
            _judge("S1", "wall ≥ 10× below the sequential baseline (median run)",
                   f"{base / wall:.1f}× ({base:.1f} s / {wall:.1f} s)", base / wall >= 10, timing=True, small=sizes.small),
        ]
    return Outcome([_sync_figures(name, conc_label, concurrent, truth), _sync_figures(name, seq_label, sequential, truth)],
                   targets)


def run_s2(sizes: Sizes, workdir: Path) -> Outcome:
    """100k users / 10k groups at 50 ms behind Google's 40 queries/s: bound by the quota, not by dirsync."""
    users, groups, latency = sizes.s2
    truth, (run,) = _sync_runs(users, groups, latency, GOOGLE_QPS, [(workdir / "s2", S2_READER)], TIMEOUTS["S2"])
    name = f"S2 {users:,} users / {groups:,} groups, {latency:g} ms, 40 q/s"
    label = S2_READER.label
    targets = _sync_targets("S2", label, run, truth, sizes.small)
    if run.measured.ok:
        floor = truth.min_requests / GOOGLE_QPS
        wall, rss, storm_limit = run.measured.wall_seconds, run.measured.peak_rss_bytes, truth.min_requests // 100
        targets += [
            _judge("S2", "wall ≤ 1.15 × minimum requests ÷ 40/s", f"{wall:.1f} s = {wall / floor:.3f} × {floor:.1f} s",
                   wall <= 1.15 * floor, timing=True, small=sizes.small),
            _judge("S2", "no storm of 429s (≤ 1% of the minimum requests)", f"{run.rate_limited} × 429 (limit {storm_limit})",
                   run.rate_limited <= storm_limit, timing=False, small=sizes.small),
            _judge("S2", "peak RSS of the sync's process tree < 1 GB", f"{rss / 2**20:.0f} MiB", rss < GB,
                   timing=False, small=sizes.small),
        ]
    return Outcome([_sync_figures(name, label, run, truth)], targets)


def run_s3(sizes: Sizes, workdir: Path) -> Outcome:
    """The transforms alone, in a child process (bench/s3.py) so its memory is measured on its own."""
    users, edges, depth, groups = sizes.s3
    argv = ["-m", "bench.s3", "--users", str(users), "--edges", str(edges), "--depth", str(depth), "--groups", str(groups)]
    measured = run_measured([dirsync_command()[0], *argv], cwd=Path(__file__).resolve().parent.parent, env=clean_env(),
                            timeout_seconds=TIMEOUTS["S3"])
    name = f"S3 transforms: {edges:,} direct edges, {users:,} users, depth ≤ {depth}"
    if not measured.ok:
        return Outcome([Figures(name, "transforms", measured.wall_seconds, measured.cpu_seconds, measured.peak_rss_bytes)],
                       [Target("S3", "transforms run", measured.output_tail[-500:], False)])
    result = json.loads(measured.output_tail.strip().splitlines()[-1])
    seconds, correct = result["transform_seconds"], result["counts"] == result["expected"]
    figures = Figures(name, f"{result['counts']['filtered_memberships']:,} memberships", seconds,
                      result["transform_cpu_seconds"], measured.peak_rss_bytes, correct=correct)
    return Outcome([figures], [
        _judge("S3", "rows = DuckDB recursive-CTE oracle", _rows_text(result["counts"], result["expected"]), correct,
               timing=False, small=sizes.small),
        _judge("S3", "transforms < 10 s", f"{seconds:.1f} s", seconds < 10, timing=True, small=sizes.small),
    ])


def run_demo(sizes: Sizes, workdir: Path) -> Outcome:
    """`dirsync demo` from a fresh folder, Dagster start-up included."""
    folder = workdir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    measured = run_measured(dirsync_command("demo"), cwd=folder, env=clean_env(), timeout_seconds=TIMEOUTS["demo"])
    figures = Figures("dirsync demo (2,000 users, embedded emulator)", "end to end", measured.wall_seconds,
                      measured.cpu_seconds, measured.peak_rss_bytes, correct=measured.ok)
    return Outcome([figures], [
        _judge("demo", "dirsync demo succeeds", "ok" if measured.ok else measured.output_tail[-500:], measured.ok,
               timing=False, small=sizes.small),
        _judge("demo", "dirsync demo < 15 s wall", f"{measured.wall_seconds:.1f} s", measured.wall_seconds < 15,
               timing=True, small=sizes.small),
    ])


def run_steps(sizes: Sizes, workdir: Path) -> Outcome:
    """Per-step time and peak RSS of a sync at S2's size, without latency or rate limit (bench/steps.py)."""
    users, groups, _latency = sizes.s2
    with EmulatorProcess(users, groups, seed=SEED, latency_ms=0, rate_limit_qps=None) as emulator:
        config = _config(workdir / "steps", emulator, S1_READER)
        measured = run_measured(
            [dirsync_command()[0], "-m", "bench.steps", "--config", str(config), "--connection", CONNECTION_ID],
            cwd=Path(__file__).resolve().parent.parent, env=clean_env(), timeout_seconds=TIMEOUTS["S2"])
    title = (f"Where a sync at S2's size ({users:,} users / {groups:,} groups) spends time and memory, emulator "
             "without latency or rate limit (`python -m bench.steps`):")
    if not measured.ok:
        return Outcome([], [], [title, "", f"failed: {measured.output_tail[-500:]}"])
    result = json.loads(measured.output_tail.strip().splitlines()[-1])
    rows = [f"| {s['step']} | {s['seconds']:.2f} | {s['peak_mib']} |" for s in result["steps"]]
    return Outcome([], [], [title, "", "| Dagster step | seconds | peak RSS MiB |", "| --- | --- | --- |", *rows,
                            f"| whole process (Python start-up included) | {measured.wall_seconds:.1f} | "
                            f"{measured.peak_rss_bytes / 2**20:.0f} |"])


SCENARIOS: dict[str, Callable[[Sizes, Path], Outcome]] = {
    "S1": run_s1, "S2": run_s2, "S3": run_s3, "demo": run_demo, "steps": run_steps,
}


def all_scenarios() -> dict[str, Callable[[Sizes, Path], Outcome]]:
    """Issue 5's scenarios, then issue 14's (bench/quota.py, built on this module's pieces)."""
    from bench.quota import QUOTA_SCENARIOS

    return {**SCENARIOS, **QUOTA_SCENARIOS}


def run_scenarios(names: list[str], sizes: Sizes, workdir: Path | None = None) -> Outcome:
    """Run the named scenarios one after another (never concurrently: they would share 2 cores)."""
    outcome = Outcome([], [])
    scenarios = all_scenarios()
    with tempfile.TemporaryDirectory(prefix="dirsync-bench-") as scratch:
        for name in names:
            result = scenarios[name](sizes, workdir or Path(scratch))
            outcome.figures += result.figures
            outcome.targets += result.targets
            outcome.details += result.details
    return outcome

