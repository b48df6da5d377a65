"""explain_entitlements in chunks of users equals the unchunked original, on random directories.

``reference_explain`` / ``reference_paths`` are the implementation before chunking (commit 8dd50c3),
kept verbatim as the oracle: the chunked code must give the same rows, columns, order and lists.
"""

from __future__ import annotations

from contextlib import contextmanager

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from dirsync_pipeline.transforms import explain
from dirsync_pipeline.transforms.explain import PATH_SEPARATOR, explain_entitlements, membership_paths
from dirsync_pipeline.warehouse.tables import ENTITLEMENT_EXPLANATIONS, EVERY_USER, PATHS_PER_GROUP
from dirsync_pipeline.transforms.directory import (
    DIRECTORY_USER_TYPES,
    filtered_memberships,
    resolve_role_mapping,
    role_mapped_entitlements,
)

USER_IDS = ["alice", "bob", "carol", "dave", "erin", "fred", "gina"]
GROUP_IDS = ["g0", "g1", "g2", "g3", "g4"]
ROLES = ["admin", "developer", "sales"]


def reference_explain(
    entitlements: pl.DataFrame,
    memberships: pl.DataFrame,
    edges: pl.DataFrame,
    groups: pl.DataFrame,
    role_mapping: pl.DataFrame,
    *,
    default_role: str | None,
    role_priority: list[str] | None,
) -> pl.DataFrame:
    """Rows for core.entitlement_explanations, one per row of ``entitlements``.

    ``role_mapping`` is the (group_id, role) frame the entitlements were computed with.
    """
    active = memberships.filter(pl.col("user_active"))
    mapped = pl.col("granted_via").list.len() > 0
    explained = (
        entitlements.join(_reference_outranked(entitlements, active, role_mapping, default_role, role_priority),
                          on=["user_id", "role"], how="left")
        .join(active.group_by("user_id").agg(pl.col("group_email").unique().sort().alias("member_of")),
              on="user_id", how="left")
        .with_columns(
            rule=pl.when(mapped).then(pl.lit("role_mapping")).otherwise(pl.lit("default_role")),
            via_groups=pl.when(mapped).then("granted_via").otherwise("member_of"),
            outranked=pl.col("outranked").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
        )
    )
    paths = reference_paths(edges, groups, active.filter(pl.col("user_id").is_in(entitlements["user_id"].implode())))
    path_lists = (
        explained.select("user_id", "role", pl.col("via_groups").alias("group_email")).explode("group_email")
        .join(paths, on=["user_id", "group_email"])
        .sort("group_email", "depth", "path")
        .group_by("user_id", "role", maintain_order=True).agg("path")
    )
    return (
        explained.join(path_lists, on=["user_id", "role"], how="left")
        .with_columns(paths=pl.col("path").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))))
        .select(ENTITLEMENT_EXPLANATIONS.column_names)
        .sort("primary_email", "role")
    )


def reference_paths(edges: pl.DataFrame, groups: pl.DataFrame, memberships: pl.DataFrame) -> pl.DataFrame:
    """(user_id, group_email, depth, path) for the shortest ways each membership reaches its user.

    Breadth-first from each selected group: a nested group is recorded at the depth it is first
    reached (so cycles end), with at most PATHS_PER_GROUP chains per (selected group, nested group).
    """
    emails = dict(zip(groups["group_id"].to_list(), groups["email"].to_list(), strict=True))
    nested = (edges.filter(pl.col("member_type") == "GROUP")
              .select("group_id", pl.col("member_id").alias("child_id")).unique())
    roots = memberships.select(pl.col("group_id").unique())
    reached = roots.select(pl.col("group_id").alias("root_id"), "group_id", pl.concat_list("group_id").alias("chain"))
    frontier = reached
    while frontier.height:
        step = (
            frontier.join(nested, on="group_id")
            .select("root_id", pl.col("child_id").alias("group_id"), pl.col("chain").list.concat(pl.col("child_id")))
            .join(reached.select("root_id", "group_id"), on=["root_id", "group_id"], how="anti")
            .group_by("root_id", "group_id", maintain_order=True).head(PATHS_PER_GROUP)
        )
        reached, frontier = pl.concat([reached, step]), step
    users = memberships.select("user_id", "primary_email", pl.col("group_id").alias("root_id"))
    people = (edges.filter(pl.col("member_type").is_in(DIRECTORY_USER_TYPES))
              .select("group_id", pl.col("member_id").alias("user_id")))
    customers = edges.filter(pl.col("member_type") == "CUSTOMER").select("group_id").unique()
    ends = pl.concat([
        reached.join(people, on="group_id").join(users, on=["root_id", "user_id"])
        .with_columns(end=pl.col("primary_email")),
        reached.join(customers, on="group_id").join(users, on="root_id").with_columns(end=pl.lit(EVERY_USER)),
    ])
    return (
        ends.select(
            "user_id",
            pl.col("root_id").replace(emails).alias("group_email"),
            pl.col("chain").list.len().alias("depth"),
            # a nested group that groups.list does not show (another customer's) keeps its id
            pl.col("chain").list.eval(pl.element().replace(emails)).list.concat(pl.col("end"))
            .list.join(PATH_SEPARATOR).alias("path"),
        )
        .sort("depth", "path")
        .group_by("user_id", "group_email", maintain_order=True).head(PATHS_PER_GROUP)
    )


