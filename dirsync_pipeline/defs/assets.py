"""The sync pipeline as Dagster assets: Google -> raw tables -> memberships -> entitlements -> publish.

Each registered connection (organisation) is a dynamic partition (partitions.py). Every stage is staged in
the connection's DuckDB file and audited by blocking asset checks; ``published_directory`` makes all of a
connection's tables visible in one transaction.
"""


from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import dagster as dg
import polars as pl

from dirsync_pipeline.config import ConnectionConfig
from dirsync_pipeline.defs.checks import (
    contract_checks_warming,
    publish_gate_failures,
    stage_check_results,
    stage_check_specs,
)
from dirsync_pipeline.defs.outcome import QuarantinedFailure, recorded_outcome
from dirsync_pipeline.defs.partitions import CONNECTIONS
from dirsync_pipeline.defs.progress import FetchProgress
from dirsync_pipeline.defs.resources import ConnectionsResource, GoogleDirectoryResource, WarehouseResource
from dirsync_pipeline.defs.run_report import sync_report_metadata
from dirsync_pipeline.google.client import DirectoryClient
from dirsync_pipeline.google.errors import FetchStoppedError
from dirsync_pipeline.transforms.directory import (
    filtered_memberships as expand_memberships,
    resolve_group_keys,
    resolve_role_mapping,
    role_mapped_entitlements as map_roles,
)
from dirsync_pipeline.transforms.explain import explain_entitlements
from dirsync_pipeline.warehouse.replay import (
    materialized_in_run,
    require_members_in_snapshot,
    restore_unmaterialized_stages,
)
from dirsync_pipeline.warehouse.retention import Retention, prune_connection
from dirsync_pipeline.warehouse.safeguards import breaker_message, staged_removals
from dirsync_pipeline.warehouse.store import Warehouse, staging_name
from dirsync_pipeline.warehouse.tables import (
    DIRECTORY_CHANGES,
    ENTITLEMENT_EXPLANATIONS,
    FILTERED_MEMBERSHIPS,
    GOOGLE_GROUP_MEMBERS,
    GOOGLE_GROUPS,
    GOOGLE_USERS,
    ROLE_MAPPED_ENTITLEMENTS,
    SYNC_TABLES,
    Table,
)

GROUP_NAME = "directory"
OWNERS = ["team:platform"]
# Synced hourly: an asset older than two hours means a sync was missed or failed, and the UI marks it.
SYNC_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2))
PREVIEW_ROWS = 5
BREAKER_CHECK = "mass_removal_breaker"
FETCH_STEP = "google_directory"  # the one step that calls Google: users, groups and members
T = TypeVar("T")
SIGNAL_CHECK_SECONDS = 0.1


class PublishConfig(dg.Config):
    """Run config of the publish step."""

    allow_mass_removal: bool = False  # let this one sync through the mass-removal breaker, on purpose


def selected_group_ids(connection: ConnectionConfig, groups: pl.DataFrame) -> tuple[list[str], list[str]]:
    """Ids of the connection's selected groups, and the configured keys that match no group."""
    if connection.selected_groups == "all":
        return groups["group_id"].to_list(), []
    resolution = resolve_group_keys(groups, connection.selected_groups)
    return resolution.group_ids, resolution.unknown_keys


def table_output(
    table: Table, frame: pl.DataFrame, *, output_name: str = "result", **metadata: object
) -> dg.Output[pl.DataFrame]:
    """The frame with the metadata an operator wants: row count, column schema, a preview."""
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   fmt_str_lengths=40, tbl_cols=-1):
        preview = str(frame.head(PREVIEW_ROWS))
    return dg.Output(
        frame,
        output_name=output_name,
        metadata={
            "dagster/row_count": frame.height,
            "dagster/column_schema": table.dagster_column_schema(),
            "dagster/table_name": staging_name(table),
            "preview": dg.MetadataValue.md(preview),
            **metadata,
        },
    )


def _with_sync_columns(frame: pl.DataFrame, connection_id: str, *, synced_at: bool = True) -> pl.DataFrame:
    columns = [pl.lit(connection_id).alias("connection_id")]
    if synced_at:
        columns.append(pl.lit(datetime.now(UTC)).dt.cast_time_unit("us").alias("synced_at"))
    return frame.with_columns(columns)


def _api_metadata(client: DirectoryClient, started: float) -> dict[str, object]:
    return {**client.stats.as_metadata(), "fetch_seconds": round(datetime.now(UTC).timestamp() - started, 3)}


