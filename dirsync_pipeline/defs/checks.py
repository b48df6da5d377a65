"""Validation of every stage: the table contract (pandera) and referential integrity.

The same functions serve two purposes: blocking Dagster asset checks, run by the step that produces a
stage, that show its result with a sample of failing rows in the UI; and the publish gate, which validates
the stages a run did not produce (replayed from a snapshot) right before they become visible again, so
nothing unchecked is ever published.
"""


from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
import pandera.polars as pa
import polars as pl

from dirsync_pipeline.warehouse.tables import (
    ENTITLEMENT_EXPLANATIONS,
    FILTERED_MEMBERSHIPS,
    GOOGLE_GROUP_MEMBERS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    ROLE_MAPPED_ENTITLEMENTS,
    SYNC_TABLES,
    VALIDATED_ROWS_PER_CHUNK,
    Table,
)
from dirsync_pipeline.warehouse.store import Warehouse

SAMPLE_ROWS = 10
FAILURE_COLUMNS = ("column", "check", "failure_case", "index")


@dataclass(frozen=True)
class Reference:
    """``child.columns`` must each match a row of ``parent`` (a foreign key)."""

    name: str
    child: Table
    parent: Table
    columns: tuple[str, ...]
    parent_columns: tuple[str, ...]
    description: str


REFERENCES = (
    Reference("members_of_known_groups", GOOGLE_GROUP_MEMBERS, GOOGLE_GROUPS, ("group_id",), ("group_id",),
              "Every membership edge belongs to a group listed by groups.list."),
    Reference("memberships_of_known_users", FILTERED_MEMBERSHIPS, GOOGLE_USERS, ("user_id",), ("user_id",),
              "Every filtered membership's user is a directory user."),
    Reference("memberships_of_known_groups", FILTERED_MEMBERSHIPS, GOOGLE_GROUPS, ("group_id",), ("group_id",),
              "Every filtered membership's group exists."),
    Reference("entitlements_of_active_members", ROLE_MAPPED_ENTITLEMENTS, FILTERED_MEMBERSHIPS,
              ("user_id",), ("user_id",), "Every entitlement's user is a member of a selected group."),
    Reference("explanations_of_entitlements", ENTITLEMENT_EXPLANATIONS, ROLE_MAPPED_ENTITLEMENTS,
              ("user_id", "role"), ("user_id", "role"), "Every explanation explains an entitlement of this sync."),
)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    failures: int
    sample: pl.DataFrame | None = None

    def check_result(self, table: Table, check_name: str, action: str, **metadata: object) -> dg.AssetCheckResult:
        """The result for the UI; a failure carries ``action``, what the operator should do about it."""
        shown = {"failures": self.failures, **metadata}
        if not self.passed and self.sample is not None and {"check", "failure_case"} <= set(self.sample.columns):
            shown["first_failures"] = first_failures(self.sample)
        if self.sample is not None and self.sample.height:
            with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                           fmt_str_lengths=60, tbl_cols=-1):
                shown["failing_rows_sample"] = dg.MetadataValue.md(str(self.sample.head(SAMPLE_ROWS)))
        if not self.passed:
            shown["what_to_do"] = action
        return dg.AssetCheckResult(asset_key=table.asset_key, check_name=check_name, passed=self.passed, metadata=shown,
                                   description=None if self.passed else action)


def first_failures(cases: pl.DataFrame, shown: int = 3) -> str:
    """The first few failure cases in one line, e.g. ``unique key (group_id, member_id): 0abc / 1234``: what a
    summary names, so that "matches_contract failed" says which rule and which rows."""
    distinct = cases.select("check", "failure_case").unique(maintain_order=True)  # a duplicate key: each of its rows
    text = [f"{check}: {case}" for check, case in distinct.head(shown).iter_rows()]
    more = f" (+{distinct.height - shown} more)" if distinct.height > shown else ""
    return "; ".join(text) + more


def validate_contract(table: Table, frame: pl.DataFrame) -> Outcome:
    """pandera over slices of VALIDATED_ROWS_PER_CHUNK rows (its memory grows with what it validates at once),
    and the key's uniqueness over the whole frame."""
    schema = table.pandera_schema(unique_key=False)
    cases = [_duplicate_keys(table, frame)]
    for offset in range(0, max(frame.height, 1), VALIDATED_ROWS_PER_CHUNK):  # an empty frame still has a schema
        try:
            schema.validate(frame.slice(offset, VALIDATED_ROWS_PER_CHUNK), lazy=True)
        except pa.errors.SchemaErrors as exc:
            cases.append(exc.failure_cases.select(*FAILURE_COLUMNS[:-1], pl.col("index").cast(pl.Int64) + offset))
    failures = pl.concat(cases)
    return Outcome(failures.is_empty(), failures.height, failures if failures.height else None)


