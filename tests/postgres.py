"""A throwaway PostgreSQL cluster for tests: initdb in a temporary directory, a server on a free
loopback port, owned by the test process and stopped by its process group.

Why a cluster of its own: the sink test needs a real database, and neither CI nor a developer
machine runs one as a service; Debian's `postgresql` package brings the binaries. PostgreSQL
refuses to run as root, so as root (CI, this machine) the cluster belongs to the `postgres`
user the package creates. `PostgresMissingError` says why a test cannot have one, for a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.kafka.broker import HOST, free_ports
from streams.kafka.jvm import launch, stop_group, tail_file

DATABASE = "leadscore"
USER = "leadscore"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_SERVICE_USER = "postgres"


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server binaries here (or no user to run them as); the message says which."""


def _bin_dir() -> Path:
    """The newest installed server's binaries: Debian keeps `initdb` and `postgres` off PATH,
    in /usr/lib/postgresql/<major>/bin."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).resolve().parent
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise PostgresMissingError(
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
            "apt-get install postgresql"
        )
    return found[-1].parent


def _run_as() -> str | None:
    """Who runs the server: this user, or `postgres` when this is root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        raise PostgresMissingError(
            f"running as root and there is no {_SERVICE_USER!r} user to run PostgreSQL as"
        ) from None
    return _SERVICE_USER


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """A fresh cluster with an empty `leadscore` database; deleted afterwards."""
    cluster = Postgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Postgres:
    """One PostgreSQL server: trust authentication for `leadscore` on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.user = _run_as()
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{HOST}:{self.port}/{DATABASE}"

    def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="leadscore-postgres-"))
        if self.user is not None:
            shutil.chown(self._dir, self.user)
        data = self._dir / "data"
        self._tool("initdb", "-D", str(data), "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8")
        (self.port,) = free_ports(1)
        server = [
            str(self.bin / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-k",
            str(self._dir),
            "-c",
            f"listen_addresses={HOST}",
            # A test database: durability buys nothing and costs start and write time.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        self._process = launch(server, self._dir / "server.log", self._dir, self.user)
        self._await_ready(time.monotonic() + START_TIMEOUT_S)
        self._tool("createdb", "-h", HOST, "-p", str(self.port), "-U", USER, DATABASE)

    def _tool(self, name: str, *arguments: str) -> None:
        done = subprocess.run(
            [str(self.bin / name), *arguments],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            user=self.user,
            cwd=self._dir,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {done.returncode}):\n{done.stderr}")

    def _await_ready(self, deadline: float) -> None:
        assert self._process is not None and self._dir is not None
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with code {self._process.returncode}:\n"
                    + tail_file(self._dir / "server.log")
                )
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", HOST, "-p", str(self.port), "-t", "1"],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL did not answer within {START_TIMEOUT_S:.0f} s:\n"
                    + tail_file(self._dir / "server.log")
                )
            time.sleep(0.1)

    def query(self, sql: str) -> list[dict[str, Any]]:
        """The rows of `sql` as dicts (through psql's JSON: no Python driver needed)."""
        done = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                HOST,
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                DATABASE,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                f"SELECT coalesce(json_agg(q), '[]') FROM ({sql}) q",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10.0,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are cut, not waited for), then delete the cluster."""
        if self._process is not None:
            stop_group(self._process, STOP_TIMEOUT_S, signal.SIGINT)
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
