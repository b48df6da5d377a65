"""S3: the transforms alone (closure, filtered memberships, entitlements) on a synthetic directory.

The frames are built directly, vectorised in polars and seeded, so a million edges take a second to
make; the directory is a DAG of groups nested up to ``depth`` levels, with skewed group sizes and one
CUSTOMER ("everyone") member. Expected row counts come from an independent DuckDB recursive CTE, so
the polars code is checked against SQL rather than against itself. Run as a child of bench/run.py:
``python -m bench.s3 --users 100000 --edges 1000000 --depth 6`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import duckdb
import polars as pl

from dirsync_pipeline.transforms.directory import filtered_memberships, resolve_role_mapping, role_mapped_entitlements

DOMAIN = "s3.example.com"
CONNECTION_ID = "s3"
MAPPED_ROOTS = ("admin", "developer", "sales", "support")  # roles of the first level-1 groups
DEFAULT_ROLE = "member"


@dataclass(frozen=True)
class Frames:
    users: pl.DataFrame
    groups: pl.DataFrame
    edges: pl.DataFrame
    role_mapping: dict[str, list[str]]


def _uniform(n: int, seed: int) -> pl.Expr:
    """n seeded pseudo-random floats in [0, 1), one per row of an int_range (no numpy needed)."""
    return (pl.int_range(n, dtype=pl.UInt64).hash(seed) % 1_000_003).cast(pl.Float64) / 1_000_003


def level_sizes(groups: int, depth: int) -> list[int]:
    """Groups per nesting level, growing ~4x per level like an org chart (level 1 = top)."""
    weights = [4**level for level in range(depth)]
    sizes = [max(1, groups * w // sum(weights)) for w in weights]
    sizes[-1] += groups - sum(sizes)
    return sizes


def build_frames(users: int, edges: int, depth: int, groups: int = 10_000, seed: int = 7) -> Frames:
    user_frame = pl.select(i=pl.int_range(users), r=_uniform(users, seed)).select(
        user_id=pl.format("u{}", "i"),
        primary_email=pl.format("user{}@" + DOMAIN, "i"),
        suspended=pl.col("r") < 0.03,
        archived=(pl.col("r") >= 0.03) & (pl.col("r") < 0.045),
    )
    sizes = level_sizes(groups - 1, depth)  # the last group is "everyone", with a CUSTOMER member
    starts = [sum(sizes[:level]) for level in range(depth)]
    group_ids = [f"g{level + 1}-{i}" for level, size in enumerate(sizes) for i in range(size)] + ["everyone"]
    group_frame = pl.DataFrame({"group_id": group_ids}).with_columns(email=pl.format("{}@" + DOMAIN, "group_id"))

    nesting = pl.concat([_nesting_edges(group_ids, starts, sizes, level, seed) for level in range(1, depth)])
    customer = pl.DataFrame({"group_id": ["everyone"], "member_id": ["C0bench"], "member_type": ["CUSTOMER"]})
    people = _user_edges(group_ids[:-1], users, edges - nesting.height - 1, seed)
    return Frames(user_frame, group_frame, pl.concat([nesting, customer, people]),
                  {f"{group_ids[i]}@{DOMAIN}": [role] for i, role in enumerate(MAPPED_ROOTS)})


def _nesting_edges(group_ids: list[str], starts: list[int], sizes: list[int], level: int, seed: int) -> pl.DataFrame:
    """Each group of ``level`` gets a parent one level up; one in twenty gets a second parent."""
    children = group_ids[starts[level]: starts[level] + sizes[level]]
    parents = group_ids[starts[level - 1]: starts[level - 1] + sizes[level - 1]]
    frame = pl.DataFrame({"member_id": children}).with_columns(
        first=(_uniform(len(children), seed + level) * len(parents)).cast(pl.Int64),
        second=(_uniform(len(children), seed + 100 + level) * len(parents)).cast(pl.Int64),
        extra=_uniform(len(children), seed + 200 + level) < 0.05,
    )
    pairs = pl.concat([frame.select("member_id", index="first"),
                       frame.filter("extra").select("member_id", index="second")]).unique()
    lookup = pl.DataFrame({"index": range(len(parents)), "group_id": parents})
    return pairs.join(lookup, on="index").select("group_id", "member_id", member_type=pl.lit("GROUP"))


def _user_edges(group_ids: list[str], users: int, count: int, seed: int) -> pl.DataFrame:
    """``count`` distinct (group, user) edges; group sizes are skewed (u^3), so a few groups are huge."""
    candidates = count + count // 4
    draws = pl.select(g=_uniform(candidates, seed + 1), u=_uniform(candidates, seed + 2)).select(
        g=(pl.col("g") ** 3 * len(group_ids)).cast(pl.Int64),
        u=(pl.col("u") * users).cast(pl.Int64),
    ).unique(maintain_order=True).head(count)
    if draws.height < count:
        raise ValueError(f"only {draws.height} distinct edges for {count} requested; use fewer edges or more users")
    shuffled = pl.DataFrame({"g": range(len(group_ids)), "group_id": group_ids}).with_columns(
        pl.col("group_id").shuffle(seed=seed))  # big groups land on every level, not just the top
    return draws.join(shuffled, on="g").select(
        "group_id", member_id=pl.format("u{}", "u"), member_type=pl.lit("USER"))


def run_transforms(frames: Frames) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What the pipeline's two transform assets compute, every group selected."""
    selected = frames.groups["group_id"].to_list()
    memberships, _stats = filtered_memberships(CONNECTION_ID, frames.users, frames.groups, frames.edges, selected)
    mapping, _unknown = resolve_role_mapping(frames.groups, frames.role_mapping)
    entitlements = role_mapped_entitlements(memberships, mapping, default_role=DEFAULT_ROLE, role_assignment="all",
                                            role_priority=None)
    return memberships, entitlements


