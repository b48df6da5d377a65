"""A throwaway PostgreSQL cluster from Debian's packages, for the tests of the production instance.

`.ci/run` installs PostgreSQL (`apt-get install postgresql`); this module runs its own cluster with the
server binaries of that package (``/usr/lib/postgresql/<major>/bin``): ``initdb`` in a temporary folder,
``pg_ctl start`` on a free port of 127.0.0.1, password (scram-sha-256) authentication, a ``dagster`` role
and database. As root (CI) the server runs as the ``postgres`` user, through ``runuser``; PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PostgresCluster:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads (the convention of Dagster's deployment examples)."""
        return {
            "DAGSTER_POSTGRES_HOST": self.host, "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_USER": self.user, "DAGSTER_POSTGRES_PASSWORD": self.password,
            "DAGSTER_POSTGRES_DB": self.db,
        }

    def create_database(self, name: str) -> PostgresCluster:
        """A fresh, empty database on this cluster (one per test that needs a clean run history)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=self.db)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return PostgresCluster(self.host, self.port, self.user, self.password, name)


def server_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None when no server is installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_cluster(bin_dir: Path) -> Iterator[PostgresCluster]:
    """initdb + pg_ctl start in a temporary folder; stopped (fast mode) and removed at the end."""
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="dirsync-pg-"))
    data, sockets = base / "data", base / "sockets"
    sockets.mkdir()
    password = secrets.token_urlsafe(16)
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if as_root:  # the postgres user owns the cluster; root's mkdtemp folder is 0700
        owner = pwd.getpwnam("postgres")
        for path in (base, sockets, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    log = base / "server.log"
    try:
        subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=scram-sha-256",
                        f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C"],
                       check=True, capture_output=True, text=True)
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets} " \
                  "-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                        "-w", "-t", "60", "start"], check=True, capture_output=True, text=True)
        cluster = PostgresCluster("127.0.0.1", port, "dagster", password, "postgres")
        cluster = cluster.create_database("dagster")
        yield cluster
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{server_log}") from exc
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _has_c_utf8() -> bool:
    return "c.utf8" in subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; that value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
