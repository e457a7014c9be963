"""Reading the raw store for the engine: batch ranges and a live tail.

Both paths read the same columns into the same records, so the engine
sees identical values either way. Books, trades and candles are read in
key order (update id, trade id, open time), which is also their event-time
order per symbol; news by ``ingested_at``. The live tail reads every table
in one read transaction, so it sees the collector's commits whole: books
and trades written together arrive together.

Both hand the engine a symbol's streams merged in *receive* order: by each
stream's running maximum of ``ts_recv`` (so every stream stays in its key
order), then stream, then id. The engine's per-stream watermark decides on
that order, so live and batch decide alike. Trades fetched over REST into a
gap (``backfilled``) are not part of the trade stream: they come at their own
receive time (live: when the gap is marked filled), usually late.
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ccf.features.spec import FeatureSet
from ccf.records import Book, Candle, Gap, NewsItem, Trade, book_columns

log = logging.getLogger(__name__)

_TRADE_COLS = ", ".join(Trade._fields)
_CANDLE_COLS = ", ".join(Candle._fields)
_GAP_COLS = ", ".join(Gap._fields)
_NEWS_COLS = ", ".join(NewsItem._fields)
_NEW = tuple.__new__  # records from rows without NamedTuple's keyword handling
NEWS_LOOKBACK_NS = 300 * 10**9  # a story may be committed this long after its ingested_at
_FAR = 2**62


def _has_table(con: sqlite3.Connection, table: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return con.execute(sql, (table,)).fetchone() is not None


class RawReader:
    """SQL for one feature set over one raw store connection."""

    def __init__(self, con: sqlite3.Connection, fs: FeatureSet, exchange: str) -> None:
        self.con = con
        self.fs = fs
        self.exchange = exchange
        have = {r[1] for r in con.execute("PRAGMA table_info(book)")}
        levels = ", ".join(c if c in have else "NULL" for c in book_columns(fs.book_depth))
        self._book_sql = (
            f"SELECT exchange, symbol, source, update_id, ts_event, ts_recv, {levels} FROM book "
            "WHERE exchange = ? AND symbol = ? AND source = ?"
        )

    # -- records --------------------------------------------------------------------------

    def books(
        self, symbol: str, where: str, params: tuple[Any, ...], limit: int = -1
    ) -> list[Book]:
        rows = self.con.execute(
            f"{self._book_sql} AND {where} ORDER BY update_id LIMIT {limit}",
            (self.exchange, symbol, self.fs.book_source, *params),
        ).fetchall()
        return [_NEW(Book, (*r[:6], r[6:])) for r in rows]

    def trades(
        self, symbol: str, where: str, params: tuple[Any, ...], limit: int = -1
    ) -> list[Trade]:
        rows = self.con.execute(
            f"SELECT {_TRADE_COLS} FROM trade WHERE exchange = ? AND symbol = ? AND {where} "
            f"ORDER BY trade_id LIMIT {limit}",
            (self.exchange, symbol, *params),
        ).fetchall()
        return [_NEW(Trade, r) for r in rows]

    def candles(
        self, symbol: str, where: str, params: tuple[Any, ...], limit: int = -1
    ) -> list[Candle]:
        rows = self.con.execute(
            f"SELECT {_CANDLE_COLS} FROM candle WHERE exchange = ? AND symbol = ? "
            f"AND interval = ? AND closed = 1 AND {where} ORDER BY open_time LIMIT {limit}",
            (self.exchange, symbol, self.fs.candle_interval, *params),
        ).fetchall()
        return [_NEW(Candle, r) for r in rows]

    def gaps(self, symbols: list[str], since_ns: int | None) -> list[Gap]:
        marks = ", ".join("?" * len(symbols))
        sql = f"SELECT {_GAP_COLS} FROM gap WHERE exchange = ? AND symbol IN ({marks})"
        params: list[Any] = [self.exchange, *symbols]
        if since_ns is not None:
            sql += " AND (end_ts IS NULL OR end_ts >= ? OR start_ts >= ?)"
            params += [since_ns, since_ns]
        return [_NEW(Gap, r) for r in self.con.execute(sql + " ORDER BY start_ts", params)]

    def news(self, start_ns: int | None, end_ns: int | None) -> list[NewsItem]:
        if not _has_table(self.con, "news"):
            return []
        sql = f"SELECT {_NEWS_COLS} FROM news WHERE ingested_at >= ? AND ingested_at < ?"
        params = (-_FAR if start_ns is None else start_ns, _FAR if end_ns is None else end_ns)
        return [_NEW(NewsItem, r) for r in self.con.execute(sql + " ORDER BY ingested_at", params)]

    def last_event_ts(self, symbol: str) -> int | None:
        """Event time of the symbol's newest market record (what decides the watermark)."""
        if self.fs.source == "candle":
            row = self.con.execute(
                "SELECT max(open_time) FROM candle WHERE exchange = ? AND symbol = ? "
                "AND interval = ? AND closed = 1",
                (self.exchange, symbol, self.fs.candle_interval),
            ).fetchone()
            return None if row[0] is None else row[0] + _candle_ns(self.fs) - 1
        found = []
        for sql, params in (
            (
                "SELECT ts_event FROM book WHERE exchange = ? AND symbol = ? AND source = ? "
                "ORDER BY update_id DESC LIMIT 1",
                (self.exchange, symbol, self.fs.book_source),
            ),
            (
                "SELECT ts_event FROM trade WHERE exchange = ? AND symbol = ? "
                "ORDER BY trade_id DESC LIMIT 1",
                (self.exchange, symbol),
            ),
        ):
            row = self.con.execute(sql, params).fetchone()
            if row:
                found.append(row[0])
        return max(found, default=None)

    # -- batch ----------------------------------------------------------------------------

    def events(
        self, symbol: str, start_ns: int | None, end_ns: int | None, chunk: int = 50_000
    ) -> Iterator[Any]:
        """The symbol's market records and news with event time in [start, end), merged
        into the engine's order (event time, stream, id): a batch run is never late."""
        lo = -_FAR if start_ns is None else start_ns
        hi = _FAR if end_ns is None else end_ns
        streams: list[Iterator[tuple[Any, ...]]] = []
        if self.fs.source == "candle":
            cn = _candle_ns(self.fs)
            streams.append(
                by_receipt(
                    2,
                    "open_time",
                    self._paged(self.candles, symbol, "open_time", lo - cn + 1, hi - cn + 1),
                )
            )
        else:
            streams.append(
                by_receipt(0, "update_id", self._paged(self.books, symbol, "update_id", lo, hi))
            )
            live = self._paged(self.trades, symbol, "trade_id", lo, hi, LIVE_TRADES)
            streams.append(by_receipt(1, "trade_id", live))
            filled = self.trades(
                symbol, "backfilled = 1 AND ts_event >= ? AND ts_event < ?", (lo, hi)
            )
            filled.sort(key=lambda t: (t.ts_recv, t.trade_id))
            streams.append((t.ts_recv, 1, t.trade_id, t) for t in filled)
        streams.append((n.ingested_at, 3, n.item_id, n) for n in self.news(lo, hi))
        for item in heapq.merge(*streams):
            yield item[3]

    def _paged(
        self, read: Any, symbol: str, key: str, lo: int, hi: int, extra: str = "1"
    ) -> Iterator[Any]:
        time_col = "open_time" if key == "open_time" else "ts_event"
        last = None
        while True:
            if last is None:
                where, params = f"{extra} AND {time_col} >= ? AND {time_col} < ?", (lo, hi)
            else:
                where, params = f"{extra} AND {key} > ? AND {time_col} < ?", (last, hi)
            page = read(symbol, where, params, PAGE)
            yield from page
            if len(page) < PAGE:
                return
            last = getattr(page[-1], key)


