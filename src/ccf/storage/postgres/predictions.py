"""The prediction store in PostgreSQL: the embedded store's tables, the same readers.

``predictions`` has the SQLite table's columns, quantiles and levels as
``double precision[]``, and a unique key (symbol, target, origin, horizon,
role): a batch is copied into a session-local staging table and moved with
``INSERT ... ON CONFLICT DO NOTHING``, so a restarted predictor never stores a
bucket twice. An identity column ``id`` plays SQLite's rowid: a follower (the
monitor) reads what is new with ``id > cursor``. Identity values are handed
out when a row is inserted, not when it commits, so two writers committing out
of order could let a follower step past a row not yet visible; every write
therefore holds one transaction-scoped advisory lock, and ids become visible in
the order they were given.

``raw_quantiles`` (the model's own quantiles beside the served, calibrated ones)
came later: a writer adds it to a table made before (``ADD COLUMN IF NOT EXISTS``),
and its NULLs read as the served quantiles, as in SQLite.

As in SQLite, a NaN scalar (``point``, ``last_value`` of a flagged forecast) is
stored as NULL and read back as NaN; arrays keep their NaNs.

The small table helpers here (:class:`Table`, :func:`copy_insert`) also serve
:mod:`ccf.storage.postgres.monitor`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ccf.config import PostgresConfig
from ccf.records import Prediction
from ccf.serving.store import (
    COLUMNS,
    LEAD_COLUMNS,
    RAW,
    Kind,
    Resolved,
    ServingInfo,
    predictions_frame,
)
from ccf.storage.postgres.connect import connect, describe, symbol_time_filter

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

log = logging.getLogger(__name__)

# pg_advisory_xact_lock keys ("ccf" + a number): per database, so per-test databases
# never meet
SCHEMA_LOCK = 0x636366_01  # DDL: concurrent CREATE TABLE IF NOT EXISTS can collide
PREDICTIONS_WRITE_LOCK = 0x636366_02  # ids commit in the order they were given


class Col(NamedTuple):
    """A column and its kind: ``int`` (bigint), ``real`` (double precision, NaN stored as
    NULL like SQLite does), ``text`` (byte order, like SQLite) or ``reals`` (an array)."""

    name: str
    kind: str


_PG_TYPES = {
    "int": "bigint",
    "real": "double precision",
    "text": 'text COLLATE "C"',  # SQLite compares bytes: sort and group the same way
    "reals": "double precision[]",
}
_COPY_TYPES = {"int": "int8", "real": "float8", "text": "text", "reals": "float8[]"}


# Binary COPY takes each value as its column's exact type: these make it so, keeping what
# SQLite would keep (the first test is the common case, and the cheap one)


def _to_int(v: Any) -> int | None:
    if type(v) is int or v is None:
        return v
    if isinstance(v, float) and v != v:
        return None  # NaN is NULL in SQLite, in any column
    return int(v)  # bools and numpy ints


def _to_real(v: Any) -> float | None:
    if v is None:
        return None
    f = v if type(v) is float else float(v)
    return None if f != f else f  # NaN: SQLite stores it as NULL, so do we


def _to_text(v: Any) -> str | None:
    return v if type(v) is str or v is None else str(v)


def _to_reals(v: Any) -> list[float]:
    return [x if type(x) is float else float(x) for x in v]


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "real": _to_real,
    "text": _to_text,
    "reals": _to_reals,
}


def ident(name: str) -> str:
    """A quoted identifier: column names such as ``window`` are reserved words here."""
    return f'"{name}"'


@dataclass(frozen=True)
class Table:
    """One table's columns, its unique key and what else it needs, in one place: the DDL,
    the staging table and the row conversion all derive from it."""

    name: str
    columns: tuple[Col, ...]
    key: tuple[str, ...]
    identity: str | None = None  # a bigint identity primary key (the readers' cursor)
    indexes: tuple[tuple[str, ...], ...] = ()
    added: tuple[str, ...] = ()  # columns added after the first release: ALTER TABLE adds them

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def column_list(self) -> str:
        return ", ".join(ident(n) for n in self.names)

    @property
    def stage(self) -> str:
        return f"stage_{self.name}"

    def ddl(self) -> list[str]:
        cols = [f"{ident(c.name)} {_PG_TYPES[c.kind]}" for c in self.columns]
        keys = ", ".join(ident(k) for k in self.key)
        if self.identity is not None:
            cols.insert(
                0, f"{ident(self.identity)} bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
            )
            if keys:
                cols.append(f"UNIQUE ({keys})")
        else:
            cols.append(f"PRIMARY KEY ({keys})")
        out = [f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(cols)})"]
        for c in self.columns:
            if c.name in self.added:
                out.append(
                    f"ALTER TABLE {self.name} ADD COLUMN IF NOT EXISTS {ident(c.name)} "
                    f"{_PG_TYPES[c.kind]}"
                )
        for idx in self.indexes:
            name = f"{self.name}_{'_'.join(idx)}"
            out.append(
                f"CREATE INDEX IF NOT EXISTS {name} ON {self.name} ({', '.join(map(ident, idx))})"
            )
        return out

    def stage_ddl(self) -> str:
        """A session-local copy target; ``ord`` keeps the rows' order for the insert."""
        cols = ", ".join(f"{ident(c.name)} {_PG_TYPES[c.kind]}" for c in self.columns)
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
            f"(ord bigint GENERATED ALWAYS AS IDENTITY, {cols})"
        )

    def convert(self, rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Rows as PostgreSQL stores them (the same values SQLite would keep)."""
        fns = [_CONVERT[c.kind] for c in self.columns]
        return [tuple([f(v) for f, v in zip(fns, r, strict=True)]) for r in rows]


def copy_insert(
    cur: psycopg.Cursor, table: Table, rows: Sequence[Sequence[Any]], *, replace: bool = False
) -> int:
    """Insert ``rows`` (in ``table.columns`` order) in bulk; returns how many were stored.

    Binary COPY into the staging table, then one ``INSERT ... SELECT`` in the rows' order.
    Without ``replace`` the first row of a key wins (SQLite's ``INSERT OR IGNORE``); with it
    the last one does (``INSERT OR REPLACE``), deduplicated here since one statement cannot
    update a row twice. Call it inside a transaction, so that a failure leaves nothing behind.
    """
    if not rows:
        return 0
    data = table.convert(rows)
    if replace:
        at = [table.names.index(k) for k in table.key]
        data = list({tuple(r[i] for i in at): r for r in data}.values())
    cols = table.column_list
    with cur.copy(f"COPY {table.stage} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([_COPY_TYPES[c.kind] for c in table.columns])
        for r in data:
            copy.write_row(r)
    keys = ", ".join(ident(k) for k in table.key)
    if replace:
        sets = ", ".join(
            f"{ident(n)} = excluded.{ident(n)}" for n in table.names if n not in table.key
        )
        conflict = f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"
    else:
        conflict = f"ON CONFLICT ({keys}) DO NOTHING"
    cur.execute(
        f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {table.stage} ORDER BY ord "
        + conflict
    )
    n = cur.rowcount
    # TRUNCATE, not DELETE: autovacuum never visits temporary tables, dead rows would pile up
    cur.execute(f"TRUNCATE {table.stage}")
    return n


def create_tables(con: psycopg.Connection, tables: Iterable[Table], *, part: str) -> None:
    """The tables and their staging copies; one transaction, under the schema lock."""
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for t in tables:
            for sql in t.ddl():
                con.execute(sql)
    for t in tables:
        con.execute(t.stage_ddl())
    log.debug("part=%s symbol=- tables ready in %s", part, con.info.dbname)


def has_table(con: psycopg.Connection, name: str) -> bool:
    row = con.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    return row is not None and row[0] is not None


def open_connection(
    cfg: PostgresConfig, tables: Sequence[Table], *, readonly: bool, part: str, hint: str
) -> psycopg.Connection:
    """A connection with the tables made (a writer) or found (a reader: like a missing
    SQLite file, their absence is a FileNotFoundError that says what to run)."""
    con = connect(cfg)
    if readonly:
        if not has_table(con, tables[0].name):
            con.close()
            raise FileNotFoundError(f"no {tables[0].name} table in {describe(cfg)}: {hint}")
        con.execute("SET default_transaction_read_only = on")
    else:
        create_tables(con, tables, part=part)
    return con


PREDICTIONS = Table(
    "predictions",
    tuple(
        Col(n, k)
        for n, k in zip(
            COLUMNS,
            (
                *("text",) * 3,  # exchange, symbol, target
                *("int",) * 3,  # ts, horizon, target_ts
                *("text",) * 3,  # role, model, version
                *("int",) * 2,  # made_at, watermark
                *("real",) * 2,  # last_value, point
                *("reals",) * 2,  # levels, quantiles
                "text",  # flag
                *("real",) * 2,  # delay_s, horizon_left (lead time)
            ),
            strict=True,
        )
    )
    + (Col(RAW, "reals"),),
    key=("symbol", "target", "ts", "horizon", "role"),
    identity="id",
    indexes=(("symbol", "ts"), ("target_ts",)),
    added=(RAW, *LEAD_COLUMNS),
)
SERVING = Table(
    "serving",
    tuple(
        Col(n, k)
        for n, k in zip(
            ServingInfo._fields,
            ("text", "text", "text", "text", "int", "int", "int", "int", "text"),
            strict=True,
        )
    ),
    key=("role",),
)
_NAN = float("nan")


def _record(r: Sequence[Any]) -> Prediction:
    """A row back as a record: NULL scalars are NaN again, arrays become tuples."""
    last = _NAN if r[11] is None else r[11]
    point = _NAN if r[12] is None else r[12]
    delay = _NAN if r[16] is None else r[16]
    left = _NAN if r[17] is None else r[17]
    return Prediction(*r[:11], last, point, tuple(r[13]), tuple(r[14]), r[15], delay, left)


class PgPredictionStore:
    """:class:`~ccf.serving.store.PredictionStore` on PostgreSQL: same methods, same answers."""

    def __init__(self, cfg: PostgresConfig, *, readonly: bool = False) -> None:
        self.cfg = cfg
        self.where = describe(cfg)
        self._con = open_connection(
            cfg, (PREDICTIONS, SERVING), readonly=readonly, part="predict", hint="run `ccf predict`"
        )
        self._raw = not readonly or self._has_raw()
        self._select = self._columns("calibrated")

    def _has_raw(self) -> bool:
        row = self._con.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'predictions' "
            "AND column_name = %s",
            (RAW,),
        ).fetchone()
        return row is not None

    def _columns(self, kind: Kind) -> str:
        """A record's columns, with the quantiles of ``kind`` in the quantiles' place."""
        cols = [ident(n) for n in COLUMNS]
        if kind == "raw" and self._raw:
            cols[COLUMNS.index("quantiles")] = f"coalesce({ident(RAW)}, quantiles)"
        return ", ".join(cols)

    def write(
        self, rows: Sequence[Prediction], raw: Sequence[Sequence[float]] | None = None
    ) -> int:
        """Store in one transaction; returns how many were new. ``raw``: per row the model's
        own quantiles where ``quantiles`` are calibrated (default: the same)."""
        if not rows:
            return 0
        if raw is not None and len(raw) != len(rows):
            raise ValueError(f"write: {len(raw)} raw quantile rows for {len(rows)} predictions")
        data = [(*r, r.quantiles if raw is None else raw[i]) for i, r in enumerate(rows)]
        with self._con.transaction(), self._con.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (PREDICTIONS_WRITE_LOCK,))
            return copy_insert(cur, PREDICTIONS, data)

    def set_serving(self, info: ServingInfo) -> None:
        """Record which model serves a role from which bucket on (one row per role)."""
        with self._con.transaction(), self._con.cursor() as cur:
            copy_insert(cur, SERVING, [info], replace=True)

    def serving(self) -> dict[str, ServingInfo]:
        """Role -> the model serving it now (what the monitor takes its reference from)."""
        rows = self._con.execute(f"SELECT {SERVING.column_list} FROM serving").fetchall()
        return {r[0]: ServingInfo(*r) for r in rows}

    def last_ts(self, symbol: str, role: str = "champion") -> int | None:
        """The newest origin bucket forecast for ``symbol`` by ``role``: where a restart resumes."""
        row = self._con.execute(
            "SELECT max(ts) FROM predictions WHERE symbol = %s AND role = %s", (symbol, role)
        ).fetchone()
        return None if row is None else row[0]

    def resolved(self, symbol: str, role: str, start_ns: int, end_ns: int) -> list[Resolved]:
        """``role``'s forecasts of ``symbol`` with origin in [start, end), oldest first, with
        both quantile sets: what the calibration replays after a restart."""
        raw = f"coalesce({ident(RAW)}, quantiles)" if self._raw else "quantiles"
        rows = self._con.execute(
            f"SELECT target, ts, horizon, version, quantiles, {raw} FROM predictions "
            "WHERE symbol = %s AND role = %s AND ts >= %s AND ts < %s "
            "ORDER BY ts, horizon, target",
            (symbol, role, start_ns, end_ns),
            binary=True,
        ).fetchall()
        return [Resolved(r[0], r[1], r[2], r[3], tuple(r[4]), tuple(r[5])) for r in rows]

    def since(self, rowid: int, limit: int = 100_000) -> tuple[list[Prediction], int]:
        """Rows stored after id ``rowid`` (oldest first) and the last id read."""
        rows = self._con.execute(
            f"SELECT id, {self._select} FROM predictions WHERE id > %s ORDER BY id LIMIT %s",
            (rowid, limit),
            binary=True,  # arrays parse four times faster than from text
        ).fetchall()
        return [_record(r[1:]) for r in rows], (rows[-1][0] if rows else rowid)

    def frame(
        self,
        symbols: Sequence[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        role: str | None = None,
        kind: Kind = "calibrated",
    ) -> pd.DataFrame:
        """Predictions with origin in [start, end) as a frame, one quantile column each:
        the served (``calibrated``) quantiles, or the model's own (``raw``)."""
        where, params = symbol_time_filter(symbols, start_ns, end_ns)
        if role is not None:
            where.append("role = %s")
            params.append(role)
        rows = self._con.execute(
            f"SELECT {self._columns(kind)} FROM predictions WHERE {' AND '.join(where)} "
            "ORDER BY symbol, ts, horizon, role, target",
            params,
            binary=True,
        ).fetchall()
        return predictions_frame([_record(r) for r in rows])

    def count(self) -> int:
        row = self._con.execute("SELECT count(*) FROM predictions").fetchone()
        return 0 if row is None else row[0]

    def close(self) -> None:
        self._con.close()
