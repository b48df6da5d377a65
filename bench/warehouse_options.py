"""Measure dirsync's multi-organisation warehouse options: per-organisation DuckDB files with immutable
published copies (the implemented design), one shared DuckDB file copied whole, and DuckLake.

Synthetic tables shaped like dirsync's (users 12 columns, memberships 7, entitlements 5; per organisation
N users, 3N memberships, N entitlements), at N = 20,000 and 100,000. Figures are printed as Markdown tables.

Run from the repository root (about 4-6 minutes on 2 cores):

    .venv/bin/python bench/warehouse_options.py

The DuckLake part runs in a second interpreter with DuckDB 1.5.5, the newest DuckDB for which the ducklake
and sqlite extensions ship as pip packages (DuckDB cannot download extensions without network access):

    python3.11 -m venv /tmp/ducklake-venv
    /tmp/ducklake-venv/bin/pip install duckdb==1.5.5 duckdb-extension-ducklake==1.5.5 \\
        duckdb-extension-sqlite-scanner==1.5.5 pytz

It is found at /tmp/ducklake-venv/bin/python, or named with --ducklake-python (--ducklake-python '' skips
it). Scratch files go to --workdir (default /tmp/warehouse-options, deleted first and at the end; well under
1 GB at peak). --duration sets the seconds of each concurrent-readers test (default 20); --quick shrinks
everything for a 2-minute smoke test; --json FILE also writes the raw figures.

Every child process prints one JSON line; the parent collects them. Nothing here imports dirsync_pipeline:
the mechanisms (publish transaction, CHECKPOINT, copy, manifest, read-only ATTACH + UNION ALL views) are
re-implemented on the synthetic tables so that the three options are measured the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve()
TABLES = (("raw", "users"), ("core", "memberships"), ("core", "entitlements"))
COLUMNS = {
    "users": "connection_id VARCHAR, user_id VARCHAR, primary_email VARCHAR, given_name VARCHAR, "
             "family_name VARCHAR, full_name VARCHAR, is_admin BOOLEAN, suspended BOOLEAN, org_unit_path VARCHAR, "
             "creation_time TIMESTAMPTZ, last_login_time TIMESTAMPTZ, sync_id BIGINT",
    "memberships": "connection_id VARCHAR, user_id VARCHAR, primary_email VARCHAR, group_id VARCHAR, "
                   "group_email VARCHAR, is_direct BOOLEAN, sync_id BIGINT",
    "entitlements": "connection_id VARCHAR, user_id VARCHAR, primary_email VARCHAR, role VARCHAR, sync_id BIGINT",
}
# One consistent read of every organisation: a torn (half-published) read shows two sync_ids or a wrong count.
CHECK_SQL = """
SELECT connection_id, count(*) AS n, min(sync_id) AS lo, max(sync_id) AS hi FROM (
  SELECT connection_id, sync_id FROM raw.users UNION ALL
  SELECT connection_id, sync_id FROM core.memberships UNION ALL
  SELECT connection_id, sync_id FROM core.entitlements) GROUP BY connection_id
