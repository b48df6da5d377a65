"""Semantics of memberships and entitlements, on small hand-made directories and random ones."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from dirsync_pipeline.transforms.directory import (
    filtered_memberships,
    nested_group_closure,
    resolve_group_keys,
    resolve_role_mapping,
    role_mapped_entitlements,
)


def users_frame(*users: tuple[str, bool, bool]) -> pl.DataFrame:
    """(user_id, suspended, archived) -> a users frame; email is <id>@corp.com."""
    return pl.DataFrame(
        [(uid, f"{uid}@corp.com", s, a) for uid, s, a in users],
        schema={"user_id": pl.Utf8, "primary_email": pl.Utf8, "suspended": pl.Boolean, "archived": pl.Boolean},
        orient="row",
    )


def groups_frame(*group_ids: str) -> pl.DataFrame:
    return pl.DataFrame({"group_id": list(group_ids), "email": [f"{g}@corp.com" for g in group_ids]})


def edges_frame(*edges: tuple[str, str, str]) -> pl.DataFrame:
    """(group_id, member_id, member_type) edges."""
    return pl.DataFrame(edges, schema={"group_id": pl.Utf8, "member_id": pl.Utf8, "member_type": pl.Utf8}, orient="row")


def as_set(frame: pl.DataFrame, *columns: str) -> set[tuple]:
    return set(frame.select(columns).iter_rows())


USERS = users_frame(("alice", False, False), ("bob", False, False), ("carol", True, False), ("dave", False, True), ("erin", False, False))
GROUPS = groups_frame("eng", "backend", "db", "all", "loop_a", "loop_b", "empty")


def test_nested_members_at_any_depth_count_once_and_direct_wins():
    edges = edges_frame(("eng", "backend", "GROUP"), ("backend", "db", "GROUP"), ("db", "alice", "USER"),
                        ("eng", "alice", "USER"), ("backend", "bob", "USER"))
    memberships, stats = filtered_memberships("c1", USERS, GROUPS, edges, ["eng"])
    assert as_set(memberships, "user_id", "group_id", "is_direct") == {("alice", "eng", True), ("bob", "eng", False)}
    assert stats.expanded_groups == 3
    assert memberships["connection_id"].unique().to_list() == ["c1"]


def test_cycles_terminate_without_duplicates():
    edges = edges_frame(("loop_a", "loop_b", "GROUP"), ("loop_b", "loop_a", "GROUP"), ("loop_b", "bob", "USER"),
                        ("loop_a", "loop_a", "GROUP"))
    memberships, _ = filtered_memberships("c1", USERS, GROUPS, edges, ["loop_a", "loop_b"])
    assert sorted(memberships.select("user_id", "group_id", "is_direct").iter_rows()) == [
        ("bob", "loop_a", False), ("bob", "loop_b", True)]


def test_customer_member_means_every_directory_user_including_inactive():
    edges = edges_frame(("all", "C0123", "CUSTOMER"))
    memberships, _ = filtered_memberships("c1", USERS, GROUPS, edges, ["all"])
    assert as_set(memberships, "user_id") == {("alice",), ("bob",), ("carol",), ("dave",), ("erin",)}
    assert not memberships["is_direct"].any()
    assert as_set(memberships.filter(~pl.col("user_active")), "user_id") == {("carol",), ("dave",)}


def test_members_outside_the_directory_are_left_out_and_counted():
    edges = edges_frame(("eng", "partner-1", "USER"), ("eng", "ext-9", "EXTERNAL"), ("eng", "bob", "USER"))
    memberships, stats = filtered_memberships("c1", USERS, GROUPS, edges, ["eng"])
    assert as_set(memberships, "user_id") == {("bob",)}
    assert stats.outside_members == 2


def test_unselected_groups_and_empty_selected_groups_give_nothing():
    edges = edges_frame(("backend", "bob", "USER"))
    memberships, _ = filtered_memberships("c1", USERS, GROUPS, edges, ["empty"])
    assert memberships.is_empty()


def test_group_keys_resolve_by_id_or_case_insensitive_email():
    resolution = resolve_group_keys(GROUPS, ["ENG@Corp.com", "db", "missing@corp.com", "eng"])
    assert resolution.group_ids == ["eng", "db"]
    assert resolution.unknown_keys == ["missing@corp.com"]


def memberships_for(edges: pl.DataFrame, selected: list[str]) -> pl.DataFrame:
    return filtered_memberships("c1", USERS, GROUPS, edges, selected)[0]


ROLE_EDGES = edges_frame(("eng", "alice", "USER"), ("eng", "backend", "GROUP"), ("backend", "bob", "USER"),
                         ("all", "C0", "CUSTOMER"), ("eng", "carol", "USER"))


def test_roles_are_the_union_of_mapped_roles_with_sorted_sources_and_only_for_active_users():
    memberships = memberships_for(ROLE_EDGES, ["eng", "backend", "all"])
    mapping, unknown = resolve_role_mapping(GROUPS, {"eng@corp.com": ["developer"], "backend": ["developer", "oncall"],
                                                     "nope@corp.com": ["x"]})
    entitlements = role_mapped_entitlements(memberships, mapping, default_role=None, role_assignment="all", role_priority=None)
    assert unknown == ["nope@corp.com"]
    rows = {(r["user_id"], r["role"]): r["granted_via"] for r in entitlements.iter_rows(named=True)}
    assert rows == {
        ("alice", "developer"): ["eng@corp.com"],
        ("bob", "developer"): ["backend@corp.com", "eng@corp.com"],
        ("bob", "oncall"): ["backend@corp.com"],
    }  # carol is suspended, erin is only in the unmapped `all`, and there is no default role


def test_default_role_only_for_users_without_a_mapped_role():
    memberships = memberships_for(ROLE_EDGES, ["eng", "all"])
    mapping, _ = resolve_role_mapping(GROUPS, {"eng": ["developer"]})
    entitlements = role_mapped_entitlements(memberships, mapping, default_role="member", role_assignment="all", role_priority=None)
    assert as_set(entitlements, "user_id", "role") == {("alice", "developer"), ("bob", "developer"), ("erin", "member")}
    assert entitlements.filter(pl.col("role") == "member")["granted_via"].to_list() == [[]]


def test_highest_priority_keeps_one_best_role_per_user():
    memberships = memberships_for(ROLE_EDGES, ["eng", "backend", "all"])
    mapping, _ = resolve_role_mapping(GROUPS, {"eng": ["developer"], "backend": ["admin", "developer"]})
    entitlements = role_mapped_entitlements(memberships, mapping, default_role="member",
                                            role_assignment="highest_priority", role_priority=["admin", "developer", "member"])
    assert as_set(entitlements, "user_id", "role") == {("alice", "developer"), ("bob", "admin"), ("erin", "member")}


# -- an independent oracle: naive graph walks on random directories ------------------------------

def oracle_members(edges: list[tuple[str, str, str]], root: str, user_ids: set[str]) -> dict[str, bool]:
    """user -> is_direct, by a plain depth-first walk with a visited set."""
    found: dict[str, bool] = {}
    stack, visited = [root], set()
    while stack:
        group = stack.pop()
        if group in visited:
            continue
        visited.add(group)
        for g, member, kind in edges:
            if g != group:
                continue
            if kind == "GROUP":
                stack.append(member)
            elif kind == "CUSTOMER":
                for uid in user_ids:
                    found[uid] = found.get(uid, False)
            elif member in user_ids:
                found[member] = found.get(member, False) or group == root
    return found


random_edges = st.lists(
    st.tuples(st.sampled_from(["g0", "g1", "g2", "g3", "g4"]),
              st.sampled_from(["g0", "g1", "g2", "g3", "g4", "alice", "bob", "carol", "dave", "erin", "stranger", "C0"])),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(raw_edges=random_edges, selected=st.sets(st.sampled_from(["g0", "g1", "g2", "g3", "g4"]), min_size=1))
def test_memberships_equal_a_naive_graph_walk(raw_edges, selected):
    kinds = {"C0": "CUSTOMER"}
    edges = sorted({(g, m, kinds.get(m, "GROUP" if m.startswith("g") else "USER")) for g, m in raw_edges})
    groups = groups_frame("g0", "g1", "g2", "g3", "g4")
    memberships, _ = filtered_memberships("c1", USERS, groups, edges_frame(*edges) if edges else edges_frame(), sorted(selected))
    user_ids = set(USERS["user_id"].to_list())
    expected = {(u, g, d) for g in selected for u, d in oracle_members(edges, g, user_ids).items()}
    assert as_set(memberships, "user_id", "group_id", "is_direct") == expected


def test_closure_includes_roots_and_reaches_depth_six():
    chain = edges_frame(*[(f"d{i}", f"d{i + 1}", "GROUP") for i in range(6)])
    closure = nested_group_closure(chain, ["d0"])
    assert sorted(closure["group_id"].to_list()) == [f"d{i}" for i in range(7)]
