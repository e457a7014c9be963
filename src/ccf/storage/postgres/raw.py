"""PostgreSQL raw store: the embedded store's tables, written with COPY.

The tables, columns and keys are :mod:`ccf.storage.sqlite`'s, so every reader
(status, backfill resume, the dashboard) sees the same rows from either
backend. Three choices keep those rows equal:

- booleans are ``smallint`` 0/1, as SQLite returns them, so callers' SQL such
  as ``closed=1`` runs unchanged;
- a NaN float is stored as NULL, which is what SQLite does with NaN;
- text is ``COLLATE "C"``: ordering by symbol or feed is bytewise, as in SQLite
  (and C-collated B-trees are faster than locale-aware ones).

A batch is written in one transaction: binary COPY into a session-local staging
table per record kind, then ``INSERT ... SELECT`` into the real table. COPY is
the fastest way into PostgreSQL; the staging step is what lets it be idempotent
(COPY alone cannot skip a key it already holds). Events that never change try a
plain INSERT first and fall back to ``ON CONFLICT DO NOTHING`` when a key is
taken (see :func:`insert_new`); candles, gaps and feed statuses upsert. The busy,
append-only tables (book, trade, agg_trade, quote) get a BRIN index on event
time: a few pages per table where a B-tree would grow with every row, and
event time grows with insertion order, which is what BRIN needs.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, get_args, get_type_hints

from ccf.config import PostgresConfig
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
from ccf.storage.postgres.connect import connect, describe
from ccf.storage.sqlite import (
    _KEYS,
    _TIME_COLUMN,
    EVENT_KINDS,
    NEWS_KEYS_SQL,
    NEWS_SOURCES_SQL,
    PARTS_SQL,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

TEXT = 'text COLLATE "C"'
BRIN_TABLES = ("book", "trade", "agg_trade", "quote")  # append-only, time grows with inserts
TIME_TABLES = ("candle", "gap", "dead_letter")  # small: a B-tree on (symbol, time)
NEWS_PAGE_ROWS = 5000
# Serializes schema changes between processes that open the store at once (CREATE
# TABLE IF NOT EXISTS races in PostgreSQL: two creators can both fail on pg_type).
SCHEMA_LOCK = 0x0CCF_0001
_COPY_TYPES = {"smallint": "int2", "bigint": "int8", "double precision": "float8", TEXT: "text"}
_BOOK_HEAD = (
    ("exchange", TEXT),
    ("symbol", TEXT),
    ("source", TEXT),
    ("update_id", "bigint"),
    ("ts_event", "bigint"),
    ("ts_recv", "bigint"),
)


def pg_type(hint: Any) -> str:
    """PostgreSQL type of a record field: bool smallint (0/1 as SQLite gives), int bigint,
    float double precision, the rest C-collated text."""
    for t in (hint, *get_args(hint)):  # int | None counts as int
        if t is bool:
            return "smallint"
        if t is int:
            return "bigint"
        if t is float:
            return "double precision"
    return TEXT


def pg_sql(sql: str, params: Sequence[Any]) -> str:
    """SQLite-style ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    if not params:
        return sql
    return sql.replace("%", "%%").replace("?", "%s")


def table_names(con: psycopg.Connection) -> set[str]:
    """Tables of the connection's schema (its search_path)."""
    rows = con.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {name for (name,) in rows}


def copy_rows(
    cur: psycopg.Cursor, table: str, columns: Sequence[str], types: Sequence[str], rows: Any
) -> None:
    """Binary COPY of ``rows`` into ``table``: no text formatting of floats on either side."""
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(list(types))
        write = cp.write_row
        for row in rows:
            write(row)


def insert_new(cur: psycopg.Cursor, plain: str, skipping: str) -> int:
    """Run ``plain`` (an INSERT) in a savepoint, and ``skipping`` (the same INSERT with
    ``ON CONFLICT DO NOTHING``) only if a key was taken; returns the rows inserted."""
    import psycopg

    try:
        with cur.connection.transaction():  # a savepoint inside the batch's transaction
            cur.execute(plain)
            return max(cur.rowcount, 0)
    except psycopg.errors.UniqueViolation:
        pass  # some keys are stored already: skip exactly those
    cur.execute(skipping)
    return max(cur.rowcount, 0)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str

    @property
    def select(self) -> str:
        """The staging column as the real table stores it (NaN as NULL, like SQLite)."""
        if self.type == "double precision":
            return f"NULLIF({self.name}, 'NaN')"
        return self.name


