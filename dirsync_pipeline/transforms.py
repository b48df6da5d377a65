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

    One lazy query, so polars runs it in parallel and never materialises the unused edge columns;
    rows are ordered by (group email, user email) through integer ranks of the two small tables,
    because sorting millions of rows on two string columns cost more than the whole closure.
    """
    edges = edges.select("group_id", "member_id", "member_type")
    closure = nested_group_closure(edges, selected_group_ids)
    reachable = closure.lazy().join(edges.lazy(), on="group_id")
    person_paths = reachable.filter(pl.col("member_type").is_in(DIRECTORY_USER_TYPES)).select(
        "root_group_id",
        pl.col("member_id").alias("user_id"),
        (pl.col("group_id") == pl.col("root_group_id")).alias("is_direct"),
    )
    # A CUSTOMER member stands for every user of the directory.
    customer_roots = reachable.filter(pl.col("member_type") == "CUSTOMER").select("root_group_id").unique()
    customer_paths = customer_roots.join(users.lazy().select("user_id"), how="cross").with_columns(is_direct=pl.lit(False))
    paths = pl.concat([person_paths, customer_paths])

    known_users = users.lazy().select(
        "user_id", "primary_email", user_active=~(pl.col("suspended") | pl.col("archived")),
        user_rank=pl.col("primary_email").rank("ordinal"),
    )
    group_emails = groups.lazy().select(
        pl.col("group_id").alias("root_group_id"), pl.col("email").alias("group_email"),
        group_rank=pl.col("email").rank("ordinal"),
    )
    outside_query = paths.join(known_users, on="user_id", how="anti").select(pl.col("user_id").n_unique())
    memberships_query = (
        paths.group_by("root_group_id", "user_id")
        .agg(pl.col("is_direct").any())
        .join(known_users.select("user_id", "user_rank"), on="user_id")
        .join(group_emails.select("root_group_id", "group_rank"), on="root_group_id")
        .sort("group_rank", "user_rank")  # before the emails join in: only integers move
        .join(known_users.drop("user_rank"), on="user_id", how="left", maintain_order="left")
        .join(group_emails.drop("group_rank"), on="root_group_id", how="left", maintain_order="left")
        .select(
            pl.lit(connection_id).alias("connection_id"), "user_id", "primary_email",
            pl.col("root_group_id").alias("group_id"), "group_email", "is_direct", "user_active",
        )
    )
    memberships, outside = pl.collect_all([memberships_query, outside_query])
    stats = MembershipStats(outside.item(), len(selected_group_ids), closure["group_id"].n_unique())
    return memberships, stats


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
    active = memberships.filter(pl.col("user_active"))
    mapped = (
        active.join(role_mapping, on="group_id")
        .group_by("connection_id", "user_id", "primary_email", "role")
        .agg(pl.col("group_email").unique().sort().alias("granted_via"))
    )
    entitlements = mapped
    if default_role:
        unmapped_users = active.select("connection_id", "user_id", "primary_email").unique().join(mapped, on="user_id", how="anti")
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
