"""Change events and history through real Dagster syncs against the emulator's directory mutations.

The expected events are stated independently: user and group events by hand, one per mutation made;
membership and role events as the difference of tests/oracle.py's naive semantics before and after.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from dirsync_pipeline.emulator import Directory, DirectoryEmulator, generate_directory
from dirsync_pipeline.warehouse import reader
from tests.conftest import write_config
from tests.oracle import expected_entitlements, expected_memberships
from tests.test_pipeline import MAPPING, SELECTED, connection, run_sync

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_ROLE = "member"


def oracle_keys(directory: Directory) -> tuple[set, set]:
    """(user_id, group_id) memberships and (user_id, role) entitlements the semantics define right now."""
    memberships = {(u, g) for u, g, _direct, _active in expected_memberships(directory, SELECTED)}
    roles = {(u, r) for u, r, _via in expected_entitlements(directory, SELECTED, MAPPING, default_role=DEFAULT_ROLE)}
    return memberships, roles


def events_of(db: Path, sync_id: str) -> list[tuple]:
    with reader.connect(db) as conn:
        return conn.execute("SELECT event, user_id, group_id, role, initial, before, after FROM core.directory_changes "
                            "WHERE sync_id = ?", [sync_id]).fetchall()


def test_the_events_of_a_sync_are_exactly_the_changes_made(tmp_path):
    directory = generate_directory(users=300, groups=24, seed=21, domain="acme.test")
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator, default_role=DEFAULT_ROLE)])
        first = run_sync(config)
        assert first.success
        db = tmp_path
        initial = events_of(db, first.run_id)
        memberships, roles = oracle_keys(directory)
        assert all(row[4] for row in initial)
        assert len(initial) == len(directory.users) + len(directory.groups) + len(memberships) + len(roles)

        mutations, renamed_from = mutate(directory)
        memberships_after, roles_after = oracle_keys(directory)
        second = run_sync(config)
    assert second.success
    events = events_of(db, second.run_id)

    expected = set(mutations) | {("membership.added", u, g, None) for u, g in memberships_after - memberships}
    expected |= {("membership.removed", u, g, None) for u, g in memberships - memberships_after}
    expected |= {("role.granted", u, None, r) for u, r in roles_after - roles}
    expected |= {("role.revoked", u, None, r) for u, r in roles - roles_after}
    assert sorted((e, u, g, r) for e, u, g, r, *_ in events) == sorted(expected)
    assert {e for e, *_ in expected} >= {"membership.added", "membership.removed", "role.granted", "role.revoked"}
    assert not any(initial_flag for *_, initial_flag, _b, _a in events)

    renamed = next(row for row in events if row[0] == "user.updated" and json.loads(row[6]).get("primary_email"))
    assert json.loads(renamed[5]) == {"primary_email": renamed_from, "aliases": []}
    assert json.loads(renamed[6]) == {"primary_email": "renamed.person@acme.test", "aliases": [renamed_from]}


def mutate(directory: Directory) -> tuple[list[tuple], str]:
    """Apply one of each mutation; return the user and group events they must produce, and the renamed email."""
    engineering = directory.find_group("engineering@acme.test")
    sales = directory.find_group("sales@acme.test")
    admins = directory.find_group("admins@acme.test")
    teams = [directory.groups[m.id] for m in engineering.members if m.type == "GROUP"]
    assert len(teams) >= 2, "the seed must nest two teams in engineering"
    gone_team, moved_from = teams[0], teams[1]
    used = {m.id for m in gone_team.members}
    pool = [u for u in directory.active_users() if not u.suspended and not u.archived and not u.is_admin and u.id not in used
            and not u.aliases]
    direct_engineers = [u for u in pool if any(m.id == u.id for m in engineering.members)]
    suspended, deleted = direct_engineers[0], next(directory.users[m.id] for m in admins.members if m.id not in used)
    mover = next(directory.users[m.id] for m in moved_from.members if m.type == "USER" and m.id in directory.users
                 and directory.users[m.id] in pool and directory.users[m.id] is not suspended)
    renamed, updated = [u for u in pool if u not in (suspended, mover)][:2]
    renamed_from = renamed.primary_email

    hire = directory.add_user("new.hire@acme.test", "New", "Hire")
    directory.add_member(engineering.id, hire.id)
    directory.suspend_user(suspended.id)
    directory.delete_user(deleted.id)
    directory.rename_user(renamed.id, "renamed.person@acme.test")
    directory.update_user(updated.id, org_unit_path="/Transferred")
    directory.remove_member(moved_from.id, mover.id)
    directory.add_member(sales.id, mover.id)
    new_team = directory.add_group("new-team@acme.test", "New team")
    directory.add_member(engineering.id, new_team.id)
    directory.add_member(new_team.id, updated.id)
    directory.delete_group(gone_team.id)
    return [("user.created", hire.id, None, None), ("user.suspended", suspended.id, None, None),
            ("user.deleted", deleted.id, None, None), ("user.updated", renamed.id, None, None),
            ("user.updated", updated.id, None, None), ("group.created", None, new_team.id, None),
            ("group.deleted", None, gone_team.id, None)], renamed_from


def readme_query(name: str) -> str:
    """The SQL block of README's "History queries" section whose first line is ``-- <name>``."""
    match = re.search(rf"```sql\n-- {re.escape(name)}\n(.*?)```", README.read_text(), re.S)
    assert match, f"README.md has no query `-- {name}`"
    return match.group(1)