def _reference_outranked(
    entitlements: pl.DataFrame, active: pl.DataFrame, role_mapping: pl.DataFrame,
    default_role: str | None, role_priority: list[str] | None,
) -> pl.DataFrame:
    """(user_id, role, outranked): roles the user qualified for that lost to the role they were given.

    Empty unless role_assignment is ``highest_priority``, which keeps one role per user.
    """
    qualified = role_mapped_entitlements(active, role_mapping, default_role=default_role, role_assignment="all",
                                         role_priority=None)
    rank = {role: i for i, role in enumerate(role_priority or [])}
    lost = (
        qualified.join(entitlements.select("user_id", "role"), on=["user_id", "role"], how="anti")
        .sort(pl.col("role").replace_strict(rank, default=len(rank), return_dtype=pl.Int64), "role")
        .group_by("user_id", maintain_order=True).agg(pl.col("role").alias("outranked"))
    )
    return entitlements.select("user_id", "role").join(lost, on="user_id")



@contextmanager
def chunk_rows(rows: int):
    saved = explain.CHUNK_ROWS
    explain.CHUNK_ROWS = rows
    try:
        yield
    finally:
        explain.CHUNK_ROWS = saved


def directory(raw_edges: list[tuple[str, str]], inactive: set[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    users = pl.DataFrame({
        "user_id": USER_IDS, "primary_email": [f"{u}@corp.com" for u in USER_IDS],
        "suspended": [u in inactive for u in USER_IDS], "archived": [False] * len(USER_IDS),
    })
    groups = pl.DataFrame({"group_id": GROUP_IDS, "email": [f"{g}@corp.com" for g in GROUP_IDS]})
    kinds = {"C0": "CUSTOMER", "ext": "EXTERNAL"}
    rows = sorted({(g, m, kinds.get(m, "GROUP" if m.startswith(("g", "x")) else "USER")) for g, m in raw_edges})
    edges = pl.DataFrame(rows, schema={"group_id": pl.Utf8, "member_id": pl.Utf8, "member_type": pl.Utf8}, orient="row")
    return users, groups, edges


random_edges = st.lists(
    st.tuples(st.sampled_from(GROUP_IDS + ["x-other"]),
              st.sampled_from(GROUP_IDS + ["x-other", *USER_IDS, "stranger", "C0"])),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    raw_edges=random_edges,
    inactive=st.sets(st.sampled_from(USER_IDS), max_size=2),
    selected=st.sets(st.sampled_from(GROUP_IDS), min_size=1),
    mapping=st.dictionaries(st.sampled_from(GROUP_IDS),
                            st.lists(st.sampled_from(ROLES), min_size=1, max_size=2, unique=True), max_size=3),
    default_role=st.sampled_from([None, "member"]),
    highest_priority=st.booleans(),
    rows=st.sampled_from([1, 2, 3, 1000]),
)
def test_chunked_explanations_equal_the_unchunked_original(raw_edges, inactive, selected, mapping, default_role,
                                                           highest_priority, rows):
    users, groups, edges = directory(raw_edges, inactive)
    memberships, _ = filtered_memberships("c1", users, groups, edges, sorted(selected))
    role_mapping, _ = resolve_role_mapping(groups, mapping)
    priority = [*ROLES, "member"] if highest_priority else None
    entitlements = role_mapped_entitlements(memberships, role_mapping, default_role=default_role,
                                            role_assignment="highest_priority" if highest_priority else "all",
                                            role_priority=priority)
    expected = reference_explain(entitlements, memberships, edges, groups, role_mapping, default_role=default_role,
                                 role_priority=priority)
    with chunk_rows(rows):
        explained = explain_entitlements(entitlements, memberships, edges, groups, role_mapping,
                                         default_role=default_role, role_priority=priority)
    ENTITLEMENT_EXPLANATIONS.pandera_schema().validate(explained)
    assert explained.schema == expected.schema
    assert explained.rows() == expected.rows()

    active = memberships.filter(pl.col("user_active"))
    key = ["user_id", "group_email", "depth", "path"]
    paths = membership_paths(edges, groups, active)
    assert paths.sort(key).rows() == reference_paths(edges, groups, active).sort(key).rows()


def test_chunks_are_email_ranges_that_keep_a_users_roles_together():
    entitlements = pl.DataFrame({
        "user_id": ["u3", "u1", "u2", "u1", "u4", "u2"],
        "primary_email": ["c@x", "a@x", "b@x", "a@x", "d@x", "b@x"],
    })
    with chunk_rows(2):
        chunks = list(explain._email_ranges(entitlements))
    assert len(chunks) == 3  # about CHUNK_ROWS rows each, split by user
    assert [sorted(set(c["primary_email"])) for c in chunks] == [["a@x", "b@x"], ["c@x"], ["d@x"]]
    assert sum(c.height for c in chunks) == entitlements.height
    with chunk_rows(2):
        assert [c.height for c in explain._email_ranges(entitlements.clear())] == [0]


def test_paths_through_a_customer_member_come_in_user_order():
    users, groups, edges = directory([("g0", "C0")], set())
    memberships, _ = filtered_memberships("c1", users, groups, edges, ["g0"])
    paths = membership_paths(edges, groups, memberships)
    assert paths["user_id"].to_list() == USER_IDS
    assert set(paths["path"]) == {f"g0@corp.com{PATH_SEPARATOR}{EVERY_USER}"}
