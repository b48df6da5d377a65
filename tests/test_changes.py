"""Change events, SCD2 history and explanations as pure functions of published states (no Dagster)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
import pytest

from dirsync_pipeline.warehouse.changes import (
    DirectoryState,
    append_changes,
    insert_directory_changes,
    named_staged_changes,
    stage_directory_changes,
)
from dirsync_pipeline.transforms.explain import describe_rule, explain_entitlements, membership_paths
from dirsync_pipeline.warehouse.history import ENTITLEMENTS, advance_history
from dirsync_pipeline.warehouse.tables import (
    DIRECTORY_CHANGES,
    ENTITLEMENT_EXPLANATIONS,
    ENTITLEMENTS_HISTORY,
    EVENTS,
    EVERY_USER,
    FILTERED_MEMBERSHIPS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    ROLE_MAPPED_ENTITLEMENTS,
    Table,
)
from dirsync_pipeline.transforms.directory import filtered_memberships, resolve_role_mapping, role_mapped_entitlements

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def frame(table: Table, rows: list[dict], defaults: dict) -> pl.DataFrame:
    return pl.DataFrame([{**defaults, **row} for row in rows], schema={c.name: c.dtype for c in table.columns})


def users(*rows: dict) -> pl.DataFrame:
    return frame(GOOGLE_USERS, [{"primary_email": f"{r['user_id']}@corp.com", **r} for r in rows], {
        "connection_id": "c1", "given_name": "G", "family_name": "F", "full_name": "G F", "is_admin": False,
        "suspended": False, "archived": False, "org_unit_path": "/", "creation_time": T0, "last_login_time": None,
        "aliases": [], "synced_at": T0})


def groups(*group_ids: str) -> pl.DataFrame:
    return frame(GOOGLE_GROUPS, [{"group_id": g, "email": f"{g}@corp.com"} for g in group_ids], {
        "connection_id": "c1", "name": "N", "description": "", "direct_members_count": 1, "admin_created": True,
        "synced_at": T0})


def memberships(*pairs: tuple[str, str]) -> pl.DataFrame:
    return frame(FILTERED_MEMBERSHIPS, [
        {"user_id": u, "primary_email": f"{u}@corp.com", "group_id": g, "group_email": f"{g}@corp.com"} for u, g in pairs
    ], {"connection_id": "c1", "is_direct": True, "user_active": True})


def entitlements(*rows: tuple[str, str, list[str]]) -> pl.DataFrame:
    return frame(ROLE_MAPPED_ENTITLEMENTS, [
        {"user_id": u, "primary_email": f"{u}@corp.com", "role": r, "granted_via": via} for u, r, via in rows
    ], {"connection_id": "c1"})


@dataclass(frozen=True)
class State:
    """The four diffed tables of one state, as frames."""

    users: pl.DataFrame
    groups: pl.DataFrame
    memberships: pl.DataFrame
    entitlements: pl.DataFrame


def state(users_: pl.DataFrame, groups_: pl.DataFrame, memberships_: pl.DataFrame, entitlements_: pl.DataFrame
          ) -> State:
    return State(users_, groups_, memberships_, entitlements_)


def warehouse(*tables: Table) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the contract's DDL of ``tables``."""
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    for schema in {t.schema for t in tables}:
        conn.execute(f"CREATE SCHEMA {schema}")
    for table in tables:
        conn.execute(table.ddl())
    return conn


def registered(conn: duckdb.DuckDBPyConnection, prefix: str, frames: State) -> DirectoryState:
    """``frames`` as relations of ``conn``, named <prefix>_<table>."""
    relations = DirectoryState.from_names(lambda t: f"{prefix}_{t.name}")
    for field in fields(State):
        conn.register(getattr(relations, field.name), getattr(frames, field.name))
    return relations


def changes(previous: State | None, current: State) -> pl.DataFrame:
    conn = warehouse(DIRECTORY_CHANGES)
    count = insert_directory_changes(conn, previous and registered(conn, "old", previous),
                                     registered(conn, "new", current), connection_id="c1", sync_id="s2", changed_at=T0)
    events = DIRECTORY_CHANGES.read(conn, "c1")
    assert events.height == count
    DIRECTORY_CHANGES.pandera_schema().validate(events)
    return events