def test_history_answers_point_in_time_questions_across_three_syncs(tmp_path):
    directory = generate_directory(users=200, groups=16, seed=5, domain="acme.test")
    admins = directory.find_group("admins@acme.test")
    veteran = directory.users[next(m.id for m in admins.members if m.type == "USER")]
    newcomer = next(u for u in directory.active_users() if not u.suspended and not u.archived
                    and all(m.id != u.id for m in admins.members))
    published_at, holders = [], []
    with DirectoryEmulator(directory) as emulator:
        config = write_config(tmp_path, [connection(emulator, default_role=DEFAULT_ROLE)])
        for mutation in (lambda: None,
                         lambda: (directory.add_member(admins.id, newcomer.id),
                                  directory.rename_user(veteran.id, "veteran.renamed@acme.test")),
                         lambda: directory.remove_member(admins.id, newcomer.id)):
            mutation()
            result = run_sync(config)
            assert result.success
            holders.append({u for u, r, _via in expected_entitlements(directory, SELECTED, MAPPING, DEFAULT_ROLE) if r == "admin"})
            with reader.connect(tmp_path) as conn:
                published_at.append(conn.execute("SELECT published_at FROM core.sync_log WHERE sync_id = ?",
                                                 [result.run_id]).fetchall()[0][0])
                since = conn.execute(readme_query("held-role-since"), {"connection": "acme", "role": "admin",
                                                                      "email": "Veteran.Renamed@acme.test"}).fetchall()
                if len(published_at) >= 2:
                    assert since == [(published_at[0],)], "the rename opened a version but did not reset held_since"

    assert holders[0] != holders[1] and holders[2] == holders[0], "the scenario moves one admin in and out"
    with reader.connect(tmp_path) as conn:
        def held(at, role="admin") -> set[str]:
            rows = conn.execute(readme_query("who-held-role-at"), {"connection": "acme", "role": role, "at": at}).fetchall()
            return {user_id for user_id, *_ in rows}

        assert held(published_at[0] - timedelta(microseconds=1)) == set(), "nothing was known before the first sync"
        for index, at in enumerate(published_at):
            assert held(at) == holders[index]
            assert held(at + timedelta(milliseconds=1)) == holders[index]
        newcomer_since = conn.execute(readme_query("held-role-since"), {
            "connection": "acme", "role": "admin", "email": newcomer.primary_email}).fetchall()
        assert newcomer_since == [], "no longer admin: no current grant"
        member_at = conn.execute(readme_query("members-of-group-at"), {
            "connection": "acme", "group_email": "admins@acme.test", "at": published_at[1]}).fetchall()
        assert newcomer.id in {user_id for user_id, *_ in member_at}
        versions = conn.execute("SELECT count(*), count(valid_to) FROM core.entitlements_history "
                                "WHERE user_id = ? AND role = 'admin'", [newcomer.id]).fetchall()
        assert versions == [(1, 1)]
