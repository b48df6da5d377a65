"""Change events: what differs between two published states of a connection (pure polars, no I/O).

Everything is keyed on Google's immutable ids, so a renamed user is one ``user.updated`` event, never a
deletion plus a creation. The publish transaction calls ``directory_changes`` with the previously
published state and the state about to be published, and appends the result to core.directory_changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from dirsync_pipeline.tables import (
    DIRECTORY_CHANGES,
    EVENTS,
    FILTERED_MEMBERSHIPS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    ROLE_MAPPED_ENTITLEMENTS,
    Table,
    timestamp_literal,
)

# Attributes whose change is a user.updated / group.updated event. Left out on purpose: last_login_time
# (changes at every login), creation_time (immutable), synced_at and direct_members_count (change with
# every sync or membership change, which have their own events).
USER_ATTRIBUTES = ("primary_email", "given_name", "family_name", "full_name", "is_admin", "org_unit_path", "aliases")
GROUP_ATTRIBUTES = ("email", "name", "description", "admin_created")
# The account status, one value of three, so suspended -> archived is a single user.archived event.
STATUS_EVENTS = {"active": "user.reactivated", "suspended": "user.suspended", "archived": "user.archived"}
EVENT_COLUMNS = ("event", "user_id", "user_email", "group_id", "group_email", "role", "before", "after")


@dataclass(frozen=True)
class DirectoryState:
    """The published rows of one connection that change events are derived from."""

    users: pl.DataFrame
    groups: pl.DataFrame
    memberships: pl.DataFrame
    entitlements: pl.DataFrame

    TABLES = (GOOGLE_USERS, GOOGLE_GROUPS, FILTERED_MEMBERSHIPS, ROLE_MAPPED_ENTITLEMENTS)

    @classmethod
    def from_tables(cls, frames: dict[Table, pl.DataFrame]) -> DirectoryState:
        return cls(*(frames[t] for t in cls.TABLES))

    @classmethod
    def empty(cls) -> DirectoryState:
        """What a connection looks like before its first sync."""
        return cls.from_tables({t: pl.DataFrame(schema={c.name: c.dtype for c in t.columns}) for t in cls.TABLES})


def directory_changes(
    previous: DirectoryState, current: DirectoryState, *, connection_id: str, sync_id: str,
    changed_at: datetime, initial: bool,
) -> pl.DataFrame:
    """Rows for core.directory_changes: every event between ``previous`` and ``current``, in a stable order."""
    events = pl.concat([
        user_events(previous.users, current.users),
        group_events(previous.groups, current.groups),
        keyed_events(previous.memberships, current.memberships, ("user_id", "group_id"), ("is_direct",),
                     "membership.added", "membership.removed"),
        keyed_events(previous.entitlements, current.entitlements, ("user_id", "role"), ("granted_via",),
                     "role.granted", "role.revoked"),
    ])
    order = {event: i for i, event in enumerate(EVENTS)}
    return (
        events.with_columns(
            connection_id=pl.lit(connection_id), sync_id=pl.lit(sync_id), initial=pl.lit(initial),
            changed_at=timestamp_literal(changed_at),
        )
        .sort(pl.col("event").replace_strict(order, return_dtype=pl.Int32), "user_email", "group_email", "role",
              nulls_last=True)
        .select(DIRECTORY_CHANGES.column_names)
    )


def user_events(previous: pl.DataFrame, current: pl.DataFrame) -> pl.DataFrame:
    """user.created / deleted / updated, and the status events (suspended, archived, reactivated)."""
    before, after = _user_view(previous), _user_view(current)
    both = before.join(after, on="user_id", suffix="_new")
    status = both.filter(pl.col("status") != pl.col("status_new")).select(
        pl.col("status_new").replace_strict(STATUS_EVENTS).alias("event"), "user_id",
        pl.col("primary_email_new").alias("user_email"),
        _json("status").alias("before"), _json(pl.col("status_new").alias("status")).alias("after"),
    )
    lifecycle = _lifecycle_events(before, after, "user", "user_id", "primary_email", USER_ATTRIBUTES,
                                  described=USER_ATTRIBUTES + ("status",))
    return _events(*lifecycle, status)


def group_events(previous: pl.DataFrame, current: pl.DataFrame) -> pl.DataFrame:
    """group.created / deleted / updated, for every group of the customer (selected or not)."""
    return _events(*_lifecycle_events(previous, current, "group", "group_id", "email", GROUP_ATTRIBUTES,
                                      described=GROUP_ATTRIBUTES))


def _lifecycle_events(
    previous: pl.DataFrame, current: pl.DataFrame, kind: str, key: str, email: str, tracked: tuple[str, ...], *,
    described: tuple[str, ...],
) -> list[pl.DataFrame]:
    """<kind>.created / .deleted (with every ``described`` attribute) and .updated (only the changed ones)."""
    email_column = f"{kind}_email"
    updated = _attribute_changes(previous.join(current, on=key, suffix="_new"), (key,), tracked)
    return [
        _appeared(previous, current, (key,)).select(pl.lit(f"{kind}.created").alias("event"), key,
                                                    pl.col(email).alias(email_column),
                                                    _json(*described).alias("after")),
        _appeared(current, previous, (key,)).select(pl.lit(f"{kind}.deleted").alias("event"), key,
                                                    pl.col(email).alias(email_column),
                                                    _json(*described).alias("before")),
        updated.select(pl.lit(f"{kind}.updated").alias("event"), key, pl.col(f"{email}_new").alias(email_column),
                       "before", "after"),
    ]


def keyed_events(
    previous: pl.DataFrame, current: pl.DataFrame, key: tuple[str, ...], attributes: tuple[str, ...],
    added_event: str, removed_event: str,
) -> pl.DataFrame:
    """Rows whose key appeared (``added_event``) or disappeared (``removed_event``): memberships, roles."""
    def events(rows: pl.DataFrame, event: str, side: str) -> pl.DataFrame:
        identity = [c for c in ("user_id", "group_id", "group_email", "role") if c in rows.columns]
        return rows.select(pl.lit(event).alias("event"), *identity, pl.col("primary_email").alias("user_email"),
                           _json(*attributes).alias(side))

    return _events(
        events(_appeared(previous, current, key), added_event, "after"),
        events(_appeared(current, previous, key), removed_event, "before"),
    )


def _user_view(users: pl.DataFrame) -> pl.DataFrame:
    """Users with a single status column and aliases sorted (Google's alias order carries no meaning)."""
    return users.select(
        "user_id", *(c for c in USER_ATTRIBUTES if c != "aliases"), pl.col("aliases").list.sort(),
        pl.when(pl.col("archived")).then(pl.lit("archived"))
        .when(pl.col("suspended")).then(pl.lit("suspended")).otherwise(pl.lit("active")).alias("status"),
    )


def _appeared(before: pl.DataFrame, after: pl.DataFrame, key: tuple[str, ...]) -> pl.DataFrame:
    """Rows of ``after`` whose key is not in ``before``."""
    return after.join(before.select(key), on=list(key), how="anti")


def _attribute_changes(both: pl.DataFrame, key: tuple[str, ...], attributes: tuple[str, ...]) -> pl.DataFrame:
    """Rows of a ``_new``-suffixed join whose attributes differ: key, new values, JSON of just the changed ones.

    Few rows change between syncs, so the per-row JSON is built in Python only for those.
    """
    differs = pl.any_horizontal(pl.col(a).ne_missing(pl.col(f"{a}_new")) for a in attributes)
    changed = both.filter(differs)
    before, after = [], []
    for row in changed.iter_rows(named=True):
        names = [a for a in attributes if row[a] != row[f"{a}_new"]]
        before.append(_dumps({a: row[a] for a in names}))
        after.append(_dumps({a: row[f"{a}_new"] for a in names}))
    return changed.select(*key, *(f"{a}_new" for a in attributes)).with_columns(
        pl.Series("before", before, dtype=pl.Utf8), pl.Series("after", after, dtype=pl.Utf8),
    )


def _json(*columns: str | pl.Expr) -> pl.Expr:
    """The columns as one compact JSON object per row."""
    return pl.struct(*columns).struct.json_encode()


def _dumps(values: dict) -> str:
    """The same compact JSON that polars' ``struct.json_encode`` writes."""
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def _events(*frames: pl.DataFrame) -> pl.DataFrame:
    """Stack partial event frames into the event columns, NULL where a column does not apply."""
    schema = {c: pl.Utf8 for c in EVENT_COLUMNS}
    return pl.concat([
        frame.select(pl.col(c) if c in frame.columns else pl.lit(None, dtype=pl.Utf8).alias(c) for c in EVENT_COLUMNS)
        .cast(schema)
        for frame in frames
    ])
