"""Never publish a partial or destructive sync: the breaker, the override, killed runs, faulty Google."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl

from dirsync_pipeline.definitions import build_definitions
from dirsync_pipeline.emulator import DirectoryEmulator, FaultPlan, generate_directory
from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.safeguards import removal
from dirsync_pipeline.warehouse.tables import GOOGLE_USERS, SYNC_TABLES
from tests.conftest import instance_with, write_config
from tests.oracle import expected_entitlements
from tests.test_pipeline import published, run_sync, snapshot

SELECTED = ["all-staff@acme.test", "engineering@acme.test", "admins@acme.test"]
MAPPING = {"engineering@acme.test": ["developer"], "admins@acme.test": ["admin"]}


def connection(emulator: DirectoryEmulator, **overrides) -> dict:
    return {"id": "acme", "api_endpoint": emulator.url, "selected_groups": SELECTED, "role_mapping": MAPPING,
            "default_role": "member", "retry": {"max_attempts": 8, "max_delay_seconds": 0.5}, **overrides}


def test_removal_counts_keys_not_rows_and_samples_them():
    published_users = pl.DataFrame({"connection_id": ["c"] * 4 + ["other"], "user_id": ["1", "2", "3", "4", "9"],
                                    "primary_email": ["a@x", "d@x", "c@x", "b@x", "z@x"]})
    staged = published_users.filter(pl.col("user_id").is_in(["1", "4", "9"])).with_columns(primary_email=pl.lit("renamed@x"))
    staged = staged.filter(pl.col("connection_id") == "c")  # another connection's rows are not this sync's removals
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE published AS SELECT * FROM published_users")
        conn.execute("CREATE TABLE staged AS SELECT * FROM staged")
        gone = removal(conn, GOOGLE_USERS, ("primary_email",), "c", published="published", staged="staged")
    assert (gone.published, gone.removed, gone.sample) == (4, 2, ("c@x", "d@x"))
    assert gone.exceeds(0.2, None) and not gone.exceeds(0.5, None) and gone.exceeds(0.5, 1)


def test_a_30_percent_drop_in_users_is_refused_then_let_through_on_purpose(tmp_path, directory):
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator)])
        assert run_sync(config).success
        db = tmp_path
        before = snapshot(db)

        for user in list(directory.users.values())[:180]:
            directory.delete_user(user.id)  # 30% of the company deleted at once (a silent drop is refused earlier)
        refused = run_sync(config)
        assert not refused.success
        breaker = [e for e in refused.get_asset_check_evaluations() if e.check_name == "mass_removal_breaker"]
        assert len(breaker) == 1 and not breaker[0].passed
        dropped = 180
        assert 120 < dropped < 240
        assert breaker[0].metadata["removed.raw.google_users"].value.startswith(f"{dropped} of 600")
        failure = next(e for e in refused.all_events if e.is_step_failure)
        assert "--allow-mass-removal" in failure.step_failure_data.error.message
        assert snapshot(db) == before

        job = build_definitions(str(config)).resolve_job_def("directory_sync")
        allowed = job.execute_in_process(
            partition_key="acme", instance=instance_with("acme"), raise_on_error=False,
            run_config={"ops": {"published_directory": {"config": {"allow_mass_removal": True}}}},
        )
        assert allowed.success
        materialization = allowed.asset_materializations_for_node("published_directory")[0]
        assert materialization.metadata["mass_removal_override"].value is True
        assert len(published(db, "raw.google_users")) == 600 - dropped  # the same users are dropped every time


def test_cli_override_flag_publishes_and_is_recorded(tmp_path, directory):
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator)])
        assert run_sync(config).success
        for user in list(directory.users.values())[:200]:
            directory.suspend_user(user.id)  # a third of the company suspended: entitlements collapse
        env = {k: v for k, v in os.environ.items() if k != "DIRSYNC_CONFIG"}
        refused = subprocess.run([sys.executable, "-m", "dirsync_pipeline.cli", "sync", "--config", str(config)],
                                 capture_output=True, text=True, env=env, timeout=180)
        assert refused.returncode == 1 and "Mass-removal breaker" in refused.stderr
        assert "core.role_mapped_entitlements" in refused.stderr
        allowed = subprocess.run([sys.executable, "-m", "dirsync_pipeline.cli", "sync", "--config", str(config),
                                  "--allow-mass-removal"], capture_output=True, text=True, env=env, timeout=180)
        assert allowed.returncode == 0, allowed.stderr[-2000:]
    rows = {(u, r, tuple(v)) for _c, u, _e, r, v in published(tmp_path, "core.role_mapped_entitlements")}
    assert rows == expected_entitlements(directory, SELECTED, MAPPING, default_role="member")


def test_first_sync_and_small_changes_pass_the_breaker(tmp_path, directory):
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator)])
        assert run_sync(config).success
        for user in list(directory.users.values())[:30]:
            directory.delete_user(user.id)  # 5%: normal churn
        assert run_sync(config).success
    assert len(published(tmp_path, "raw.google_users")) == 570


def test_a_sync_completes_correctly_under_random_5xx_and_a_rate_limit(tmp_path):
    directory = generate_directory(users=5000, groups=500, seed=3, domain="acme.test")
    faults = FaultPlan(error_rate=0.02, rate_limit_qps=20, seed=9)
    with DirectoryEmulator(directory, faults=faults) as emulator:
        config = write_config(tmp_path, [connection(emulator, selected_groups="all", role_mapping={}, max_concurrency=8,
                                                    rate_limit_qps=20, retry={"max_attempts": 10, "max_delay_seconds": 2})])
        started = time.monotonic()
        result = run_sync(config)
        elapsed = time.monotonic() - started
    assert result.success, [e for e in result.all_events if e.is_step_failure]
    injected = faults.injected
    assert sum(v for k, v in injected.items() if k in ("500", "502", "503")) > 0, injected
    db = tmp_path
    assert len(published(db, "raw.google_users")) == 5000
    assert len(published(db, "raw.google_groups")) == 500
    assert len(published(db, "raw.google_group_members")) == sum(len(g.members) for g in directory.groups.values())
    print(f"5,000 users / 500 groups under 2% 5xx + 20 qps: {elapsed:.1f} s, faults injected {injected}")


def content(db: Path) -> dict[str, list[tuple]]:
    """Published rows without their read timestamps, which differ from one sync to the next."""
    with reader.connect(db) as conn:
        return {t.qualified_name: sorted(conn.execute(
            f"SELECT * EXCLUDE (synced_at) FROM {t.qualified_name}" if "synced_at" in t.column_names
            else f"SELECT * FROM {t.qualified_name}").fetchall(), key=repr) for t in SYNC_TABLES}


def test_a_run_killed_at_any_point_leaves_the_old_or_the_new_complete_state(tmp_path, directory):
    """SIGKILL `dirsync sync` at increasing delays once publishing starts: never a partial state."""
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator)])
        assert run_sync(config).success
        db = tmp_path
        old = content(db)
        for user in list(directory.users.values())[:40]:
            directory.suspend_user(user.id)
        env = {k: v for k, v in os.environ.items() if k != "DIRSYNC_CONFIG"}
        observed = []
        for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
            sync = subprocess.Popen([sys.executable, "-m", "dirsync_pipeline.cli", "sync", "--config", str(config)],
                                    env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            for line in sync.stderr:
                if "publishing" in line and "published_directory" in line:
                    break
            time.sleep(delay)
            sync.kill()
            sync.wait()
            observed.append(content(db))
        assert run_sync(config).success  # the next sync recovers
        new = content(db)
    assert new != old
    assert observed[0] == old, "killed as publishing starts: nothing changed"
    assert all(state in (old, new) for state in observed), "a killed run left a partial state"
