"""The dirsync config file: typed, validated at load time, with errors that name the key and the fix.

A config names the DuckDB warehouse and one or more Google Workspace *connections*. With no config at
all dirsync runs on the embedded default: one ``demo`` connection served by the built-in emulator.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_ENV_VAR = "DIRSYNC_CONFIG"
CONNECTION_ID_PATTERN = r"^[a-z0-9_-]+$"
# Directory API: 2,400 queries per minute per admin user per Cloud project, Google's documented default.
GOOGLE_QUOTA_QPS = 40.0
MAX_RATE_LIMIT_QPS = 1000.0
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(Exception):
    """A config file that cannot be used; the message lists every problem with its key path."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParquetRetentionConfig(_Strict):
    """How long a published Parquet set stays (warehouse/retention.py); the current set always stays."""

    keep_last: int = Field(24, ge=1, le=100_000)  # sets per connection, the current one included: a day hourly
    grace_minutes: float = Field(60.0, ge=0)  # a set replaced less than this ago stays: a consumer may be reading it


class WarehouseConfig(_Strict):
    """The warehouse folder: the connections registry, one DuckDB file per connection, the published copies
    readers attach, and the Parquet outputs (README "Layout of the warehouse folder")."""

    path: Path = Path("data")
    # Parquet outputs for consumers, which are also the per-sync snapshots replay reads.
    parquet_dir: Path | None = None  # default: <path>/parquet
    parquet_retention: ParquetRetentionConfig = ParquetRetentionConfig()

    @model_validator(mode="before")
    @classmethod
    def _no_single_file(cls, raw: object) -> object:
        if isinstance(raw, dict) and "duckdb_path" in raw:
            raise ValueError("`duckdb_path` was replaced by `path`, the warehouse folder (each connection has its "
                             "own DuckDB file in it since 0.2): write `path: <folder>`")
        return raw

    @property
    def parquet_path(self) -> Path:
        return self.parquet_dir or default_parquet_dir(self.path)


def default_parquet_dir(warehouse_dir: Path) -> Path:
    return warehouse_dir / "parquet"


class CredentialsConfig(_Strict):
    """How a connection authenticates. Keys are referenced, never copied: ``file`` is a path to the JSON key,
    ``env`` the name of an environment variable holding it (a Kubernetes secret, say); the registry and the
    config keep only the reference."""

    type: Literal["service_account", "authorized_user", "adc", "none"] = "none"
    file: Path | None = None
    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    subject: str | None = None

    @field_validator("subject")
    @classmethod
    def _subject_is_an_email(cls, subject: str | None) -> str | None:
        if subject is not None and not _EMAIL.match(subject):
            raise ValueError("must be the email address of the admin to impersonate, e.g. admin@example.com")
        return subject

    @model_validator(mode="after")
    def _file_matches_type(self) -> CredentialsConfig:
        needs_key = self.type in ("service_account", "authorized_user")
        if needs_key and (self.file is None) == (self.env is None):
            raise ValueError(f"credentials.type {self.type} needs one of `file:` (path of the {self.type} JSON key) "
                             "or `env:` (an environment variable holding that JSON)")
        if not needs_key and (self.file is not None or self.env is not None):
            raise ValueError(f"credentials.type {self.type} takes no `file:` or `env:`; remove it or change the type")
        # An authorized_user token may not exist yet: `dirsync authorize` creates it.
        awaiting_consent = self.type == "authorized_user" and self.file is not None and not self.file.exists()
        if self.file is not None and not self.file.is_file() and not awaiting_consent:
            raise ValueError(f"credentials file {self.file} does not exist or is not a file; fix the path")
        if self.type == "authorized_user" and self.subject is not None:
            raise ValueError("`subject` is only for service accounts (domain-wide delegation); remove it")
        return self


class EmulatorConfig(_Strict):
    """Serve this connection from dirsync's built-in Directory API emulator (the demo directory)."""

    users: int = Field(2000, ge=1, le=1_000_000)
    groups: int = Field(150, ge=1, le=100_000)
    seed: int = 42
    domain: str = "demo.example.com"


class RetryConfig(_Strict):
    """How long a sync keeps retrying transient Google failures (5xx, 429, rate-limit 403s, network)."""

    max_attempts: int = Field(8, ge=1, le=30)
    max_delay_seconds: float = Field(32.0, gt=0, le=600)
    total_budget_seconds: float = Field(900.0, gt=0, le=3 * 3600)


