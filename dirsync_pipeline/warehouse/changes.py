"""Change events: what differs between two states of a connection, computed by DuckDB.

Everything is keyed on Google's immutable ids, so a renamed user is one ``user.updated`` event, never a
deletion plus a creation. The publish transaction appends the events from the published tables to the
staged ones about to replace them: ``insert_directory_changes`` computes them there, or, for a sync the run
diffed as soon as its stages were written (store.py), ``append_changes`` appends what
``stage_directory_changes`` computed, named as the sync's (``named_staged_changes``). The diff runs as SQL
(joins and anti joins that DuckDB can spill to disk), so no state is ever materialised in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from dirsync_pipeline.warehouse.tables import (
    DIRECTORY_CHANGES,
    EVENTS,
    FILTERED_MEMBERSHIPS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    ROLE_MAPPED_ENTITLEMENTS,
    SYNC_LOG,
    Table,
    sql_literal,
)

# Attributes whose change is a user.updated / group.updated event. Left out on purpose: last_login_time
# (changes at every login), creation_time (immutable), synced_at and direct_members_count (change with
# every sync or membership change, which have their own events).
USER_ATTRIBUTES = ("primary_email", "given_name", "family_name", "full_name", "is_admin", "org_unit_path", "aliases")
GROUP_ATTRIBUTES = ("email", "name", "description", "admin_created")
# The account status, one value of three, so suspended -> archived is a single user.archived event.
STATUS_EVENTS = {"active": "user.reactivated", "suspended": "user.suspended", "archived": "user.archived"}
# What an event holds besides the sync's columns; each family of events fills its own.
EVENT_COLUMNS = ("event", "user_id", "user_email", "group_id", "group_email", "role", "before", "after")


@dataclass(frozen=True)
class DirectoryState:
    """Where one state of the diffed tables lives: SQL relations holding every connection's rows."""

    users: str
    groups: str
    memberships: str
    entitlements: str

    TABLES = (GOOGLE_USERS, GOOGLE_GROUPS, FILTERED_MEMBERSHIPS, ROLE_MAPPED_ENTITLEMENTS)

    @classmethod
    def from_names(cls, name: Callable[[Table], str]) -> DirectoryState:
        return cls(*(name(t) for t in cls.TABLES))


PUBLISHED = DirectoryState.from_names(lambda t: t.qualified_name)


def previous_state(conn: duckdb.DuckDBPyConnection, connection_id: str) -> DirectoryState | None:
    """The state a sync's events start from: the published tables, or None before the connection's first sync."""
    published = conn.execute(f"SELECT count(*) FROM {SYNC_LOG.qualified_name} WHERE connection_id = ?",
                             [connection_id]).fetchall()[0][0]
    return PUBLISHED if published else None


def insert_directory_changes(
    conn: duckdb.DuckDBPyConnection, previous: DirectoryState | None, current: DirectoryState, *,
    connection_id: str, sync_id: str, changed_at: datetime,
) -> int:
    """Append every event from ``previous`` (None before the first sync) to ``current`` to core.directory_changes.

    Rows go in a stable order (event, user, group, role); returns how many were appended. Each family of
    events (users', groups', memberships', roles') is sorted and appended on its own, in the order of EVENTS:
    the same rows in the same order as one sort of them all, whose memory (a first sync at 300,000 users
    sorts 2.6 million events) is the publish's largest, and is now that of the largest family.
    """
    return _insert_events(conn, DIRECTORY_CHANGES.qualified_name, previous, current, connection_id=connection_id,
                          sync_id=sync_id, changed_at=changed_at)


def stage_directory_changes(
    conn: duckdb.DuckDBPyConnection, staged_changes: str, previous: DirectoryState | None, current: DirectoryState,
    *, connection_id: str,
) -> None:
    """``insert_directory_changes`` into ``staged_changes`` (a table like core.directory_changes) instead, whose
    rows it replaces; ``named_staged_changes`` names their sync and time."""
    conn.execute(f"DELETE FROM {staged_changes}")
    _insert_events(conn, staged_changes, previous, current, connection_id=connection_id, sync_id="",
                   changed_at=datetime.now(UTC))


