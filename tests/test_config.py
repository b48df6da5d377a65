"""Config errors are found at load time, name the key path and the fix, and never echo secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from dirsync_pipeline.config import ConfigError, load_config, parse_config


def connection(**overrides) -> dict:
    return {"id": "acme", "emulator": {}, "selected_groups": ["eng@acme.com"], **overrides}


def problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(raw, source="test.yaml")
    return str(excinfo.value)


def test_embedded_default_is_the_demo_connection(monkeypatch):
    monkeypatch.delenv("DIRSYNC_CONFIG", raising=False)
    config = load_config()
    assert [c.id for c in config.connections] == ["demo"]
    assert config.connections[0].emulator is not None
    assert str(config.warehouse.path) == "data"


def test_unknown_key_is_reported_with_its_path():
    message = problems({"connections": [connection(selected_group=["x"])]})
    assert "connections[0].selected_group: unknown key" in message
    missing = problems({"connections": [{"id": "acme", "emulator": {}}]})
    assert "connections[0].selected_groups: required key is missing" in missing


def test_bad_connection_id_and_duplicate_ids():
    assert "connections[0].id: use only lower-case letters" in problems({"connections": [connection(id="Acme Corp")]})
    assert "connection ids must be unique; ['acme']" in problems({"connections": [connection(), connection()]})


def test_rate_limit_is_positive_at_most_1000_or_null_for_no_pacing():
    assert parse_config({"connections": [connection()]}, source="t").connections[0].rate_limit_qps == 40  # Google's quota
    assert parse_config({"connections": [connection(rate_limit_qps=None)]}, source="t").connections[0].rate_limit_qps is None
    assert "connections[0].rate_limit_qps" in problems({"connections": [connection(rate_limit_qps=0)]})
    assert "connections[0].rate_limit_qps" in problems({"connections": [connection(rate_limit_qps=5000)]})


def test_highest_priority_needs_a_complete_role_priority():
    assert "needs `role_priority" in problems({"connections": [connection(role_assignment="highest_priority")]})
    message = problems({"connections": [connection(
        role_assignment="highest_priority", role_priority=["admin"],
        role_mapping={"eng@acme.com": ["admin", "developer"]}, default_role="member")]})
    assert "role_priority lacks role(s) ['developer', 'member']" in message


def test_credentials_file_must_exist_and_match_the_type(tmp_path: Path):
    missing = tmp_path / "nope.json"
    message = problems({"connections": [connection(credentials={"type": "service_account", "file": str(missing)})]})
    assert f"credentials file {missing} does not exist" in message
    assert "needs one of `file:`" in problems({"connections": [connection(credentials={"type": "authorized_user"})]})
    both = {"type": "service_account", "file": str(missing), "env": "ACME_KEY"}
    assert "needs one of `file:`" in problems({"connections": [connection(credentials=both)]})
    assert "takes no `file:` or `env:`" in problems({"connections": [connection(credentials={"type": "none", "env": "K"})]})


def test_real_google_needs_real_credentials():
    message = problems({"connections": [{"id": "acme", "selected_groups": "all"}]})
    assert "credentials.type none only works against an emulator" in message


def test_invalid_values_are_not_echoed(tmp_path: Path):
    secret = "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    message = problems({"connections": [connection(credentials={"type": secret, "subject": secret})]})
    assert "credentials.type" in message
    assert secret not in message and "MIIEvQ" not in message


def test_file_paths_are_relative_to_the_config_file(tmp_path: Path):
    (tmp_path / "secrets").mkdir()
    key = tmp_path / "secrets" / "sa.json"
    key.write_text("{}")
    config_file = tmp_path / "dirsync.yaml"
    config_file.write_text(
        "warehouse: {path: out}\n"
        "connections:\n"
        "  - id: acme\n"
        "    credentials: {type: service_account, file: secrets/sa.json, subject: admin@acme.com}\n"
        "    selected_groups: all\n"
        "    role_mapping: {Eng@Acme.com: developer, admins@acme.com: [admin, developer]}\n"
    )
    config = load_config(config_file)
    assert config.warehouse.path == tmp_path / "out"
    assert config.warehouse.parquet_path == tmp_path / "out" / "parquet"
    assert config.connections[0].credentials.file == key
    assert config.connections[0].mapped_roles() == {"eng@acme.com": ["developer"], "admins@acme.com": ["admin", "developer"]}


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found; pass --config PATH or set DIRSYNC_CONFIG"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("connections: [\n  - id: x\n")
    with pytest.raises(ConfigError, match="not valid YAML or JSON at line"):
        load_config(broken)
