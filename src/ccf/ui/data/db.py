"""Read-only access to the stores for the dashboard, on either backend.

The readers write their SQL once, SQLite-style (``?`` placeholders, portable SELECTs),
and run it through a :class:`Reader`: :class:`SqliteReader` over the file, or
:class:`PgReader` over PostgreSQL (``storage.backend=postgres``). What differs between
the two dialects (the catalog, ``?`` against ``%s``, ``rowid``, ``group_concat``) lives
in those two classes and nowhere else. A missing store is an answer, not an error.

PostgreSQL connections are kept open between reads (:class:`_Idle`): a page re-reads
every few seconds, and a new connection (a server process and a password exchange)
costs more than most of its queries.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from ccf.config import PostgresConfig, Settings
from ccf.storage.backends import uses_postgres
from ccf.storage.sqlite import connect

if TYPE_CHECKING:
    import sqlite3

    import psycopg

StoreName = Literal["raw", "features", "predictions", "monitor"]
# The table each store makes first: PostgreSQL holds every store in one database, so
# "has this part written yet" is whether its table is there (a SQLite file's existence).
_MARKER = {
    "raw": "part_status",
    "features": "feature_sets",
    "predictions": "predictions",
    "monitor": "scores",
}


@dataclass(frozen=True, eq=False)
class Store:
    """One store the dashboard reads, where the settings put it: a SQLite file under
    ``data_dir``, or the tables in PostgreSQL. Readers take this rather than a path, so
    ``storage.backend`` alone switches every page."""

    settings: Settings
    name: StoreName

    @property
    def postgres(self) -> PostgresConfig | None:
        """The database holding this store's tables, or None for the embedded files."""
        s = self.settings
        return s.storage.postgres if uses_postgres(s) else None

    @property
    def path(self) -> Path:
        """The SQLite file (where the store would be on the embedded backend)."""
        s = self.settings
        return {
            "raw": s.db_path,
            "features": s.features_path,
            "predictions": s.predictions_path,
            "monitor": s.monitor_path,
        }[self.name]

    @cached_property
    def where(self) -> str:
        """Where the store is, for messages on a page: the file, or the database without
        its password."""
        if self.postgres is None:
            return str(self.path)
        from ccf.storage.postgres.connect import describe

        return describe(self.postgres)

    @cached_property
    def key(self) -> str:
        """What identifies the store for the readers' cache."""
        pg = self.postgres
        return f"{self.name}:{self.path}" if pg is None else f"{self.name}:{pg.model_dump_json()}"


class Reader(ABC):
    """Portable SQL over one connection. The SQL uses ``?`` placeholders and what both
    dialects accept; subclasses translate and answer the catalog questions."""

    dialect: str
    rowid = "rowid"  # the column that grows with every insert
    not_indexed = ""  # SQLite's hint to scan by rowid instead of an index

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)[1]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """A query's rows with its column names (an empty frame keeps them too)."""
        names, rows = self._execute(sql, params)
        return pd.DataFrame(rows, columns=names)

    @abstractmethod
    def tables(self) -> set[str]:
        """The tables of the store (of the schema, on PostgreSQL)."""

    @abstractmethod
    def columns(self, table: str) -> list[str]:
        """A table's columns in their order."""

    @abstractmethod
    def group_concat(self, expr: str) -> str:
        """The distinct values of ``expr`` in a group, comma separated."""

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple]]:
        """The column names and rows of ``sql`` with ``?`` placeholders."""


class SqliteReader(Reader):
    dialect = "sqlite"
    not_indexed = " NOT INDEXED"

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def _execute(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple]]:
        cur = self.con.execute(sql, tuple(params))
        return [d[0] for d in cur.description or ()], cur.fetchall()

    def tables(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.con.execute(f"PRAGMA table_info({table})")]

    def group_concat(self, expr: str) -> str:
        return f"group_concat(DISTINCT {expr})"


