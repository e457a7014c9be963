"""Real records for the Kafka tests, and what a store holds, table by table.

Market records come from the shared Binance recordings through the collector's own
feed (books, trades, quotes, in the order the collector would have sent them); news
from the saved RSS feeds through the news collector's parser and deduplication;
candles from the shared one-minute klines.
"""

from __future__ import annotations

import heapq
import itertools
from functools import cache
from pathlib import Path
from typing import Any

from ccf.config import shared_dir
from ccf.records import Book, Candle, FeedStatus, Gap, Quote, Trade
from ccf.sources.archive import csv_text, parse
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.news.dedupe import DedupeIndex, assign
from ccf.sources.news.parse import parse_feed
from ccf.sources.recording import read_frames
from ccf.storage.sqlite import connect
from tests.sources.recorded import SYMBOLS, recording_files

RAW_TABLES = (
    "book",
    "trade",
    "agg_trade",
    "quote",
    "candle",
    "gap",
    "news",
    "news_source",
    "feed_status",
)


@cache
def feed_records(symbol: str) -> tuple[Any, ...]:
    """What the collector's feed makes of one symbol's recordings, in receive order."""
    feed = BinanceFeed((symbol,), ("depth@100ms", "trade", "bookTicker"), book_depth=20)
    out: list[Any] = []
    for f in recording_files((symbol,)):
        for ts, frame in read_frames(f):
            if frame.startswith('{"lastUpdateId"'):
                feed.on_snapshot(symbol, frame, ts, out)
            else:
                feed.handle(frame, ts, out)
    return tuple(r for r in out if type(r) in (Book, Trade, Quote, Gap))


def market_records(symbols: tuple[str, ...] = SYMBOLS, kinds: tuple[type, ...] = ()) -> list[Any]:
    """Both symbols' records merged by receive time, as one collector would send them."""
    keep = kinds or (Book, Trade, Quote, Gap)
    streams = [[r for r in feed_records(s) if type(r) in keep] for s in symbols]
    return list(heapq.merge(*streams, key=lambda r: r.ts_recv))


@cache
def news_records() -> tuple[Any, ...]:
    """Stories and sightings of the saved feeds, as the news collector makes them."""
    index = DedupeIndex(3 * 86400 * 10**9)
    out: list[Any] = []
    for n, name in enumerate(("coindesk_2026-09-30.xml", "cointelegraph_2026-02-15.xml")):
        source = name.split("_")[0]
        at = 1_790_000_000 * 10**9 + n * 10**9
        body = (shared_dir() / "data" / "news" / name).read_bytes()
        parsed = parse_feed(
            body, source=source, url=f"https://{source}.example/rss", ingested_at=at
        )
        outcome = assign(index, parsed.entries, at)
        out += outcome.items + outcome.sources
        out.append(
            FeedStatus(
                source,
                f"https://{source}.example/rss",
                "ok",
                at,
                at,
                None,
                "",
                "",
                200,
                0,
                len(parsed.entries),
                len(outcome.items),
                len(outcome.items),
                None,
                "",
                "",
                at,
            )
        )
    return tuple(out)


@cache
def candle_records(n: int = 500) -> tuple[Candle, ...]:
    path = shared_dir() / "data" / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
    _, records = parse(csv_text(path.read_bytes(), path.name), path.name, ts_recv=1)
    return tuple(itertools.islice(records, n))  # type: ignore[arg-type]


def tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every raw table's rows in key order (what "the store holds" means in tests)."""
    con = connect(path, readonly=True)
    try:
        out = {}
        for table in RAW_TABLES:
            out[table] = con.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4").fetchall()
        return out
    finally:
        con.close()


def counts(path: Path) -> int:
    """Rows in the raw tables (0 before the store exists)."""
    if not path.exists():
        return 0
    con = connect(path, readonly=True)
    try:
        have = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return sum(
            con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in RAW_TABLES if t in have
        )
    finally:
        con.close()
