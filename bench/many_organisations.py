"""50 organisations added at once to a running `dagster dev`: `.venv/bin/python bench/many_organisations.py`.

What it measures, all through the product's own path (the registry CLI, the connections sensor, Dagster's run
queue with the repo's dagster.yaml, `dirsync_pipeline.warehouse.reader`):

- the time from the first `dirsync connections add` until every organisation is published (status `active`);
- the peak memory of the whole `dagster dev` process tree, and of one run process;
- the longest any reader waited: a thread reads the published warehouse in a loop the whole time (and counts
  refusals, which must be 0);
- how much of each sync was serialised with other organisations' syncs: the run's registry writes
  (`serialised_seconds` of its `published_directory` materialization) against the run's duration.

Each organisation is its own emulated Google Workspace (200 to 5,000 users, 1 group per 20 users, 20 ms a
request), served by this process. Writes a section of bench/RESULTS.md (``--results`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `bench` and `dirsync_pipeline` importable

from bench.dagster_dev import graphql, running_dagster_dev, wait_for_location  # noqa: E402
from bench.harness import clean_env, dirsync_command  # noqa: E402
from dirsync_pipeline.emulator import DirectoryEmulator, FaultPlan, generate_directory  # noqa: E402
from dirsync_pipeline.registry import REGISTRY_FILE, Registry  # noqa: E402
from dirsync_pipeline.warehouse import reader  # noqa: E402

SECTION_START = "<!-- many-organisations: written by bench/many_organisations.py -->"
SECTION_END = "<!-- /many-organisations -->"
DONE = {"active", "invalid_credentials", "failing", "quarantined"}


def sizes(count: int, smallest: int, largest: int) -> list[int]:
    """``count`` directory sizes spread evenly from ``smallest`` to ``largest`` users."""
    step = (largest - smallest) / max(count - 1, 1)
    return [round(smallest + i * step) for i in range(count)]


class Watcher(threading.Thread):
    """Samples the memory of the `dagster dev` tree and reads the published warehouse, until stopped."""

    def __init__(self, warehouse: Path):
        super().__init__(daemon=True)
        self.warehouse, self.stop = warehouse, threading.Event()
        self.peak_tree, self.peak_run = 0, 0
        self.reads, self.refusals, self.longest_read = 0, [], 0.0

    def run(self) -> None:
        root = psutil.Process()
        while not self.stop.is_set():
            self._sample_memory(root)
            started = time.monotonic()
            try:
                with reader.connect(self.warehouse) as conn:
                    conn.execute("SELECT connection_id, count(*) FROM core.role_mapped_entitlements GROUP BY ALL").fetchall()
                self.reads += 1
            except Exception as exc:  # noqa: BLE001 - every failure of a read is a refusal to report
                self.refusals.append(f"{type(exc).__name__}: {exc}")
            self.longest_read = max(self.longest_read, time.monotonic() - started)
            time.sleep(0.25)

    def _sample_memory(self, root: psutil.Process) -> None:
        dev = [p for p in root.children() if "dagster" in " ".join(_cmdline(p))]
        total = 0
        for process in [q for p in dev for q in (p, *_children(p))]:
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            if "spawn_main" in " ".join(_cmdline(process)):  # a run: the code server spawns one process per run
                self.peak_run = max(self.peak_run, rss)
        self.peak_tree = max(self.peak_tree, total)


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def add_connection(home: Path, config: Path, connection: dict) -> None:
    path = home / f"{connection['id']}.yaml"
    path.write_text(yaml.safe_dump(connection))
    result = subprocess.run(dirsync_command("connections", "--config", str(config), "add", "--file", str(path)),
                            cwd=home, env=clean_env(), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"connections add {connection['id']} failed: {result.stderr}")


def publish_metadata(url: str) -> dict[str, dict]:
    """Per run: its partition, duration, and the serialised seconds its publish recorded."""
    runs = graphql(url, """{ runsOrError(limit: 1000) { ... on Runs { results { runId status startTime endTime
        tags { key value } } } } }""")["runsOrError"]["results"]
    materializations = graphql(url, """{ assetNodes(assetKeys: [{path: ["published_directory"]}]) {
        assetMaterializations(limit: 1000) { runId metadataEntries { label
        ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intValue } } } } }""")["assetNodes"][0]
    serialised = {m["runId"]: next((e.get("floatValue") for e in m["metadataEntries"] if e["label"] == "serialised_seconds"), None)
                  for m in materializations["assetMaterializations"]}
    return {r["runId"]: {"partition": next((t["value"] for t in r["tags"] if t["key"] == "dagster/partition"), None),
                         "status": r["status"], "seconds": (r["endTime"] or 0) - (r["startTime"] or 0),
                         "serialised": serialised.get(r["runId"])} for r in runs}


def run(count: int, smallest: int, largest: int, latency_ms: float, timeout: float) -> dict:
    users = sizes(count, smallest, largest)
    with tempfile.TemporaryDirectory(prefix="dirsync-many-") as scratch, ExitStack() as stack:
        home = Path(scratch)
        warehouse = home / "data"
        config = home / "dirsync.yaml"
        config.write_text(yaml.safe_dump({"warehouse": {"path": str(warehouse)}, "connections": []}))
        emulators = [stack.enter_context(DirectoryEmulator(
            generate_directory(n, max(n // 20, 2), seed=i, domain=f"org{i}.test"), faults=FaultPlan(latency_ms=latency_ms)))
            for i, n in enumerate(users)]
        connections = [{"id": f"org{i:03d}", "api_endpoint": emulator.url, "credentials": {"type": "none"},
                        "selected_groups": "all", "default_role": "member"} for i, emulator in enumerate(emulators)]
        url = stack.enter_context(running_dagster_dev(home, env={"DIRSYNC_CONFIG": str(config)}))
        wait_for_location(url)
        watcher = Watcher(warehouse)
        watcher.start()
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:  # "at once": as fast as the CLI adds them
            list(pool.map(lambda c: add_connection(home, config, c), connections))
        added = time.monotonic() - started
        registry = Registry(warehouse / REGISTRY_FILE)
        while time.monotonic() - started < timeout:
            statuses = {c.id: c.status for c in registry.list()}
            if all(statuses.get(c["id"]) in DONE for c in connections):
                break
            time.sleep(1)
        all_done = time.monotonic() - started
        watcher.stop.set()
        watcher.join(timeout=30)
        runs = [r for r in publish_metadata(url).values() if r["partition"] and r["status"] == "SUCCESS"]
        requests = sum(sum(e.request_counts().values()) for e in emulators)
    shares = [r["serialised"] / r["seconds"] for r in runs if r["serialised"] is not None and r["seconds"] > 0]
    return {
        "organisations": count, "users": [smallest, largest], "total_users": sum(users), "latency_ms": latency_ms,
        "add_seconds": round(added, 1), "all_published_seconds": round(all_done, 1),
        "active": sum(s == "active" for s in statuses.values()), "statuses": sorted(set(statuses.values())),
        "runs": len(runs), "median_run_seconds": round(statistics.median(r["seconds"] for r in runs), 1) if runs else None,
        "max_run_seconds": round(max((r["seconds"] for r in runs), default=0), 1),
        "serialised_seconds_max": round(max((r["serialised"] or 0 for r in runs), default=0), 4),
        "serialised_share_median": round(statistics.median(shares), 5) if shares else None,
        "serialised_share_max": round(max(shares), 5) if shares else None,
        "peak_rss_tree_mib": round(watcher.peak_tree / 2**20), "peak_rss_run_mib": round(watcher.peak_run / 2**20),
        "reads": watcher.reads, "refusals": len(watcher.refusals), "refusal_sample": watcher.refusals[:3],
        "longest_read_seconds": round(watcher.longest_read, 2), "api_requests": requests,
        "load_average": [round(x, 1) for x in psutil.getloadavg()],
    }


def markdown(figures: dict, command: str) -> str:
    f = figures
    return f"""{SECTION_START}
