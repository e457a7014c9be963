"""Connections to the configured PostgreSQL, with the password read at connect time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ccf.config import PostgresConfig
from ccf.secrets import redact, resolve

if TYPE_CHECKING:
    import psycopg


def conninfo_params(cfg: PostgresConfig) -> dict[str, Any]:
    """libpq keyword parameters for ``cfg``, the password resolved (never log these)."""
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "dbname": cfg.dbname,
        "user": cfg.user,
        "sslmode": cfg.sslmode,
        "connect_timeout": cfg.connect_timeout_s,
        "application_name": "ccf",
        "options": f"-c search_path={cfg.db_schema}",
    }
    password = resolve(cfg.password)
    if password is not None:
        params["password"] = password
    for key in ("sslrootcert", "sslcert", "sslkey"):
        value = getattr(cfg, key)
        if value is not None:
            params[key] = str(value)
    return params


def describe(cfg: PostgresConfig) -> str:
    """Where ``cfg`` points, for logs: no password."""
    return f"postgresql://{cfg.user}@{cfg.host}:{cfg.port}/{cfg.dbname} schema={cfg.db_schema}"


def sqlalchemy_url(cfg: PostgresConfig) -> str:
    """A SQLAlchemy URL (psycopg 3 driver) for MLflow and Optuna, without the password:
    pass that as ``connect_args`` in process, or :func:`password_env` to a child process,
    so it never shows in a URL, a command line or a log."""
    from urllib.parse import quote

    query = f"sslmode={cfg.sslmode}&options={quote(f'-c search_path={cfg.db_schema}')}"
    for key in ("sslrootcert", "sslcert", "sslkey"):
        value = getattr(cfg, key)
        if value is not None:
            query += f"&{key}={quote(str(value), safe='/')}"
    user = quote(cfg.user, safe="")
    return f"postgresql+psycopg://{user}@{cfg.host}:{cfg.port}/{cfg.dbname}?{query}"


def password_env(cfg: PostgresConfig) -> dict[str, str]:
    """``PGPASSWORD`` for a child process that connects with :func:`sqlalchemy_url`."""
    password = resolve(cfg.password)
    return {} if password is None else {"PGPASSWORD": password}


def connect(cfg: PostgresConfig, *, autocommit: bool = True) -> psycopg.Connection:
    """A connection to ``cfg``; a failure's message names the server, never the password."""
    import psycopg

    params = conninfo_params(cfg)
    try:
        con = psycopg.connect(autocommit=autocommit, **params)
    except psycopg.OperationalError as e:
        msg = " ".join(redact(str(e), params.get("password")).split())  # libpq: several lines
        raise ConnectionError(
            f"cannot connect to {describe(cfg)}: {msg} (check storage.postgres.host/port, "
            "and that the server runs)"
        ) from None
    if cfg.db_schema != "public":
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {cfg.db_schema}")  # validated: SQL_NAME
    return con


def symbol_time_filter(
    symbols: Iterable[str] | None, start_ns: int | None, end_ns: int | None
) -> tuple[list[str], list[Any]]:
    """WHERE terms and parameters for rows of ``symbols`` with ``ts`` in [start, end): the
    PostgreSQL twin of :func:`ccf.storage.sqlite.symbol_time_filter`."""
    where: list[str] = ["true"]
    params: list[Any] = []
    if symbols is not None:
        where.append("symbol = ANY(%s)")
        params.append(list(symbols))
    if start_ns is not None:
        where.append("ts >= %s")
        params.append(start_ns)
    if end_ns is not None:
        where.append("ts < %s")
        params.append(end_ns)
    return where, params
