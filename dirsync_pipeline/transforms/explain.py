"""Why a user holds a role: the rule that applied and the membership paths behind it (pure polars).

For each entitlement, ``explain_entitlements`` names the rule (a mapped group, or the default role),
the selected groups it rests on, the paths from each of those groups down to the user through nested
groups, and, under ``highest_priority``, the roles this one outranked.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from dirsync_pipeline.warehouse.tables import ENTITLEMENT_EXPLANATIONS, EVERY_USER, PATHS_PER_GROUP
from dirsync_pipeline.transforms.directory import DIRECTORY_USER_TYPES

PATH_SEPARATOR = " > "
CHUNK_ROWS = 25_000  # entitlements explained at a time: bounds the path frames, not the result


def explain_entitlements(
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

    Users are explained in chunks of about CHUNK_ROWS entitlements, each a contiguous range of primary
    emails, so the per-path intermediate frames never exist for every user at once and the sorted chunks
    concatenate into the sorted result. Every part of an explanation depends on its user alone.
    """
    mapped = pl.col("granted_via").list.len() > 0
    active = (memberships.lazy().filter(pl.col("user_active"))
              .select("user_id", "primary_email", "group_id", "group_email"))
    # every path starts at a group of some granted_via or at a group of a default-role user (its via_groups)
    granting = entitlements["granted_via"].explode().drop_nulls().unique().implode()
    default_users = entitlements.filter((~mapped).fill_null(True))["user_id"].implode()
    roots = (active.filter(pl.col("group_email").is_in(granting) | pl.col("user_id").is_in(default_users))
             .select(pl.col("group_id").unique()).collect()["group_id"])
    chains = _chains(edges, groups, roots)
    people, customers = _path_ends(edges)
    return pl.concat([
        _explain_chunk(chunk, active.filter(pl.col("user_id").is_in(chunk["user_id"].implode())).collect(),
                       chains, people, customers, role_mapping, default_role, role_priority)
        for chunk in _email_ranges(entitlements)
    ], rechunk=False)