def expected_counts(frames: Frames) -> dict[str, int]:
    """Row counts by an independent route: a DuckDB recursive CTE over the same edges."""
    mapping = pl.DataFrame([(key.split("@")[0], role) for key, roles in frames.role_mapping.items() for role in roles],
                           schema={"group_id": pl.Utf8, "role": pl.Utf8}, orient="row")
    with duckdb.connect() as conn:
        for name, frame in (("users", frames.users), ("edges", frames.edges), ("groups", frames.groups),
                            ("mapping", mapping)):
            conn.register(name, frame)
        conn.execute(_MEMBERSHIPS_SQL)
        memberships = conn.execute("SELECT count(*) FROM memberships").fetchone()[0]
        entitlements = conn.execute(_ENTITLEMENTS_SQL).fetchone()[0]
    return {"filtered_memberships": memberships, "role_mapped_entitlements": entitlements}


_MEMBERSHIPS_SQL = """
CREATE TEMP TABLE memberships AS
WITH RECURSIVE closure(root, grp) AS (
    SELECT group_id, group_id FROM groups
    UNION
    SELECT c.root, e.member_id FROM closure c JOIN edges e ON e.group_id = c.grp AND e.member_type = 'GROUP'
)
SELECT DISTINCT c.root AS group_id, u.user_id, NOT (u.suspended OR u.archived) AS active
FROM closure c JOIN edges e ON e.group_id = c.grp AND e.member_type IN ('USER', 'EXTERNAL')
JOIN users u ON u.user_id = e.member_id
UNION
SELECT c.root, u.user_id, NOT (u.suspended OR u.archived)
FROM closure c JOIN edges e ON e.group_id = c.grp AND e.member_type = 'CUSTOMER' CROSS JOIN users u
"""
_ENTITLEMENTS_SQL = """
WITH active AS (SELECT DISTINCT group_id, user_id FROM memberships WHERE active),
mapped AS (SELECT DISTINCT a.user_id, m.role FROM active a JOIN mapping m USING (group_id))
SELECT (SELECT count(*) FROM mapped)
     + (SELECT count(DISTINCT user_id) FROM active WHERE user_id NOT IN (SELECT user_id FROM mapped))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--groups", type=int, default=10_000)
    args = parser.parse_args()
    frames = build_frames(args.users, args.edges, args.depth, args.groups)
    started, cpu_started = time.perf_counter(), time.process_time()
    memberships, entitlements = run_transforms(frames)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    result = {
        "transform_seconds": seconds, "transform_cpu_seconds": cpu_seconds,
        "edges": frames.edges.height, "users": frames.users.height, "groups": frames.groups.height,
        "counts": {"filtered_memberships": memberships.height, "role_mapped_entitlements": entitlements.height},
        "expected": expected_counts(frames),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