@dataclass(frozen=True)
class GroupsRead:
    """A connection's groups and the member edges of its selected (and nested) groups, as read from Google."""

    groups: pl.DataFrame
    edges: pl.DataFrame
    metadata: dict[str, object]  # what the members fetch found


@contextmanager
def fetched_alongside(client: DirectoryClient, name: str, fetch: Callable[[], T]) -> Iterator[Future[T]]:
    """``fetch`` in a thread of its own, so that the step stages and checks what another listing has already
    read. When the block fails or is interrupted (SIGTERM, SIGINT, a run terminated in the UI), the client is
    stopped, so the listing ends at its next page instead of paging on while the step waits for it."""
    with ThreadPoolExecutor(1, thread_name_prefix=name) as background:
        try:
            yield background.submit(fetch)
        except BaseException:
            client.stop()
            raise


@contextmanager
def directory_read_alongside(
    context: dg.AssetExecutionContext, client: DirectoryClient, connection: ConnectionConfig
) -> Iterator[tuple[Future[pl.DataFrame], Future[GroupsRead]]]:
    """users.list, and groups.list with members.list, each in its own thread: one client, one rate limiter,
    one set of counters. users.list pages one after another (each needs the previous page's token), so it
    runs alongside the rest; with ``max_concurrency: 1`` it runs first instead: one request at a time."""
    with fetched_alongside(client, "users", client.fetch_users) as users_listing:
        if connection.max_concurrency == 1:
            users_listing.result()  # every user page before the first group page
        with fetched_alongside(client, "groups", lambda: read_groups(context, client, connection)) as groups_read:
            yield users_listing, groups_read


def completed_in_turn(listings: list[Future]) -> Iterator[Future]:
    """Each listing once it has completed. The main thread wakes every SIGNAL_CHECK_SECONDS meanwhile: CPython
    runs signal handlers there only, and a SIGTERM the kernel hands to a fetching thread would otherwise wait
    for a listing to end (12 s in tests/test_stopping.py) before it stops the sync."""
    pending = set(listings)
    while pending:
        done, pending = wait(pending, timeout=SIGNAL_CHECK_SECONDS, return_when=FIRST_COMPLETED)
        yield from done


def listing_result(listing: Future[T], other: Future) -> T:
    """``listing``'s result, or the error to report: when the other listing failed, it stopped the client, and
    this one's FetchStoppedError only says so."""
    try:
        return listing.result()
    except FetchStoppedError:
        if (cause := other.exception()) is not None and not isinstance(cause, FetchStoppedError):
            raise cause from None
        raise


def read_groups(context: dg.AssetExecutionContext, client: DirectoryClient, connection: ConnectionConfig) -> GroupsRead:
    """groups.list and, page by page, members.list of the selected groups and every group nested in them,
    proven complete."""
    listed, fetched = client.fetch_groups_and_members(lambda page: selected_group_ids(connection, page)[0],
                                                      on_progress=FetchProgress(context.log.info, client.stats))
    groups = _with_sync_columns(listed, connection.id)
    selected, unknown = selected_group_ids(connection, groups)
    if unknown:
        context.log.warning(f"{connection.id}: selected groups not found in the directory: {unknown}")
    recounted = client.verify_member_counts(fetched, groups)
    if fetched.missing_group_ids:
        context.log.warning(f"groups deleted during the sync, skipped: {fetched.missing_group_ids}")
    return GroupsRead(groups, _with_sync_columns(fetched.edges, connection.id, synced_at=False), {
        "selected_groups": len(selected), "fetched_groups": len(fetched.fetched_group_ids),
        "unknown_selected_groups": ", ".join(unknown) or "none",
        "groups_deleted_during_sync": ", ".join(fetched.missing_group_ids) or "none",
        "member_counts_verified": len(fetched.fetched_group_ids), "member_counts_recounted": recounted,
    })


def repair_parquet_manifest(context: dg.AssetExecutionContext, store: Warehouse, connection_id: str) -> None:
    """At the start of a sync: a publish whose manifest could not be replaced left DuckDB ahead of Parquet; name
    DuckDB's last sync in the manifest again, so that both agree whatever this sync then does."""
    if repaired := store.repair_manifest(connection_id):
        context.log.warning(f"{connection_id}: the Parquet manifest named an older sync than DuckDB; it names "
                            f"sync {repaired} again, as core.sync_log does")


