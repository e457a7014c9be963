"""Binance USD-M futures behind the venue interface, on the real recording.

The reference book is rebuilt here with plain dicts, following the futures
procedure step by step (not CCF's code): drop ``u < lastUpdateId``, the first
applied diff has ``U <= lastUpdateId <= u``, then ``pu`` = previous ``u``.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache

from ccf.config import shared_dir
from ccf.records import Book, Gap, Quote, Trade
from ccf.sources import venues
from ccf.sources.recording import read_frames
from ccf.sources.venues.base import FeedCallbacks
from tests.sources.recorded import _top

STREAMS = ("depth@0ms", "trade", "bookTicker")


@cache
def frames() -> tuple[tuple[int, str], ...]:
    path = shared_dir() / "data" / "binance" / "usdm_btcusdt_20240808.jsonl.gz"
    return tuple(read_frames(path))


@cache
def reference(depth: int = 20) -> tuple[int, dict[int, tuple[float, ...]], dict[int, str]]:
    """(snapshot id, u -> top levels after that diff, trade id -> frame) from the recording."""
    return _rebuild(depth)[:3]


def _rebuild(depth: int = 20, until: int | None = None):
    """The procedure with plain dicts; stops after the diff whose u is ``until``."""
    lines = [f for _, f in frames()]
    at = next(i for i, f in enumerate(lines) if f.startswith('{"lastUpdateId"'))
    snap = json.loads(lines[at])
    asks = {float(p): float(q) for p, q in snap["asks"]}
    bids = {float(p): float(q) for p, q in snap["bids"]}
    last, first = snap["lastUpdateId"], True
    books: dict[int, tuple[float, ...]] = {}
    trades: dict[int, str] = {}
    for line in lines:
        if line.startswith('{"lastUpdateId"'):
            continue
        frame = json.loads(line)
        data = frame["data"]
        if data["e"] == "trade":
            trades[data["t"]] = line
        if data["e"] != "depthUpdate" or data["u"] < last or (not first and data["u"] <= last):
            continue
        if first:
            assert data["U"] <= last <= data["u"], "no diff straddles the snapshot"
        else:
            assert data["pu"] == last, "the recording itself has a gap"
        first = False
        for side, book in (("a", asks), ("b", bids)):
            for p, q in data[side]:
                if float(q) == 0:
                    book.pop(float(p), None)
                else:
                    book[float(p)] = float(q)
        last = data["u"]
        books[last] = _top(asks, bids, depth)
        if last == until:
            break
    return snap["lastUpdateId"], books, trades, asks, bids


def run(feed, items) -> list:
    out: list = []
    for ts, frame in items:
        if frame.startswith('{"lastUpdateId"'):
            assert feed.on_snapshot("btcusdt", frame, ts, out) == "synced"
        else:
            feed.handle(frame, ts, out)
    return out


def same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))


def test_usdm_is_a_perp_venue() -> None:
    v = venues.get("binance_usdm")
    assert v.market == "perp" and v.endpoints.depth_path == "/fapi/v1/depth"
    assert v.instrument("btcusdt") == "btc-usdt-perp"
    assert v.native("btc-usdt-perp") == "btcusdt"
    assert v.stream_kind("depth@0ms") == "book"
    assert not v.supports("depth20@100ms")  # futures partial depth has another shape


def test_recording_rebuilds_the_independent_book_at_every_diff() -> None:
    _, books, trades = reference()
    feed = venues.get("binance_usdm").make_feed(("btcusdt",), STREAMS)
    out = run(feed, frames())
    got = [r for r in out if type(r) is Book]
    assert [r.update_id for r in got] == list(books)  # every diff after the snapshot, in order
    assert all(same(r.levels, books[r.update_id]) for r in got)
    assert {type(r) for r in out} == {Book, Trade, Quote}  # no gap, no dead letter
    assert all(r.exchange == "binance_usdm" for r in out)
    got_trades = [r.trade_id for r in out if type(r) is Trade]
    assert got_trades == sorted(trades) and len(set(got_trades)) == len(trades)
    quotes = [r for r in out if type(r) is Quote]
    assert all(r.ts_event != r.ts_recv for r in quotes)  # futures quotes carry event time
    assert feed.stats["stale_diffs"] == 4  # the buffered diffs the snapshot already holds


def _renamed(items, symbol: str):
    return [(ts, f.replace('"btcusdt@', f'"{symbol}@', 1)) for ts, f in items]


def test_a_pu_break_is_a_gap_and_a_resync_of_that_instrument_only() -> None:
    """Two instruments on one feed (the second is the recording under another name);
    one diff of btcusdt is lost: btcusdt gets a gap and a snapshot request, ethusdt
    carries on; after a snapshot taken from the reference book btcusdt is whole again."""
    _, books, _ = reference()
    asked: list[str] = []
    feed = venues.get("binance_usdm").make_feed(
        ("btcusdt", "ethusdt"), STREAMS, callbacks=FeedCallbacks(request_snapshot=asked.append)
    )
    items = list(frames())
    at = next(i for i, (_, f) in enumerate(items) if f.startswith('{"lastUpdateId"'))
    diffs = [i for i, (_, f) in enumerate(items) if "@depth" in f and i > at]
    lost, resync_after = diffs[1000], diffs[1500]
    out: list = []
    for i, (ts, frame) in enumerate(items):
        if i == at:
            feed.on_snapshot("btcusdt", frame, ts, out)
            feed.on_snapshot("ethusdt", frame, ts, out)
            asked.clear()  # the first diffs asked for these
            continue
        if i != lost:
            feed.handle(frame, ts, out)
        feed.handle(_renamed([(ts, frame)], "ethusdt")[0][1], ts, out)
        if i == resync_after:
            u = json.loads(frame)["data"]["u"]
            *_, asks, bids = _rebuild(until=u)
            snap = json.dumps(
                {
                    "lastUpdateId": u,
                    "bids": sorted(bids.items())[::-1],
                    "asks": sorted(asks.items()),
                }
            )
            assert feed.on_snapshot("btcusdt", snap, ts, out) == "synced"
    gaps = [r for r in out if type(r) is Gap]
    assert [(g.symbol, g.stream, g.reason, g.end_ts is None) for g in gaps] == [
        ("btcusdt", "book", "sequence_gap", True),
        ("btcusdt", "book", "sequence_gap", False),
    ]
    assert "pu=" in gaps[0].detail
    assert asked == ["btcusdt"]
    eth = [r for r in out if type(r) is Book and r.symbol == "ethusdt"]
    btc = [r for r in out if type(r) is Book and r.symbol == "btcusdt"]
    assert [r.update_id for r in eth] == list(books)  # untouched by btcusdt's loss
    lost_u = json.loads(items[lost][1])["data"]["u"]
    resync_u = json.loads(items[resync_after][1])["data"]["u"]
    # the diff whose u equals the new snapshot's lastUpdateId is applied again (U <= id <= u)
    kept = [u for u in books if u < lost_u or u >= resync_u]
    assert [r.update_id for r in btc] == kept
    assert all(same(r.levels, books[r.update_id]) for r in btc)
    assert Counter(r.symbol for r in out if type(r) is Trade) == {
        "btcusdt": len(reference()[2]),
        "ethusdt": len(reference()[2]),
    }
