"""The connections registry: the admin flow, status, config registration, and bad registry files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dirsync_pipeline.config import DirsyncConfig, parse_config, parse_connection
from dirsync_pipeline.registry import Registry, RegistryError, Status
from dirsync_pipeline.registry import store as registry_store


def connection(connection_id: str = "acme", **overrides) -> dict:
    return {"id": connection_id, "api_endpoint": "http://127.0.0.1:1/", "selected_groups": "all", **overrides}


def config_with(tmp_path: Path, *connections: dict) -> DirsyncConfig:
    return parse_config({"warehouse": {"path": str(tmp_path)}, "connections": list(connections)}, source="test")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry.sqlite")


def test_reading_a_registry_that_does_not_exist_creates_nothing(registry):
    assert registry.list() == [] and registry.events() == []
    assert not registry.path.exists()


def test_the_admin_flow_and_the_status_it_gives(registry):
    added = registry.add(parse_connection(connection(), source="t"))
    assert (added.status, added.enabled, added.last_synced_at) == ("validating", True, None)
    with pytest.raises(RegistryError, match="already registered; change it with `dirsync connections update acme"):
        registry.add(parse_connection(connection(), source="t"))

    registry.record_failure("acme", Status.INVALID_CREDENTIALS, "Google answered 401")
    assert (registry.get("acme").status, registry.get("acme").last_error) == ("invalid_credentials", "Google answered 401")
    published_at = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    registry.record_published("acme", "run-1", published_at)
    now = registry.get("acme")
    assert (now.status, now.last_error, now.last_sync_id) == ("active", None, "run-1")
    assert datetime.fromisoformat(now.last_synced_at) == published_at

    assert registry.set_enabled("acme", False).status == "inactive"
    assert registry.enabled_ids() == []
    assert registry.set_enabled("acme", True).status == "active"  # the last sync's outcome again

    updated = registry.update(parse_connection(connection(selected_groups=["eng@acme.test"]), source="t"))
    assert updated.config.selected_groups == ["eng@acme.test"]
    registry.remove("acme", detail="purged")
    assert registry.list() == []
    events = [e["event"] for e in registry.events()]
    assert events == ["connection.added", "connection.disabled", "connection.enabled", "connection.updated",
                      "connection.removed"]


def test_unknown_ids_are_refused_naming_the_known_ones(registry):
    registry.add(parse_connection(connection("acme"), source="t"))
    for call in (lambda: registry.get("nope"), lambda: registry.set_enabled("nope", False),
                 lambda: registry.remove("nope", "x"),
                 lambda: registry.update(parse_connection(connection("nope"), source="t"))):
        with pytest.raises(RegistryError, match=r"no connection 'nope' is registered; known: \['acme'\]"):
            call()


def test_credentials_are_stored_as_references_never_their_content(registry, tmp_path):
    key = tmp_path / "sa.json"
    key.write_text('{"private_key": "-----BEGIN PRIVATE KEY-----SECRET"}')
    registry.add(parse_connection(connection(credentials={"type": "service_account", "file": str(key),
                                                          "subject": "admin@acme.test"}), source="t"))
    registry.add(parse_connection(connection("globex", credentials={"type": "service_account", "env": "GLOBEX_KEY",
                                                                    "subject": "admin@globex.test"}), source="t"))
    raw = registry.path.read_bytes()
    assert b"SECRET" not in raw and str(key).encode() in raw and b"GLOBEX_KEY" in raw


def test_config_connections_are_registered_updated_and_stay_removed(tmp_path, registry):
    config = config_with(tmp_path, connection("acme"), connection("globex"))
    registry.register_config(config)
    assert [(c.id, c.source, c.status) for c in registry.list()] == [("acme", "config", "validating"),
                                                                    ("globex", "config", "validating")]
    registry.register_config(config)  # unchanged: nothing happens
    assert len(registry.events()) == 2

    changed = config_with(tmp_path, connection("acme", selected_groups=["eng@acme.test"]), connection("globex"))
    registry.register_config(changed)
    assert registry.get("acme").config.selected_groups == ["eng@acme.test"]  # the file is their source of truth
    with pytest.raises(RegistryError, match="defined in the config file; change it there"):
        registry.update(parse_connection(connection("acme"), source="t"))

    registry.remove("globex", "purged")
    registry.register_config(changed)
    assert [c.id for c in registry.list()] == ["acme"], "a removed config connection is not registered again"
    registry.add(parse_connection(connection("globex"), source="t"))  # until it is added on purpose
    assert registry.get("globex").source == "cli"


def test_a_corrupt_registry_is_named_and_left_as_it_was(registry):
    registry.path.write_bytes(b"this is not a database, but someone's data" * 100)
    before = registry.path.read_bytes()
    for call in (registry.list, lambda: registry.add(parse_connection(connection(), source="t"))):
        with pytest.raises(RegistryError, match=r"registry .*registry.sqlite cannot be read .*restore it from a backup"):
            call()
    assert registry.path.read_bytes() == before


def test_a_locked_registry_is_refused_after_waiting(registry, monkeypatch):
    registry.add(parse_connection(connection(), source="t"))
    monkeypatch.setattr(registry_store, "LOCK_WAIT_SECONDS", 0.2)
    holder = sqlite3.connect(registry.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RegistryError, match="stayed locked by another process .*nothing was changed"):
            registry.set_enabled("acme", False)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert registry.get("acme").enabled


def test_the_sensor_adds_partitions_syncs_new_connections_and_records_status_changes(tmp_path):
    """The connections sensor, evaluated as the daemon does, against a real instance and registry."""
    import dagster as dg

    from dirsync_pipeline.definitions import build_definitions

    config_file = tmp_path / "dirsync.yaml"
    config_file.write_text(f"warehouse: {{path: {tmp_path}}}\nconnections: []\n")
    defs = build_definitions(str(config_file))
    sensor = defs.resolve_sensor_def("connections_sensor")
    registry = Registry(tmp_path / "registry.sqlite")
    registry.add(parse_connection(connection("acme"), source="t"))
    registry.add(parse_connection(connection("globex"), source="t"))
    registry.set_enabled("globex", False)

    def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
        with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                     resources={"connections": defs.resources["connections"]}) as context:
            result = sensor(context)
        for request in result.dynamic_partitions_requests:  # what the daemon applies
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
        return result

    with dg.instance_for_test() as instance:
        first = tick(instance, None)
        assert [r.partition_key for r in first.run_requests] == ["acme"]  # a disabled connection is not synced
        assert sorted(instance.get_dynamic_partitions("connections")) == ["acme", "globex"]
        assert first.asset_events == []  # observed from the next tick, once they are partitions
        second = tick(instance, first.cursor)
        assert second.run_requests == []
        assert {(e.partition, e.metadata["connection.status"].value) for e in second.asset_events} == {
            ("acme", "validating"), ("globex", "inactive")}
        registry.record_failure("acme", Status.INVALID_CREDENTIALS, "Google answered 401")
        registry.remove("globex", "purged")
        third = tick(instance, second.cursor)
        assert [(e.partition, e.metadata["connection.status"].value, e.metadata["connection.last_error"].value)
                for e in third.asset_events] == [("acme", "invalid_credentials", "Google answered 401")]
        assert instance.get_dynamic_partitions("connections") == ["acme"]