class PgReader(Reader):
    """The same SQL on PostgreSQL: ``?`` becomes ``%s``; the stores' identity column ``id``
    plays SQLite's rowid."""

    dialect = "postgres"
    rowid = "id"

    def __init__(self, con: psycopg.Connection, where: str) -> None:
        self.con = con
        self.where = where

    def _execute(self, sql: str, params: Sequence[Any]) -> tuple[list[str], list[tuple]]:
        import psycopg

        if params:
            sql = sql.replace("%", "%%").replace("?", "%s")
        try:
            cur = self.con.execute(sql, tuple(params) or None)
            return [d.name for d in cur.description or ()], cur.fetchall()
        except psycopg.OperationalError as e:  # the server went away: say which one
            raise ConnectionError(f"lost the connection to {self.where}: {e}") from None

    def tables(self) -> set[str]:
        rows = self.query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {r[0] for r in rows}

    def columns(self, table: str) -> list[str]:
        rows = self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [r[0] for r in rows]

    def group_concat(self, expr: str) -> str:
        return f"string_agg(DISTINCT {expr}, ',')"


class _Idle:
    """Open read-only connections to one database, reused by the dashboard's reads.

    At most ``storage.postgres.pool_size`` are kept idle; a read that finds none opens one.
    A kept connection is pinged before reuse, so a server restart costs a reconnect rather
    than an error."""

    def __init__(self, cfg: PostgresConfig) -> None:
        self.cfg = cfg
        self._free: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def _open(self) -> psycopg.Connection:
        from ccf.storage.postgres.connect import connect as pg_connect

        con = pg_connect(self.cfg)
        con.execute("SET default_transaction_read_only = on")  # the dashboard only looks
        return con

    def _take(self) -> psycopg.Connection:
        import psycopg

        while True:
            with self._lock:
                con = self._free.pop() if self._free else None
            if con is None:
                return self._open()
            try:
                con.execute("SELECT 1")
                return con
            except psycopg.OperationalError:
                con.close()  # dropped by the server while idle: try the next one

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        con = self._take()
        try:
            yield con
        except BaseException:
            con.close()  # its state is unknown after a failure: never hand it out again
            raise
        with self._lock:
            if len(self._free) < self.cfg.pool_size and not con.closed:
                self._free.append(con)
                return
        con.close()

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for con in free:
            con.close()


_POOLS: dict[str, _Idle] = {}
_POOLS_LOCK = threading.Lock()


def _idle(cfg: PostgresConfig) -> _Idle:
    """The idle connections kept for ``cfg`` (one set per database the process reads)."""
    key = cfg.model_dump_json()
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = _Idle(cfg)
        return pool


def close_idle() -> None:
    """Close every kept connection (a process that is done with a database, or a test that
    drops one)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


@contextmanager
def readonly(where: Store | Path) -> Iterator[Reader | None]:
    """A read-only reader of a store (or of a SQLite file), or None when nothing has
    written it yet. On PostgreSQL the reader is always there: a table not made yet is
    simply absent from :meth:`Reader.tables`."""
    if isinstance(where, Store) and where.postgres is not None:
        with _idle(where.postgres).connection() as con:
            yield PgReader(con, where.where)
        return
    path = where.path if isinstance(where, Store) else Path(where)
    if not path.exists():
        yield None
        return
    con = connect(path, readonly=True)
    try:
        yield SqliteReader(con)
    finally:
        con.close()


def has_tables(where: Store | Path, *names: str) -> bool:
    """Whether the store exists and holds these tables (a part that has not started yet
    leaves neither)."""
    with readonly(where) as r:
        return r is not None and set(names) <= r.tables()


def exists(store: Store) -> bool:
    """Whether the part that writes ``store`` has made it (its file, or its tables)."""
    if store.postgres is None:
        return store.path.exists()
    return has_tables(store, _MARKER[store.name])


def distinct(r: Reader, table: str, col: str, exchange: str, symbol: str) -> list:
    """The distinct values of a key column for one symbol, skipping along the table's key
    (a few index seeks where ``SELECT DISTINCT`` would scan every row)."""
    out: list = []
    while True:
        sql = f"SELECT {col} FROM {table} WHERE exchange = ? AND symbol = ?"
        params: tuple = (exchange, symbol)
        if out:
            sql, params = sql + f" AND {col} > ?", (*params, out[-1])
        row = r.one(sql + f" ORDER BY {col} LIMIT 1", params)
        if row is None:
            return out
        out.append(row[0])


def to_time(ns: pd.Series | int | None) -> pd.Series | pd.Timestamp | None:
    """Nanoseconds since the epoch as UTC times (what the charts' axes show)."""
    if ns is None:
        return None
    if isinstance(ns, pd.Series):
        return pd.to_datetime(ns.astype("Int64"), unit="ns", utc=True)
    return pd.Timestamp(int(ns), unit="ns", tz="UTC")