def _insert_events(
    conn: duckdb.DuckDBPyConnection, target: str, previous: DirectoryState | None, current: DirectoryState, *,
    connection_id: str, sync_id: str, changed_at: datetime,
) -> int:
    # Before the first sync the previous side is the current relations filtered to nothing, so the query
    # is the same and every event is a creation flagged `initial`.
    params = {"connection_id": connection_id, "sync_id": sync_id, "changed_at": changed_at,
              "initial": previous is None}
    return sum(conn.execute(f"INSERT INTO {target} BY NAME {query}", params).fetchall()[0][0]
               for query in _events_queries(previous or current, current))


def named_staged_changes(staged_changes: str, *, sync_id: str, changed_at: datetime) -> str:
    """The events ``stage_directory_changes`` left in ``staged_changes``, as a relation naming their sync and its
    time: what the publish appends, and what its Parquet set holds, one query for both."""
    return (f"(SELECT * REPLACE ({sql_literal(sync_id)} AS sync_id, "
            f"{sql_literal(changed_at.isoformat())}::TIMESTAMPTZ AS changed_at) FROM {staged_changes})")


def append_changes(conn: duckdb.DuckDBPyConnection, events: str) -> int:
    """Append the relation ``events`` (``named_staged_changes``) to core.directory_changes, in its order;
    returns how many."""
    return conn.execute(f"INSERT INTO {DIRECTORY_CHANGES.qualified_name} BY NAME SELECT * FROM {events}").fetchall()[0][0]


def _events_queries(previous: DirectoryState, current: DirectoryState) -> list[str]:
    """One query per family of events (users', groups', memberships', roles'), in the order of EVENTS."""
    def rows(relation: str, columns: str, *, old: bool) -> str:
        return (f"SELECT {columns} FROM {relation} WHERE connection_id = $connection_id"
                + (" AND NOT $initial" if old else ""))

    users = ", ".join(["user_id", *(a for a in USER_ATTRIBUTES if a != "aliases"), "list_sort(aliases) AS aliases",
                       "CASE WHEN archived THEN 'archived' WHEN suspended THEN 'suspended' ELSE 'active' END AS status"])
    groups = ", ".join(["group_id", *GROUP_ATTRIBUTES])
    order = "[" + ", ".join(f"'{e}'" for e in EVENTS) + "]"
    status_event = " ".join(f"WHEN '{status}' THEN '{event}'" for status, event in STATUS_EVENTS.items())
    families = [
        f"""{_lifecycle_events("user", "user_id", "primary_email", USER_ATTRIBUTES, USER_ATTRIBUTES + ("status",))}
            UNION ALL BY NAME
            SELECT CASE n.status {status_event} END AS event, n.user_id, n.primary_email AS user_email,
                   {_json_object("o", ("status",))} AS before, {_json_object("n", ("status",))} AS after
            FROM old_users o JOIN new_users n USING (user_id) WHERE o.status <> n.status""",
        _lifecycle_events("group", "group_id", "email", GROUP_ATTRIBUTES, GROUP_ATTRIBUTES),
        _keyed_events("memberships", ("user_id", "group_id"), ("group_id", "group_email"), ("is_direct",),
                      "membership.added", "membership.removed"),
        _keyed_events("entitlements", ("user_id", "role"), ("role",), ("granted_via",), "role.granted", "role.revoked"),
    ]
    # every column of an event, for the families that leave some out (a user event names no group)
    no_event = "SELECT " + ", ".join(f"NULL::VARCHAR AS {c}" for c in EVENT_COLUMNS) + " WHERE false"
    return [f"""
        WITH old_users AS ({rows(previous.users, users, old=True)}),
             new_users AS ({rows(current.users, users, old=False)}),
             old_groups AS ({rows(previous.groups, groups, old=True)}),
             new_groups AS ({rows(current.groups, groups, old=False)}),
             old_memberships AS ({rows(previous.memberships, '*', old=True)}),
             new_memberships AS ({rows(current.memberships, '*', old=False)}),
             old_entitlements AS ({rows(previous.entitlements, '*', old=True)}),
             new_entitlements AS ({rows(current.entitlements, '*', old=False)}),
             events AS ({no_event} UNION ALL BY NAME {family})
        SELECT $connection_id AS connection_id, $sync_id AS sync_id, $changed_at AS changed_at, $initial AS initial,
               {', '.join(EVENT_COLUMNS)}
        FROM events
        ORDER BY list_position({order}, event), user_email NULLS LAST, group_email NULLS LAST, role NULLS LAST
    """ for family in families]


