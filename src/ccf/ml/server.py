"""The shared model registry: one MLflow tracking server that several machines train, tune
and serve from (``ccf registry-server``).

The server keeps runs and registered models in a backend store (PostgreSQL from
``storage.postgres``, or SQLite under the data dir) and the artifacts in one folder it
serves itself (``--serve-artifacts``), so clients need only its URL
(``ml.registry.tracking_uri=http://host:5000``): never the database, never the folder.

Credentials never travel in a URL, a command line (``ps`` shows those to every user) or a
log line. The PostgreSQL password reaches the server only as ``PGPASSWORD`` in its child
environment, which libpq reads because the backend URL has no password. A client's own
credentials for a server behind authentication (``ml.registry.username`` with
``password`` or ``token``, secret references) are put into MLflow's environment variables
of the process by :func:`configure_client` when a :class:`~ccf.ml.registry.Registry` opens.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ccf.secrets import resolve

if TYPE_CHECKING:
    from ccf.config import Settings

log = logging.getLogger(__name__)

# what MLflow reads in every process it runs: the server's job runner would start a pool
# of workers (about 2 GB), and usage telemetry would call out to the internet
_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
_STOP_WAIT_S = 15.0


class RegistryServerError(RuntimeError):
    """The registry server could not start or stopped; the message says where to look."""


# -- the server ------------------------------------------------------------------------------


def artifacts_dir(settings: Settings) -> Path:
    """The folder the server keeps every artifact in (a shared mount for standby servers)."""
    srv = settings.ml.registry.server
    return (srv.artifacts_dir or settings.data_dir / "registry" / "artifacts").resolve()


def backend_uri(settings: Settings) -> str:
    """The server's backend store as a SQLAlchemy URL, never with a password in it."""
    if settings.ml.registry.server.backend_store == "postgres":
        from ccf.storage.postgres.connect import sqlalchemy_url

        return sqlalchemy_url(settings.storage.postgres)
    return f"sqlite:///{(settings.data_dir / 'registry' / 'mlflow.db').resolve()}"


def describe_backend(settings: Settings) -> str:
    """The backend store for logs."""
    if settings.ml.registry.server.backend_store == "postgres":
        from ccf.storage.postgres.connect import describe

        return describe(settings.storage.postgres)
    return backend_uri(settings)


def server_command(settings: Settings) -> list[str]:
    """The ``mlflow server`` command line: only paths, host names and ports, no secret."""
    srv = settings.ml.registry.server
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri(settings),
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts_dir(settings)),
        "--host",
        srv.host,
        "--port",
        str(srv.port),
        "--workers",
        str(srv.workers),
    ]
    if srv.allowed_hosts:
        cmd += ["--allowed-hosts", ",".join(srv.allowed_hosts)]
    if srv.tls_cert is not None and srv.tls_key is not None:
        opts = ["--ssl-certfile", str(srv.tls_cert), "--ssl-keyfile", str(srv.tls_key)]
        cmd += ["--uvicorn-opts", shlex.join(opts)]
    return cmd