## Many organisations at once (issue 12)

Command: `{command}`  
{f['organisations']} organisations ({f['users'][0]:,} to {f['users'][1]:,} users each, {f['total_users']:,} in all, one
group per 20 users, every group selected, {f['latency_ms']:.0f} ms a request), each its own emulated Workspace,
added with `dirsync connections add` (8 at a time) to a running `dagster dev` with the repo's `dagster.yaml`
(at most 4 runs at once, one per organisation); the connections sensor launches each first sync. Load average
at the end: {', '.join(map(str, f['load_average']))}.

| figure | value |
| --- | --- |
| all {f['organisations']} added (CLI, from the first add) | {f['add_seconds']} s |
| **all published** (from the first add until every status is `active`) | **{f['all_published_seconds']} s** ({f['active']} active; statuses seen: {', '.join(f['statuses'])}) |
| successful runs; median / longest run | {f['runs']}; {f['median_run_seconds']} s / {f['max_run_seconds']} s |
| **peak memory**: the whole `dagster dev` tree / one run process | **{f['peak_rss_tree_mib']} MiB** / {f['peak_rss_run_mib']} MiB |
| **longest read**: a reader connecting and querying every 0.25 s throughout | **{f['longest_read_seconds']} s** over {f['reads']} reads, {f['refusals']} refused |
| **serialised part of a sync** (its registry writes, the only step shared between organisations): longest; median / largest share of a run | **{f['serialised_seconds_max']} s**; {f['serialised_share_median']:.2%} / {f['serialised_share_max']:.2%} |
| API requests, all organisations | {f['api_requests']:,} |

Each organisation's sync writes only its own DuckDB files (`data/connections/<id>/`), so nothing else is
shared: the publish, its checkpoint and the copy readers attach run in parallel across organisations. The
wall time is bound by the 2 cores and `max_concurrent_runs: 4` (each run is a Python process that imports
Dagster, ~2 s of CPU before its first request).
{SECTION_END}
"""


def write_section(results: Path, section: str) -> None:
    text = results.read_text() if results.exists() else "# dirsync benchmark results\n"
    if SECTION_START in text:
        before, rest = text.split(SECTION_START, 1)
        text = before + section.strip() + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section.strip() + "\n"
    results.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organisations", type=int, default=50)
    parser.add_argument("--smallest", type=int, default=200, help="users of the smallest organisation")
    parser.add_argument("--largest", type=int, default=5000, help="users of the largest organisation")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    figures = run(args.organisations, args.smallest, args.largest, args.latency_ms, args.timeout)
    print(json.dumps(figures, indent=1))
    command = " ".join([".venv/bin/python bench/many_organisations.py", *(argv if argv is not None else sys.argv[1:])])
    write_section(args.results, markdown(figures, command))
    return 0 if figures["active"] == args.organisations and not figures["refusals"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