PAGE = 50_000
LIVE_TRADES = "backfilled = 0"  # the trade stream as received; REST fills come on their own


def by_receipt(
    stream: int, key: str, records: Iterable[Any], top: int = -_FAR
) -> Iterator[tuple[Any, ...]]:
    """Merge keys for one stream in key order: (running max of ts_recv, stream, id, rec);
    ``top`` carries the running max over from an earlier read."""
    for r in records:
        if r.ts_recv > top:
            top = r.ts_recv
        yield (top, stream, getattr(r, key), r)


def _candle_ns(fs: FeatureSet) -> int:
    from ccf.features.buckets import interval_ns

    return interval_ns(fs.candle_interval)


# -- live tail --------------------------------------------------------------------------------


@dataclass
class _Cursor:
    key: int | None = None  # last id read
    recv: int = -_FAR  # the stream's running max of ts_recv at that record
    floor: int | None = None  # before the first read: event-time floor (None: from the start)


@dataclass
class Poll:
    """What one poll read: gaps and news first, then each symbol's market records."""

    gaps: list[Gap] = field(default_factory=list)
    news: list[NewsItem] = field(default_factory=list)
    market: dict[str, list[Any]] = field(default_factory=dict)
    late_trades: list[Trade] = field(default_factory=list)  # filled into a gap over REST
    full: bool = False  # a table hit the row limit: poll again at once

    @property
    def events(self) -> int:
        return len(self.news) + sum(len(v) for v in self.market.values())