def summary(events: pl.DataFrame) -> list[tuple]:
    """(event, user_id, group_id, role, before, after) with the JSON parsed, sorted, for exact comparisons."""
    rows = [(e, u, g, r, json.loads(b) if b else None, json.loads(a) if a else None)
            for e, u, g, r, b, a in events.select("event", "user_id", "group_id", "role", "before", "after").iter_rows()]
    return sorted(rows, key=repr)


def expected(*rows: tuple) -> list[tuple]:
    return sorted(rows, key=repr)


BASE = state(users({"user_id": "alice"}, {"user_id": "bob"}), groups("eng", "ops"),
             memberships(("alice", "eng"), ("bob", "eng")),
             entitlements(("alice", "developer", ["eng@corp.com"]), ("bob", "developer", ["eng@corp.com"])))


def test_the_first_sync_reports_everything_as_created_or_granted_and_flags_it_initial():
    events = changes(None, BASE)
    assert events.group_by("event").len().sort("event").rows() == [
        ("group.created", 2), ("membership.added", 2), ("role.granted", 2), ("user.created", 2)]
    assert events["initial"].all() and (events["changed_at"] == T0).all() and (events["sync_id"] == "s2").all()
    alice = events.filter((pl.col("event") == "user.created") & (pl.col("user_id") == "alice")).row(0, named=True)
    assert json.loads(alice["after"])["primary_email"] == "alice@corp.com" and alice["before"] is None
    assert changes(BASE, BASE).is_empty(), "an unchanged directory emits nothing"


def test_a_rename_is_one_user_updated_event_keyed_on_the_immutable_id():
    renamed = users({"user_id": "alice", "primary_email": "alice.smith@corp.com", "aliases": ["alice@corp.com"]},
                    {"user_id": "bob"})
    after = state(renamed, BASE.groups, BASE.memberships.with_columns(
        primary_email=pl.when(pl.col("user_id") == "alice").then(pl.lit("alice.smith@corp.com")).otherwise("primary_email")),
        BASE.entitlements)
    events = changes(BASE, after)
    assert summary(events) == expected(("user.updated", "alice", None, None,
                                        {"primary_email": "alice@corp.com", "aliases": []},
                                        {"primary_email": "alice.smith@corp.com", "aliases": ["alice@corp.com"]}))
    assert events["user_email"].to_list() == ["alice.smith@corp.com"] and not events["initial"].any()


def test_status_changes_are_single_events_and_noise_is_not_a_change():
    def with_users(*rows: dict) -> State:
        return state(users(*rows), BASE.groups, BASE.memberships, BASE.entitlements)

    suspended = with_users({"user_id": "alice", "suspended": True},
                           {"user_id": "bob", "last_login_time": T0, "synced_at": T0 + timedelta(hours=1)})
    archived = with_users({"user_id": "alice", "suspended": True, "archived": True}, {"user_id": "bob"})
    assert summary(changes(BASE, suspended)) == expected(
        ("user.suspended", "alice", None, None, {"status": "active"}, {"status": "suspended"}))
    assert changes(suspended, archived)["event"].to_list() == ["user.archived"]
    assert changes(archived, BASE)["event"].to_list() == ["user.reactivated"]
    reordered = with_users({"user_id": "alice", "aliases": ["b@corp.com", "a@corp.com"]}, {"user_id": "bob"})
    assert changes(with_users({"user_id": "alice", "aliases": ["a@corp.com", "b@corp.com"]}, {"user_id": "bob"}),
                   reordered).is_empty(), "alias order carries no meaning"


