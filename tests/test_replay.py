"""Explain and replay through real Dagster runs: explanations name the right paths, and recomputing from the
snapshot with Google unreachable gives what a full sync with the same config gives."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dirsync_pipeline.cli import main
from dirsync_pipeline.cli.sync import failure_messages, mass_removal_override
from dirsync_pipeline.definitions import build_definitions
from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory
from dirsync_pipeline.warehouse import reader
from dirsync_pipeline.warehouse.store import Warehouse
from dirsync_pipeline.warehouse.tables import GOOGLE_ASSET_KEYS, SYNC_TABLES
from tests.conftest import instance_with, write_config
from tests.oracle import expected_entitlements
from tests.test_pipeline import MAPPING, SELECTED, connection, published, run_sync

NEW_MAPPING = {"engineering@acme.test": ["engineer"], "admins@acme.test": ["admin"], "finance@acme.test": ["finance"]}
PRIORITY = ["admin", "engineer", "finance", "staff"]
REMAPPED = {"role_mapping": NEW_MAPPING, "default_role": "staff", "role_assignment": "highest_priority",
            "role_priority": PRIORITY}
UNREACHABLE = {"retry": {"max_attempts": 1}}  # a Google call would fail the run at once


def run_job(config: Path, job_name: str, **kwargs) -> dg.ExecuteInProcessResult:
    job = build_definitions(str(config)).resolve_job_def(job_name)
    return job.execute_in_process(partition_key="acme", instance=instance_with("acme"), raise_on_error=False,
                                  **kwargs)


def role_events(db: Path, sync_id: str) -> list[tuple]:
    with reader.connect(db) as conn:
        return sorted(conn.execute("SELECT event, user_id, role FROM core.directory_changes WHERE sync_id = ?",
                                   [sync_id]).fetchall())


def test_explain_names_the_rule_and_the_nested_paths(tmp_path, capsys):
    directory = generate_directory(users=200, groups=16, seed=5, domain="acme.test")
    engineering = directory.find_group("engineering@acme.test")
    team = next(directory.groups[m.id] for m in engineering.members if m.type == "GROUP")
    direct = {m.id for m in engineering.members} | {m.id for m in directory.find_group("admins@acme.test").members}
    nested = next(directory.users[m.id] for m in team.members if m.id in directory.users and m.id not in direct
                  and not directory.users[m.id].suspended and not directory.users[m.id].archived)
    suspended = next(u for u in directory.users.values() if u.suspended)
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator, default_role="member")])
        assert run_sync(config).success
    capsys.readouterr()

    assert main(["explain", nested.primary_email.upper(), "--config", str(config)]) == 0  # Google is gone: Parquet only
    out = capsys.readouterr().out
    assert f"{nested.primary_email} (user {nested.id}, connection acme" in out
    assert "  developer\n    rule: role_mapping: engineering@acme.test -> developer\n" in out
    assert f"engineering@acme.test > {team.email} > {nested.primary_email}" in out
    assert "  member\n" not in out, "a user with a mapped role does not get the default role"

    assert main(["explain", suspended.id, "--config", str(config)]) == 0
    assert "no role: suspended: suspended and archived users hold no role" in capsys.readouterr().out
    assert main(["explain", "nobody@acme.test", "--config", str(config)]) == 1


def test_remap_without_google_gives_what_a_full_sync_gives(tmp_path):
    directory = generate_directory(users=250, groups=20, seed=13, domain="acme.test")
    (tmp_path / "reference").mkdir()
    with DirectoryEmulator(directory) as emulator:
        settings = connection(emulator, default_role="member", **UNREACHABLE)
        config = write_config(tmp_path, [settings])
        assert run_sync(config).success
        reference = write_config(tmp_path / "reference", [{**settings, **REMAPPED}])
        assert run_sync(reference).success, "the full sync that the remap must reproduce"
    db = tmp_path
    users_before = published(db, "raw.google_users")

    remapped = write_config(tmp_path, [{**settings, **REMAPPED}])
    assert main(["remap", "--config", str(remapped), "--allow-mass-removal"]) == 0  # Google is unreachable now
    for table in ("core.filtered_memberships", "core.role_mapped_entitlements", "core.entitlement_explanations"):
        assert published(db, table) == published(tmp_path / "reference", table), table
    assert published(db, "raw.google_users") == users_before

    with reader.connect(db) as conn:
        remap_id = conn.execute("SELECT sync_id FROM core.sync_log ORDER BY published_at DESC LIMIT 1").fetchall()[0][0]
    before = {(u, r) for u, r, _ in expected_entitlements(directory, SELECTED, MAPPING, default_role="member")}
    after = {(u, r) for u, r, _ in expected_entitlements(directory, SELECTED, {k: list(v) for k, v in NEW_MAPPING.items()},
                                                         default_role="staff", priority=PRIORITY)}
    assert role_events(db, remap_id) == sorted([("role.granted", u, r) for u, r in after - before]
                                               + [("role.revoked", u, r) for u, r in before - after])

    grown = write_config(tmp_path, [{**settings, **REMAPPED, "selected_groups": [*SELECTED, "finance@acme.test"]}])
    refused = run_job(grown, "directory_remap")
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure).step_failure_data.error.message
    assert "lacks the members of 1 selected or nested group(s) (finance@acme.test)" in failure
    assert published(db, "core.role_mapped_entitlements") == published(
        tmp_path / "reference", "core.role_mapped_entitlements"), "a refused remap publishes nothing"


HISTORY = ("core.directory_changes", "core.entitlements_history", "core.memberships_history")


def counts(db: Path, tables: tuple[str, ...]) -> list[int]:
    with reader.connect(db) as conn:
        return [conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables]


def test_a_failed_sync_records_nothing_and_downstream_only_runs_replay_the_snapshot_not_its_stages(tmp_path):
    directory = generate_directory(users=150, groups=14, seed=17, domain="acme.test")
    db, outputs = tmp_path, tmp_path / "parquet" / "connection_id=acme"
    with DirectoryEmulator(directory) as emulator:
        settings = connection(emulator, default_role="member", **UNREACHABLE)
        config = write_config(tmp_path, [settings])
        assert run_sync(config).success
        published_before = {t.qualified_name: published(db, t.qualified_name) for t in SYNC_TABLES}
        history_before = counts(db, HISTORY)
        manifest, sets = (outputs / "manifest.json").read_text(), sorted(outputs.iterdir())
        directory.add_user("late.joiner@acme.test", "Late", "Joiner")
        engineering = directory.find_group("engineering@acme.test")
        directory.add_member(engineering.id, "late.joiner@acme.test")
        engineering.members[-1].role = "SUPERVISOR"  # the check fails after the raw stages were written
        assert not run_sync(config).success

    assert {t: published(db, t) for t in published_before} == published_before
    assert counts(db, HISTORY) == history_before, "a sync that publishes nothing records no event and no history"
    assert (outputs / "manifest.json").read_text() == manifest and sorted(outputs.iterdir()) == sets, \
        "no new Parquet set, and the manifest still names the last published one"
    with Warehouse(db, "acme").connect() as conn:
        assert conn.execute("SELECT count(*) FROM raw.google_users__staged WHERE primary_email LIKE 'late.joiner%'"
                            ).fetchall() == [(1,)], "the failed run left its stages behind"

    changed = write_config(tmp_path, [{**settings, "default_role": "staff"}])
    downstream = [key for key in build_definitions(str(changed)).resolve_asset_graph().get_all_asset_keys()
                  if key not in GOOGLE_ASSET_KEYS]
    result = run_job(changed, "directory_sync", asset_selection=downstream,  # as the UI's "Materialize selected"
                     run_config=mass_removal_override()["run_config"])  # every `member` becomes `staff`
    assert result.success, failure_messages(result)
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == set(downstream) and not materialized & set(GOOGLE_ASSET_KEYS)
    raw = [t.qualified_name for t in SYNC_TABLES[:3]]
    assert {t: published(db, t) for t in raw} == {t: published_before[t] for t in raw}, "raw data is the snapshot's"
    events = role_events(db, result.run_id)
    assert events and {e for e, _u, _r in events} == {"role.granted", "role.revoked"}
    assert {r for _e, _u, r in events} == {"member", "staff"}, "only the default role changed"