class RawTail:
    """Follows the raw store as the collector writes it, by key per table and symbol."""

    def __init__(
        self,
        reader: RawReader,
        symbols: list[str],
        floors: dict[str, int | None],
        limit: int,
    ) -> None:
        self.r = reader
        self.symbols = symbols
        self.limit = limit
        candles = reader.fs.source == "candle"
        self.tables = ("candle",) if candles else ("book", "trade")
        self.cursors = {(s, t): _Cursor(floor=floors.get(s)) for s in symbols for t in self.tables}
        known = [f for f in floors.values() if f is not None]
        self.news_from: int | None = min(known) if len(known) == len(symbols) and known else None
        self._news_seen: dict[str, int] = {}
        self._gaps: dict[tuple[str, str, int], tuple[int | None, bool]] = {}
        self._gap_since: int | None = self.news_from

    def poll(self) -> Poll:
        con = self.r.con
        out = Poll()
        con.execute("BEGIN")
        try:
            self._read_gaps(out)
            self._read_news(out)
            for s in self.symbols:
                out.market[s] = self._read_market(s, out)
        finally:
            con.execute("COMMIT")
        return out

    def _read_gaps(self, out: Poll) -> None:
        for g in self.r.gaps(self.symbols, self._gap_since):
            key = (g.symbol, g.stream, g.start_ts)
            seen = self._gaps.get(key)
            if seen == (g.end_ts, bool(g.filled)):
                continue
            self._gaps[key] = (g.end_ts, bool(g.filled))
            out.gaps.append(g)
            if g.stream == "trade" and g.filled and (seen is None or not seen[1]):
                end = g.end_ts if g.end_ts is not None else _FAR
                out.late_trades += self.r.trades(
                    g.symbol,
                    "backfilled = 1 AND ts_event >= ? AND ts_event <= ?",
                    (g.start_ts, end),
                )

    def _read_news(self, out: Poll) -> None:
        since = None if self.news_from is None else self.news_from - NEWS_LOOKBACK_NS
        items = [n for n in self.r.news(since, None) if n.item_id not in self._news_seen]
        for n in items:
            self._news_seen[n.item_id] = n.ingested_at
        if items:
            newest = max(n.ingested_at for n in items)
            self.news_from = max(self.news_from or newest, newest)
            cut = self.news_from - NEWS_LOOKBACK_NS
            self._news_seen = {k: t for k, t in self._news_seen.items() if t >= cut}
        out.news = items

    def _read_market(self, s: str, out: Poll) -> list[Any]:
        """One symbol's new records, merged; cut where a table hit the limit so that no
        table runs ahead of another (what it skipped would look late)."""
        lists: list[list[tuple[Any, ...]]] = []
        horizon = _FAR
        for table in self.tables:
            recs = self._read_table(s, table, self.limit)
            limit = self.limit
            while len(recs) >= limit and recs[0][0] == recs[-1][0]:
                # one event time fills the page (a sweep of many trades): nothing before the
                # cut would be kept and the tail would never move; read that time whole
                limit *= 2
                recs = self._read_table(s, table, limit)
            if len(recs) >= limit:
                out.full = True
                horizon = min(horizon, recs[-1][0])
            lists.append(recs)
        merged: list[Any] = []
        for table, recs in zip(self.tables, lists, strict=True):
            kept = [k for k in recs if k[0] < horizon] if horizon < _FAR else recs
            if kept:
                cur = self.cursors[(s, table)]
                cur.key, cur.recv = kept[-1][2], kept[-1][0]
        for item in heapq.merge(*lists):
            if item[0] >= horizon:
                break
            merged.append(item[3])
        return merged

    def _read_table(self, s: str, table: str, n: int) -> list[tuple[Any, ...]]:
        cur = self.cursors[(s, table)]
        key, time_col = {
            "book": ("update_id", "ts_event"),
            "trade": ("trade_id", "ts_event"),
            "candle": ("open_time", "open_time"),
        }[table]
        if cur.key is not None:
            where, params = f"{key} > ?", (cur.key,)
        elif cur.floor is not None:
            where, params = f"{time_col} >= ?", (cur.floor,)
        else:
            where, params = "1", ()
        if table == "book":
            return list(by_receipt(0, "update_id", self.r.books(s, where, params, n), cur.recv))
        if table == "trade":
            where = f"{LIVE_TRADES} AND {where}"
            return list(by_receipt(1, "trade_id", self.r.trades(s, where, params, n), cur.recv))
        return list(by_receipt(2, "open_time", self.r.candles(s, where, params, n), cur.recv))

    def advance_gap_window(self, since_ns: int) -> None:
        """Gaps ending before ``since_ns`` no longer matter to the open buckets."""
        self._gap_since = since_ns