@dataclass(frozen=True, slots=True)
class TableSpec:
    """How one record kind is stored, and the SQL that moves a staged batch into it."""

    name: str
    columns: tuple[Column, ...]
    conflict: str  # ON CONFLICT clause, "" for plain appends
    upsert: bool  # DO UPDATE: a key may be written once per statement only
    stage: str  # this session's staging table (temporary, emptied at commit)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def copy_types(self) -> tuple[str, ...]:
        return tuple(_COPY_TYPES[c.type] for c in self.columns)

    def stage_ddl(self) -> str:
        cols = ", ".join(f"{c.name} {c.type}" for c in self.columns)
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} ({cols}) ON COMMIT DELETE ROWS"

    def insert_sql(self, *, conflict: bool = True) -> str:
        """The staged rows into the table; ``conflict=False`` leaves out the ON CONFLICT
        clause (faster, but fails on a key the table or the batch already holds)."""
        cols = ", ".join(self.names)
        exprs = ", ".join(c.select for c in self.columns)
        tail = self.conflict if conflict else ""
        return f"INSERT INTO {self.name} ({cols}) SELECT {exprs} FROM {self.stage}{tail}"

    @property
    def optimistic(self) -> bool:
        """Whether a plain INSERT may be tried first: the key's rows never change."""
        return self.conflict.endswith("DO NOTHING")


def _record_columns(record: type) -> tuple[Column, ...]:
    hints = get_type_hints(record)
    return tuple(Column(n, pg_type(hints[n])) for n in record._fields)  # type: ignore[attr-defined]


def _spec(record: type, table: str, mode: str) -> TableSpec:
    """``mode``: ignore (events never change), replace (last write wins), candle (rewritten
    while open, final once closed) or append (no key)."""
    cols, stage = _record_columns(record), f"_stage_{table}"
    if mode == "append":
        return TableSpec(table, cols, "", False, stage)
    key = _KEYS[table]
    if mode == "ignore":
        return TableSpec(table, cols, f" ON CONFLICT ({key}) DO NOTHING", False, stage)
    sets = ", ".join(f"{c.name} = excluded.{c.name}" for c in cols)
    where = f" WHERE {table}.closed = 0" if mode == "candle" else ""
    conflict = f" ON CONFLICT ({key}) DO UPDATE SET {sets}{where}"
    return TableSpec(table, cols, conflict, True, stage)


SPECS: dict[type, TableSpec] = {
    Trade: _spec(Trade, "trade", "ignore"),
    AggTrade: _spec(AggTrade, "agg_trade", "ignore"),
    Quote: _spec(Quote, "quote", "ignore"),
    Candle: _spec(Candle, "candle", "candle"),
    Gap: _spec(Gap, "gap", "replace"),
    DeadLetter: _spec(DeadLetter, "dead_letter", "append"),
    NewsItem: _spec(NewsItem, "news", "ignore"),  # first sighting wins, as in SQLite
    NewsSource: _spec(NewsSource, "news_source", "ignore"),
    FeedStatus: _spec(FeedStatus, "feed_status", "replace"),
}
# Text from outside (feeds, broken frames) may hold NUL, which PostgreSQL text rejects:
# one such row would fail its whole batch, so NUL becomes U+FFFD in these kinds.
_FOREIGN_TEXT = (DeadLetter, NewsItem, NewsSource, FeedStatus)


@cache
def book_spec(depth: int) -> TableSpec:
    """The book's columns at ``depth``; staged per depth, as books of two depths in one
    batch have different columns."""
    levels = tuple(Column(c, "double precision") for c in book_columns(depth))
    cols = tuple(Column(n, t) for n, t in _BOOK_HEAD) + levels
    conflict = f" ON CONFLICT ({_KEYS['book']}) DO NOTHING"
    return TableSpec("book", cols, conflict, False, f"_stage_book_{depth}")