class SafeguardsConfig(_Strict):
    """The mass-removal circuit breaker's limits (share of published rows, and optionally a count)."""

    max_removal_share: float = Field(0.2, ge=0, le=1)
    max_removal_count: int | None = Field(None, ge=0)


class LimitsConfig(_Strict):
    """The most a directory can hold: every page chain of a sync is bounded by it (see PageChain), so an
    answer that hands out page tokens forever stops with an error instead of paging on."""

    max_users: int = Field(1_000_000, ge=1, le=100_000_000)
    max_groups: int = Field(200_000, ge=1, le=10_000_000)


class ConnectionConfig(_Strict):
    id: str = Field(pattern=CONNECTION_ID_PATTERN, max_length=64)
    customer: str = "my_customer"
    api_endpoint: str | None = None
    emulator: EmulatorConfig | None = None
    credentials: CredentialsConfig = CredentialsConfig()
    selected_groups: list[str] | Literal["all"]
    role_mapping: dict[str, str | list[str]] = {}
    default_role: str | None = None
    role_assignment: Literal["all", "highest_priority"] = "all"
    role_priority: list[str] | None = None
    max_concurrency: int = Field(8, ge=1, le=64)
    # members.list calls sent together in one HTTP batch request (1: one request per call). Each part still
    # counts against Google's quota; batching saves round trips and per-request overhead. Google allows 1,000.
    batch_size: int = Field(50, ge=1, le=1000)
    # The pace a sync starts at and never exceeds; it slows down on its own when Google refuses (429, 403 rate
    # limits) and wins the pace back as calls succeed (google/retry.py). Google's documented quota by default:
    # raise it if the admin's quota was raised, lower it for a Cloud project shared with other tools.
    # null: no client-side pacing, for an endpoint without a quota (the emulator), never for Google.
    rate_limit_qps: float | None = GOOGLE_QUOTA_QPS
    retry: RetryConfig = RetryConfig()
    safeguards: SafeguardsConfig = SafeguardsConfig()
    limits: LimitsConfig = LimitsConfig()

    @field_validator("api_endpoint")
    @classmethod
    def _endpoint_is_http(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and not re.match(r"^https?://[^/\s]+", endpoint):
            raise ValueError("must be an http(s) URL such as https://admin.googleapis.com/")
        return endpoint

    @field_validator("rate_limit_qps")
    @classmethod
    def _pace_in_range(cls, qps: float | None) -> float | None:
        if qps is not None and not 0 < qps <= MAX_RATE_LIMIT_QPS:
            raise ValueError(
                f"must be queries per second above 0 and at most {MAX_RATE_LIMIT_QPS:,.0f}: Google's documented quota "
                f"is {GOOGLE_QUOTA_QPS:g} (2,400 per minute per admin), the default; raise it only if your admin's "
                "quota was raised, lower it for a shared Cloud project, or write null for no pacing (an emulator)"
            )
        return qps

    @field_validator("selected_groups")
    @classmethod
    def _groups_not_empty(cls, groups: list[str] | str) -> list[str] | str:
        if isinstance(groups, list) and not groups:
            raise ValueError("select at least one group (email or id), or write `all`")
        return groups

    @model_validator(mode="after")
    def _consistent(self) -> ConnectionConfig:
        if self.emulator is not None and self.api_endpoint is not None:
            raise ValueError("`emulator` and `api_endpoint` exclude each other; keep one")
        talks_to_google = self.emulator is None and self.api_endpoint is None
        if talks_to_google and self.credentials.type == "none":
            raise ValueError(
                "credentials.type none only works against an emulator; set credentials "
                "(service_account with subject, authorized_user or adc) to reach Google"
            )
        if self.role_assignment == "highest_priority":
            if not self.role_priority:
                raise ValueError("role_assignment highest_priority needs `role_priority: [highest, ..., lowest]`")
            missing = sorted(self.roles_used() - set(self.role_priority))
            if missing:
                raise ValueError(f"role_priority lacks role(s) {missing}; add them in priority order")
        return self

    def roles_used(self) -> set[str]:
        roles = {role for value in self.role_mapping.values() for role in _as_list(value)}
        return roles | ({self.default_role} if self.default_role else set())

    def mapped_roles(self) -> dict[str, list[str]]:
        """Role mapping with every value as a list, keys lower-cased so emails match case-insensitively."""
        return {key.lower(): _as_list(value) for key, value in self.role_mapping.items()}


class DirsyncConfig(_Strict):
    warehouse: WarehouseConfig = WarehouseConfig()
    # Registered in the warehouse's registry when the config is loaded; more are added at run time with
    # `dirsync connections add` (a deployment's config may list none).
    connections: list[ConnectionConfig] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> DirsyncConfig:
        ids = [c.id for c in self.connections]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"connection ids must be unique; {duplicates} repeat")
        return self


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


