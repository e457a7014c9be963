"""Read-only SQLite access for the dashboard: a missing store is an answer, not an error."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ccf.storage.sqlite import connect


@contextmanager
def readonly(path: Path) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to ``path``, or None when nothing has written it yet."""
    if not Path(path).exists():
        yield None
        return
    con = connect(Path(path), readonly=True)
    try:
        yield con
    finally:
        con.close()


def tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def has_tables(path: Path, *names: str) -> bool:
    """Whether the store at ``path`` exists and holds these tables (a part that has not
    started yet leaves neither)."""
    with readonly(path) as con:
        return con is not None and set(names) <= tables(con)


def columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


def distinct(con: sqlite3.Connection, table: str, col: str, exchange: str, symbol: str) -> list:
    """The distinct values of a key column for one symbol, skipping along the table's key
    (a few index seeks where ``SELECT DISTINCT`` would scan every row)."""
    out: list = []
    while True:
        sql = f"SELECT {col} FROM {table} WHERE exchange = ? AND symbol = ?"
        params: tuple = (exchange, symbol)
        if out:
            sql, params = sql + f" AND {col} > ?", (*params, out[-1])
        row = con.execute(sql + f" ORDER BY {col} LIMIT 1", params).fetchone()
        if row is None:
            return out
        out.append(row[0])


def frame(con: sqlite3.Connection, sql: str, params: tuple = ()) -> pd.DataFrame:
    """A query's rows with its column names (an empty frame keeps them too)."""
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return pd.DataFrame(cur.fetchall(), columns=names)


def to_time(ns: pd.Series | int | None) -> pd.Series | pd.Timestamp | None:
    """Nanoseconds since the epoch as UTC times (what the charts' axes show)."""
    if ns is None:
        return None
    if isinstance(ns, pd.Series):
        return pd.to_datetime(ns.astype("Int64"), unit="ns", utc=True)
    return pd.Timestamp(int(ns), unit="ns", tz="UTC")
