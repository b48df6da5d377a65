"""``connections_sensor``: the registry, as the running system sees it.

Every tick it makes the ``connections`` partitions equal to the registered connections: a connection added
(from the CLI, or a config file) becomes a partition and is synced at once; a removed one stops being a
partition. It runs under the daemon (``dagster dev`` starts one), so nothing is restarted or reloaded.
When a connection's status changes (``validating``, ``active``, ``invalid_credentials``...), it records an
observation of ``published_directory`` for that partition, so the UI shows each organisation's state and
its last error next to its syncs.
"""

from __future__ import annotations

import json

import dagster as dg

from dirsync_pipeline.defs.jobs import TRIGGER_TAG, sync_job
from dirsync_pipeline.defs.partitions import CONNECTIONS
from dirsync_pipeline.defs.resources import ConnectionsResource

SENSOR_INTERVAL_SECONDS = 15  # a new connection is synced within about this long of `dirsync connections add`


@dg.sensor(
    name="connections_sensor", job=sync_job, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition for each newly registered connection and syncs it at once; removes the "
                "partitions of removed connections.",
)
def connections_sensor(context: dg.SensorEvaluationContext, connections: ConnectionsResource) -> dg.SensorResult:
    registered = {c.id: c for c in connections.registry.list()}
    known = set(context.instance.get_dynamic_partitions(CONNECTIONS.name))
    added, removed = sorted(set(registered) - known), sorted(known - set(registered))
    requests = []
    if added:
        requests.append(CONNECTIONS.build_add_request(added))
        context.log.info(f"new connections: {added}")
    if removed:
        requests.append(CONNECTIONS.build_delete_request(removed))
        context.log.info(f"removed connections: {removed}")
    first_syncs = [
        # The run key names this registration: a connection removed and added again is synced again.
        dg.RunRequest(partition_key=c, run_key=f"first-sync-{c}-{registered[c].created_at}", tags={TRIGGER_TAG: "added"})
        for c in added if registered[c].enabled
    ]
    # A connection is observed once it is a partition (from the tick after it was added) and its state changed.
    seen = json.loads(context.cursor) if context.cursor else {}
    states = {c.id: [c.status, c.last_error] for c in registered.values() if c.id in known}
    changed = [registered[c] for c, state in states.items() if seen.get(c) != state]
    observations = [
        dg.AssetObservation(asset_key="published_directory", partition=c.id, metadata={
            "connection.status": c.status, "connection.enabled": c.enabled,
            "connection.last_synced_at": c.last_synced_at or "never", "connection.last_error": c.last_error or "none",
        })
        for c in changed
    ]
    return dg.SensorResult(run_requests=first_syncs, dynamic_partitions_requests=requests, asset_events=observations,
                           cursor=json.dumps(states, sort_keys=True))
