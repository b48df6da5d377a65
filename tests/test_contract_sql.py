"""The contract's SQL rules, which check the rows a publish writes, give pandera's verdicts, value by value;
and a publish whose written rows break one is refused and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pandera.polars as pa
import polars as pl
import pytest

from dirsync_pipeline.warehouse.publication import PublishFailedError
from dirsync_pipeline.warehouse.store import Warehouse
from dirsync_pipeline.warehouse.tables import HISTORY_TABLES, SYNC_LOG, SYNC_TABLES, Column, Table
from tests.test_changes import entitlements, groups, memberships, users

TABLES = (*SYNC_TABLES, SYNC_LOG, *HISTORY_TABLES)
# Values on both sides of every kind of check in the contract: regex anchors, case, prefixes, lengths in
# characters (not bytes, not graphemes), JSON-like text.
TEXTS = ["", " ", "a", "A", "acme", "acme-1_x", "acme.x", "Acme", "a b", "a\n", "\na", "x@y", "@", "a@", "@b",
         "/", "/eng", "eng/", " /", "{", "{}", ' {"a":1}', "[]", "null", "ü", "日本", "😀", "e\u0301", "'", "''",
         "%", "_", "user", "USER ", "MEMBER", "role.grant"]


def candidates(column: Column) -> list[object]:
    """Values of ``column``'s type to check: the TEXTS and every value an isin check of the contract allows."""
    if column.dtype == pl.Int64:
        return [-(2**40), -1, 0, 1, 2**40, None]
    allowed = [v for c in column.checks if c.name == "isin" for v in c.statistics["allowed_values"]]
    return [*TEXTS, *allowed, None]


def pandera_failures(column: Column, values: list[object]) -> set[int]:
    schema = pa.DataFrameSchema({column.name: pa.Column(column.dtype, list(column.checks), nullable=column.nullable)})
    try:
        schema.validate(pl.DataFrame({column.name: values}, schema={column.name: column.dtype}), lazy=True)
    except pa.errors.SchemaErrors as exc:
        return set(exc.failure_cases["index"].drop_nulls().to_list())
    return set()


def sql_failures(table: Table, column: Column, values: list[object]) -> set[int]:
    conditions = [r.broken for r in table.sql_rules() if r.column == column.name]
    rows = pl.DataFrame({column.name: values}, schema={column.name: column.dtype}).with_row_index("i")
    conn = duckdb.connect()
    conn.register("rows", rows)
    return {i for (i,) in conn.execute(f"SELECT i FROM rows WHERE {' OR '.join(conditions) or 'false'}").fetchall()}


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.qualified_name)
def test_the_sql_rules_fail_exactly_the_values_pandera_fails(table):
    checked = [c for c in table.columns if c.checks or not c.nullable]
    assert checked
    for column in checked:
        values = candidates(column) if column.checks or column.dtype in (pl.Utf8, pl.Int64) else [None]
        failures = pandera_failures(column, values)
        assert sql_failures(table, column, values) == failures, column.name
        if column.checks:
            assert 0 < len(failures) < len(values), f"{column.name}: the candidates pass and fail its checks"


def test_a_check_without_an_sql_form_is_refused_not_skipped():
    table = Table("core", "t", "", ("a",), (Column("a", pl.Utf8, "VARCHAR", "", checks=(pa.Check.str_endswith("x"),)),))
    with pytest.raises(ValueError, match="str_endswith of column a has no SQL form"):
        table.sql_rules()


def test_a_publish_whose_written_rows_break_the_contract_is_rolled_back(tmp_path):
    """A staged user without '@' in the email passes the copy, but its change event does not: nothing is published."""
    store = Warehouse(tmp_path, "acme")
    staged = {"raw.google_users": users({"user_id": "u1", "primary_email": "nobody"}), "raw.google_groups": groups("g1"),
              "core.filtered_memberships": memberships(("u1", "g1")),
              "core.role_mapped_entitlements": entitlements(("u1", "member", []))}
    for table in SYNC_TABLES:
        frame = staged.get(table.qualified_name, pl.DataFrame(schema={c.name: c.dtype for c in table.columns}))
        store.stage(table, frame)
    with pytest.raises(PublishFailedError, match=r"core.directory_changes: rows written by sync s1 break the contract: "
                                                 r"user_email: str_contains\('@'\) \(1 rows\)\): nothing was published"):
        store.publish("c1", "s1")
    with store.connect(read_only=True) as conn:
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table.qualified_name}").fetchall() == [(0,)], table.name
    assert not (tmp_path / "parquet" / "connection_id=c1" / "manifest.json").exists()


@pytest.mark.parametrize("email", ["u1@corp.com", "nobody"], ids=["published", "refused"])
def test_a_small_publish_leaves_the_runs_connection_with_its_own_thread_count(tmp_path, email):
    """A publish of few rows runs on one DuckDB thread (store.py): the run's connection gets its setting back,
    whether the publish succeeds or is refused."""
    store = Warehouse(tmp_path, "acme")
    store.hold()
    try:
        staged = {"raw.google_users": users({"user_id": "u1", "primary_email": email}), "raw.google_groups": groups("g1"),
                  "core.filtered_memberships": memberships(("u1", "g1"))}
        for table in SYNC_TABLES:
            store.stage(table, staged.get(table.qualified_name,
                                          pl.DataFrame(schema={c.name: c.dtype for c in table.columns})))
        with store.connect() as conn:
            conn.execute("SET threads = 3")
            try:
                store.publish("c1", "s1")
            except PublishFailedError:
                assert email == "nobody"
            assert conn.execute("SELECT current_setting('threads')").fetchall() == [(3,)]
    finally:
        store.release()


def test_a_table_keys_a_dict_after_its_checks_first_ran_in_a_fresh_process():
    """pandera's checks change their hash at their first validation in a process: a table must not."""
    probe = (
        "import polars as pl\n"
        "from dirsync_pipeline.defs.checks import validate_contract\n"
        "from dirsync_pipeline.warehouse.tables import GOOGLE_USERS\n"
        "frames = {GOOGLE_USERS: 'users'}\n"
        "validate_contract(GOOGLE_USERS, pl.DataFrame(schema={c.name: c.dtype for c in GOOGLE_USERS.columns}))\n"
        "print(frames[GOOGLE_USERS], GOOGLE_USERS in {GOOGLE_USERS})\n"
    )
    assert printed_in_a_fresh_process(probe) == ["users", "True"]


def test_the_warm_up_passes_every_empty_stage_and_leaves_pandera_ready_in_a_fresh_process():
    """The fetch step warms pandera up while it waits on Google; a contract that refused an empty stage would fail
    every sync there, and a warm-up that stopped validating would leave the cost to the first check."""
    probe = (
        "import sys\n"
        "from dirsync_pipeline.defs.checks import contract_checks_warming\n"
        "before = 'pandera.backends.polars.builtin_checks' in sys.modules\n"
        "with contract_checks_warming() as warmed:\n"
        "    print(before, warmed.result(), 'pandera.backends.polars.builtin_checks' in sys.modules)\n"
    )
    assert printed_in_a_fresh_process(probe) == ["False", "None", "True"]


def printed_in_a_fresh_process(probe: str) -> list[str]:
    """The words ``probe`` prints when run by a new interpreter (a first validation happens once per process)."""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-1500:]
    return result.stdout.split()