def _mass_removal_check(
    connection: ConnectionConfig, store: Warehouse, *, allow: bool
) -> tuple[dg.AssetCheckResult, str | None, bool]:
    """The breaker's check result; the refusal message when the sync must not be published; whether overridden."""
    limits = connection.safeguards
    removals = staged_removals(store, connection.id)
    tripped = [r for r in removals if r.exceeds(limits.max_removal_share, limits.max_removal_count)]
    overridden = bool(tripped) and allow
    message = breaker_message(tripped, limits.max_removal_share, limits.max_removal_count) if tripped else None
    result = dg.AssetCheckResult(
        check_name=BREAKER_CHECK, passed=not tripped or overridden,
        description=None if overridden else message,  # the Checks tab says how to let an intended removal through
        metadata={**{f"removed.{r.table}": f"{r.removed} of {r.published} ({r.share:.1%})" for r in removals},
                  "override_used": overridden, "sample": "\n".join(x for r in tripped for x in r.sample)},
    )
    return result, None if overridden else message, overridden


COMMON = dict(partitions_def=CONNECTIONS, group_name=GROUP_NAME, owners=OWNERS, io_manager_key="staging_io_manager",
              freshness_policy=SYNC_FRESHNESS)


def _google_out(table: Table) -> dg.AssetOut:
    return dg.AssetOut(key=table.asset_key, description=table.description, kinds={"google", "polars", "duckdb"},
                       io_manager_key="staging_io_manager", group_name=GROUP_NAME, owners=OWNERS,
                       freshness_policy=SYNC_FRESHNESS)


def enabled_connection(connections: ConnectionsResource, connection_id: str) -> ConnectionConfig:
    """The connection's settings as registered now; a disabled connection is not synced (Sync Now included)."""
    registered = connections.get(connection_id)
    if not registered.enabled:
        raise dg.Failure(description=f"connection {connection_id} is disabled, so it is not synced; enable it with "
                                     f"`dirsync connections enable {connection_id}`")
    return registered.config