def test_deletions_moves_and_group_changes_each_have_their_event():
    after = state(
        users({"user_id": "bob"}, {"user_id": "carol"}),
        groups("eng", "sre").with_columns(name=pl.when(pl.col("group_id") == "eng").then(pl.lit("Engineering")).otherwise("name")),
        memberships(("bob", "ops"), ("carol", "eng")),
        entitlements(("carol", "developer", ["eng@corp.com"])),
    )
    assert summary(changes(BASE, after)) == expected(
        ("user.deleted", "alice", None, None, {"primary_email": "alice@corp.com", "given_name": "G", "family_name": "F",
                                               "full_name": "G F", "is_admin": False, "org_unit_path": "/",
                                               "aliases": [], "status": "active"}, None),
        ("user.created", "carol", None, None, None, {"primary_email": "carol@corp.com", "given_name": "G",
                                                     "family_name": "F", "full_name": "G F", "is_admin": False,
                                                     "org_unit_path": "/", "aliases": [], "status": "active"}),
        ("group.updated", None, "eng", None, {"name": "N"}, {"name": "Engineering"}),
        ("group.deleted", None, "ops", None, {"email": "ops@corp.com", "name": "N", "description": "", "admin_created": True}, None),
        ("group.created", None, "sre", None, None, {"email": "sre@corp.com", "name": "N", "description": "", "admin_created": True}),
        ("membership.removed", "alice", "eng", None, {"is_direct": True}, None),
        ("membership.removed", "bob", "eng", None, {"is_direct": True}, None),
        ("membership.added", "bob", "ops", None, None, {"is_direct": True}),
        ("membership.added", "carol", "eng", None, None, {"is_direct": True}),
        ("role.revoked", "alice", None, "developer", {"granted_via": ["eng@corp.com"]}, None),
        ("role.revoked", "bob", None, "developer", {"granted_via": ["eng@corp.com"]}, None),
        ("role.granted", "carol", None, "developer", None, {"granted_via": ["eng@corp.com"]}),
    )


def test_history_versions_answer_point_in_time_questions():
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    v1 = entitlements(("alice", "admin", ["admins@corp.com"]))
    v2 = entitlements(("alice", "admin", ["admins@corp.com", "root@corp.com"]), ("bob", "admin", ["admins@corp.com"]))
    v3 = entitlements(("bob", "admin", ["admins@corp.com"]))
    store = warehouse(ENTITLEMENTS_HISTORY)
    closed: set[str] = set()
    for at, current in ((t1, v1), (t2, v2), (t3, v3)):
        store.register("current", current)
        advance_history(store, ENTITLEMENTS, "current", connection_id="c1", sync_id=str(at), at=at)
        history = ENTITLEMENTS_HISTORY.read(store, "c1")
        ENTITLEMENTS_HISTORY.pandera_schema().validate(history)
        assert closed <= {repr(row) for row in history.rows()}, "closed versions are never rewritten"
        closed = {repr(row) for row in history.filter(pl.col("valid_to").is_not_null()).rows()}

    conn = duckdb.connect()
    conn.register("history", history)

    def holders(at: datetime) -> list[str]:
        return [u for (u,) in conn.execute("SELECT user_id FROM history WHERE role = 'admin' AND valid_from <= $at "
                                           "AND (valid_to IS NULL OR $at < valid_to) ORDER BY user_id", {"at": at}).fetchall()]

    assert (holders(t1), holders(t1 + timedelta(minutes=30)), holders(t2), holders(t3)) == (
        ["alice"], ["alice"], ["alice", "bob"], ["bob"])
    alice = history.filter(pl.col("user_id") == "alice").sort("valid_from")
    assert alice.select("valid_from", "valid_to", "held_since").rows() == [(t1, t2, t1), (t2, t3, t1)], \
        "a new granting group opens a version but the grant is held since t1"
    assert history.filter(pl.col("valid_to").is_null())["user_id"].to_list() == ["bob"]


def test_explanations_name_nested_paths_the_default_rule_and_what_a_priority_winner_beat():
    people = users({"user_id": "ann"}, {"user_id": "ben"}, {"user_id": "cat"}).select("user_id", "primary_email", "suspended", "archived")
    group_rows = groups("admins", "core", "eng", "all", "loop")
    edges = pl.DataFrame([
        ("admins", "core", "GROUP"), ("core", "loop", "GROUP"), ("loop", "core", "GROUP"), ("core", "ann", "USER"),
        ("eng", "ann", "USER"), ("eng", "ben", "USER"), ("all", "C01", "CUSTOMER"),
    ], schema=["group_id", "member_id", "member_type"], orient="row")
    member_rows, _ = filtered_memberships("c1", people, group_rows, edges, ["admins", "eng", "all"])
    mapping, _ = resolve_role_mapping(group_rows, {"admins@corp.com": ["admin"], "eng@corp.com": ["developer"]})
    priority = ["admin", "developer", "member"]
    granted = role_mapped_entitlements(member_rows, mapping, default_role="member", role_assignment="highest_priority",
                                       role_priority=priority)
    explained = explain_entitlements(granted, member_rows, edges, group_rows, mapping, default_role="member",
                                     role_priority=priority)
    ENTITLEMENT_EXPLANATIONS.pandera_schema().validate(explained)
    rows = {r["user_id"]: r for r in explained.iter_rows(named=True)}
    assert (rows["ann"]["role"], rows["ann"]["rule"], rows["ann"]["outranked"]) == ("admin", "role_mapping", ["developer"])
    assert rows["ann"]["paths"] == ["admins@corp.com > core@corp.com > ann@corp.com"]
    assert describe_rule(rows["ann"]) == "role_mapping: admins@corp.com -> admin; highest_priority: outranked developer"
    assert (rows["ben"]["role"], rows["ben"]["paths"]) == ("developer", ["eng@corp.com > ben@corp.com"])
    assert (rows["cat"]["role"], rows["cat"]["rule"], rows["cat"]["via_groups"]) == ("member", "default_role", ["all@corp.com"])
    assert rows["cat"]["paths"] == [f"all@corp.com > {EVERY_USER}"]