def server_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``base`` (default this process's), MLflow's switches and,
    for a PostgreSQL backend, ``PGPASSWORD`` (the one place the password goes)."""
    env = {**(os.environ if base is None else base), **_SERVER_ENV}
    if settings.ml.registry.server.backend_store == "postgres":
        from ccf.storage.postgres.connect import password_env

        env.update(password_env(settings.storage.postgres))
    return env


def server_url(settings: Settings) -> str:
    """Where this machine reaches the server it runs (a wildcard host means loopback)."""
    srv = settings.ml.registry.server
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(srv.host, srv.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if srv.tls_cert is not None else "http"
    return f"{scheme}://{host}:{srv.port}"


def _prepare_backend(settings: Settings) -> None:
    """Fail early with a clear message when the database is unreachable (MLflow would print
    a long traceback), and make the schema CCF is configured for; make local folders."""
    artifacts_dir(settings).mkdir(parents=True, exist_ok=True)
    if settings.ml.registry.server.backend_store == "postgres":
        from ccf.storage.postgres.connect import connect

        connect(settings.storage.postgres).close()  # ConnectionError names host, never password
    else:
        (settings.data_dir / "registry").mkdir(parents=True, exist_ok=True)


def start_server(settings: Settings, output: IO[bytes] | int | None = None) -> subprocess.Popen:
    """Start ``mlflow server`` for ``settings`` and return at once (see :func:`wait_healthy`).

    It runs in a session of its own: ``mlflow server`` starts uvicorn, which starts its
    workers, and :func:`stop_server` ends that whole group, which a lone SIGTERM to the
    first process would not when it is killed hard.
    """
    _prepare_backend(settings)
    cmd = server_command(settings)
    srv = settings.ml.registry.server
    log.info(
        "part=ml registry-server starting url=%s backend=%s artifacts=%s workers=%d",
        server_url(settings),
        describe_backend(settings),
        artifacts_dir(settings),
        srv.workers,
    )
    return subprocess.Popen(
        cmd,
        env=server_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
    )


def wait_healthy(url: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Return once ``url``/health answers OK; RegistryServerError when ``proc`` exits first
    or ``timeout_s`` passes. The probe skips certificate checks: it only asks whether the
    server is up and sends nothing secret, and a loopback address rarely matches a
    certificate's name."""
    deadline = time.monotonic() + timeout_s
    context = ssl._create_unverified_context() if url.startswith("https") else None
    last = "no answer yet"
    while True:
        if proc is not None and proc.poll() is not None:
            raise RegistryServerError(
                f"the registry server exited with code {proc.returncode} before it answered "
                f"{url}/health: see its output"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2, context=context) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if time.monotonic() > deadline:
            raise RegistryServerError(
                f"the registry server did not answer {url}/health within {timeout_s:.0f} s ({last})"
            )
        time.sleep(0.25)


def stop_server(proc: subprocess.Popen, timeout_s: float = _STOP_WAIT_S) -> int:
    """SIGTERM the server's process group (a graceful stop), SIGKILL it after ``timeout_s``;
    returns the exit code of ``mlflow server``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the session start_server made: the server's own group
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout_s)
            # uvicorn's workers may outlive mlflow's process by a moment
            _wait_group_gone(proc.pid, timeout_s)
            break
        except subprocess.TimeoutExpired:
            log.warning(
                "part=ml registry-server pid=%d did not stop in %.0f s", proc.pid, timeout_s
            )
    return proc.wait()


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise subprocess.TimeoutExpired(f"process group {pgid}", timeout_s)


def serve_registry(settings: Settings) -> int:
    """Run the registry server until SIGINT/SIGTERM (``ccf registry-server``); returns its
    exit code. Raises RegistryServerError when it does not come up and ConnectionError when
    the PostgreSQL backend cannot be reached."""
    proc = start_server(settings)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        log.info("part=ml registry-server stopping signal=%s", signal.Signals(signum).name)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = server_url(settings)
        wait_healthy(url, settings.ml.registry.server.start_timeout_s, proc)
        log.info(
            "part=ml registry-server ready url=%s clients: ml.registry.tracking_uri=%s",
            url,
            url,
        )
        code = proc.wait()
    except RegistryServerError:
        stop_server(proc)
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            stop_server(proc)
    if not stopping:
        raise RegistryServerError(f"the registry server exited with code {code}: see its output")
    log.info("part=ml registry-server stopped code=%s", code)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


# -- clients ---------------------------------------------------------------------------------


def client_env(settings: Settings) -> dict[str, str]:
    """MLflow's client variables for a tracking server, the secrets resolved: what to put
    into a process's environment (never into a log, a file or a command line)."""
    reg = settings.ml.registry
    env: dict[str, str] = {}
    if reg.username is not None:
        env["MLFLOW_TRACKING_USERNAME"] = reg.username
    password = resolve(reg.password)
    if password is not None:
        env["MLFLOW_TRACKING_PASSWORD"] = password
    token = resolve(reg.token)
    if token is not None:
        env["MLFLOW_TRACKING_TOKEN"] = token
    if reg.ca_bundle is not None:
        env["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(reg.ca_bundle)
    if reg.client_cert is not None:
        env["MLFLOW_TRACKING_CLIENT_CERT_PATH"] = str(reg.client_cert)
    if reg.insecure_tls:
        env["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
    return env


def configure_client(settings: Settings) -> None:
    """Export the configured client credentials and TLS options for MLflow in this process
    (MLflow reads them from the environment on every request). Only for a tracking server,
    and only what is configured: variables a user set by hand are kept otherwise. Raises
    SecretError when a referenced secret is missing."""
    if not settings.tracking_uri.startswith(("http://", "https://")):
        return
    env = client_env(settings)
    os.environ.update(env)
    if env:
        log.debug("part=ml registry client options set: %s", sorted(env))  # names, not values
