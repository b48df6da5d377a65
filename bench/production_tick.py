"""Many organisations in one hourly tick through Dagster's run queue, as deployed: `.venv/bin/python bench/production_tick.py`.

The deployment of deploy/ on this machine (tests/production_stack.py): a PostgreSQL cluster of Debian's
packages, deploy/dagster.yaml (queued runs, one per organisation at a time, a global limit), the code
location as a gRPC server (the default run launcher runs each sync as one of its subprocesses),
`dagster-daemon run` and `dagster-webserver`. N organisations are registered, each on one of three
`dirsync emulator` processes (small, medium, large directories, with network-like latency). The daemon is
then started with hourly_directory_sync marked as started before the last :00: it runs that missed tick,
one run per organisation, and the queue works them off.

Measured: how long the tick takes (tick to last run end), the global run limit (max_concurrent_runs) that
finishes it soonest on this machine (a sweep on fewer organisations), the memory of each run's process
(peak RSS), and the Directory API requests per organisation by directory size (the emulators' counters).
Writes its own section of bench/RESULTS.md (between its markers; the rest is untouched).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `bench`, `tests` and `dirsync_pipeline` importable

import psutil  # noqa: E402

from bench.harness import EmulatorProcess, api_requests  # noqa: E402
from tests.postgres_cluster import running_cluster, server_bin_dir, wait_until  # noqa: E402
from tests.production_stack import backdate_hourly_schedule, dagster_stack  # noqa: E402

# name -> (users, groups): directory sizes the organisations are spread over, round robin.
SIZES = {"small": (100, 10), "medium": (500, 40), "large": (2000, 150)}
LATENCY_MS = 50
MARK_START, MARK_END = "<!-- production-tick: written by bench/production_tick.py -->", "<!-- /production-tick -->"


@dataclass
class Trial:
    orgs: int
    concurrency: int
    tick_seconds: float = 0.0  # the tick's evaluation (its runs' creation) to the end of its last run
    succeeded: int = 0
    failed: int = 0
    run_seconds: list[float] = field(default_factory=list)  # each run: start to end
    peak_rss: list[int] = field(default_factory=list)  # each run worker process: its peak RSS (bytes)
    code_server_peak: int = 0  # the whole code-server tree (server + concurrent runs), peak RSS
    requests: dict[str, float] = field(default_factory=dict)  # size -> API requests per organisation

    @property
    def runs_per_minute(self) -> float:
        return 60 * (self.succeeded + self.failed) / self.tick_seconds if self.tick_seconds else 0.0


def register(stack, emulators: dict[str, EmulatorProcess], orgs: int) -> dict[str, str]:
    """N organisations in the registry (as `dirsync connections add` does) and as known partitions (as the
    sensor makes them, so it launches no first sync): org id -> size."""
    from dirsync_pipeline.config import load_config, parse_connection
    from dirsync_pipeline.registry import open_registry

    sizes = list(SIZES)
    registry = open_registry(load_config(stack.config))
    assigned = {}
    for i in range(orgs):
        size = sizes[i % len(sizes)]
        org = f"org{i:03d}-{size}"
        registry.add(parse_connection({"id": org, "api_endpoint": emulators[size].url, "credentials": {"type": "none"},
                                       "selected_groups": "all", "default_role": "member", "rate_limit_qps": None},
                                      source=org))
        assigned[org] = size
    with stack.instance() as instance:
        instance.add_dynamic_partitions("connections", list(assigned))
    return assigned


def run_trial(cluster, emulators: dict[str, EmulatorProcess], orgs: int, concurrency: int, timeout: float) -> Trial:
    from dagster import DagsterRunStatus, RunsFilter
    from dagster._core.scheduler.instigation import InstigatorStatus

    trial = Trial(orgs, concurrency)
    database = cluster.create_database(f"bench_{orgs}_{concurrency}_{int(time.time())}")
    overrides = {"concurrency": {"runs": {"max_concurrent_runs": concurrency}}}
    assigned: dict[str, str] = {}
    schedule_ids: list = []

    def prepare(stack):
        assigned.update(register(stack, emulators, orgs))
        schedule_ids.extend(backdate_hourly_schedule(stack, 3600 + 120))

    before = {size: emulator.stats() for size, emulator in emulators.items()}
    with tempfile.TemporaryDirectory(prefix="dirsync-production-tick-") as workdir, \
            dagster_stack(Path(workdir), database, instance_overrides=overrides, before_daemon=prepare) as stack:
        done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
        peaks: dict[int, int] = {}
        server_pid = stack.processes["grpc"].pid
        with stack.instance() as instance:
            tick = wait_until(lambda: next((t for t in instance.get_ticks(*schedule_ids) if t.status.value == "SUCCESS"),
                                           None), 300, 1, "the tick")
            # Measure that tick alone: stop the schedule, so that a real :00 passing during the bench does not
            # queue a second round of runs.
            state = instance.get_instigator_state(*schedule_ids)
            instance.update_instigator_state(state.with_status(InstigatorStatus.STOPPED))
            tick_runs = RunsFilter(run_ids=list(tick.run_ids))
            assert len(tick.run_ids) == orgs, f"the tick launched {len(tick.run_ids)} runs for {orgs} organisations"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                tree = stack.code_server_tree()
                trial.code_server_peak = max(trial.code_server_peak, sum(_rss(p) for p in tree))
                for process in tree:
                    if process.pid != server_pid:
                        peaks[process.pid] = max(peaks.get(process.pid, 0), _rss(process))
                records = instance.get_run_records(tick_runs)
                if len(records) == orgs and all(r.dagster_run.status in done for r in records):
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"the tick did not finish in {timeout:.0f}s")
        # From the tick's evaluation (its runs are created together) to the end of its last run.
        trial.tick_seconds = max(r.end_time for r in records) - min(r.create_timestamp.timestamp() for r in records)
        trial.succeeded = sum(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in records)
        trial.failed = orgs - trial.succeeded
        trial.run_seconds = [r.end_time - r.start_time for r in records if r.start_time and r.end_time]
        # The run workers: the code server's children that lived long enough to be sampled as a run (its
        # short helper processes are well below 50 MB).
        trial.peak_rss = [rss for rss in peaks.values() if rss > 50e6]
    after = {size: emulator.stats() for size, emulator in emulators.items()}
    per_size = {size: sum(1 for s in assigned.values() if s == size) for size in SIZES}
    trial.requests = {size: (api_requests(after[size]) - api_requests(before[size])) / per_size[size]
                      for size in SIZES if per_size[size]}
    return trial


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def markdown(sweep: list[Trial], full: Trial, command: str) -> str:
    mb = 1e6
    lines = [
        MARK_START,
        "## Production tick: 200 organisations in one hourly tick through the run queue (issue 13)",
        "",
        f"`{command}`: the deployment of `deploy/` on this machine (2 cores, shared): PostgreSQL, "
        "deploy/dagster.yaml, the code location as a gRPC server (each run one of its subprocesses), "
        "`dagster-daemon`, `dagster-webserver`. Organisations spread round robin over three `dirsync emulator` "
        f"directories ({', '.join(f'{k} {u} users/{g} groups' for k, (u, g) in SIZES.items())}), {LATENCY_MS} ms "
        "per request. The daemon runs the hourly tick it missed: one run per organisation, queued, at most one "
        "per organisation and `max_concurrent_runs` in all.",
        "",
    ]
    if sweep:
        lines += [f"**Global run limit** (`concurrency.runs.max_concurrent_runs`), swept on {sweep[0].orgs} "
                  "organisations:", "", "| max_concurrent_runs | tick (s) | runs/min | run, median (s) | failed |",
                  "|---:|---:|---:|---:|---:|"]
    for t in sweep:
        lines.append(f"| {t.concurrency} | {t.tick_seconds:.0f} | {t.runs_per_minute:.1f} | "
                     f"{statistics.median(t.run_seconds):.1f} | {t.failed} |")
    lines += [
        "",
        f"**{full.orgs} organisations in one tick** at max_concurrent_runs = {full.concurrency}:",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| tick, from the tick to the last run's end | {full.tick_seconds:.0f} s ({full.tick_seconds / 60:.1f} min) |",
        f"| runs succeeded / failed | {full.succeeded} / {full.failed} |",
        f"| throughput | {full.runs_per_minute:.1f} runs/min |",
        f"| one run, start to end: median / max | {statistics.median(full.run_seconds):.1f} s / {max(full.run_seconds):.1f} s |",
        f"| memory of one run's process (peak RSS): median / max | {statistics.median(full.peak_rss) / mb:.0f} MB / {max(full.peak_rss) / mb:.0f} MB |",
        f"| code server with its concurrent runs (peak RSS) | {full.code_server_peak / mb:.0f} MB |",
        "",
        "Directory API requests per organisation and sync (emulator counters; batch parts counted, as Google "
        "counts them):",
        "",
        "| directory | users / groups | requests per sync | per hour (hourly syncs) |",
        "|---|---:|---:|---:|",
    ]
    for size, (users, groups) in SIZES.items():
        if size in full.requests:
            lines.append(f"| {size} | {users} / {groups} | {full.requests[size]:.0f} | {full.requests[size]:.0f} |")
    best = min(sweep, key=lambda t: t.tick_seconds) if sweep else full
    lines += [
        "",
        f"What it means: on 2 cores a run is mostly Dagster's and dirsync's start-up in a fresh process, "
        f"CPU-bound (median {statistics.median(full.run_seconds):.0f} s end to end with {full.concurrency} at once), "
        f"so the tick finishes soonest near {best.concurrency} runs at once; more only adds memory and contention. "
        f"At {full.runs_per_minute:.0f} runs/min this machine serves about {round(full.runs_per_minute * 60, -1):.0f} "
        "organisations of these sizes per hourly tick. docs/scaling.md turns these figures into capacity. The machine's 2 cores "
        "may be shared with other work while it runs (they were for the figures above), so times are upper bounds; "
        "request counts and memory do not depend on it.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + section.rstrip("\n") + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=200, help="organisations in the full tick")
    parser.add_argument("--sweep", default="1,2,3,4", help="max_concurrent_runs values to try ('' to skip)")
    parser.add_argument("--sweep-orgs", type=int, default=24, help="organisations per sweep trial")
    parser.add_argument("--concurrency", type=int, help="the full tick's limit (default: the sweep's fastest)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a tick may take")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the stack, the Postgres cluster and the emulators are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bin_dir = server_bin_dir()
    if bin_dir is None:
        parser.error("PostgreSQL is not installed: apt-get install postgresql")
    with running_cluster(bin_dir) as cluster, \
            EmulatorProcess(*SIZES["small"], seed=1, latency_ms=LATENCY_MS, rate_limit_qps=None) as small, \
            EmulatorProcess(*SIZES["medium"], seed=2, latency_ms=LATENCY_MS, rate_limit_qps=None) as medium, \
            EmulatorProcess(*SIZES["large"], seed=3, latency_ms=LATENCY_MS, rate_limit_qps=None) as large:
        emulators = {"small": small, "medium": medium, "large": large}
        sweep = []
        for concurrency in [int(c) for c in args.sweep.split(",") if c.strip()]:
            trial = run_trial(cluster, emulators, args.sweep_orgs, concurrency, args.timeout)
            print(f"sweep: {trial.orgs} orgs at {concurrency}: {trial.tick_seconds:.0f} s, "
                  f"{trial.runs_per_minute:.1f} runs/min, failed {trial.failed}", flush=True)
            sweep.append(trial)
        concurrency = args.concurrency or (min(sweep, key=lambda t: t.tick_seconds).concurrency if sweep else 2)
        full = run_trial(cluster, emulators, args.orgs, concurrency, args.timeout)
    command = " ".join([".venv/bin/python bench/production_tick.py", *(argv if argv is not None else sys.argv[1:])])
    section = markdown(sweep, full, command)
    print(section)
    write_section(args.results, section)
    return 0 if full.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
