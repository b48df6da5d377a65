"""Dagster resources: where the directory comes from, and where the tables go."""


from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from dirsync_pipeline.config import ConnectionConfig, load_config
from dirsync_pipeline.google.auth import build_credentials
from dirsync_pipeline.google.client import DirectoryClient
from dirsync_pipeline.google.endpoint import ensure_reachable
from dirsync_pipeline.google.retry import RateLimiter, RetryPolicy
from dirsync_pipeline.registry import REGISTRY_FILE, RegisteredConnection, Registry
from dirsync_pipeline.warehouse.replay import materialized_in_run, restore_stage
from dirsync_pipeline.warehouse.retention import Retention
from dirsync_pipeline.warehouse.store import Warehouse
from dirsync_pipeline.warehouse.tables import TABLES_BY_ASSET_KEY

PARTITION_TAG = "dagster/partition"  # how a run names its partition (the connection)

if TYPE_CHECKING:
    from dirsync_pipeline.emulator import DirectoryEmulator


class ConnectionsResource(dg.ConfigurableResource):
    """The connections registry of the warehouse a config names: read at every use, so an organisation added,
    changed or disabled from the CLI counts at once, with no reload of the code location."""

    config_path: str | None = None  # None: $DIRSYNC_CONFIG, else the embedded demo default
    warehouse_dir: str  # the config's warehouse folder, resolved when the code location loaded

    _registry: Registry | None = PrivateAttr(default=None)

    @property
    def registry(self) -> Registry:
        """The registry, with the config file's connections registered as the file is now (a no-op when they are)."""
        if self._registry is None:
            self._registry = Registry(Path(self.warehouse_dir) / REGISTRY_FILE)
        self._registry.register_config(load_config(self.config_path))
        return self._registry

    def get(self, connection_id: str) -> RegisteredConnection:
        return self.registry.get(connection_id)


class GoogleDirectoryResource(dg.ConfigurableResource):
    """Opens Directory API clients for connections.

    A connection with an ``emulator:`` block is served by dirsync's built-in Directory API emulator,
    started on a free local port for the duration of the run; the client code is the same either way.
    """

    _emulators: dict[str, "DirectoryEmulator"] = PrivateAttr(default_factory=dict)

    @contextmanager
    def client(self, connection: ConnectionConfig) -> Iterator[DirectoryClient]:
        """A client for ``connection``, stopped when the block ends: no request of it outlives the block."""
        credentials = build_credentials(connection.credentials)  # a bad key is named first
        ensure_reachable(connection.api_endpoint)  # a misspelt endpoint fails now, not after the retries
        client = DirectoryClient(
            credentials,
            customer=connection.customer,
            api_endpoint=self.endpoint(connection),
            subject=connection.credentials.subject,
            max_concurrency=connection.max_concurrency,
            batch_size=connection.batch_size,
            retry_policy=RetryPolicy(
                max_attempts=connection.retry.max_attempts,
                max_delay=connection.retry.max_delay_seconds,
                total_budget=connection.retry.total_budget_seconds,
            ),
            rate_limiter=RateLimiter(connection.rate_limit_qps),
            max_users=connection.limits.max_users,
            max_groups=connection.limits.max_groups,
        )
        try:
            yield client
        finally:
            client.stop()

    def endpoint(self, connection: ConnectionConfig) -> str | None:
        """The API endpoint to call (None: Google); starts the connection's embedded emulator on first use."""
        if connection.emulator is None:
            return connection.api_endpoint
        if connection.id not in self._emulators:
            from dirsync_pipeline.emulator import DirectoryEmulator, generate_directory  # only a demo needs it

            settings = connection.emulator
            directory = generate_directory(settings.users, settings.groups, seed=settings.seed, domain=settings.domain)
            self._emulators[connection.id] = DirectoryEmulator(directory).start()
        return self._emulators[connection.id].url

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        """Stop the embedded emulators this resource started."""
        for emulator in self._emulators.values():
            emulator.stop()
        self._emulators.clear()


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse folder: each connection's DuckDB files, and the folder of the Parquet outputs."""

    warehouse_dir: str
    parquet_dir: str | None = None  # None: <warehouse_dir>/parquet
    # The Parquet sets kept after each publish (warehouse/retention.py): warehouse.parquet_retention of the config.
    parquet_keep_last: int
    parquet_grace_minutes: float

    @property
    def parquet_retention(self) -> Retention:
        return Retention(self.parquet_keep_last, timedelta(minutes=self.parquet_grace_minutes))

    def of(self, connection_id: str) -> Warehouse:
        return Warehouse(self.warehouse_dir, connection_id, self.parquet_dir)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        hold_for_run(self.of, context)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        release_for_run(self.of, context)