@dg.multi_asset(
    name=FETCH_STEP, partitions_def=CONNECTIONS,
    outs={t.name: _google_out(t) for t in (GOOGLE_USERS, GOOGLE_GROUPS, GOOGLE_GROUP_MEMBERS)},
    check_specs=stage_check_specs(GOOGLE_USERS, GOOGLE_GROUPS, GOOGLE_GROUP_MEMBERS),
    internal_asset_deps={GOOGLE_USERS.name: set(), GOOGLE_GROUPS.name: set(),
                         GOOGLE_GROUP_MEMBERS.name: {GOOGLE_GROUPS.asset_key}},
    description="Reads the directory from Google. users.list pages one after another (each needs the previous "
                "page's token), so they run alongside groups.list and members.list, under the same rate limiter.",
)
def google_directory(
    context: dg.AssetExecutionContext, connections: ConnectionsResource, google: GoogleDirectoryResource,
    warehouse: WarehouseResource,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    connection = enabled_connection(connections, context.partition_key)
    with recorded_outcome(connections.registry, connection.id):
        started = datetime.now(UTC).timestamp()
        with google.client(connection) as client, \
                directory_read_alongside(context, client, connection) as (users_listing, groups_read), \
                contract_checks_warming() as checks_warmed:
            repair_parquet_manifest(context, warehouse.of(connection.id), connection.id)  # while Google answers
            checks_warmed.result()
            # Each listing is staged and checked as soon as it is read, while the other may still be paging.
            for listing in completed_in_turn([users_listing, groups_read]):
                if listing is users_listing:
                    users = _with_sync_columns(listing_result(users_listing, groups_read), connection.id)
                    yield table_output(GOOGLE_USERS, users, output_name=GOOGLE_USERS.name,
                                       suspended_users=users["suspended"].sum(), archived_users=users["archived"].sum())
                    yield from stage_check_results(GOOGLE_USERS, users, {})
                else:
                    read = listing_result(groups_read, users_listing)
                    yield table_output(GOOGLE_GROUPS, read.groups, output_name=GOOGLE_GROUPS.name)
                    yield from stage_check_results(GOOGLE_GROUPS, read.groups, {})
            unlisted_deleted = client.verify_users_listed(users, read.edges)
        context.log.info(f"{connection.id}: listed {users.height} users, {read.groups.height} groups, "
                         f"{read.edges.height} member edges")
        yield table_output(GOOGLE_GROUP_MEMBERS, read.edges, output_name=GOOGLE_GROUP_MEMBERS.name,  # the last output:
                           **read.metadata, members_deleted_since_listed=unlisted_deleted,  # every call is counted
                           **_api_metadata(client, started))
        yield from stage_check_results(GOOGLE_GROUP_MEMBERS, read.edges, {GOOGLE_GROUPS: read.groups})


@dg.asset(key=FILTERED_MEMBERSHIPS.asset_key, description=FILTERED_MEMBERSHIPS.description, kinds={"polars", "duckdb"},
          ins={"users": dg.AssetIn(GOOGLE_USERS.asset_key), "groups": dg.AssetIn(GOOGLE_GROUPS.asset_key),
               "edges": dg.AssetIn(GOOGLE_GROUP_MEMBERS.asset_key)},
          check_specs=stage_check_specs(FILTERED_MEMBERSHIPS), **COMMON)
def filtered_memberships(
    context: dg.AssetExecutionContext, connections: ConnectionsResource,
    users: pl.DataFrame, groups: pl.DataFrame, edges: pl.DataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    connection = connections.get(context.partition_key).config
    with recorded_outcome(connections.registry, connection.id):
        selected, _unknown = selected_group_ids(connection, groups)
        if GOOGLE_GROUP_MEMBERS.asset_key not in materialized_in_run(context.job_def):
            require_members_in_snapshot(groups, edges, selected)  # replay: the snapshot must cover the selection
        memberships, stats = expand_memberships(connection.id, users, groups, edges, selected)
        yield table_output(
            FILTERED_MEMBERSHIPS, memberships,
            members_outside_directory=stats.outside_members, selected_groups=stats.selected_groups,
            groups_including_nested=stats.expanded_groups, distinct_users=memberships["user_id"].n_unique(),
        )
        yield from stage_check_results(FILTERED_MEMBERSHIPS, memberships, {GOOGLE_USERS: users, GOOGLE_GROUPS: groups})


@dg.asset(key=ROLE_MAPPED_ENTITLEMENTS.asset_key, description=ROLE_MAPPED_ENTITLEMENTS.description,
          kinds={"polars", "duckdb"},
          ins={"memberships": dg.AssetIn(FILTERED_MEMBERSHIPS.asset_key), "groups": dg.AssetIn(GOOGLE_GROUPS.asset_key)},
          check_specs=stage_check_specs(ROLE_MAPPED_ENTITLEMENTS), **COMMON)
def role_mapped_entitlements(
    context: dg.AssetExecutionContext, connections: ConnectionsResource, memberships: pl.DataFrame,
    groups: pl.DataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    connection = connections.get(context.partition_key).config
    with recorded_outcome(connections.registry, connection.id):
        mapping, unknown = resolve_role_mapping(groups, connection.mapped_roles())
        if unknown:
            context.log.warning(f"role_mapping names groups not in the directory: {unknown}")
        entitlements = map_roles(
            memberships, mapping, default_role=connection.default_role,
            role_assignment=connection.role_assignment, role_priority=connection.role_priority,
        )
        per_role = entitlements.group_by("role").len().sort("role")
        yield table_output(
            ROLE_MAPPED_ENTITLEMENTS, entitlements,
            users_with_roles=entitlements["user_id"].n_unique(),
            **{f"role.{r}": n for r, n in per_role.iter_rows()},
            unknown_mapped_groups=", ".join(unknown) or "none",
        )
        yield from stage_check_results(ROLE_MAPPED_ENTITLEMENTS, entitlements, {FILTERED_MEMBERSHIPS: memberships})


@dg.asset(key=ENTITLEMENT_EXPLANATIONS.asset_key, description=ENTITLEMENT_EXPLANATIONS.description,
          kinds={"polars", "duckdb"},
          ins={"entitlements": dg.AssetIn(ROLE_MAPPED_ENTITLEMENTS.asset_key),
               "memberships": dg.AssetIn(FILTERED_MEMBERSHIPS.asset_key),
               "edges": dg.AssetIn(GOOGLE_GROUP_MEMBERS.asset_key), "groups": dg.AssetIn(GOOGLE_GROUPS.asset_key)},
          check_specs=stage_check_specs(ENTITLEMENT_EXPLANATIONS), **COMMON)
def entitlement_explanations(
    context: dg.AssetExecutionContext, connections: ConnectionsResource, entitlements: pl.DataFrame,
    memberships: pl.DataFrame, edges: pl.DataFrame, groups: pl.DataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    connection = connections.get(context.partition_key).config
    with recorded_outcome(connections.registry, connection.id):
        mapping, _unknown = resolve_role_mapping(groups, connection.mapped_roles())
        explanations = explain_entitlements(
            entitlements, memberships, edges, groups, mapping,
            default_role=connection.default_role, role_priority=connection.role_priority,
        )
        yield table_output(
            ENTITLEMENT_EXPLANATIONS, explanations,
            **{f"rule.{r}": n for r, n in explanations.group_by("rule").len().sort("rule").iter_rows()},
            outranking_grants=explanations.filter(pl.col("outranked").list.len() > 0).height,
        )
        yield from stage_check_results(ENTITLEMENT_EXPLANATIONS, explanations, {ROLE_MAPPED_ENTITLEMENTS: entitlements})


@dg.asset(
    key="published_directory", partitions_def=CONNECTIONS, group_name=GROUP_NAME, owners=OWNERS,
    freshness_policy=SYNC_FRESHNESS,
    deps=[t.asset_key for t in SYNC_TABLES], kinds={"duckdb"},
    check_specs=[dg.AssetCheckSpec(
        BREAKER_CHECK, asset="published_directory", blocking=True,
        description="Mass-removal circuit breaker: the sync may not remove more than the configured share "
                    "(default 20%) of the published users, memberships or entitlements.",
    )],
    description="Publishes the connection's audited stages to raw.* and core.* in one DuckDB transaction, then "
                "hands readers an immutable copy. Runs only when every blocking check passed; validates the stages "
                "replayed from the last snapshot and applies the mass-removal breaker first.",
)
def published_directory(
    context: dg.AssetExecutionContext, config: PublishConfig, connections: ConnectionsResource,
    warehouse: WarehouseResource,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    connection = connections.get(context.partition_key).config
    registry = connections.registry
    store = warehouse.of(connection.id)
    with recorded_outcome(registry, connection.id):
        repair_parquet_manifest(context, store, connection.id)
        replayed = restore_unmaterialized_stages(store, connection.id, materialized_in_run(context.job_def))
        if replayed:
            context.log.info(f"{connection.id}: not recomputed in this run, taken from the last published snapshot: "
                             f"{[t.qualified_name for t in replayed]}")
        problems = publish_gate_failures(store, connection.id, unchecked=replayed)
        if problems:
            raise dg.Failure(
                description="Publish refused: the staged sync does not pass validation; the published tables are "
                            "unchanged. Re-run the whole `directory_sync` job for this connection.",
                metadata={"problems": "\n".join(problems)},
            )
        breaker, blocked, overridden = _mass_removal_check(connection, store, allow=config.allow_mass_removal)
        yield breaker
        if blocked:
            raise QuarantinedFailure(description=blocked)
        if overridden:
            context.log.warning("mass-removal breaker overridden by run config (allow_mass_removal)")
        context.log.info(f"{connection.id}: publishing {len(SYNC_TABLES)} tables and the sync's change events "
                         "in one transaction")
        counts = store.publish(connection.id, sync_id=context.run.run_id)
        registry.record_published(connection.id, context.run.run_id, datetime.now(UTC))
        serialised = registry.write_seconds
    tables = {name: n for name, n in counts.items() if name != DIRECTORY_CHANGES.name}
    context.log.info(f"{connection.id}: published {len(tables)} tables "
                     f"({', '.join(f'{name} {n}' for name, n in tables.items())}) "
                     f"and {counts[DIRECTORY_CHANGES.name]} change events")
    yield dg.MaterializeResult(
        metadata={f"published.{name}": n for name, n in counts.items()}
        | {"sync_id": context.run.run_id, "mass_removal_override": overridden,
           # the run's registry writes: the only part of a sync serialised with other organisations' syncs
           "serialised_seconds": round(serialised, 4)}
        | _prune_parquet_sets(context, store, connection.id, warehouse.parquet_retention)
        | sync_report_metadata(context, store, connection.id)
    )


SYNC_ASSETS = [google_directory, filtered_memberships, role_mapped_entitlements, entitlement_explanations,
               published_directory]


def _prune_parquet_sets(
    context: dg.AssetExecutionContext, store: Warehouse, connection_id: str, retention: Retention
) -> dict[str, int]:
    """After the publish: remove the connection's Parquet sets the retention keeps no longer (retention.py).

    The sync is published by then: a set that cannot be removed is a warning for `dirsync prune`, not a failure.
    """
    try:
        pruned = prune_connection(store.parquet_dir, connection_id, retention)
    except OSError as exc:
        context.log.warning(f"{connection_id}: old Parquet sets not pruned ({exc}); run `dirsync prune` once fixed")
        return {}
    if pruned.removed:
        context.log.info(f"{connection_id}: pruned {len(pruned.removed)} Parquet set(s) "
                         f"({pruned.freed_bytes / 1e6:.1f} MB); {len(pruned.kept)} kept")
    return {"parquet.sets_kept": len(pruned.kept), "parquet.sets_pruned": len(pruned.removed)}
