"""The table contract: every published table, its columns, types, keys and meaning, defined once.

DuckDB DDL, the pandera schemas that validate each stage, the Dagster column schemas shown in the UI
and docs/tables.md are all derived from these specs, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
import pandera.polars as pa
import polars as pl

TIMESTAMP = pl.Datetime("us", "UTC")
CONNECTION_ID = r"^[a-z0-9_-]+$"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    sql: str
    description: str
    nullable: bool = False
    checks: tuple[pa.Check, ...] = ()


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    description: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    extra_checks: tuple[pa.Check, ...] = field(default=())

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.schema, self.name])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self, qualified_name: str | None = None) -> str:
        columns = ",\n  ".join(f"{c.name} {c.sql}{'' if c.nullable else ' NOT NULL'}" for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {qualified_name or self.qualified_name} (\n  {columns}\n)"

    def pandera_schema(self) -> pa.DataFrameSchema:
        return pa.DataFrameSchema(
            {c.name: pa.Column(c.dtype, list(c.checks), nullable=c.nullable) for c in self.columns},
            checks=list(self.extra_checks),
            strict=True,
            unique=list(self.key),
            name=self.qualified_name,
        )

    def dagster_column_schema(self) -> dg.TableSchema:
        return dg.TableSchema(
            columns=[
                dg.TableColumn(c.name, c.sql, description=c.description, constraints=dg.TableColumnConstraints(nullable=c.nullable))
                for c in self.columns
            ]
        )


def _connection_id() -> Column:
    return Column("connection_id", pl.Utf8, "VARCHAR", "Connection id from the config (the Dagster partition).",
                  checks=(pa.Check.str_matches(CONNECTION_ID),))


def _id(name: str, description: str) -> Column:
    return Column(name, pl.Utf8, "VARCHAR", description, checks=(pa.Check.str_length(min_value=1),))


def _email(name: str, description: str, nullable: bool = False) -> Column:
    return Column(name, pl.Utf8, "VARCHAR", description, nullable=nullable, checks=(pa.Check.str_contains("@"),))


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
        _connection_id(),
        _id("user_id", "Directory user id."),
        _email("primary_email", "The user's primary email."),
        Column("role", pl.Utf8, "VARCHAR", "Application role.", checks=(pa.Check.str_length(min_value=1),)),
        Column("granted_via", pl.List(pl.Utf8), "VARCHAR[]",
               "Sorted emails of the selected groups that gave the role; empty for the default role."),
    ),
)

SYNC_TABLES = (GOOGLE_USERS, GOOGLE_GROUPS, GOOGLE_GROUP_MEMBERS, FILTERED_MEMBERSHIPS, ROLE_MAPPED_ENTITLEMENTS)
TABLES_BY_ASSET_KEY = {t.asset_key: t for t in SYNC_TABLES}

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


def contract_markdown(tables: tuple[Table, ...] = (*SYNC_TABLES, SYNC_LOG)) -> str:
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
