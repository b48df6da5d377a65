"""DuckDB's threads, for the blocks where one is faster or needs less memory than all of them.

``threads`` belongs to a DuckDB instance, not to a statement: a block that lowers it gives the instance its
own count back afterwards, whatever it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import duckdb


@contextmanager
def one_thread(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The block on one DuckDB thread; ``conn``'s instance gets its own thread count back after it."""
    threads = conn.execute("SELECT current_setting('threads')").fetchall()[0][0]
    conn.execute("SET threads = 1")
    try:
        yield
    finally:
        conn.execute(f"SET threads = {int(threads)}")


def one_thread_below(conn: duckdb.DuckDBPyConnection, limit: int, *, rows: int) -> AbstractContextManager[None]:
    """One thread for a block of fewer than ``limit`` rows, DuckDB's own count for a larger one."""
    return one_thread(conn) if rows < limit else nullcontext()
