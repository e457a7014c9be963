"""Embedded raw store: SQLite in WAL mode.

WAL lets one writer process and any number of reader processes (``ccf
status``, the feature engine, the dashboard) use the same file at once.
Tables are keyed by exchange, symbol and event id, and written with
``INSERT OR IGNORE`` (events never change) or ``INSERT OR REPLACE`` (gaps and
candles, which are rewritten when they close), so every write is idempotent.
Event ids grow with event time per symbol, so the keys of the busy tables
(book, trade, quote) already serve time-ordered reads; only the small tables
get a separate time index (one more index halves the insert rate).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, get_args, get_type_hints

from ccf.records import (
    AggTrade,
    Book,
    Candle,
    DeadLetter,
    FeedStatus,
    Gap,
    NewsItem,
    NewsSource,
    Quote,
    Record,
    Trade,
    book_columns,
    refuse_unstorable,
)
from ccf.storage.base import StreamSummary

log = logging.getLogger(__name__)

_TABLES = {
    Trade: ("trade", "INSERT OR IGNORE"),
    AggTrade: ("agg_trade", "INSERT OR IGNORE"),
    Quote: ("quote", "INSERT OR IGNORE"),
    Candle: ("candle", "INSERT"),  # upsert: see _UPSERT
    Gap: ("gap", "INSERT OR REPLACE"),
    DeadLetter: ("dead_letter", "INSERT"),
    NewsItem: ("news", "INSERT OR IGNORE"),  # first sighting wins: ingested_at never moves
    NewsSource: ("news_source", "INSERT OR IGNORE"),
    FeedStatus: ("feed_status", "INSERT OR REPLACE"),
}
_SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT", bool: "INTEGER"}
_KEYS = {
    "trade": "exchange, symbol, trade_id",
    "agg_trade": "exchange, symbol, agg_id",
    "quote": "exchange, symbol, update_id",
    "candle": "exchange, symbol, interval, open_time",
    "gap": "exchange, symbol, stream, start_ts",
    "book": "exchange, symbol, source, update_id",
    "news": "item_id",
    "news_source": "source, guid",
    "feed_status": "feed",
}
_TIME_COLUMN = {
    "trade": "ts_event",
    "agg_trade": "ts_event",
    "quote": "ts_event",
    "candle": "open_time",
    "gap": "start_ts",
    "book": "ts_event",
    "dead_letter": "ts_recv",
}
# Read queries in SQL both backends run (PostgreSQL's store translates the ``?``).
NEWS_KEYS_SQL = (
    "SELECT s.item_id, s.source, s.guid, s.link, s.title_key, "
    "coalesce(n.published_at, n.ingested_at) FROM news_source s "
    "JOIN news n ON n.item_id = s.item_id WHERE n.ingested_at >= ?"
)
NEWS_SOURCES_SQL = (
    "SELECT s.source, count(DISTINCT s.item_id), "
    "count(DISTINCT CASE WHEN n.source = s.source THEN n.item_id END), "
    "max(s.seen_at), max(n.ingested_at) "
    "FROM news_source s JOIN news n ON n.item_id = s.item_id "
    "GROUP BY s.source ORDER BY s.source"
)
PARTS_SQL = (
    "SELECT part, pid, started_at, heartbeat_at, state, detail FROM part_status ORDER BY part"
)
EVENT_KINDS = ("book", "trade", "agg_trade", "quote", "candle")
# A candle is rewritten while it is open and final once closed: the live stream's
# last update, a backfill and a second backfill all leave the same closed row.
_UPSERT = {
    "candle": " ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE candle.closed = 0",
}


def _column_type(hint: Any) -> str:
    """SQLite type of a record field: int and bool INTEGER, float REAL, the rest TEXT."""
    for t in (hint, *get_args(hint)):  # int | None counts as int
        if t in (int, bool):
            return "INTEGER"
        if t is float:
            return "REAL"
    return "TEXT"


def _table_ddl(table: str, record: type) -> str:
    hints = get_type_hints(record)
    cols = ", ".join(f"{name} {_column_type(hints[name])}" for name in record._fields)
    if table == "dead_letter":
        return f"CREATE TABLE IF NOT EXISTS dead_letter (id INTEGER PRIMARY KEY, {cols})"
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({_KEYS[table]})) WITHOUT ROWID"
    )


def symbol_time_filter(
    symbols: Iterable[str] | None, start_ns: int | None, end_ns: int | None
) -> tuple[list[str], list[Any]]:
    """WHERE terms and parameters for rows of ``symbols`` with ``ts`` in [start, end)."""
    where: list[str] = ["1"]
    params: list[Any] = []
    if symbols is not None:
        syms = list(symbols)
        where.append(f"symbol IN ({', '.join('?' * len(syms)) or 'NULL'})")
        params += syms
    if start_ns is not None:
        where.append("ts >= ?")
        params.append(start_ns)
    if end_ns is not None:
        where.append("ts < ?")
        params.append(end_ns)
    return where, params


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the pragmas every CCF process uses."""
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a crashed process loses nothing it committed; only a power
        # cut can drop the last transactions, and the file never corrupts.
        con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA busy_timeout=30000")
    return con