@contextmanager
def contract_checks_warming() -> Iterator[Future]:
    """A process's first pandera validation imports and registers pandera's polars backend (~0.15 s of CPU):
    a step that waits on Google has it done meanwhile, on empty frames. Its checks wait for the returned
    future first, so no two validations ever run at once."""
    with ThreadPoolExecutor(1, thread_name_prefix="warm-up") as pool:
        yield pool.submit(_validate_empty_stages)


def _validate_empty_stages() -> None:
    import pyarrow  # noqa: F401 - staging hands polars frames to DuckDB through Arrow: its import belongs here too

    for table in SYNC_TABLES:
        validate_contract(table, pl.DataFrame(schema={c.name: c.dtype for c in table.columns}))


def _duplicate_keys(table: Table, frame: pl.DataFrame) -> pl.DataFrame:
    """Failure cases, in pandera's columns, for every row whose key another row has too."""
    key = list(table.key)
    present = set(key) <= set(frame.columns)  # a missing key column is pandera's failure to report
    duplicated = (frame.select(*key) if present else pl.DataFrame(schema={k: pl.Utf8 for k in key}))
    duplicated = duplicated.with_row_index("index").filter(pl.struct(key).is_duplicated())
    return duplicated.select(
        pl.lit(None, dtype=pl.Utf8).alias("column"), pl.lit(f"unique key ({', '.join(key)})").alias("check"),
        pl.concat_str([pl.col(k).cast(pl.Utf8) for k in key], separator=" / ").alias("failure_case"),
        pl.col("index").cast(pl.Int64),
    )


def validate_reference(reference: Reference, child: pl.DataFrame, parent: pl.DataFrame) -> Outcome:
    orphans = child.join(
        parent.select(pl.col(p).alias(c) for p, c in zip(reference.parent_columns, reference.columns, strict=True)).unique(),
        on=list(reference.columns), how="anti",
    )
    return Outcome(orphans.is_empty(), orphans.height, orphans)


def publish_gate_failures(warehouse: Warehouse, connection_id: str, unchecked: list[Table]) -> list[str]:
    """Every contract or reference violation of the staged tables this run did not check (empty = publishable).

    A stage this run materialized passed its blocking checks in its own step, or the publish would not run.
    The others were restored from the last published snapshot: validate them before they are published again.
    """
    staged = {t: warehouse.read_staged(t, connection_id) for t in unchecked}
    problems = [f"{t.qualified_name}: {o.failures} contract violation(s)"
                for t in unchecked if not (o := validate_contract(t, staged[t])).passed]
    for reference in (r for r in REFERENCES if r.child in staged):
        parent = staged.get(reference.parent)
        if parent is None:
            parent = warehouse.read_staged(reference.parent, connection_id)
        if not (outcome := validate_reference(reference, staged[reference.child], parent)).passed:
            problems.append(f"{reference.name}: {outcome.failures} orphan row(s)")
    return problems


CONTRACT_CHECK = "matches_contract"


def stage_check_specs(*tables: Table) -> list[dg.AssetCheckSpec]:
    """The blocking checks of the stages one step produces: each table's contract and its references.

    They run inside the step, on the frame it just staged (no second read from DuckDB, no extra step);
    a failure fails the step after staging, so nothing downstream runs and nothing is published.
    """
    contracts = [
        dg.AssetCheckSpec(CONTRACT_CHECK, asset=t.asset_key, blocking=True,
                          description=f"pandera: {t.qualified_name} has the documented columns, types, constraints and "
                                      f"a unique key ({', '.join(t.key)}).")
        for t in tables
    ]
    references = [dg.AssetCheckSpec(r.name, asset=r.child.asset_key, blocking=True, description=r.description)
                  for r in REFERENCES if r.child in tables]
    return contracts + references


def stage_check_results(table: Table, frame: pl.DataFrame, parents: dict[Table, pl.DataFrame]) -> list[dg.AssetCheckResult]:
    """Run ``table``'s contract and reference checks (as declared by ``stage_check_specs``) on its frame."""
    action = (f"{table.qualified_name} does not match its contract, so nothing was published and the last good data "
              "is kept. failing_rows_sample shows the offending values: if Google sent an unusual answer, run Sync "
              "Now again; if it repeats, the contract in tables.py needs the new shape.")
    results = [validate_contract(table, frame).check_result(table, CONTRACT_CHECK, action, rows=frame.height)]
    for reference in (r for r in REFERENCES if r.child is table):
        action = (f"{table.qualified_name} has rows without a match in {reference.parent.qualified_name} "
                  "(failing_rows_sample): the directory most likely changed during the sync. Nothing was published; "
                  "run Sync Now again. If it repeats, the sample names the rows to investigate.")
        outcome = validate_reference(reference, frame, parents[reference.parent])
        results.append(outcome.check_result(table, reference.name, action))
    return results