def run_connection(context: dg.InitResourceContext) -> str | None:
    """The connection (partition) a run syncs: every dirsync run is one connection's (None: not in a run)."""
    if context.dagster_run is None:
        return None
    partition = context.dagster_run.tags.get(PARTITION_TAG)
    if not partition:
        raise dg.Failure(description="a dirsync run syncs one connection: pick it as the partition "
                                     "(Materialize all, then select a partition)")
    return partition


def hold_for_run(warehouse: Callable[[str], Warehouse], context: dg.InitResourceContext) -> None:
    """The run holds its connection's sync lock and one DuckDB connection until it ends (Warehouse.hold)."""
    if (connection_id := run_connection(context)) is not None:
        warehouse(connection_id).hold(holder=f"run {context.run_id}", on_wait=context.log.warning)


def release_for_run(warehouse: Callable[[str], Warehouse], context: dg.InitResourceContext) -> None:
    if (connection_id := run_connection(context)) is not None:
        warehouse(connection_id).release()


@dataclass
class _Kept:
    """A frame this run staged, and how many of the run's steps have still to load it."""

    frame: pl.DataFrame
    loads: int


def loads_in_run(job: dg.JobDefinition, key: dg.AssetKey) -> int:
    """How many steps of the run ``job`` executes load ``key`` as an input (a mere dep loads nothing)."""
    graph, executed = job.asset_layer.asset_graph, set(job.asset_layer.executable_asset_keys)
    return sum(
        not child.node_def.input_def_named(name).dagster_type.is_nothing
        for child in {graph.get(c).assets_def for c in graph.get(key).child_keys if c in executed}
        for name, upstream in child.keys_by_input_name.items() if upstream == key
    )


class StagingIOManager(dg.ConfigurableIOManager):
    """Stores each stage's frame in the DuckDB staging schema, one connection (partition) at a time.

    Published tables are written only by the ``published_directory`` asset, after every check passed.
    A stage the run does not materialize is the last published sync's, restored from its Parquet
    snapshot (replay.py): re-materializing downstream assets never calls Google nor reads stale stages.

    The steps of a run share this process (in-process executor), so a stage this run wrote is handed to
    the steps that load it as the frame itself, with the contract's types: what reading it back from
    staging returns, without the read (~0.1 s per S1 sync). It is dropped at its last load; the steps
    that load it share one frame instead of reading a copy each, which more than pays for holding it
    between them (S2's peak RSS per step did not grow).
    """

    warehouse_dir: str
    parquet_dir: str | None = None  # None: <warehouse_dir>/parquet

    # (run, asset, partition) stages already restored in this run: several steps load the same stage.
    _restored: set[tuple[str, dg.AssetKey, str]] = PrivateAttr(default_factory=set)
    # (run, asset, partition) stages this run wrote, until the last of the run's steps that load them has.
    _kept: dict[tuple[str, dg.AssetKey, str], _Kept] = PrivateAttr(default_factory=dict)

    def of(self, connection_id: str) -> Warehouse:
        return Warehouse(self.warehouse_dir, connection_id, self.parquet_dir)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        hold_for_run(self.of, context)  # shares the run's connection with the warehouse

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._kept.clear()  # after a failed step, the steps that would have loaded its inputs never ran
        release_for_run(self.of, context)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        table = TABLES_BY_ASSET_KEY[context.asset_key]
        self.of(context.partition_key).stage(table, obj)
        if loads := loads_in_run(context.step_context.job_def, context.asset_key):
            self._kept[(context.run_id, context.asset_key, context.partition_key)] = _Kept(table.typed(obj), loads)

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        table = TABLES_BY_ASSET_KEY[context.asset_key]
        partition = context.asset_partition_key
        warehouse = self.of(partition)
        key = (context.step_context.run_id, context.asset_key, partition)
        if (kept := self._kept.get(key)) is not None:
            kept.loads -= 1
            if not kept.loads:
                del self._kept[key]
            return kept.frame
        if context.asset_key not in materialized_in_run(context.step_context.job_def) and key not in self._restored:
            self._restored.add(key)
            return restore_stage(warehouse, table, partition)
        return warehouse.read_staged(table, partition)