def rounds(rows: Sequence[tuple[Any, ...]], key: Sequence[int]) -> list[list[tuple[Any, ...]]]:
    """Split rows so no key repeats within a round, order kept per key.

    ``ON CONFLICT DO UPDATE`` may touch a row once per statement; one statement per
    round replays SQLite's row-by-row semantics (and its change count) exactly.
    """
    seen: dict[tuple[Any, ...], int] = {}
    out: list[list[tuple[Any, ...]]] = []
    for r in rows:
        k = tuple(r[i] for i in key)
        n = seen.get(k, 0)
        seen[k] = n + 1
        if n == len(out):
            out.append([])
        out[n].append(r)
    return out


def _clean_text(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(v.replace("\x00", "\ufffd") if type(v) is str else v for v in r) for r in rows]


class PgRawStore:
    """The PostgreSQL :class:`~ccf.storage.base.RawStore`, with :class:`SqliteStore`'s
    readers; ``query`` takes the same SQLite-style ``?`` SQL."""

    def __init__(
        self, cfg: PostgresConfig, *, book_depth: int = 20, readonly: bool = False
    ) -> None:
        self.cfg = cfg
        self.readonly = readonly
        self.where = describe(cfg)
        self._con = connect(cfg)
        self._book_depths: set[int] = set()
        self.refused_rows = 0  # rows written as dead letters instead (see write)
        try:
            if readonly:
                self._con.execute("SET default_transaction_read_only = on")
                if "part_status" not in table_names(self._con):
                    raise FileNotFoundError(
                        f"no CCF tables in {self.where}: run `ccf collect` first, or check "
                        "storage.postgres.dbname/db_schema"
                    )
            else:
                self._create(book_depth)
        except BaseException:
            self._con.close()
            raise
        log.debug("part=storage backend=postgres store=%s readonly=%s", self.where, readonly)

    # -- schema -----------------------------------------------------------------------------

    def _create(self, book_depth: int) -> None:
        """Tables, indexes and this session's staging tables; one transaction, so a reader
        never sees half a schema."""
        con = self._con
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for record, spec in SPECS.items():
                con.execute(self._table_ddl(spec))
                self._add_missing_columns(record, spec)
            con.execute(self._table_ddl(book_spec(book_depth)))
            self._create_indexes()
            con.execute(
                f"CREATE TABLE IF NOT EXISTS part_status (part {TEXT} PRIMARY KEY, pid bigint, "
                "started_at bigint, heartbeat_at bigint, state text, detail text)"
            )
        self._widen_book(book_depth)
        for spec in SPECS.values():
            con.execute(spec.stage_ddl())

    def _table_ddl(self, spec: TableSpec) -> str:
        cols = ", ".join(f"{c.name} {c.type}" for c in spec.columns)
        if spec.name == "dead_letter":
            return (
                "CREATE TABLE IF NOT EXISTS dead_letter "
                f"(id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, {cols})"
            )
        return f"CREATE TABLE IF NOT EXISTS {spec.name} ({cols}, PRIMARY KEY ({_KEYS[spec.name]}))"

    def _create_indexes(self) -> None:
        """The time indexes that are missing. Only those: CREATE INDEX IF NOT EXISTS locks
        its table against writers even when the index is there."""
        wanted = {
            f"{t}_time": f"{t} USING brin ({_TIME_COLUMN[t]}) WITH (autosummarize = on)"
            for t in BRIN_TABLES
        }
        wanted |= {f"{t}_time": f"{t} (symbol, {_TIME_COLUMN[t]})" for t in TIME_TABLES}
        wanted |= {"news_time": "news (ingested_at)", "news_source_item": "news_source (item_id)"}
        have = {
            name
            for (name,) in self._con.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            )
        }
        for name, target in wanted.items():
            if name not in have:
                self._con.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")

    def _columns(self, table: str) -> set[str]:
        rows = self._con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        )
        return {name for (name,) in rows}

    def _add_missing_columns(self, record: type, spec: TableSpec) -> None:
        """Columns added to a record since the tables were made (with their defaults);
        ALTER only what is missing: ALTER locks the table against every writer."""
        from psycopg import sql

        have = self._columns(spec.name)
        for col in spec.columns:
            if col.name in have:
                continue
            default = record._field_defaults.get(col.name)  # type: ignore[attr-defined]
            value = int(default) if isinstance(default, bool) else default
            self._con.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {} DEFAULT {}").format(
                    sql.Identifier(spec.name),
                    sql.Identifier(col.name),
                    sql.SQL(col.type),
                    sql.Literal(value),
                )
            )

    def _widen_book(self, depth: int) -> None:
        """A deeper book than the table holds adds columns; a shallower one leaves NULLs.
        Runs before (not inside) a batch: DDL in its own short transaction."""
        if depth in self._book_depths:
            return
        con = self._con
        missing = [c for c in book_columns(depth) if c not in self._columns("book")]
        if missing:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for c in missing:
                    con.execute(f"ALTER TABLE book ADD COLUMN IF NOT EXISTS {c} double precision")
            log.info("part=storage store=%s book widened to depth=%d", self.where, depth)
        con.execute(book_spec(depth).stage_ddl())
        self._book_depths.add(depth)

    # -- writes -----------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> int:
        """Store a batch in one transaction, grouped by table; returns the rows it changed
        (0 for a batch the store already held). A row no column can hold (an int beyond
        int64, which the binary COPY cannot send) fails the batch, which is then written
        again with that row as a dead letter instead: one bad row never loses its batch."""
        import psycopg

        try:
            return self._write(records)
        except (struct.error, OverflowError, psycopg.errors.NumericValueOutOfRange):
            good, letters = refuse_unstorable(list(records), time.time_ns())
            if not letters:
                raise
            self.refused_rows += len(letters)
            log.warning(
                "part=storage store=%s refused %d row(s) no column can hold (first: %s); "
                "kept in the dead_letter table",
                self.where,
                len(letters),
                letters[0].reason,
            )
            return self._write([*good, *letters])

    def _write(self, records: Sequence[Record]) -> int:
        if not records:
            return 0
        groups: dict[type, list[Record]] = {}
        for r in records:
            groups.setdefault(type(r), []).append(r)
        books = self._book_rows(groups.pop(Book, []))  # type: ignore[arg-type]
        changed = 0
        with self._con.transaction(), self._con.cursor() as cur:
            for depth, rows in books.items():
                changed += self._insert(cur, book_spec(depth), rows)
            for kind, group in groups.items():
                spec = SPECS[kind]
                rows = _clean_text(group) if kind in _FOREIGN_TEXT else group
                if spec.upsert:
                    changed += self._upsert(cur, spec, rows)
                else:
                    changed += self._insert(cur, spec, rows)
        return changed

    def _book_rows(self, books: list[Book]) -> dict[int, list[tuple[Any, ...]]]:
        by_depth: dict[int, list[tuple[Any, ...]]] = {}
        for b in books:
            by_depth.setdefault(len(b.levels) // 4, []).append((*b[:6], *b.levels))
        for depth in by_depth:
            self._widen_book(depth)
        return by_depth

    def _insert(self, cur: psycopg.Cursor, spec: TableSpec, rows: Sequence[Any]) -> int:
        """COPY into the staging table, then move what is new into the real one.

        New rows are the common case, and a plain INSERT moves them about twice as fast
        as ``ON CONFLICT DO NOTHING`` (no speculative insertion); a batch that holds a
        stored key (a replay after a crash) rolls back to the savepoint and takes the
        ON CONFLICT path, which skips exactly the keys already there.
        """
        copy_rows(cur, spec.stage, spec.names, spec.copy_types, rows)
        if spec.optimistic:
            return insert_new(cur, spec.insert_sql(conflict=False), spec.insert_sql())
        cur.execute(spec.insert_sql())
        return max(cur.rowcount, 0)

    def _upsert(self, cur: psycopg.Cursor, spec: TableSpec, rows: Sequence[Any]) -> int:
        key = [spec.names.index(k.strip()) for k in _KEYS[spec.name].split(",")]
        changed = 0
        for i, part in enumerate(rounds(rows, key)):
            if i:
                cur.execute(f"TRUNCATE {spec.stage}")
            changed += self._insert(cur, spec, part)
        return changed

    def heartbeat(
        self, part: str, pid: int, started_at: int, now: int, state: str, detail: str
    ) -> None:
        self._con.execute(
            "INSERT INTO part_status VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (part) DO "
            "UPDATE SET pid = excluded.pid, started_at = excluded.started_at, "
            "heartbeat_at = excluded.heartbeat_at, state = excluded.state, "
            "detail = excluded.detail",
            (part, pid, started_at, now, state, detail),
        )

    # -- reads ------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` written for SQLite (``?`` placeholders); the SQL must be valid in
        both dialects, which the callers' plain SELECTs are."""
        cur = self._con.execute(pg_sql(sql, params), tuple(params) or None)
        return cur.fetchall() if cur.description else []

    def summaries(self) -> list[StreamSummary]:
        gaps: dict[tuple[str, str, str], tuple[int, int]] = {}
        for exch, sym, stream, n, n_open in self._con.execute(
            "SELECT exchange, symbol, stream, count(*), count(*) FILTER (WHERE end_ts IS NULL) "
            "FROM gap GROUP BY exchange, symbol, stream"
        ):
            gaps[(stream, exch, sym)] = (n, n_open)
        out = []
        tables = table_names(self._con)
        for kind in EVENT_KINDS:
            if kind not in tables:
                continue
            t = _TIME_COLUMN[kind]
            for exch, sym, n, first, last, last_recv in self._con.execute(
                f"SELECT exchange, symbol, count(*), min({t}), max({t}), max(ts_recv) "
                f"FROM {kind} GROUP BY exchange, symbol ORDER BY exchange, symbol"
            ):
                n_gaps, n_open = gaps.get((kind, exch, sym), (0, 0))
                out.append(
                    StreamSummary(kind, exch, sym, n, first, last, last_recv, n_open, n_gaps)
                )
        return out

    def dead_letter_counts(self) -> dict[str, int]:
        rows = self._con.execute(
            "SELECT symbol, count(*) FROM dead_letter GROUP BY symbol ORDER BY symbol"
        )
        return {sym or "-": n for sym, n in rows}

    def iter_news(self, start_ns: int = 0, end_ns: int | None = None) -> Iterator[NewsItem]:
        """Stories by ``ingested_at`` in [start, end): the only order training may see.
        Read in keyset pages, so no transaction stays open while the caller iterates."""
        cols = ", ".join(NewsItem._fields)
        end = "" if end_ns is None else " AND ingested_at < %(end)s"
        first = f"SELECT {cols} FROM news WHERE ingested_at >= %(start)s{end}"
        after = f"SELECT {cols} FROM news WHERE (ingested_at, item_id) > (%(t)s, %(id)s){end}"
        order = f" ORDER BY ingested_at, item_id LIMIT {NEWS_PAGE_ROWS}"
        params: dict[str, Any] = {"start": start_ns, "end": end_ns}
        rows = self._con.execute(first + order, params).fetchall()
        while rows:
            yield from (NewsItem(*r) for r in rows)
            if len(rows) < NEWS_PAGE_ROWS:
                return
            last = NewsItem(*rows[-1])
            params.update(t=last.ingested_at, id=last.item_id)
            rows = self._con.execute(after + order, params).fetchall()

    def news_keys(self, since_ns: int = 0) -> list[tuple[Any, ...]]:
        """What deduplication needs of every feed sighting of stories ingested since then:
        (item_id, source, guid, link, title_key, published_at or ingested_at)."""
        return self.query(
            NEWS_KEYS_SQL,
            (since_ns,),
        )

    def feed_statuses(self) -> list[FeedStatus]:
        cols = ", ".join(FeedStatus._fields)
        return [FeedStatus(*r) for r in self.query(f"SELECT {cols} FROM feed_status ORDER BY feed")]

    def news_sources(self) -> list[tuple[str, int, int, int | None, int | None]]:
        """Per feed: stories carried, stories it carried first, its newest sighting and
        the ingestion time of its newest story (ns)."""
        return self.query(NEWS_SOURCES_SQL)

    def parts(self) -> list[tuple[Any, ...]]:
        return self.query(PARTS_SQL)

    def close(self) -> None:
        self._con.close()
