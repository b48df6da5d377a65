"""Pure transformations from raw directory tables to memberships and entitlements (polars, no I/O).

These functions hold the product's semantics, so they take and return plain polars frames and are
tested without Dagster, Google or DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

DIRECTORY_USER_TYPES = ("USER", "EXTERNAL")


@dataclass(frozen=True)
class GroupResolution:
    """Config group keys (emails or ids) resolved to the immutable Google group ids."""

    group_ids: list[str]
    unknown_keys: list[str]


def resolve_group_keys(groups: pl.DataFrame, keys: list[str]) -> GroupResolution:
    """Match each key to a group id, or to a group email case-insensitively."""
    by_id = set(groups["group_id"].to_list())
    by_email = dict(zip(groups["email"].str.to_lowercase().to_list(), groups["group_id"].to_list(), strict=True))
    ids: list[str] = []
    unknown: list[str] = []
    for key in keys:
        group_id = key if key in by_id else by_email.get(key.lower())
        if group_id is None:
            unknown.append(key)
        elif group_id not in ids:
            ids.append(group_id)
    return GroupResolution(ids, unknown)


def resolve_role_mapping(groups: pl.DataFrame, role_mapping: dict[str, list[str]]) -> tuple[pl.DataFrame, list[str]]:
    """Role mapping as a (group_id, role) frame, plus the mapping keys that match no group."""
    resolution_rows: list[tuple[str, str]] = []
    unknown: list[str] = []
    for key, roles in role_mapping.items():
        resolved = resolve_group_keys(groups, [key])
        unknown.extend(resolved.unknown_keys)
        resolution_rows.extend((group_id, role) for group_id in resolved.group_ids for role in roles)
    frame = pl.DataFrame(resolution_rows, schema={"group_id": pl.Utf8, "role": pl.Utf8}, orient="row").unique()
    return frame, unknown


def nested_group_closure(edges: pl.DataFrame, root_group_ids: list[str]) -> pl.DataFrame:
    """(root_group_id, group_id) for every group reachable from a root through GROUP members, roots included.

    Breadth-first joins until no new pair appears: any nesting depth, and cycles terminate because
    a pair already in the closure is never expanded again.
    """
    child_groups = (
        edges.filter(pl.col("member_type") == "GROUP")
        .select("group_id", pl.col("member_id").alias("child_id"))
        .unique()
    )
    closure = pl.DataFrame({"root_group_id": root_group_ids, "group_id": root_group_ids}, schema={"root_group_id": pl.Utf8, "group_id": pl.Utf8})
    frontier = closure
    while frontier.height:
        reached = (
            frontier.join(child_groups, on="group_id")
            .select("root_group_id", pl.col("child_id").alias("group_id"))
            .unique()
        )
        frontier = reached.join(closure, on=["root_group_id", "group_id"], how="anti")
        closure = pl.concat([closure, frontier])
    return closure


@dataclass(frozen=True)
class MembershipStats:
    outside_members: int  # distinct member ids in selected groups that are not directory users
    selected_groups: int
    expanded_groups: int  # selected groups plus every group nested in them


def filtered_memberships(
    connection_id: str,
    users: pl.DataFrame,
    groups: pl.DataFrame,
    edges: pl.DataFrame,
    selected_group_ids: list[str],
) -> tuple[pl.DataFrame, MembershipStats]:
    """One row per (directory user, selected group) the user belongs to: directly, nested, or via CUSTOMER.

    Users and groups are numbered in (email) order, so the expansion, the deduplication and the sort
    work on integer pairs and the string columns are gathered once, into the sorted result: hashing
    and sorting hundreds of thousands of string pairs cost more time and memory than the closure.
    """
    edges = edges.select("group_id", "member_id", "member_type")
    closure = nested_group_closure(edges, selected_group_ids)
    # numbered by a stable sort, as ordinal ranks: user u is row u of user_rows, group r row r of group_rows
    user_rows = users.select(
        "user_id", "primary_email", user_active=~(pl.col("suspended") | pl.col("archived")),
    ).sort("primary_email", maintain_order=True)
    group_rows = groups.select("group_id", group_email="email").sort("group_email", maintain_order=True)
    pairs, outside = _membership_pairs(edges, closure, user_rows["user_id"], group_rows["group_id"])
    user_part = user_rows.select(pl.all().gather(pairs["u"]))
    group_part = group_rows.select(pl.all().gather(pairs["r"]))
    memberships = pl.DataFrame([
        pl.repeat(connection_id, pairs.height, dtype=pl.Utf8, eager=True).alias("connection_id"),
        user_part["user_id"], user_part["primary_email"], group_part["group_id"], group_part["group_email"],
        pairs["is_direct"], user_part["user_active"],
    ])
    stats = MembershipStats(outside, len(selected_group_ids), closure["group_id"].n_unique())
    return memberships, stats


def _membership_pairs(edges: pl.DataFrame, closure: pl.DataFrame, user_ids: pl.Series, group_ids: pl.Series
                      ) -> tuple[pl.DataFrame, int]:
    """(r, u, is_direct) sorted by (r, u), for group ``group_ids[r]`` and user ``user_ids[u]``; and the outside members.

    Each (root, user) path becomes one integer r * 2**33 + u * 2 + is_direct: sorted, the last key of a
    pair says whether any of its paths is direct, so deduplication and order cost one integer sort.
    """
    user_index = pl.DataFrame({"user_id": user_ids}).with_row_index("u")
    # the groups each root reaches; a root that groups.list lacks has no number and no memberships
    reached = closure.join(
        pl.DataFrame({"root_group_id": group_ids}).with_row_index("r"), on="root_group_id",
    ).select("group_id", "r", is_direct=pl.col("group_id") == pl.col("root_group_id"))
    in_reach = edges.filter(pl.col("group_id").is_in(closure["group_id"].implode()))
    people = (in_reach.filter(pl.col("member_type").is_in(DIRECTORY_USER_TYPES)).select("group_id", "member_id")
              .join(user_index, left_on="member_id", right_on="user_id", how="left"))
    outside = people.filter(pl.col("u").is_null())["member_id"].n_unique()
    # A CUSTOMER member stands for every user of the directory.
    customer_groups = in_reach.filter(pl.col("member_type") == "CUSTOMER")["group_id"].implode()
    customer_roots = reached.filter(pl.col("group_id").is_in(customer_groups)).select(pl.col("r").unique())
    keys = pl.concat([
        reached.lazy().join(people.lazy().drop_nulls("u").select("group_id", "u"), on="group_id")
        .select(_pair_key("r", "u", pl.col("is_direct"))),
        customer_roots.lazy().join(user_index.lazy().select("u"), how="cross")
        .select(_pair_key("r", "u", pl.lit(False))),
    ]).collect()["key"].sort()
    pair = keys // 2
    keys = keys.filter((pair != pair.shift(-1)).fill_null(True))  # the last key of each pair
    return pl.select(r=keys // 2**33, u=keys // 2 % 2**32, is_direct=keys % 2 == 1), outside


def _pair_key(r: str, u: str, is_direct: pl.Expr) -> pl.Expr:
    return (pl.col(r).cast(pl.UInt64) * 2**33 + pl.col(u).cast(pl.UInt64) * 2 + is_direct.cast(pl.UInt64)).alias("key")


def role_mapped_entitlements(
    memberships: pl.DataFrame,
    role_mapping: pl.DataFrame,
    *,
    default_role: str | None,
    role_assignment: str,
    role_priority: list[str] | None,
) -> pl.DataFrame:
    """One row per (active user, role): mapped roles of the user's selected groups, or the default role.

    ``role_mapping`` is a (group_id, role) frame. ``granted_via`` lists, sorted, the emails of the
    selected groups that gave the role (empty for the default role). With ``highest_priority`` only
    the user's best role by ``role_priority`` is kept.
    """
    active = memberships.lazy().filter(pl.col("user_active")).select(
        "connection_id", "user_id", "primary_email", "group_id", "group_email")
    mapped = (
        active.filter(pl.col("group_id").is_in(role_mapping["group_id"].implode()))  # few rows reach the join
        .join(role_mapping.lazy(), on="group_id")
        .group_by("connection_id", "user_id", "primary_email", "role")
        .agg(pl.col("group_email").unique().sort().alias("granted_via"))
        .collect()
    )
    entitlements = mapped
    if default_role:
        # the users without a mapped role first, then their distinct rows: most rows belong to mapped users
        unmapped_users = (active.join(mapped.lazy().select("user_id"), on="user_id", how="anti")
                          .select("connection_id", "user_id", "primary_email").unique().collect())
        defaults = unmapped_users.with_columns(
            role=pl.lit(default_role), granted_via=pl.lit([], dtype=pl.List(pl.Utf8))
        )
        entitlements = pl.concat([mapped, defaults.select(mapped.columns)])
    if role_assignment == "highest_priority":
        rank = {role: i for i, role in enumerate(role_priority or [])}
        entitlements = (
            entitlements.with_columns(rank=pl.col("role").replace_strict(rank, default=len(rank), return_dtype=pl.Int64))
            .sort("rank")
            .unique(subset=["user_id"], keep="first")
            .drop("rank")
        )
    return entitlements.select("connection_id", "user_id", "primary_email", "role", "granted_via").sort("primary_email", "role")