def _email_ranges(entitlements: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """``entitlements`` in about CHUNK_ROWS rows at a time, each chunk a range of primary emails (at least one chunk).

    A user's rows share an email, so they stay in one chunk; the chunks come in email order.
    """
    chunks = -(-entitlements.height // CHUNK_ROWS)
    if chunks <= 1:
        yield entitlements
        return
    rank = pl.col("primary_email").rank("dense").cast(pl.Int64)
    chunk_of = entitlements.select(((rank - 1) * chunks // rank.max()).fill_null(0)).to_series()  # nulls sort first
    for i in range(chunks):
        chunk = entitlements.filter(chunk_of == i)
        if chunk.height:
            yield chunk


def _explain_chunk(
    entitlements: pl.DataFrame, active: pl.DataFrame, chains: pl.DataFrame, people: pl.DataFrame,
    customers: pl.DataFrame, role_mapping: pl.DataFrame, default_role: str | None, role_priority: list[str] | None,
) -> pl.DataFrame:
    """explain_entitlements for some users: ``active`` holds their active memberships."""
    mapped = pl.col("granted_via").list.len() > 0
    # only a default-role row lists the user's groups: the others name the mapped groups that granted the role
    default_users = entitlements.filter((~mapped).fill_null(True)).select("user_id").unique()
    member_of = (active.join(default_users, on="user_id", how="semi")
                 .group_by("user_id").agg(pl.col("group_email").unique().sort().alias("member_of")))
    explained = (
        entitlements.join(_outranked(entitlements, active, role_mapping, default_role, role_priority),
                          on=["user_id", "role"], how="left")
        .join(member_of, on="user_id", how="left")
        .with_columns(
            rule=pl.when(mapped).then(pl.lit("role_mapping")).otherwise(pl.lit("default_role")),
            via_groups=pl.when(mapped).then("granted_via").otherwise("member_of"),
            outranked=pl.col("outranked").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
        )
        .drop("member_of")
    )
    wanted = explained.select("user_id", "role", pl.col("via_groups").alias("group_email")).explode("group_email")
    # paths only for the memberships an explanation names: each (user, group)'s paths depend on nothing else
    paths = _paths(chains, people, customers, active.join(wanted, on=["user_id", "group_email"], how="semi"))
    path_lists = (
        wanted.join(paths, on=["user_id", "group_email"])
        .sort("group_email", "depth", "path")
        .group_by("user_id", "role", maintain_order=True).agg("path")
    )
    return (
        explained.join(path_lists, on=["user_id", "role"], how="left")
        .with_columns(paths=pl.col("path").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))))
        .select(ENTITLEMENT_EXPLANATIONS.column_names)
        .sort("primary_email", "role")
    )


def membership_paths(edges: pl.DataFrame, groups: pl.DataFrame, memberships: pl.DataFrame) -> pl.DataFrame:
    """(user_id, group_email, depth, path) for the shortest ways each membership reaches its user.

    Breadth-first from each selected group: a nested group is recorded at the depth it is first
    reached (so cycles end), with at most PATHS_PER_GROUP chains per (selected group, nested group).
    """
    people, customers = _path_ends(edges)
    return _paths(_chains(edges, groups, memberships["group_id"].unique()), people, customers, memberships)


def _path_ends(edges: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Where a path can end: (group_id, user_id) of directory users, and the groups with a CUSTOMER member."""
    people = (edges.filter(pl.col("member_type").is_in(DIRECTORY_USER_TYPES))
              .select("group_id", pl.col("member_id").alias("user_id")))
    customers = edges.filter(pl.col("member_type") == "CUSTOMER").select("group_id").unique()
    return people, customers


def _chains(edges: pl.DataFrame, groups: pl.DataFrame, root_ids: pl.Series) -> pl.DataFrame:
    """(root_id, group_id, group_email, depth, prefix): the chains of nested groups from each root.

    ``group_email`` is the root's, ``prefix`` the chain's group emails joined by PATH_SEPARATOR. Each
    root's chains depend on that root alone.
    """
    emails = dict(zip(groups["group_id"].to_list(), groups["email"].to_list(), strict=True))
    nested = (edges.filter(pl.col("member_type") == "GROUP")
              .select("group_id", pl.col("member_id").alias("child_id")).unique())
    roots = pl.DataFrame({"group_id": root_ids}).unique()
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
    return reached.select(
        "root_id", "group_id",
        pl.col("root_id").replace(emails).alias("group_email"),
        pl.col("chain").list.len().alias("depth"),
        # a nested group that groups.list does not show (another customer's) keeps its id
        pl.col("chain").list.eval(pl.element().replace(emails)).list.join(PATH_SEPARATOR).alias("prefix"),
    )


def _paths(chains: pl.DataFrame, people: pl.DataFrame, customers: pl.DataFrame, memberships: pl.DataFrame
           ) -> pl.DataFrame:
    """membership_paths from ``_chains`` of (at least) the memberships' groups."""
    users = memberships.select("user_id", "primary_email", pl.col("group_id").alias("root_id"))
    people = people.filter(pl.col("user_id").is_in(users["user_id"].implode()))
    ends = pl.concat([
        chains.join(people, on="group_id").join(users, on=["root_id", "user_id"])
        .select("user_id", "group_email", "depth", "prefix", end="primary_email"),
        chains.join(customers, on="group_id").join(users, on="root_id")
        .select("user_id", "group_email", "depth", "prefix", end=pl.lit(EVERY_USER)),
    ])
    return (
        ends.select(
            "user_id", "group_email", "depth",
            pl.concat_str("prefix", "end", separator=PATH_SEPARATOR, ignore_nulls=True).alias("path"),
        )
        .sort("depth", "path", "user_id")  # user_id only orders the paths through a CUSTOMER member
        .group_by("user_id", "group_email", maintain_order=True).head(PATHS_PER_GROUP)
    )


def _outranked(
    entitlements: pl.DataFrame, active: pl.DataFrame, role_mapping: pl.DataFrame,
    default_role: str | None, role_priority: list[str] | None,
) -> pl.DataFrame:
    """(user_id, role, outranked): roles the user qualified for that lost to the role they were given.

    Empty unless role_assignment is ``highest_priority``, which keeps one role per user.
    """
    # the (user, role) pairs role_mapped_entitlements grants under role_assignment "all", without its group lists
    qualified = active.join(role_mapping.select("group_id", "role"), on="group_id").select("user_id", "role").unique()
    if default_role:
        unmapped = active.select("user_id").unique().join(qualified, on="user_id", how="anti")
        qualified = pl.concat([qualified, unmapped.with_columns(role=pl.lit(default_role, dtype=pl.Utf8))])
    rank = {role: i for i, role in enumerate(role_priority or [])}
    lost = (
        qualified.join(entitlements.select("user_id", "role"), on=["user_id", "role"], how="anti")
        .sort(pl.col("role").replace_strict(rank, default=len(rank), return_dtype=pl.Int64), "role")
        .group_by("user_id", maintain_order=True).agg(pl.col("role").alias("outranked"))
    )
    return entitlements.select("user_id", "role").join(lost, on="user_id")


def describe_rule(explanation: dict) -> str:
    """One line saying which rule gave a role, for a row of core.entitlement_explanations."""
    groups = ", ".join(explanation["via_groups"])
    if explanation["rule"] == "default_role":
        text = f"default_role: member of {groups}, none of which is mapped to a role"
    else:
        text = f"role_mapping: {groups} -> {explanation['role']}"
    if explanation["outranked"]:
        text += f"; highest_priority: outranked {', '.join(explanation['outranked'])}"
    return text


def no_role_reason(user: dict, memberships: pl.DataFrame) -> str:
    """Why a directory user holds no role, from their raw.google_users row and filtered memberships."""
    if user["archived"] or user["suspended"]:
        return f"{'archived' if user['archived'] else 'suspended'}: suspended and archived users hold no role"
    if memberships.is_empty():
        return "not a member of any selected group (directly, through nested groups or as a customer member)"
    return (f"member of {', '.join(sorted(memberships['group_email'].to_list()))}, but none of them is mapped "
            "to a role and there is no default_role")