def test_a_path_through_a_group_groups_list_does_not_show_keeps_its_id():
    edges = pl.DataFrame([("eng", "other-customer-group", "GROUP"), ("other-customer-group", "ann", "USER")],
                         schema=["group_id", "member_id", "member_type"], orient="row")
    member_rows = memberships(("ann", "eng"))
    paths = membership_paths(edges, groups("eng"), member_rows)
    assert paths.select("user_id", "group_email", "path").rows() == [
        ("ann", "eng@corp.com", "eng@corp.com > other-customer-group > ann@corp.com")]


def test_events_are_appended_in_the_documented_order_across_every_family():
    """Each family of events is sorted and appended on its own (changes.py); together they must still be in
    (event as EVENTS orders them, user, group, role) order, as one sort of them all would put them."""
    after = state(users({"user_id": "carol"}, {"user_id": "bob", "suspended": True}, {"user_id": "alice"}),
                  groups("ops", "dev"),
                  memberships(("carol", "ops"), ("alice", "dev"), ("bob", "eng")),
                  entitlements(("carol", "operator", ["ops@corp.com"]), ("alice", "admin", ["dev@corp.com"])))
    conn = warehouse(DIRECTORY_CHANGES)
    insert_directory_changes(conn, registered(conn, "old", BASE), registered(conn, "new", after), connection_id="c1",
                             sync_id="s2", changed_at=T0)
    appended = conn.execute("SELECT event, user_email, group_email, role FROM core.directory_changes ORDER BY rowid").fetchall()
    families = {event.split(".")[0] for event, *_ in appended}
    assert families == {"user", "group", "membership", "role"}

    def position(row: tuple) -> tuple:
        event, *rest = row
        return (EVENTS.index(event), *((value is None, value or "") for value in rest))

    assert appended == sorted(appended, key=position)


@pytest.mark.parametrize("first_sync", [False, True], ids=["later sync", "first sync"])
def test_events_staged_before_the_publish_are_appended_exactly_as_computed_in_it(first_sync):
    """A run stages the events as soon as its stages are written (store.py); appended by the publish, they are
    the rows, in the order, that the publish computing them itself appends."""
    after = state(users({"user_id": "carol"}, {"user_id": "bob", "suspended": True}), groups("ops", "dev"),
                  memberships(("carol", "ops"), ("bob", "eng")), entitlements(("carol", "operator", ["ops@corp.com"])))
    rows = "SELECT * EXCLUDE (changed_at) FROM core.directory_changes ORDER BY rowid"
    computed = warehouse(DIRECTORY_CHANGES)
    previous = None if first_sync else registered(computed, "old", BASE)
    insert_directory_changes(computed, previous, registered(computed, "new", after), connection_id="c1",
                             sync_id="s2", changed_at=T0)
    staged = warehouse(DIRECTORY_CHANGES)
    staged.execute(DIRECTORY_CHANGES.ddl("core.staged_changes"))
    stage_directory_changes(staged, "core.staged_changes", None if first_sync else registered(staged, "old", BASE),
                            registered(staged, "new", after), connection_id="c1")
    count = append_changes(staged, named_staged_changes("core.staged_changes", sync_id="s2", changed_at=T0))
    assert count == len(computed.execute(rows).fetchall()) > 0
    assert staged.execute(rows).fetchall() == computed.execute(rows).fetchall()
    assert staged.execute("SELECT DISTINCT changed_at FROM core.directory_changes").fetchall() == [(T0,)]