"""
JOIN_SQL = """
SELECT u.connection_id, e.role, count(DISTINCT m.group_id) AS groups, count(*) AS n
FROM raw.users u JOIN core.memberships m USING (connection_id, user_id)
JOIN core.entitlements e USING (connection_id, user_id) WHERE NOT u.suspended GROUP BY ALL
"""


# ---------------------------------------------------------------- shared helpers

def generate_sql(table: str, target: str, org: str, n: int) -> str:
    dom = f"{org}.example.com"
    if table == "users":
        return f"""INSERT INTO {target} SELECT '{org}', 'u' || lpad(i::VARCHAR, 9, '0'), 'user' || i || '@{dom}',
            'Given' || (i % 997), 'Family' || (i % 1499), 'Given' || (i % 997) || ' Family' || (i % 1499),
            i % 50 = 0, i % 23 = 0, '/unit' || (i % 40) || '/team' || (i % 7),
            TIMESTAMPTZ '2015-01-01 00:00:00+00' + to_seconds((hash(i) % 300000000)::BIGINT),
            CASE WHEN i % 7 = 0 THEN NULL
                 ELSE TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_seconds((hash(i + 1) % 30000000)::BIGINT) END,
            0 FROM range({n}) t(i)"""
    if table == "memberships":
        groups = max(n // 10, 1)
        return f"""INSERT INTO {target} SELECT '{org}', 'u' || lpad((j // 3)::VARCHAR, 9, '0'),
            'user' || (j // 3) || '@{dom}', 'g' || lpad(g::VARCHAR, 7, '0'), 'group' || g || '@{dom}', j % 3 = 0, 0
            FROM (SELECT j, (hash(j) % {groups})::BIGINT AS g FROM range({3 * n}) t(j))"""
    return f"""INSERT INTO {target} SELECT '{org}', 'u' || lpad(i::VARCHAR, 9, '0'), 'user' || i || '@{dom}',
        (['viewer', 'editor', 'billing', 'admin'])[(i % 4) + 1], 0 FROM range({n}) t(i)"""


def create_tables(conn, catalog: str, *, staging: bool) -> None:
    for schema, name in TABLES:
        if staging:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {catalog}.{name} ({COLUMNS[name]})")
        else:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {catalog}.{schema}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {catalog}.{schema}.{name} ({COLUMNS[name]})")


def fill(conn, org: str, n: int, target) -> None:
    """Replace ``org``'s rows in the tables ``target(schema, name)`` names with N generated users."""
    for schema, name in TABLES:
        conn.execute(f"DELETE FROM {target(schema, name)} WHERE connection_id = '{org}'")
        conn.execute(generate_sql(name, target(schema, name), org, n))


def copy_rows_sql(target: str, name: str) -> str:
    return (f"INSERT INTO {target} SELECT * EXCLUDE (sync_id), $gen::BIGINT FROM staging.{name} "
            "WHERE connection_id = $org")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def mb(n: float) -> float:
    return round(n / 1e6, 1)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def med(values):
    return statistics.median(values) if values else float("nan")


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def wait_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def spawn(python: str, role: str, **args) -> subprocess.Popen:
    return subprocess.Popen([python, str(HERE), role, json.dumps(args)], stdout=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def error_kind(exc: BaseException) -> str:
    text = str(exc)
    for kind in ("database is locked", "Conflicting lock", "conflict", "No such file", "does not exist"):
        if kind.lower() in text.lower():
            return kind
    return text.splitlines()[0][:100]


def writer_loop(publish, start_at: float, until: float | None, count: int | None) -> dict:
    """Publish repeatedly (``count`` times, or until ``until``); ``publish(gen)`` returns (seconds, retries, kinds)."""
    wait_until(start_at)
    first = time.time()
    durations, retries, kinds, failed, gen = [], 0, {}, 0, 1
    while (count is not None and gen <= count) or (until is not None and time.time() < until):
        gen += 1
        try:
            seconds, r, k = publish(gen)
            durations.append(seconds)
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            failed += 1
            r, k = 0, {error_kind(exc): 1}
        retries += r
        for key, v in k.items():
            kinds[key] = kinds.get(key, 0) + v
    return {"start": first, "end": time.time(), "publishes": len(durations), "failed": failed,
            "durations": durations, "commit_retries": retries, "retry_kinds": kinds}


class ReadStats:
    def __init__(self):
        self.connects, self.totals, self.errors, self.torn, self.syncs = [], [], {}, 0, set()

    def read(self, conn, expected_rows: int, t0: float, connected: float | None = None) -> None:
        rows = conn.execute(CHECK_SQL).fetchall()
        self.totals.append(time.perf_counter() - t0)
        if connected is not None:
            self.connects.append(connected - t0)
        if any(lo != hi or n != expected_rows for _, n, lo, hi in rows):
            self.torn += 1
        self.syncs.add(tuple(sorted((org, hi) for org, _, _, hi in rows)))

    def refused(self, exc: BaseException) -> None:
        kind = error_kind(exc)
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self) -> dict:
        t = self.totals
        return {"reads": len(t), "refused": sum(self.errors.values()), "errors": self.errors, "torn": self.torn,
                "states_seen": len(self.syncs), "connect_p50_ms": ms(med(self.connects)),
                "total_p50_ms": ms(med(t)), "total_p99_ms": ms(pct(t, 0.99)),
                "total_max_ms": ms(max(t) if t else float("nan"))}


def reader_loop(connect, expected_rows: int, start_at: float, until: float) -> dict:
    """Until ``until``: one CHECK_SQL on a long-lived connection, then one on a fresh connection (connect, query,
    close). Counts refusals (errors), torn reads and the distinct published states each reader saw."""
    wait_until(start_at)
    held, held_stats, fresh_stats = None, ReadStats(), ReadStats()
    while time.time() < until:
        try:
            if held is None:
                held = connect()
            held_stats.read(held, expected_rows, time.perf_counter())
        except Exception as exc:  # noqa: BLE001 - a refusal
            held_stats.refused(exc)
            if held is not None:
                held.close()
            held = None
        t0 = time.perf_counter()
        try:
            conn = connect()
            try:
                fresh_stats.read(conn, expected_rows, t0, time.perf_counter())
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - a refusal
            fresh_stats.refused(exc)
        time.sleep(0.05)
    if held is not None:
        held.close()
    return {"fresh": fresh_stats.summary(), "held": held_stats.summary()}


def time_reader(connect, repeats: int = 7) -> dict:
    """Median ms of: connect, the first CHECK_SQL, the same again (warm), JOIN_SQL, on fresh connections."""
    steps = {"connect": [], "check": [], "check_warm": [], "join": []}
    for _ in range(repeats):
        t = [time.perf_counter()]
        conn = connect()
        t.append(time.perf_counter())
        for sql in (CHECK_SQL, CHECK_SQL, JOIN_SQL):
            conn.execute(sql).fetchall()
            t.append(time.perf_counter())
        conn.close()
        for i, name in enumerate(steps):
            steps[name].append(t[i + 1] - t[i])
    return {f"{name}_ms": ms(med(v)) for name, v in steps.items()}


# ---------------------------------------------------------------- option A: one DuckDB file per organisation

class OrgFile:
    """One organisation's warehouse.duckdb (+ staging.duckdb), its sets and manifest, as store.py laid them
    when this comparison was made (it now stages beside the tables, in warehouse.duckdb)."""

    def __init__(self, root: Path, org: str):
        self.root, self.org = Path(root), org
        self.folder = self.root / "connections" / org
        self.path = self.folder / "warehouse.duckdb"
        self.sets = self.root / "parquet" / f"connection_id={org}"
        self.conn = None

    def open(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.conn = duckdb.connect(str(self.path))
        self.conn.execute("SET TimeZone = 'UTC'")
        self.conn.execute(f"ATTACH '{self.folder / 'staging.duckdb'}' AS staging")
        create_tables(self.conn, "staging", staging=True)
        create_tables(self.conn, self.conn.execute("SELECT current_database()").fetchone()[0], staging=False)
        return self

    def stage(self, n: int) -> None:
        fill(self.conn, self.org, n, lambda schema, name: f"staging.{name}")

    def publish(self, gen: int) -> dict:
        conn = self.conn
        t0 = time.perf_counter()
        conn.execute("BEGIN TRANSACTION")
        for schema, name in TABLES:
            conn.execute(f"DELETE FROM {schema}.{name} WHERE connection_id = ?", [self.org])
            conn.execute(copy_rows_sql(f"{schema}.{name}", name), {"gen": gen, "org": self.org})
        conn.execute("COMMIT")
        t1 = time.perf_counter()
        conn.execute("CHECKPOINT")
        t2 = time.perf_counter()
        set_dir = self.sets / f"sync-{gen:06d}"
        set_dir.mkdir(parents=True, exist_ok=True)
        partial = set_dir / ".warehouse.duckdb.partial"
        shutil.copyfile(self.path, partial)
        os.replace(partial, set_dir / "warehouse.duckdb")
        t3 = time.perf_counter()
        manifest = {"connection_id": self.org, "sync_id": gen, "duckdb": f"{set_dir.name}/warehouse.duckdb"}
        tmp = self.sets / ".manifest.json.partial"
        with tmp.open("w") as handle:
            handle.write(json.dumps(manifest))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.sets / "manifest.json")
        t4 = time.perf_counter()
        return {"transaction": t1 - t0, "checkpoint": t2 - t1, "copy": t3 - t2, "manifest": t4 - t3, "total": t4 - t0}

    def prune(self, grace: float) -> None:
        """Delete replaced sets older than ``grace`` seconds (retention.py keeps a grace period likewise)."""
        current = json.loads((self.sets / "manifest.json").read_text())["duckdb"].split("/")[0]
        for d in self.sets.glob("sync-*"):
            if d.name != current and time.time() - d.stat().st_mtime > grace:
                shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        self.conn.close()


def reader_connect_a(root: Path):
    """reader.connect: an in-memory DuckDB, every current copy ATTACHed READ_ONLY, UNION ALL views."""
    conn = duckdb.connect()
    try:
        conn.execute("SET TimeZone = 'UTC'")
        catalogs = []
        for manifest_path in sorted((Path(root) / "parquet").glob("connection_id=*/manifest.json")):
            manifest = json.loads(manifest_path.read_text())
            catalog = f"published_{manifest['connection_id']}"
            conn.execute(f"ATTACH '{manifest_path.parent / manifest['duckdb']}' AS {catalog} (READ_ONLY)")
            catalogs.append(catalog)
        for schema in ("raw", "core"):
            conn.execute(f"CREATE SCHEMA {schema}")
        for schema, name in TABLES:
            union = " UNION ALL ".join(f"SELECT * FROM {c}.{schema}.{name}" for c in catalogs)
            conn.execute(f"CREATE VIEW {schema}.{name} AS {union}")
    except BaseException:
        conn.close()
        raise
    return conn


def role_a_writer(args: dict) -> dict:
    org = OrgFile(Path(args["root"]), args["org"]).open()
    gen0 = args.get("gen0", 100)

    def publish(gen):
        phases = org.publish(gen0 + gen)
        if args.get("grace") is not None:
            org.prune(args["grace"])
        return phases["total"], 0, {}
    result = writer_loop(publish, args["start_at"], args.get("until"), args.get("count"))
    org.close()
    return result


def role_a_reader(args: dict) -> dict:
    return reader_loop(lambda: reader_connect_a(Path(args["root"])), 5 * args["users"], args["start_at"], args["until"])


def role_open_refused(args: dict) -> dict:
    try:
        duckdb.connect(args["path"]).close()
        return {"opened": True}
    except Exception as exc:  # noqa: BLE001
        return {"opened": False, "error": str(exc).splitlines()[0][:160]}


def run_option_a(work: Path, sizes, duration: float, n_small: int, small_users: int, shared_orgs: int,
                 conc_users: int) -> dict:
    out = {"duckdb": duckdb.__version__}
    root = work / "a"
    # A1: publish timings and storage, 10 publishes of one organisation per size.
    out["publish"] = []
    for n in sizes:
        org = OrgFile(root, f"p{n}").open()
        org.stage(n)
        runs = [org.publish(gen) for gen in range(1, 11)]
        first_copy = org.sets / "sync-000001" / "warehouse.duckdb"
        steady = runs[1:]
        out["publish"].append({
            "users": n, **{k: ms(med([r[k] for r in steady])) for k in steady[0]},
            "first_total_ms": ms(runs[0]["total"]),
            "copy_mb": mb((org.sets / "sync-000010" / "warehouse.duckdb").stat().st_size),
            "copy_first_mb": mb(first_copy.stat().st_size),
            "copies_mb": [mb((org.sets / f"sync-{g:06d}" / "warehouse.duckdb").stat().st_size) for g in range(1, 11)],
            "live_mb": mb(org.path.stat().st_size), "staging_mb": mb((org.folder / "staging.duckdb").stat().st_size),
            "sets_after_10_mb": mb(dir_bytes(org.sets)),
        })
        org.close()
        if n != max(sizes):
            shutil.rmtree(org.sets)

    # A2: two organisations publishing at once in two processes (vs one alone), 3 publishes each.
    big = max(sizes)
    second = OrgFile(root, f"q{big}").open()
    second.stage(big)
    second.publish(1)
    second.close()
    shutil.rmtree(root / "parquet" / f"connection_id=p{big}", ignore_errors=True)
    out["two_writers"] = {"users": big}
    for label, orgs in (("alone", [f"p{big}"]), ("together", [f"p{big}", f"q{big}"])):
        start = time.time() + 2.5
        procs = [spawn(sys.executable, "a-writer", root=str(root), org=o, start_at=start, count=3, grace=0)
                 for o in orgs]
        results = [collect(p) for p in procs]
        out["two_writers"][label] = {
            "wall_s": round(max(r["end"] for r in results) - min(r["start"] for r in results), 2),
            "publish_p50_ms": ms(med([d for r in results for d in r["durations"]])),
            "failed": sum(r["failed"] for r in results)}
    shutil.rmtree(root, ignore_errors=True)

    # A3: a reader over N small organisations: connect (N ATTACH + views) and queries.
    small = work / "a-small"
    for i in range(n_small):
        org = OrgFile(small, f"s{i:02d}").open()
        org.stage(small_users)
        org.publish(1)
        org.close()
    out["reader_n"] = {"orgs": n_small, "users_each": small_users, **time_reader(lambda: reader_connect_a(small))}

    # Option "one shared file, copied whole": the same N small organisations in one file, one ATTACH.
    shared = work / "shared_small.duckdb"
    conn = duckdb.connect(str(shared))
    create_tables(conn, conn.execute("SELECT current_database()").fetchone()[0], staging=False)
    for i in range(n_small):
        fill(conn, f"s{i:02d}", small_users, lambda schema, name: f"{schema}.{name}")
    conn.close()

    def connect_shared():
        conn = duckdb.connect()
        conn.execute(f"ATTACH '{shared}' AS published (READ_ONLY)")
        conn.execute("USE published")
        return conn
    out["shared_reader_n"] = time_reader(connect_shared)
    shutil.rmtree(small, ignore_errors=True)

    # Option "one shared file": publish one organisation among `shared_orgs` of `big` users, then copy it all.
    shared = work / "shared" / "warehouse.duckdb"
    shared.parent.mkdir(parents=True)
    conn = duckdb.connect(str(shared))
    conn.execute(f"ATTACH '{shared.parent / 'staging.duckdb'}' AS staging")
    create_tables(conn, "staging", staging=True)
    create_tables(conn, conn.execute("SELECT current_database()").fetchone()[0], staging=False)
    for i in range(1, shared_orgs):
        fill(conn, f"o{i:02d}", big, lambda schema, name: f"{schema}.{name}")
    fill(conn, "o00", big, lambda schema, name: f"staging.{name}")
    refused = collect(spawn(sys.executable, "open-refused", path=str(shared)))  # a second writer process
    runs = []
    for gen in range(1, 4):
        t0 = time.perf_counter()
        conn.execute("BEGIN TRANSACTION")
        for schema, name in TABLES:
            conn.execute(f"DELETE FROM {schema}.{name} WHERE connection_id = 'o00'")
            conn.execute(copy_rows_sql(f"{schema}.{name}", name), {"gen": gen, "org": "o00"})
        conn.execute("COMMIT")
        t1 = time.perf_counter()
        conn.execute("CHECKPOINT")
        t2 = time.perf_counter()
        shutil.copyfile(shared, shared.parent / f"published-{gen}.duckdb")
        t3 = time.perf_counter()
        runs.append({"transaction": t1 - t0, "checkpoint": t2 - t1, "copy": t3 - t2, "total": t3 - t0})
    conn.close()
    steady = runs[1:]
    out["shared_publish"] = {"orgs": shared_orgs, "users_each": big,
                             **{k: ms(med([r[k] for r in steady])) for k in steady[0]},
                             "file_mb": mb(shared.stat().st_size), "second_writer": refused}
    shutil.rmtree(shared.parent, ignore_errors=True)

    # A4: a reader looping while 4 writers publish repeatedly (each its own organisation).
    root = work / "a-conc"
    orgs = [f"c{i}" for i in range(4)]
    for o in orgs:
        org = OrgFile(root, o).open()
        org.stage(conc_users)
        org.publish(1)
        org.close()
    start = time.time() + 3
    until = start + duration
    writers = [spawn(sys.executable, "a-writer", root=str(root), org=o, start_at=start, until=until, grace=5.0)
               for o in orgs]
    reader = spawn(sys.executable, "a-reader", root=str(root), users=conc_users, start_at=start, until=until)
    w = [collect(p) for p in writers]
    out["readers_vs_writers"] = {"users_each": conc_users, "seconds": duration, **collect(reader),
                                 "publishes": sum(r["publishes"] for r in w),
                                 "publish_p50_ms": ms(med([d for r in w for d in r["durations"]])),
                                 "writer_failures": sum(r["failed"] for r in w)}
    shutil.rmtree(root, ignore_errors=True)
    return out


# ---------------------------------------------------------------- option B: DuckLake (runs under DuckDB 1.5.x)

LOAD_SECONDS: list[float] = []  # how long each lake_connect spent loading the two extensions
JOURNALS = {"default": "", "wal": ", META_JOURNAL_MODE 'WAL', META_BUSY_TIMEOUT 5000"}


def lake_connect(lake: Path, journal: str, *, read_only: bool = False, retries: int | None = None):
    import importlib

    conn = duckdb.connect()
    t0 = time.perf_counter()
    for name in ("ducklake", "sqlite_scanner"):  # the pip packages hold the signed extension files
        folder = Path(importlib.import_module(f"duckdb_extension_{name}").__file__).parent
        conn.execute(f"LOAD '{folder / 'extensions' / f'v{duckdb.__version__}' / f'{name}.duckdb_extension'}'")
    LOAD_SECONDS.append(time.perf_counter() - t0)
    conn.execute("SET TimeZone = 'UTC'")
    if retries is not None:
        conn.execute(f"SET ducklake_max_retry_count = {retries}")
    options = f"DATA_PATH '{lake / 'data'}/'{JOURNALS[journal]}{', READ_ONLY' if read_only else ''}"
    conn.execute(f"ATTACH 'ducklake:sqlite:{lake / 'catalog.sqlite'}' AS lake ({options})")
    conn.execute("USE lake")
    return conn


def lake_create(lake: Path, journal: str) -> None:
    lake.mkdir(parents=True, exist_ok=True)
    conn = lake_connect(lake, journal)
    create_tables(conn, "lake", staging=False)
    for schema, name in TABLES:
        conn.execute(f"ALTER TABLE {schema}.{name} SET PARTITIONED BY (connection_id)")
    conn.close()


class LakeWriter:
    """One organisation's writer: its own local staging.duckdb, the shared lake's tables."""

    def __init__(self, lake: Path, org: str, journal: str, app_retries: int = 40):
        self.org, self.app_retries = org, app_retries
        self.commits: list[float] = []  # seconds of each successful COMMIT
        self.conn = lake_connect(lake, journal)
        staging = lake.parent / f"staging-{lake.name}-{org}.duckdb"
        self.conn.execute(f"ATTACH '{staging}' AS staging")
        create_tables(self.conn, "staging", staging=True)

    def stage(self, n: int) -> None:
        fill(self.conn, self.org, n, lambda schema, name: f"staging.{name}")

    def publish(self, gen: int):
        """Delete + insert the organisation's rows in one DuckLake transaction; the whole transaction is run
        again (after a random back-off) when its COMMIT fails, as a caller must: returns (s, retries, kinds)."""
        conn, retries, kinds = self.conn, 0, {}
        t0 = time.perf_counter()
        while True:
            step = "statement"
            try:
                conn.execute("BEGIN TRANSACTION")
                for schema, name in TABLES:
                    conn.execute(f"DELETE FROM {schema}.{name} WHERE connection_id = ?", [self.org])
                    conn.execute(copy_rows_sql(f"{schema}.{name}", name), {"gen": gen, "org": self.org})
                t1 = time.perf_counter()
                step = "COMMIT"
                conn.execute("COMMIT")
                self.commits.append(time.perf_counter() - t1)
                return time.perf_counter() - t0, retries, kinds
            except Exception as exc:  # noqa: BLE001
                try:
                    conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001, S110 - already rolled back
                    pass
                kind = f"{step}: {error_kind(exc)}"
                kinds[kind] = kinds.get(kind, 0) + 1
                retries += 1
                if retries > self.app_retries:
                    raise
                time.sleep(random.uniform(0.05, 0.3))


def role_b_writer(args: dict) -> dict:
    writer = LakeWriter(Path(args["lake"]), args["org"], args["journal"])
    gen0 = args.get("gen0", 100)
    result = writer_loop(lambda gen: writer.publish(gen0 + gen), args["start_at"], args.get("until"), args.get("count"))
    writer.conn.close()
    result["commits"] = writer.commits
    return result


def role_b_reader(args: dict) -> dict:
    lake, journal = Path(args["lake"]), args["journal"]
    return reader_loop(lambda: lake_connect(lake, journal, read_only=True), 5 * args["users"],
                       args["start_at"], args["until"])


def role_b_main(args: dict) -> dict:
    work, sizes, duration = Path(args["work"]), args["sizes"], args["duration"]
    (work / "probe").mkdir(parents=True)
    conn = lake_connect(work / "probe", "default")
    versions = dict(conn.execute("SELECT extension_name, extension_version FROM duckdb_extensions() "
                                 "WHERE extension_name IN ('ducklake', 'sqlite_scanner')").fetchall())
    conn.close()
    out = {"duckdb": duckdb.__version__, "ducklake_extension": versions.get("ducklake"),
           "sqlite_extension": versions.get("sqlite_scanner")}

    # B1: publish timings, storage growth over 10 publishes, time travel, expiry + cleanup.
    out["publish"] = []
    for n in sizes:
        lake = work / f"lake-p{n}"
        lake_create(lake, "default")
        writer = LakeWriter(lake, f"p{n}", "default")
        writer.stage(n)
        durations, sizes_mb = [], []
        for gen in range(1, 11):
            durations.append(writer.publish(gen)[0])
            sizes_mb.append(mb(dir_bytes(lake / "data")))
        conn = writer.conn
        snapshots = conn.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()[0]
        first_publish = snapshots - 9  # the snapshot that the first publish committed
        old = conn.execute(f"SELECT min(sync_id), count(*) FROM raw.users AT (VERSION => {first_publish})").fetchone()
        files = conn.execute("SELECT count(*) FROM ducklake_list_files('lake', 'users', schema => 'raw')").fetchone()[0]
        t0 = time.perf_counter()
        conn.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
        conn.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)")
        maintenance = time.perf_counter() - t0
        try:
            conn.execute(f"SELECT count(*) FROM raw.users AT (VERSION => {first_publish})").fetchall()
            after_expiry = "still readable"
        except Exception as exc:  # noqa: BLE001
            after_expiry = str(exc).splitlines()[0][:120]
        out["publish"].append({
            "users": n, "total": ms(med(durations[1:])), "first_total_ms": ms(durations[0]),
            "data_after_1_mb": sizes_mb[0], "data_after_10_mb": sizes_mb[-1],
            "data_after_cleanup_mb": mb(dir_bytes(lake / "data")),
            "catalog_kb": round((lake / "catalog.sqlite").stat().st_size / 1e3),
            "users_files_current": files, "time_travel_first_publish": {"sync_id": old[0], "rows": old[1]},
            "expire_cleanup_ms": ms(maintenance), "time_travel_after_expiry": after_expiry})
        writer.conn.close()
        if n != max(sizes):
            shutil.rmtree(lake)

    # B2: two organisations publishing at once in two processes (vs one alone), per catalog journal mode.
    big = max(sizes)
    out["two_writers"] = {"users": big}
    for journal in JOURNALS:
        lake = work / f"lake-two-{journal}"
        lake_create(lake, journal)
        for o in ("x", "y"):
            writer = LakeWriter(lake, o, journal)
            writer.stage(big)
            writer.publish(1)
            writer.conn.close()
        for label, orgs in (("alone", ["x"]), ("together", ["x", "y"])):
            start = time.time() + 3
            procs = [spawn(sys.executable, "b-writer", lake=str(lake), org=o, journal=journal, start_at=start, count=3)
                     for o in orgs]
            results = [collect(p) for p in procs]
            out["two_writers"][f"{journal}_{label}"] = {
                "wall_s": round(max(r["end"] for r in results) - min(r["start"] for r in results), 2),
                "publish_p50_ms": ms(med([d for r in results for d in r["durations"]])),
                "commit_p50_ms": ms(med([c for r in results for c in r["commits"]])),
                "commit_retries": sum(r["commit_retries"] for r in results),
                "retry_kinds": merge([r["retry_kinds"] for r in results]),
                "failed": sum(r["failed"] for r in results)}
        shutil.rmtree(lake)

    # B3: a reader over N small organisations.
    lake = work / "lake-small"
    lake_create(lake, "default")
    writer = LakeWriter(lake, "s00", "default")
    for i in range(args["n_small"]):
        writer.org = f"s{i:02d}"
        writer.stage(args["small_users"])
        writer.publish(1)
    writer.conn.close()
    LOAD_SECONDS.clear()
    out["reader_n"] = {"orgs": args["n_small"], "users_each": args["small_users"],
                       **time_reader(lambda: lake_connect(lake, "default", read_only=True)),
                       "load_extensions_ms": ms(med(LOAD_SECONDS))}
    shutil.rmtree(lake)

    # B4: a reader looping while 4 writers publish repeatedly, per catalog journal mode.
    out["readers_vs_writers"] = {}
    users = args["conc_users"]
    for journal in JOURNALS:
        lake = work / f"lake-conc-{journal}"
        lake_create(lake, journal)
        orgs = [f"c{i}" for i in range(4)]
        for o in orgs:
            writer = LakeWriter(lake, o, journal)
            writer.stage(users)
            writer.publish(1)
            writer.conn.close()
        start = time.time() + 3
        until = start + duration
        writers = [spawn(sys.executable, "b-writer", lake=str(lake), org=o, journal=journal, start_at=start,
                         until=until) for o in orgs]
        reader = spawn(sys.executable, "b-reader", lake=str(lake), journal=journal, users=users, start_at=start,
                       until=until)
        w = [collect(p) for p in writers]
        out["readers_vs_writers"][journal] = {
            "users_each": users, "seconds": duration, **collect(reader),
            "publishes": sum(r["publishes"] for r in w),
            "publish_p50_ms": ms(med([d for r in w for d in r["durations"]])),
            "commit_p50_ms": ms(med([c for r in w for c in r["commits"]])),
            "commit_retries": sum(r["commit_retries"] for r in w),
            "retry_kinds": merge([r["retry_kinds"] for r in w]),
            "writer_failures": sum(r["failed"] for r in w),
            "data_mb_after": mb(dir_bytes(lake / "data"))}
        shutil.rmtree(lake)
    return out


def merge(dicts):
    total = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


# ---------------------------------------------------------------- report

def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(a: dict, b: dict | None, meta: dict) -> str:
    parts = [f"Machine: {meta['machine']}; load average (1, 5, 15 min) before: {meta['load_before']}, "
             f"after: {meta['load_after']}; whole run {meta['seconds']} s",
             f"Python {platform.python_version()}; per-org and shared files: duckdb {a['duckdb']}"
             + (f"; DuckLake: duckdb {b['duckdb']}, ducklake extension {b['ducklake_extension']}, "
                f"sqlite_scanner extension {b['sqlite_extension']}, SQLite catalog, local data path" if b else
                "; DuckLake: not run")]
    rows = []
    for p in a["publish"]:
        rows.append([f"per-org file + copy, {p['users']:,} users", p["transaction"], p["checkpoint"], p["copy"],
                     p["manifest"], p["total"], p["copy_mb"],
                     f"{p['sets_after_10_mb']} (10 copies kept; copy 1: {p['copy_first_mb']})"])
    sp = a["shared_publish"]
    rows.append([f"one shared file ({sp['orgs']} orgs x {sp['users_each']:,} users), 1 org", sp["transaction"],
                 sp["checkpoint"], sp["copy"], "-", sp["total"], sp["file_mb"], f"{sp['file_mb']} per copy"])
    for p in (b or {}).get("publish", []):
        rows.append([f"DuckLake, {p['users']:,} users", p["total"], "-", "-", "-", p["total"], "-",
                     f"{p['data_after_1_mb']} after 1, {p['data_after_10_mb']} after 10, "
                     f"{p['data_after_cleanup_mb']} after expire + cleanup"])
    parts.append("### Publish one organisation (ms, median of publishes 2-10; shared file: of 2-3)\n\n" + table(
        ["option", "transaction", "checkpoint", "copy", "manifest", "total", "file MB", "storage after 10 MB"], rows))
    notes = [f"- first publish (into empty tables), per-org file: "
             + ", ".join(f"{p['users']:,}: {p['first_total_ms']} ms (live file {p['live_mb']} MB after 10)"
                         for p in a["publish"]),
             "- per-org copies of publishes 1-10, MB: "
             + "; ".join(f"{p['users']:,} users: {p['copies_mb']}" for p in a["publish"]),
             f"- second writer process opening the shared file: {sp['second_writer']}"]
    for p in (b or {}).get("publish", []):
        notes.append(f"- DuckLake {p['users']:,}: first publish {p['first_total_ms']} ms; "
                     f"catalog {p['catalog_kb']} kB; "
                     f"current users data files {p['users_files_current']}; time travel to publish 1 "
                     f"(AT VERSION): {p['time_travel_first_publish']}; expire_snapshots + cleanup_old_files "
                     f"{p['expire_cleanup_ms']} ms; time travel after expiry: {p['time_travel_after_expiry']}")
    parts.append("\n".join(notes))

    rn, srn = a["reader_n"], a["shared_reader_n"]
    cols = ["connect_ms", "check_ms", "check_warm_ms", "join_ms"]
    rows = [[f"per-org files: {rn['orgs']} ATTACH + views", *(rn[c] for c in cols)],
            ["one shared file: 1 ATTACH", *(srn[c] for c in cols)]]
    if b:
        br = b["reader_n"]
        rows.append([f"DuckLake: LOAD 2 extensions ({br['load_extensions_ms']} ms) + ATTACH", *(br[c] for c in cols)])
    parts.append(f"### Reader over {rn['orgs']} organisations of {rn['users_each']:,} users (fresh connection; "
                 "median of 7, ms)\n\n"
                 + table(["option", "connect", "check query", "check again", "join query"], rows))

    tw = a["two_writers"]
    rows = [["per-org files", tw["alone"]["wall_s"], tw["together"]["wall_s"], tw["alone"]["publish_p50_ms"],
             tw["together"]["publish_p50_ms"], "-", 0, tw["alone"]["failed"] + tw["together"]["failed"]]]
    if b:
        bt = b["two_writers"]
        for journal in JOURNALS:
            al, to = bt[f"{journal}_alone"], bt[f"{journal}_together"]
            rows.append([f"DuckLake, SQLite journal {journal}", al["wall_s"], to["wall_s"], al["publish_p50_ms"],
                         to["publish_p50_ms"], to["commit_p50_ms"], f"{to['commit_retries']} {to['retry_kinds'] or ''}",
                         to["failed"]])
    parts.append(f"### Two organisations of {tw['users']:,} users, 3 publishes each, in two processes\n\n" + table(
        ["option", "alone: wall s", "together: wall s", "alone: publish p50 ms", "together: publish p50 ms",
         "together: COMMIT p50 ms", "together: transactions re-run", "publishes failed"], rows))

    rows = []
    runs = [("per-org files", a["readers_vs_writers"])]
    runs += [(f"DuckLake, journal {j}", r) for j, r in ((b or {}).get("readers_vs_writers") or {}).items()]
    for label, r in runs:
        for mode in ("fresh", "held"):
            m = r[mode]
            rows.append([label if mode == "fresh" else "", mode, r["publishes"] if mode == "fresh" else "",
                         (f"{r.get('commit_retries', 0)} {r.get('retry_kinds') or ''}") if mode == "fresh" else "",
                         m["reads"], f"{m['refused']} {m['errors'] or ''}", m["torn"], m["states_seen"],
                         m["connect_p50_ms"] if mode == "fresh" else "-", m["total_p50_ms"], m["total_p99_ms"],
                         m["total_max_ms"]])
    r = a["readers_vs_writers"]
    parts.append(f"### One reader while 4 writers publish their organisations ({r['users_each']:,} users each) "
                 f"without pause for {r['seconds']} s\n\n"
                 "Each round: the check query on a long-lived connection (held), then on a fresh one (connect, "
                 "query, close). *states* = distinct combinations of published syncs the reader saw.\n\n" + table(
                     ["option", "reader", "publishes", "transactions re-run", "reads", "refused", "torn", "states",
                      "connect p50 ms", "read p50 ms", "read p99 ms", "read max ms"], rows))
    extra = [f"- per-org files: publish p50 under load {r['publish_p50_ms']} ms, "
             f"writer failures {r['writer_failures']}"]
    for j, rb in ((b or {}).get("readers_vs_writers") or {}).items():
        extra.append(f"- DuckLake journal {j}: publish p50 under load {rb['publish_p50_ms']} ms (COMMIT p50 "
                     f"{rb['commit_p50_ms']} ms), writer failures {rb['writer_failures']}, data path after "
                     f"{rb['data_mb_after']} MB")
    parts.append("\n".join(extra))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ducklake-python", default="/tmp/ducklake-venv/bin/python")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/warehouse-options"))
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    sizes = [2_000, 5_000] if args.quick else [20_000, 100_000]
    params = {"n_small": 10 if args.quick else 50, "small_users": 1_000, "conc_users": 2_000 if args.quick else 20_000,
              "duration": 5.0 if args.quick else args.duration, "sizes": sizes}
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    load_before = os.getloadavg()
    started = time.time()
    a = run_option_a(args.workdir, sizes, params["duration"], params["n_small"], params["small_users"],
                     2 if args.quick else 10, params["conc_users"])
    print(json.dumps({"option_a": a}), flush=True)
    b = None
    if args.ducklake_python and not Path(args.ducklake_python).exists():
        print(f"no DuckLake interpreter at {args.ducklake_python} (see the docstring): DuckLake not measured")
    elif args.ducklake_python:
        b = collect(spawn(args.ducklake_python, "b-main", work=str(args.workdir / "b"), **params))
        print(json.dumps({"ducklake": b}), flush=True)
    meta = {"machine": f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
            "load_before": tuple(round(x, 1) for x in load_before),
            "load_after": tuple(round(x, 1) for x in os.getloadavg()), "seconds": round(time.time() - started)}
    if args.json:
        args.json.write_text(json.dumps({"option_a": a, "ducklake": b, "meta": meta}, indent=1))
    print()
    print(report(a, b, meta))
    shutil.rmtree(args.workdir, ignore_errors=True)


ROLES = {"a-writer": role_a_writer, "a-reader": role_a_reader, "open-refused": role_open_refused,
         "b-writer": role_b_writer, "b-reader": role_b_reader, "b-main": role_b_main}

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ROLES:
        print(json.dumps(ROLES[sys.argv[1]](json.loads(sys.argv[2]))), flush=True)
    else:
        main()
