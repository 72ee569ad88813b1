"""A private PostgreSQL cluster for one benchmark run: initdb, start, restart, drop.

The chaos harness restarts PostgreSQL and the scale harness fills it with a million rows;
neither may touch the machine's shared server. ``private_postgres()`` runs ``initdb`` and
``pg_ctl`` from ``/usr/lib/postgresql/<newest>/bin`` into a temporary directory, on a free
loopback port, with trust authentication. PostgreSQL refuses to run as root, so when this
process is root the cluster belongs to the ``postgres`` system user (``runuser``).

| call | does |
|---|---|
| ``private_postgres(workdir)`` | context manager → ``PgCluster`` (stopped and deleted at exit) |
| ``PgCluster.url(database)`` | ``postgresql+psycopg://postgres@127.0.0.1:<port>/<database>`` |
| ``PgCluster.create_database(name)`` / ``drop_database(name)`` | plain ``CREATE``/``DROP`` |
| ``PgCluster.restart(fast=True)`` | ``pg_ctl restart -m fast`` (what the chaos run does) |
| ``PgCluster.stop()`` | ``pg_ctl stop -m fast`` |
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg

from demo.processes import free_port

__all__ = ["PgCluster", "pg_bin_dir", "private_postgres"]

SUPERUSER = "postgres"


def pg_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb``."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not candidates:
        found = shutil.which("initdb")
        if found is None:
            raise RuntimeError("initdb not found (install postgresql) / 未找到initdb")
        return Path(found).parent
    return Path(candidates[-1]).parent


@dataclass
class PgCluster:
    bin_dir: Path
    data_dir: Path
    port: int
    run_as: str | None  # system user that owns the cluster, None = this process's user

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {result.stdout}{result.stderr}")

    def _options(self) -> str:
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir}"
            " -c max_connections=200 -c shared_buffers=256MB"
        )

    def start(self) -> None:
        # -l: the server's output goes to a file, never to our pipe (or pg_ctl never returns).
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
            "-o", self._options(), "-w", "-t", "60", "start",
        )  # fmt: skip
        self.wait_ready()

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Fast restart: every connection is cut, the server is back when this returns."""
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
            "-o", self._options(), "-m", "fast", "-w", "-t", "60", "restart",
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def private_postgres(workdir: Path | None = None) -> Iterator[PgCluster]:
    """A fresh cluster on a free port; stopped and its files removed when the block ends."""
    bin_dir = pg_bin_dir()
    run_as = SUPERUSER if os.geteuid() == 0 else None
    parent = tempfile.mkdtemp(prefix="fapiao-pg-", dir=str(workdir) if workdir else None)
    data_dir = Path(parent) / "data"
    if run_as is not None:
        shutil.chown(parent, user=run_as)
        os.chmod(parent, 0o755)
    cluster = PgCluster(bin_dir=bin_dir, data_dir=data_dir, port=free_port(), run_as=run_as)
    try:
        cluster._run(
            "initdb", "-D", str(data_dir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
            "--no-instructions", "--locale=C.UTF-8", timeout=120,
        )  # fmt: skip
        cluster.start()
        try:
            yield cluster
        finally:
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                cluster.stop()
    finally:
        shutil.rmtree(parent, ignore_errors=True)
