"""The SQL change events and SCD2 history against a naive restatement, on random directories and mutations.

The expectations are plain Python loops over row dicts (no polars, no SQL), with the JSON written by
``json.dumps``: the text the events carried when they were computed in polars.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta

import polars as pl
import pytest

from dirsync_pipeline.warehouse.history import MEMBERSHIPS, advance_history
from dirsync_pipeline.warehouse.tables import (
    EVENTS,
    FILTERED_MEMBERSHIPS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    MEMBERSHIPS_HISTORY,
    ROLE_MAPPED_ENTITLEMENTS,
)
from tests.test_changes import T0, State, changes, frame, warehouse

USER_ATTRIBUTES = ("primary_email", "given_name", "family_name", "full_name", "is_admin", "org_unit_path", "aliases")
GROUP_ATTRIBUTES = ("email", "name", "description", "admin_created")
NAMES = ["Ann", "Zoë", 'O"Brien', "back\\slash", "", None, "日本語", "a/b <c>", "tab\there"]
STATUS_EVENTS = {"active": "user.reactivated", "suspended": "user.suspended", "archived": "user.archived"}


def random_state(rng: random.Random) -> dict[str, list[dict]]:
    """A directory of 40 user and 8 group ids, mostly at default values, so that two draws overlap and differ."""
    def pick(default: object, *others: object) -> object:
        return default if rng.random() < 0.85 else rng.choice(others)

    user_ids = [f"u{i}" for i in range(40) if rng.random() < 0.8]
    group_ids = [f"g{i}" for i in range(8) if rng.random() < 0.8]
    people = [{
        "user_id": u, "primary_email": pick(f"{u}@corp.com", f"{u}.new@corp.com"),
        "given_name": pick("Ann", *NAMES), "family_name": pick("Lee", *NAMES), "full_name": pick("Ann Lee", *NAMES),
        "is_admin": pick(False, True), "suspended": pick(False, True), "archived": pick(False, True),
        "org_unit_path": pick("/", "/eng", "/ops"),
        "aliases": rng.sample([f"{u}.a@corp.com", f"{u}.b@corp.com"], pick(0, 1, 2)),
    } for u in user_ids]
    group_rows = [{"group_id": g, "email": pick(f"{g}@corp.com", f"{g}-x@corp.com"), "name": pick("G", *NAMES),
                   "description": pick("", *NAMES), "admin_created": pick(True, False)} for g in group_ids]
    emails = {p["user_id"]: p["primary_email"] for p in people}
    group_emails = {g["group_id"]: g["email"] for g in group_rows}
    member_rows = [{"user_id": u, "primary_email": emails[u], "group_id": g, "group_email": group_emails[g],
                    "is_direct": pick(True, False)}
                   for u in user_ids for g in group_ids if (random.Random(u + g).random() < 0.3) != (rng.random() < 0.1)]
    role_rows = [{"user_id": u, "primary_email": emails[u], "role": r,
                  "granted_via": pick(sorted(group_emails.values())[:1], sorted(group_emails.values())[:2], [])}
                 for u in user_ids for r in ("admin", "developer", "member") if rng.random() < 0.5]
    return {"users": people, "groups": group_rows, "memberships": member_rows, "entitlements": role_rows}


def as_frames(state: dict[str, list[dict]], other: dict[str, list[dict]], rng: random.Random) -> State:
    """``state`` as connection c1's frames, next to ``other`` as c2's (which must not leak into c1's events)."""
    def rows(name: str, extra: dict) -> list[dict]:
        return ([{**extra, **r, "connection_id": "c1"} for r in state[name]]
                + [{**extra, **r, "connection_id": "c2"} for r in other[name]])

    noise = {"last_login_time": rng.choice([None, T0]), "synced_at": T0 + timedelta(hours=rng.randint(0, 9)),
             "creation_time": T0}  # not tracked: never an event
    return State(
        frame(GOOGLE_USERS, rows("users", noise), {}),
        frame(GOOGLE_GROUPS, rows("groups", {"direct_members_count": rng.randint(0, 9), "synced_at": T0}), {}),
        frame(FILTERED_MEMBERSHIPS, rows("memberships", {"user_active": True}), {}),
        frame(ROLE_MAPPED_ENTITLEMENTS, rows("entitlements", {}), {}),
    )


def dumps(values: dict) -> str:
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def expected_events(previous: dict[str, list[dict]] | None, current: dict[str, list[dict]]) -> list[tuple]:
    """(event, user_id, user_email, group_id, group_email, role, before, after) of every change, naively."""
    previous = previous or {name: [] for name in current}
    events = []

    def status(user: dict) -> str:
        return "archived" if user["archived"] else "suspended" if user["suspended"] else "active"

    def described(user: dict) -> dict:
        return {**{a: sorted(user[a]) if a == "aliases" else user[a] for a in USER_ATTRIBUTES}, "status": status(user)}

    def lifecycle(name: str, key: str, email: str, attributes: tuple[str, ...], view, row) -> None:
        old = {r[key]: view(r) for r in previous[name]}
        new = {r[key]: view(r) for r in current[name]}
        kind = name.removesuffix("s")
        for k in new.keys() - old.keys():
            events.append(row(f"{kind}.created", k, new[k][email], None, dumps(new[k])))
        for k in old.keys() - new.keys():
            events.append(row(f"{kind}.deleted", k, old[k][email], dumps(old[k]), None))
        for k in old.keys() & new.keys():
            changed = [a for a in attributes if old[k][a] != new[k][a]]
            if changed:
                events.append(row(f"{kind}.updated", k, new[k][email], dumps({a: old[k][a] for a in changed}),
                                  dumps({a: new[k][a] for a in changed})))
            if kind == "user" and old[k]["status"] != new[k]["status"]:
                events.append(row(STATUS_EVENTS[new[k]["status"]], k, new[k][email],
                                  dumps({"status": old[k]["status"]}), dumps({"status": new[k]["status"]})))

    lifecycle("users", "user_id", "primary_email", USER_ATTRIBUTES, described,
              lambda e, k, mail, before, after: (e, k, mail, None, None, None, before, after))
    lifecycle("groups", "group_id", "email", GROUP_ATTRIBUTES, lambda g: {a: g[a] for a in GROUP_ATTRIBUTES},
              lambda e, k, mail, before, after: (e, None, None, k, mail, None, before, after))
    for name, key, attribute, added, removed in (("memberships", ("user_id", "group_id"), "is_direct",
                                                  "membership.added", "membership.removed"),
                                                 ("entitlements", ("user_id", "role"), "granted_via",
                                                  "role.granted", "role.revoked")):
        old = {tuple(r[c] for c in key): r for r in previous[name]}
        new = {tuple(r[c] for c in key): r for r in current[name]}
        for event, rows, other, side in ((added, new, old, "after"), (removed, old, new, "before")):
            for k in rows.keys() - other.keys():
                r = rows[k]
                value = dumps({attribute: r[attribute]})
                events.append((event, r["user_id"], r["primary_email"], r.get("group_id"), r.get("group_email"),
                               r.get("role"), value if side == "before" else None, value if side == "after" else None))
    return events


def order_key(event: tuple) -> tuple:
    """The documented order of the appended rows: event, then user email, group email, role (NULLs last)."""
    _event, _user, user_email, _group, group_email, role, *_ = event
    return (EVENTS.index(event[0]), *((value is None, value or "") for value in (user_email, group_email, role)))


@pytest.mark.parametrize("seed", range(12))
def test_the_sql_events_are_the_naive_differences_json_and_all(seed):
    rng = random.Random(seed)
    states = [random_state(rng) for _ in range(3)]
    for previous, current in ((None, states[0]), (states[0], states[1]), (states[1], states[2]),
                              (states[2], states[2])):
        events = changes(previous and as_frames(previous, random_state(rng), rng),
                         as_frames(current, random_state(rng), rng))
        rows = events.select("event", "user_id", "user_email", "group_id", "group_email", "role", "before",
                             "after").rows()
        assert sorted(rows, key=repr) == sorted(expected_events(previous, current), key=repr)
        assert [order_key(r) for r in rows] == sorted(order_key(r) for r in rows)
        assert events["initial"].to_list() == [previous is None] * events.height


def expected_history(syncs: list[list[dict]]) -> set[tuple]:
    """Every version of the memberships published at T0, T0+1h, ...: plain SCD2 bookkeeping."""
    tracked = ("primary_email", "group_email", "is_direct")
    open_versions: dict[tuple, dict] = {}
    closed: list[dict] = []
    for hour, rows in enumerate(syncs):
        at = T0 + timedelta(hours=hour)
        current = {(r["user_id"], r["group_id"]): r for r in rows}
        for key, version in list(open_versions.items()):
            row = current.get(key)
            if row is None or any(row[a] != version[a] for a in tracked):
                closed.append({**open_versions.pop(key), "valid_to": at})
        for key, row in current.items():
            if key not in open_versions:
                held = next((v["held_since"] for v in reversed(closed) if v["key"] == key and v["valid_to"] == at), at)
                open_versions[key] = {**{a: row[a] for a in tracked}, "key": key, "valid_from": at, "valid_to": None,
                                      "held_since": held, "sync_id": f"s{hour}"}
    return {(*v["key"], *(v[a] for a in tracked), v["valid_from"], v["valid_to"], v["held_since"], v["sync_id"])
            for v in [*closed, *open_versions.values()]}


@pytest.mark.parametrize("seed", range(6))
def test_the_sql_history_is_naive_scd2_and_never_rewrites_a_closed_version(seed):
    rng = random.Random(seed)
    syncs = [random_state(rng)["memberships"] for _ in range(5)]
    syncs.insert(3, syncs[2])  # an unchanged sync opens and closes nothing
    store = warehouse(MEMBERSHIPS_HISTORY)
    closed: set[tuple] = set()
    for hour, rows in enumerate(syncs):
        store.register("current", as_frames({"users": [], "groups": [], "memberships": rows, "entitlements": []},
                                            random_state(rng), rng).memberships)
        advance_history(store, MEMBERSHIPS, "current", connection_id="c1", sync_id=f"s{hour}",
                        at=T0 + timedelta(hours=hour))
        history = MEMBERSHIPS_HISTORY.read(store, "c1")
        MEMBERSHIPS_HISTORY.pandera_schema().validate(history)
        assert closed <= set(history.rows()), "closed versions are never rewritten"
        closed = set(history.filter(pl.col("valid_to").is_not_null()).rows())
    columns = ("user_id", "group_id", "primary_email", "group_email", "is_direct", "valid_from", "valid_to",
               "held_since", "sync_id")
    assert set(history.select(columns).rows()) == expected_history(syncs)