DEMO_DOMAIN = "demo.example.com"

EMBEDDED_DEFAULT: dict = {
    "warehouse": {"path": "data"},
    "connections": [
        {
            "id": "demo",
            "customer": "my_customer",
            "emulator": {"users": 2000, "groups": 150, "seed": 42, "domain": DEMO_DOMAIN},
            "credentials": {"type": "none"},
            "selected_groups": [f"{g}@{DEMO_DOMAIN}" for g in ("all-staff", "admins", "engineering", "sales", "support")],
            "role_mapping": {
                f"admins@{DEMO_DOMAIN}": ["admin", "developer"],
                f"engineering@{DEMO_DOMAIN}": "developer",
                f"sales@{DEMO_DOMAIN}": "sales",
                f"support@{DEMO_DOMAIN}": "support",
            },
            "default_role": "member",
            "role_assignment": "all",
        }
    ],
}


def load_config(path: str | Path | None = None) -> DirsyncConfig:
    """Load ``path``, else ``$DIRSYNC_CONFIG``, else the embedded default.

    Relative paths inside a config file (warehouse.path, credentials.file) are taken relative to the
    file's own folder, so a config works from any working directory.
    """
    path = path or os.environ.get(CONFIG_ENV_VAR)
    if not path:
        return parse_config(EMBEDDED_DEFAULT, source="the embedded default config")
    config_path = Path(path)
    if not config_path.is_file():
        raise ConfigError(f"config file {config_path} not found; pass --config PATH or set {CONFIG_ENV_VAR}")
    raw = _read_yaml(config_path)
    return parse_config(_resolve_relative_paths(raw, config_path.parent), source=str(config_path))


def parse_config(raw: object, *, source: str) -> DirsyncConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with `warehouse:` and `connections:` keys")
    return _validated(DirsyncConfig, raw, f"{source} is not a valid dirsync config")


def load_connection_file(path: str | Path, *, default_id: str | None = None) -> ConnectionConfig:
    """One connection from a YAML or JSON file (a config file's ``connections:`` entry), validated as a config
    is; a relative ``credentials.file`` is taken relative to the file's folder."""
    raw = _read_yaml(Path(path))
    if not isinstance(raw, dict) or "connections" in raw:
        raise ConfigError(f"{path}: expected one connection (a mapping with `id:`, `selected_groups:`, ...), "
                          "as one entry of a config file's `connections:` list")
    if default_id is not None:
        raw.setdefault("id", default_id)
    _resolve_credentials_path(raw, Path(path).parent)
    return parse_connection(raw, source=str(path))


def parse_connection(raw: dict, *, source: str) -> ConnectionConfig:
    return _validated(ConnectionConfig, raw, f"{source} is not a valid connection")


def _validated(model: type[BaseModel], raw: dict, what: str):
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_key_path(err['loc'])}: {_describe(err)}" for err in exc.errors())
        raise ConfigError(f"{what}:\n{problems}") from None


def _read_yaml(path: Path) -> object:
    if not path.is_file():
        raise ConfigError(f"file {path} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML or JSON{where}; fix the syntax") from None


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("function-after", "literal['all']", "list[str]", "str", "list[str]"):
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _describe(err: dict) -> str:
    """Pydantic's message without the offending value, so no secret ever reaches an error."""
    if err["type"] == "extra_forbidden":
        return "unknown key; check its spelling against the config reference in README.md"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "string_pattern_mismatch":
        return "use only lower-case letters, digits, `_` and `-` (it becomes a partition key and a column value)"
    return err["msg"].removeprefix("Value error, ")


def _resolve_relative_paths(raw: object, base: Path) -> object:
    if not isinstance(raw, dict):
        return raw
    warehouse = raw.get("warehouse")
    for key in ("path", "parquet_dir"):
        if isinstance(warehouse, dict) and isinstance(warehouse.get(key), str):
            warehouse[key] = str(base / warehouse[key])
    for connection in raw.get("connections") or []:
        _resolve_credentials_path(connection, base)
    return raw


def _resolve_credentials_path(connection: object, base: Path) -> None:
    credentials = connection.get("credentials") if isinstance(connection, dict) else None
    if isinstance(credentials, dict) and isinstance(credentials.get("file"), str):
        credentials["file"] = str((base / credentials["file"]).resolve())
