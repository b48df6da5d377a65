"""The table contract: every published table, its columns, types, keys and meaning, defined once.

DuckDB DDL, the pandera schemas that validate each stage, their SQL form that checks what a publish
writes, the Dagster column schemas shown in the UI and docs/tables.md are all derived from these specs,
so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import dagster as dg
import duckdb
import pandera.polars as pa
import polars as pl

TIMESTAMP = pl.Datetime("us", "UTC")
CONNECTION_ID = r"^[a-z0-9_-]+$"
VALIDATED_ROWS_PER_CHUNK = 100_000  # rows pandera validates at once: its memory grows with what it validates


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    sql: str
    description: str
    nullable: bool = False
    checks: tuple[pa.Check, ...] = ()


class SqlRule(NamedTuple):
    """One rule of the contract on a column's values, as SQL."""

    column: str
    rule: str  # what the contract requires, as pandera names it
    broken: str  # SQL condition, true for a row that breaks the rule


@dataclass(frozen=True, eq=False)
class Table:
    """One table of the contract. Its identity is its qualified name: tables key dicts and sets (a stage's
    frames, the references of a check), and the pandera checks it holds change their hash and equality
    after their first validation in a process, so the dataclass's field-wise hash would too."""

    schema: str
    name: str
    description: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    extra_checks: tuple[pa.Check, ...] = field(default=())

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and other.qualified_name == self.qualified_name

    def __hash__(self) -> int:
        return hash(self.qualified_name)

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.schema, self.name])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self, qualified_name: str | None = None) -> str:
        columns = ",\n  ".join(f"{c.name} {c.sql}{'' if c.nullable else ' NOT NULL'}" for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {qualified_name or self.qualified_name} (\n  {columns}\n)"

    def read(self, conn: duckdb.DuckDBPyConnection, connection_id: str, *, source: str | None = None) -> pl.DataFrame:
        """One connection's rows of ``source`` (default: this table), with the contract's polars types."""
        frame = conn.sql(f"SELECT {', '.join(self.column_names)} FROM {source or self.qualified_name} "
                         "WHERE connection_id = ?", params=[connection_id]).pl()
        return self.typed(frame)

    def typed(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The table's columns of ``frame``, cast to the contract's polars types (DuckDB and Parquet differ)."""
        return frame.select(pl.col(c.name).cast(c.dtype) for c in self.columns)

    def pandera_schema(self, *, unique_key: bool = True) -> pa.DataFrameSchema:
        """The contract as pandera; without ``unique_key`` when rows are validated in slices (checked whole apart)."""
        return pa.DataFrameSchema(
            {c.name: pa.Column(c.dtype, list(c.checks), nullable=c.nullable) for c in self.columns},
            checks=list(self.extra_checks),
            strict=True,
            unique=list(self.key) if unique_key else None,
            name=self.qualified_name,
        )

    def sql_rules(self) -> list[SqlRule]:
        """The contract's rules on values as SQL conditions, true for each row that breaks one.

        The same verdicts as ``pandera_schema`` on rows of this table (tests/test_contract_sql.py compares
        them): non-null columns, and each column check on the values that are not null (pandera's checks
        ignore nulls). The columns and their types are the table's DDL. The key is checked apart.
        """
        if self.extra_checks:
            raise ValueError(f"{self.qualified_name}: table-wide checks have no SQL form")
        rules = [SqlRule(c.name, "not null", f"{c.name} IS NULL") for c in self.columns if not c.nullable]
        rules += [SqlRule(c.name, check.error, f"{c.name} IS NOT NULL AND NOT ({_sql_check(check, c.name)})")
                  for c in self.columns for check in c.checks]
        return rules

    def dagster_column_schema(self) -> dg.TableSchema:
        return dg.TableSchema(
            columns=[
                dg.TableColumn(c.name, c.sql, description=c.description, constraints=dg.TableColumnConstraints(nullable=c.nullable))
                for c in self.columns
            ]
        )


def sql_literal(value: str) -> str:
    """A SQL string literal, for the statements that take no parameters (COPY, checks built from the contract)."""
    return "'" + value.replace("'", "''") + "'"


def _sql_check(check: pa.Check, column: str) -> str:
    """SQL true where ``column``'s (non-null) value passes ``check``, as pandera's polars backend decides it.

    Regular expressions: polars and DuckDB (RE2) agree on the contract's patterns; str_matches anchors
    at the start like pandera, str_contains searches. Lengths count characters, as polars' len_chars.
    """
    arguments = check.statistics
    match check.name:
        case "str_matches":
            pattern = arguments["pattern"]
            return f"regexp_matches({column}, {sql_literal(pattern if pattern.startswith('^') else '^' + pattern)})"
        case "str_contains":
            return f"regexp_matches({column}, {sql_literal(arguments['pattern'])})"
        case "str_startswith":
            return f"starts_with({column}, {sql_literal(arguments['string'])})"
        case "str_length" if arguments["max_value"] is None and arguments["exact_value"] is None:
            return f"length({column}) >= {int(arguments['min_value'])}"
        case "isin":
            return f"{column} IN ({', '.join(sql_literal(v) for v in arguments['allowed_values'])})"
        case "greater_than_or_equal_to":
            return f"{column} >= {int(arguments['min_value'])}"
    raise ValueError(f"check {check.name} of column {column} has no SQL form: add one to tables._sql_check")


def _connection_id() -> Column:
    return Column("connection_id", pl.Utf8, "VARCHAR", "Connection id from the config (the Dagster partition).",
                  checks=(pa.Check.str_matches(CONNECTION_ID),))


def _id(name: str, description: str) -> Column:
    return Column(name, pl.Utf8, "VARCHAR", description, checks=(pa.Check.str_length(min_value=1),))


def _email(name: str, description: str, nullable: bool = False) -> Column:
    return Column(name, pl.Utf8, "VARCHAR", description, nullable=nullable, checks=(pa.Check.str_contains("@"),))


def _user(email_description: str = "The user's primary email.") -> tuple[Column, ...]:
    """The leading columns of every per-user table: connection, immutable user id, email."""
    return (_connection_id(), _id("user_id", "Directory user id."), _email("primary_email", email_description))


def _role(description: str = "Application role.") -> Column:
    return Column("role", pl.Utf8, "VARCHAR", description, checks=(pa.Check.str_length(min_value=1),))


def _synced_at() -> Column:
    return Column("synced_at", TIMESTAMP, "TIMESTAMPTZ", "When this sync read the row from Google (UTC).")


GOOGLE_USERS = Table(
    "raw", "google_users",
    "Every non-deleted user of the Google Workspace customer, as users.list returns it.",
    key=("connection_id", "user_id"),
    columns=(
        _connection_id(),
        _id("user_id", "Google's immutable user id; the key (emails change on rename)."),
        _email("primary_email", "Primary email, lower-cased."),
        Column("given_name", pl.Utf8, "VARCHAR", "First name.", nullable=True),
        Column("family_name", pl.Utf8, "VARCHAR", "Last name.", nullable=True),
        Column("full_name", pl.Utf8, "VARCHAR", "Full name as Google shows it.", nullable=True),
        Column("is_admin", pl.Boolean, "BOOLEAN", "Super admin of the Workspace."),
        Column("suspended", pl.Boolean, "BOOLEAN", "Suspended users lose every entitlement."),
        Column("archived", pl.Boolean, "BOOLEAN", "Archived users lose every entitlement."),
        Column("org_unit_path", pl.Utf8, "VARCHAR", "Organizational unit, `/` for the root.",
               checks=(pa.Check.str_startswith("/"),)),
        Column("creation_time", TIMESTAMP, "TIMESTAMPTZ", "When the account was created.", nullable=True),
        Column("last_login_time", TIMESTAMP, "TIMESTAMPTZ", "Last login; NULL when the user never logged in.", nullable=True),
        Column("aliases", pl.List(pl.Utf8), "VARCHAR[]", "Email aliases, lower-cased."),
        _synced_at(),
    ),
)

GOOGLE_GROUPS = Table(
    "raw", "google_groups",
    "Every group of the customer (not only the selected ones), so an admin can choose which to sync.",
    key=("connection_id", "group_id"),
    columns=(
        _connection_id(),
        _id("group_id", "Google's immutable group id."),
        _email("email", "Group email, lower-cased."),
        Column("name", pl.Utf8, "VARCHAR", "Display name.", nullable=True),
        Column("description", pl.Utf8, "VARCHAR", "Description.", nullable=True),
        Column("direct_members_count", pl.Int64, "BIGINT", "Google's count of direct members (nested not counted).",
               checks=(pa.Check.ge(0),)),
        Column("admin_created", pl.Boolean, "BOOLEAN", "Created by an admin (not by a user)."),
        _synced_at(),
    ),
)

MEMBER_TYPES = ["USER", "GROUP", "CUSTOMER", "EXTERNAL"]

GOOGLE_GROUP_MEMBERS = Table(
    "raw", "google_group_members",
    "Direct membership edges of the selected groups and of every group nested in them.",
    key=("connection_id", "group_id", "member_id"),
    columns=(
        _connection_id(),
        _id("group_id", "The group."),
        _id("member_id", "User id, group id, or the customer id for a CUSTOMER member."),
        _email("member_email", "Member email; NULL for a CUSTOMER member (all users of the domain).", nullable=True),
        Column("member_type", pl.Utf8, "VARCHAR", "USER, GROUP, CUSTOMER or EXTERNAL.", checks=(pa.Check.isin(MEMBER_TYPES),)),
        Column("role", pl.Utf8, "VARCHAR", "OWNER, MANAGER or MEMBER.", checks=(pa.Check.isin(["OWNER", "MANAGER", "MEMBER"]),)),
        Column("status", pl.Utf8, "VARCHAR", "Member status as Google reports it (ACTIVE, SUSPENDED...); may be NULL.", nullable=True),
    ),
)

FILTERED_MEMBERSHIPS = Table(
    "core", "filtered_memberships",
    "One row per (directory user, selected group) the user belongs to: directly, through nested groups "
    "of any depth, or through a CUSTOMER member. Members outside the directory are left out.",
    key=("connection_id", "user_id", "group_id"),
    columns=(
        _connection_id(),
        _id("user_id", "Directory user id (raw.google_users.user_id)."),
        _email("primary_email", "The user's primary email."),
        _id("group_id", "The selected group."),
        _email("group_email", "The selected group's email."),
        Column("is_direct", pl.Boolean, "BOOLEAN", "True when the user is a direct member of the selected group."),
        Column("user_active", pl.Boolean, "BOOLEAN", "Not suspended and not archived."),
    ),
)

ROLE_MAPPED_ENTITLEMENTS = Table(
    "core", "role_mapped_entitlements",
    "One row per (active user, role): the roles the application grants, from the group-to-role mapping.",
    key=("connection_id", "user_id", "role"),
    columns=(
        *_user(),
        _role(),
        Column("granted_via", pl.List(pl.Utf8), "VARCHAR[]",
               "Sorted emails of the selected groups that gave the role; empty for the default role."),
    ),
)

RULES = ["role_mapping", "default_role"]
PATHS_PER_GROUP = 3  # shortest paths kept per (user, selected group): enough to explain, bounded on dense DAGs
EVERY_USER = "(every user of the customer)"  # how a path through a CUSTOMER member ends

ENTITLEMENT_EXPLANATIONS = Table(
    "core", "entitlement_explanations",
    "Why each current entitlement exists: the rule that gave it and the membership path(s) behind it, "
    "one row per row of core.role_mapped_entitlements (`dirsync explain USER` prints it).",
    key=("connection_id", "user_id", "role"),
    columns=(
        *_user(),
        _role("Application role (as in core.role_mapped_entitlements)."),
        Column("rule", pl.Utf8, "VARCHAR",
               "`role_mapping`: a selected group the user belongs to is mapped to the role; `default_role`: the user "
               "belongs to selected groups but none is mapped to a role.", checks=(pa.Check.isin(RULES),)),
        Column("via_groups", pl.List(pl.Utf8), "VARCHAR[]",
               "Sorted emails of the selected groups behind the rule: the groups mapped to the role (role_mapping), "
               "or every selected group the user belongs to (default_role)."),
        Column("paths", pl.List(pl.Utf8), "VARCHAR[]",
               "How the user is in each of via_groups: `selected > nested > ... > user email`, shortest paths first "
               f"(at most {PATHS_PER_GROUP} per group); `{EVERY_USER}` ends a path through a CUSTOMER member."),
        Column("outranked", pl.List(pl.Utf8), "VARCHAR[]",
               "Roles the user also qualified for that role_assignment `highest_priority` dropped in favour of this "
               "one, best first; empty under `all`."),
    ),
)

SYNC_TABLES = (GOOGLE_USERS, GOOGLE_GROUPS, GOOGLE_GROUP_MEMBERS, FILTERED_MEMBERSHIPS, ROLE_MAPPED_ENTITLEMENTS,
               ENTITLEMENT_EXPLANATIONS)
TABLES_BY_ASSET_KEY = {t.asset_key: t for t in SYNC_TABLES}
GOOGLE_ASSET_KEYS = [t.asset_key for t in (GOOGLE_USERS, GOOGLE_GROUPS, GOOGLE_GROUP_MEMBERS)]  # read from Google

SYNC_LOG = Table(
    "core", "sync_log",
    "One row per published sync: what was published, when, by which Dagster run.",
    key=("connection_id", "sync_id"),
    columns=(
        _connection_id(),
        _id("sync_id", "The Dagster run id of the sync."),
        Column("published_at", TIMESTAMP, "TIMESTAMPTZ", "When the sync's tables became visible."),
        Column("users", pl.Int64, "BIGINT", "Rows published in raw.google_users."),
        Column("groups", pl.Int64, "BIGINT", "Rows published in raw.google_groups."),
        Column("group_members", pl.Int64, "BIGINT", "Rows published in raw.google_group_members."),
        Column("memberships", pl.Int64, "BIGINT", "Rows published in core.filtered_memberships."),
        Column("entitlements", pl.Int64, "BIGINT", "Rows published in core.role_mapped_entitlements."),
    ),
)


# The tables counted in core.sync_log, in the order of its count columns.
SYNC_LOG_COUNTED = (GOOGLE_USERS, GOOGLE_GROUPS, GOOGLE_GROUP_MEMBERS, FILTERED_MEMBERSHIPS, ROLE_MAPPED_ENTITLEMENTS)

# Bumped when a published column is removed or retyped (adding columns or tables keeps it); written in
# every Parquet manifest so consumers can refuse a layout they do not know.
SCHEMA_VERSION = 1

EVENTS = [
    "user.created", "user.updated", "user.suspended", "user.reactivated", "user.archived", "user.deleted",
    "group.created", "group.updated", "group.deleted", "membership.added", "membership.removed",
    "role.granted", "role.revoked",
]


def _json_column(name: str, description: str) -> Column:
    return Column(name, pl.Utf8, "VARCHAR", description, nullable=True, checks=(pa.Check.str_startswith("{"),))


DIRECTORY_CHANGES = Table(
    "core", "directory_changes",
    "Append-only log of what changed between consecutive published syncs of a connection, keyed on Google's "
    "immutable ids (a rename is `user.updated`). A sync that publishes nothing appends nothing; the first sync "
    "of a connection reports everything as created or granted, with `initial` true.",
    key=("connection_id", "sync_id", "event", "user_id", "group_id", "role"),
    columns=(
        _connection_id(),
        _id("sync_id", "The sync (Dagster run id) that published the change; joins core.sync_log."),
        Column("changed_at", TIMESTAMP, "TIMESTAMPTZ",
               "When that sync was published (= core.sync_log.published_at). Google changed it between the "
               "previous sync and this time."),
        Column("event", pl.Utf8, "VARCHAR", "One of: " + ", ".join(f"`{e}`" for e in EVENTS) + ".",
               checks=(pa.Check.isin(EVENTS),)),
        Column("user_id", pl.Utf8, "VARCHAR", "The user (user.*, membership.*, role.*); else NULL.", nullable=True),
        _email("user_email", "The user's primary email (the new one after a rename, the last one for "
                             "user.deleted); else NULL.", nullable=True),
        Column("group_id", pl.Utf8, "VARCHAR", "The group (group.*, membership.*); else NULL.", nullable=True),
        _email("group_email", "The group's email; else NULL.", nullable=True),
        Column("role", pl.Utf8, "VARCHAR", "The application role (role.*); else NULL.", nullable=True),
        Column("initial", pl.Boolean, "BOOLEAN",
               "True for the events of a connection's first sync (the whole directory appears at once)."),
        _json_column("before", "JSON object of the changed attributes before the change (every attribute for "
                        "*.deleted / removed / revoked); NULL for *.created / added / granted."),
        _json_column("after", "JSON object of the changed attributes after the change (every attribute for "
                       "*.created / added / granted); NULL for *.deleted / removed / revoked."),
    ),
)


def _validity() -> tuple[Column, ...]:
    return (
        Column("valid_from", TIMESTAMP, "TIMESTAMPTZ", "Publish time of the sync that first saw this version."),
        Column("valid_to", TIMESTAMP, "TIMESTAMPTZ",
               "Publish time of the sync that saw it end or change; NULL while current. Half-open: the version "
               "held at T when valid_from <= T < valid_to.", nullable=True),
        Column("held_since", TIMESTAMP, "TIMESTAMPTZ",
               "Start of the unbroken period the key has been held, carried across versions (an email rename "
               "or a new granting group opens a version but does not reset it)."),
        _id("sync_id", "The sync that opened this version."),
    )


ENTITLEMENTS_HISTORY = Table(
    "core", "entitlements_history",
    "SCD type 2 over core.role_mapped_entitlements: one row per version of a (user, role) grant. A version "
    "ends when the grant is revoked or its primary_email or granted_via change.",
    key=("connection_id", "user_id", "role", "valid_from"),
    columns=(
        *_user("The user's primary email during this version."),
        _role(),
        Column("granted_via", pl.List(pl.Utf8), "VARCHAR[]", "Selected groups that gave the role during this version."),
        *_validity(),
    ),
)

MEMBERSHIPS_HISTORY = Table(
    "core", "memberships_history",
    "SCD type 2 over core.filtered_memberships: one row per version of a (user, selected group) membership. "
    "A version ends when the membership ends or its emails or is_direct change.",
    key=("connection_id", "user_id", "group_id", "valid_from"),
    columns=(
        *_user("The user's primary email during this version."),
        _id("group_id", "The selected group."),
        _email("group_email", "The selected group's email during this version."),
        Column("is_direct", pl.Boolean, "BOOLEAN", "Direct member of the selected group during this version."),
        *_validity(),
    ),
)

HISTORY_TABLES = (DIRECTORY_CHANGES, ENTITLEMENTS_HISTORY, MEMBERSHIPS_HISTORY)


def contract_markdown(tables: tuple[Table, ...] = (*SYNC_TABLES, SYNC_LOG, *HISTORY_TABLES)) -> str:
    """docs/tables.md's table reference, generated so the documentation cannot drift from the code."""
    lines: list[str] = []
    for table in tables:
        lines += [f"### `{table.qualified_name}`", "", table.description, "",
                  f"Key: ({', '.join(table.key)})", "", "| column | type | null | meaning |", "|---|---|---|---|"]
        lines += [f"| `{c.name}` | {c.sql} | {'yes' if c.nullable else 'no'} | {c.description} |" for c in table.columns]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(contract_markdown())