class SqliteStore:
    """The embedded :class:`~ccf.storage.base.RawStore`."""

    def __init__(self, path: Path, *, book_depth: int = 20, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly and not self.path.exists():
            raise FileNotFoundError(
                f"no store at {self.path}: run `ccf collect` first, or set data_dir/storage.path"
            )
        self._con = connect(self.path, readonly=readonly)
        self._book_sql: dict[int, str] = {}
        self.refused_rows = 0  # rows written as dead letters instead (see _write_refusing)
        if not readonly:
            # one transaction: a reader never sees a half-made schema
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._create(book_depth)
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    # -- schema -----------------------------------------------------------------------------

    def _create(self, book_depth: int) -> None:
        con = self._con
        for record, (table, _) in _TABLES.items():
            con.execute(_table_ddl(table, record))
            self._add_missing_columns(table, record)
        meta = ", ".join(f"{c} REAL" for c in book_columns(book_depth))
        con.execute(
            "CREATE TABLE IF NOT EXISTS book (exchange TEXT, symbol TEXT, source TEXT, "
            f"update_id INTEGER, ts_event INTEGER, ts_recv INTEGER, {meta}, "
            f"PRIMARY KEY ({_KEYS['book']})) WITHOUT ROWID"
        )
        self._widen_book(book_depth)
        for table in ("candle", "gap", "dead_letter"):
            col = _TIME_COLUMN[table]
            con.execute(f"CREATE INDEX IF NOT EXISTS {table}_time ON {table} (symbol, {col})")
        con.execute("CREATE INDEX IF NOT EXISTS news_time ON news (ingested_at)")
        con.execute("CREATE INDEX IF NOT EXISTS news_source_item ON news_source (item_id)")
        con.execute(
            "CREATE TABLE IF NOT EXISTS part_status (part TEXT PRIMARY KEY, pid INTEGER, "
            "started_at INTEGER, heartbeat_at INTEGER, state TEXT, detail TEXT)"
        )

    def _insert_sql(self, kind: type) -> str:
        table, verb = _TABLES[kind]
        fields = kind._fields  # type: ignore[attr-defined]
        sql = f"{verb} INTO {table} ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})"
        if table in _UPSERT:
            sets = ", ".join(f"{f} = excluded.{f}" for f in fields)
            sql += _UPSERT[table].format(key=_KEYS[table], sets=sets)
        return sql

    def _add_missing_columns(self, table: str, record: type) -> None:
        """Columns added to a record since the store was made (with their defaults)."""
        have = {row[1] for row in self._con.execute(f"PRAGMA table_info({table})")}
        hints = get_type_hints(record)
        for name in record._fields:  # type: ignore[attr-defined]
            if name not in have:
                default = record._field_defaults.get(name)  # type: ignore[attr-defined]
                literal = (
                    "NULL"
                    if default is None
                    else repr(int(default) if isinstance(default, bool) else default)
                )
                self._con.execute(
                    f"ALTER TABLE {table} ADD COLUMN {name} "
                    f"{_column_type(hints[name])} DEFAULT {literal}"
                )

    def _widen_book(self, depth: int) -> None:
        """A deeper book than the table holds adds columns; a shallower one leaves NULLs."""
        have = {row[1] for row in self._con.execute("PRAGMA table_info(book)")}
        for col in book_columns(depth):
            if col not in have:
                self._con.execute(f"ALTER TABLE book ADD COLUMN {col} REAL")

    def _insert_book_sql(self, depth: int) -> str:
        sql = self._book_sql.get(depth)
        if sql is None:
            cols = [
                "exchange",
                "symbol",
                "source",
                "update_id",
                "ts_event",
                "ts_recv",
                *book_columns(depth),
            ]
            sql = (
                f"INSERT OR IGNORE INTO book ({', '.join(cols)}) "
                f"VALUES ({', '.join('?' * len(cols))})"
            )
            self._book_sql[depth] = sql
        return sql

    # -- writes -----------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> int:
        """Store a batch in one transaction, grouped by table; returns the rows it changed
        (0 for a batch the store already held)."""
        if not records:
            return 0
        groups: dict[type, list[Record]] = {}
        for r in records:
            groups.setdefault(type(r), []).append(r)
        con = self._con
        before = con.total_changes
        con.execute("BEGIN IMMEDIATE")
        try:
            for kind, rows in groups.items():
                con.execute("SAVEPOINT grp")
                try:
                    self._write_group(kind, rows)
                except OverflowError:  # a value no column holds: refuse that row, not all
                    con.execute("ROLLBACK TO grp")
                    self._write_refusing(kind, rows)
                con.execute("RELEASE grp")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return con.total_changes - before

    def _write_group(self, kind: type, rows: list[Record]) -> None:
        if kind is Book:
            self._write_books(rows)  # type: ignore[arg-type]
        elif kind is DeadLetter:
            self._con.executemany(
                "INSERT INTO dead_letter (exchange, symbol, reason, frame, ts_recv) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        else:
            self._con.executemany(self._insert_sql(kind), rows)

    def _write_refusing(self, kind: type, rows: list[Record]) -> None:
        """Write the rows a column can hold; each other one becomes a dead letter."""
        good, letters = refuse_unstorable(rows, time.time_ns())
        self.refused_rows += len(letters)
        log.warning(
            "part=storage store=%s refused %d %s row(s) no column can hold (first: %s); "
            "kept in the dead_letter table",
            self.path,
            len(letters),
            kind.__name__,
            letters[0].reason if letters else "-",
        )
        self._write_group(kind, good)  # anything else wrong with them is not ours to hide
        self._write_group(DeadLetter, letters)

    def _write_books(self, books: list[Book]) -> None:
        by_depth: dict[int, list[tuple[Any, ...]]] = {}
        for b in books:
            by_depth.setdefault(len(b.levels) // 4, []).append((*b[:6], *b.levels))
        for depth, rows in by_depth.items():
            if depth not in self._book_sql:
                self._widen_book(depth)
            self._con.executemany(self._insert_book_sql(depth), rows)

    def heartbeat(
        self, part: str, pid: int, started_at: int, now: int, state: str, detail: str
    ) -> None:
        self._con.execute(
            "INSERT OR REPLACE INTO part_status VALUES (?, ?, ?, ?, ?, ?)",
            (part, pid, started_at, now, state, detail),
        )

    # -- reads ------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._con.execute(sql, params).fetchall()

    def summaries(self) -> list[StreamSummary]:
        gaps: dict[tuple[str, str, str], tuple[int, int]] = {}
        for exch, sym, stream, n, n_open in self._con.execute(
            "SELECT exchange, symbol, stream, count(*), sum(end_ts IS NULL) FROM gap "
            "GROUP BY exchange, symbol, stream"
        ):
            gaps[(stream, exch, sym)] = (n, n_open or 0)
        out = []
        tables = {n for (n,) in self._con.execute("SELECT name FROM sqlite_master")}
        for kind in EVENT_KINDS:
            if kind not in tables:  # a store made by an older version
                continue
            t = _TIME_COLUMN[kind]
            for exch, sym, n, first, last, last_recv in self._con.execute(
                f"SELECT exchange, symbol, count(*), min({t}), max({t}), max(ts_recv) "
                f"FROM {kind} GROUP BY exchange, symbol"
            ):
                n_gaps, n_open = gaps.get((kind, exch, sym), (0, 0))
                out.append(
                    StreamSummary(kind, exch, sym, n, first, last, last_recv, n_open, n_gaps)
                )
        return out

    def dead_letter_counts(self) -> dict[str, int]:
        return {
            sym or "-": n
            for sym, n in self._con.execute(
                "SELECT symbol, count(*) FROM dead_letter GROUP BY symbol"
            )
        }

    def _has_table(self, table: str) -> bool:
        # A store made before news existed, opened read-only, has no news tables.
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(self._con.execute(sql, (table,)).fetchone())

    def iter_news(self, start_ns: int = 0, end_ns: int | None = None) -> Iterator[NewsItem]:
        """Stories by ``ingested_at`` in [start, end): the only order training may see."""
        if not self._has_table("news"):
            return
        sql = f"SELECT {', '.join(NewsItem._fields)} FROM news WHERE ingested_at >= ?"
        params: tuple[int, ...] = (start_ns,)
        if end_ns is not None:
            sql, params = sql + " AND ingested_at < ?", (start_ns, end_ns)
        for row in self._con.execute(sql + " ORDER BY ingested_at, item_id", params):
            yield NewsItem(*row)

    def news_keys(self, since_ns: int = 0) -> list[tuple[Any, ...]]:
        """What deduplication needs of every feed sighting of stories ingested since then:
        (item_id, source, guid, link, title_key, published_at or ingested_at)."""
        if not self._has_table("news_source"):
            return []
        return self.query(
            NEWS_KEYS_SQL,
            (since_ns,),
        )

    def feed_statuses(self) -> list[FeedStatus]:
        if not self._has_table("feed_status"):
            return []
        cols = ", ".join(FeedStatus._fields)
        return [FeedStatus(*r) for r in self.query(f"SELECT {cols} FROM feed_status ORDER BY feed")]

    def news_sources(self) -> list[tuple[str, int, int, int | None, int | None]]:
        """Per feed: stories carried, stories it carried first, its newest sighting and
        the ingestion time of its newest story (ns)."""
        if not self._has_table("news_source"):
            return []
        return self.query(NEWS_SOURCES_SQL)

    def parts(self) -> list[tuple[Any, ...]]:
        return self.query(PARTS_SQL)

    def close(self) -> None:
        self._con.close()


def open_store(path: Path, *, book_depth: int = 20, readonly: bool = False) -> SqliteStore:
    return SqliteStore(path, book_depth=book_depth, readonly=readonly)