def _lifecycle_events(kind: str, key: str, email: str, tracked: tuple[str, ...], described: tuple[str, ...]) -> str:
    """<kind>.created / .deleted (with every ``described`` attribute) and .updated (only the changed ones)."""
    changed = " OR ".join(f"o.{a} IS DISTINCT FROM n.{a}" for a in tracked)
    return f"""
        SELECT '{kind}.created' AS event, n.{key}, n.{email} AS {kind}_email, {_json_object("n", described)} AS after
        FROM new_{kind}s n ANTI JOIN old_{kind}s o USING ({key})
        UNION ALL BY NAME
        SELECT '{kind}.deleted' AS event, o.{key}, o.{email} AS {kind}_email, {_json_object("o", described)} AS before
        FROM old_{kind}s o ANTI JOIN new_{kind}s n USING ({key})
        UNION ALL BY NAME
        SELECT '{kind}.updated' AS event, n.{key}, n.{email} AS {kind}_email,
               {_json_object("o", tracked, unless_equal_in="n")} AS before,
               {_json_object("n", tracked, unless_equal_in="o")} AS after
        FROM old_{kind}s o JOIN new_{kind}s n USING ({key}) WHERE {changed}
    """


def _keyed_events(
    kind: str, key: tuple[str, ...], identity: tuple[str, ...], attributes: tuple[str, ...], added_event: str,
    removed_event: str,
) -> str:
    """Rows whose key appeared (``added_event``) or disappeared (``removed_event``): memberships, roles."""
    def events(rows: str, absent_from: str, event: str, side: str) -> str:
        columns = ", ".join(f"r.{c}" for c in ("user_id", *identity))
        return (f"SELECT '{event}' AS event, {columns}, r.primary_email AS user_email, "
                f"{_json_object('r', attributes)} AS {side} "
                f"FROM {rows} r ANTI JOIN {absent_from} USING ({', '.join(key)})")

    return (f"{events(f'new_{kind}', f'old_{kind}', added_event, 'after')} UNION ALL BY NAME "
            f"{events(f'old_{kind}', f'new_{kind}', removed_event, 'before')}")


def _json_object(alias: str, attributes: tuple[str, ...], *, unless_equal_in: str | None = None) -> str:
    """SQL for one compact JSON object of ``alias``'s attributes, keys in the given order.

    The text polars' ``struct.json_encode`` wrote before (the tests compare parsed JSON: DuckDB writes
    control characters as ``\\u001F``, polars as ``\\u001f``). With ``unless_equal_in``, only the
    attributes that differ from that other row are kept: the JSON of an update.
    """
    members = []
    for a in attributes:
        member = f"""'"{a}":' || coalesce(to_json({alias}.{a}), 'null')"""
        if unless_equal_in:
            member = f"CASE WHEN {alias}.{a} IS DISTINCT FROM {unless_equal_in}.{a} THEN {member} END"
        members.append(member)
    return f"'{{' || concat_ws(',', {', '.join(members)}) || '}}'"
