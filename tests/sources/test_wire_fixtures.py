"""The feed on other real captures: cryptofeed's 2021 Binance sample session.

30 s of four symbols (diff depth, bookTicker, kline_1m, aggTrade) with the
REST snapshots taken during the session. The snapshots are delivered at the
moment they were received, so the sync procedure sees the same interleaving
of buffered diffs and snapshot as it did live.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccf.config import shared_dir
from ccf.records import Book, Candle, DeadLetter, Gap, Quote, Record
from ccf.sources.binance.feed import BinanceFeed

FIXTURES = shared_dir() / "data" / "binance" / "fixtures"
SYMBOLS = ("nknusdt", "blzeth", "lrcbtc", "runeeur")


def _timed_lines(path: Path) -> list[tuple[float, str, str]]:
    """``<ts>: <json>`` lines (ws) or ``<url> -> <ts>: <json>`` lines (http)."""
    out = []
    for line in path.read_text().splitlines():
        head, sep, body = line.partition(": ")
        if not sep or " <-> " in head:
            continue  # the subscription line
        url, _, ts = head.rpartition(" -> ")
        out.append((float(ts), url, body))
    return out


@pytest.fixture(scope="module")
def session() -> tuple[BinanceFeed, list[Record]]:
    ws = _timed_lines(FIXTURES / "BINANCE.ws.1.0")
    snapshots = {
        url.split("symbol=")[1].split("&")[0].lower(): (ts, body)
        for ts, url, body in _timed_lines(FIXTURES / "BINANCE.http.0.0")
    }
    asked: list[str] = []
    feed = BinanceFeed(
        SYMBOLS, ("depth@100ms", "bookTicker", "kline_1m"), request_snapshot=asked.append
    )
    out: list[Record] = []
    pending = sorted((ts, sym) for sym, (ts, _) in snapshots.items())
    for ts, _, frame in ws:
        while pending and pending[0][0] <= ts:
            snap_ts, sym = pending.pop(0)
            assert sym in asked  # the feed asked for it before it came
            assert feed.on_snapshot(sym, snapshots[sym][1], int(snap_ts * 1e9), out) == "synced"
        feed.handle(frame, int(ts * 1e9), out)
    return feed, out


def test_every_book_syncs_without_a_gap(session: tuple[BinanceFeed, list[Record]]) -> None:
    feed, out = session
    assert not [r for r in out if isinstance(r, Gap)]
    assert all(feed.state[s].synced for s in SYMBOLS)
    books = [r for r in out if isinstance(r, Book)]
    assert {b.symbol for b in books} == set(SYMBOLS)
    for b in books:
        asks, bids = b.levels[0:40:2], b.levels[40:80:2]
        real_asks = [p for p in asks if p == p]
        real_bids = [p for p in bids if p == p]
        assert real_asks == sorted(real_asks) and real_bids == sorted(real_bids, reverse=True)
        assert real_bids[0] < real_asks[0]


def test_klines_become_candles_with_every_field(session: tuple[BinanceFeed, list[Record]]) -> None:
    _, out = session
    candles = [r for r in out if isinstance(r, Candle)]
    assert len(candles) == 2
    first = next(c for c in candles if c.symbol == "nknusdt")
    assert first == Candle(
        "binance",
        "nknusdt",
        "1m",
        1633998480000 * 10**6,
        1633998539999 * 10**6,
        0.3527,
        0.3528,
        0.3522,
        0.3528,
        25877.0,
        9116.046,
        30,
        58.0,
        20.4624,
        False,
        1633998523963 * 10**6,
        first.ts_recv,
    )


def test_quotes_and_unsubscribed_streams(session: tuple[BinanceFeed, list[Record]]) -> None:
    _, out = session
    raw = (FIXTURES / "BINANCE.ws.1.0").read_text()
    assert len([r for r in out if isinstance(r, Quote)]) == raw.count('@bookTicker"')
    dead = [r for r in out if isinstance(r, DeadLetter)]
    # aggTrade was never subscribed: kept, with the reason, not dropped silently
    assert len(dead) == raw.count('@aggTrade"') == 2
    assert all(d.reason.startswith("unexpected_stream") for d in dead)
    assert all(json.loads(d.frame)["data"]["e"] == "aggTrade" for d in dead)
