"""BinanceFeed without a network: sync, gaps, bad frames, cadence, crossed books.

Frames are built in Binance's combined-stream shape (``{"stream":..,"data":..}``,
decimal strings), or taken from the real BTCUSDT recording where the point is
to recover the exact book. Every test runs with each book implementation (the
C book reads depth levels with its own parser, the Python one through msgspec).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import pytest

from ccf.records import NS_PER_MS, Book, DeadLetter, Gap, Quote, Record, Trade
from ccf.sources.binance import book as book_mod
from ccf.sources.binance.book import IMPLEMENTATIONS
from ccf.sources.binance.feed import BinanceFeed
from tests.sources.test_book import rebuild, recording, same_levels

SYM = "btcusdt"
STREAMS = ("depth@100ms", "trade", "bookTicker")
E0 = 1_723_161_255_000  # ms, a 100 ms bucket boundary
Levels = Iterable[tuple[float, float]]


def frame(stream: str, data: dict) -> str:
    return json.dumps({"stream": f"{SYM}@{stream}", "data": data}, separators=(",", ":"))


def _wire(levels: Levels) -> list[list[str]]:
    return [[f"{p:.8f}", f"{q:.8f}"] for p, q in levels]


def diff(first: int, last: int, e_ms: int, b: Levels = (), a: Levels = ()) -> str:
    return frame(
        "depth@100ms",
        {
            "e": "depthUpdate",
            "E": e_ms,
            "s": "BTCUSDT",
            "U": first,
            "u": last,
            "b": _wire(b),
            "a": _wire(a),
        },
    )


def snapshot(last: int, bids: Levels, asks: Levels) -> str:
    return json.dumps({"lastUpdateId": last, "bids": _wire(bids), "asks": _wire(asks)})


def trade(tid: int, t_ms: int, price: float = 61_000.5, qty: float = 0.25) -> str:
    return frame(
        "trade",
        {
            "e": "trade",
            "E": t_ms + 1,
            "s": "BTCUSDT",
            "t": tid,
            "p": f"{price:.8f}",
            "q": f"{qty:.8f}",
            "T": t_ms,
            "m": True,
            "M": True,
        },
    )


def of(kind: type, out: list[Record]) -> list:
    return [r for r in out if type(r) is kind]


@pytest.fixture(params=IMPLEMENTATIONS)
def make_feed(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., BinanceFeed]:
    monkeypatch.setattr(book_mod, "DEFAULT_IMPL", request.param)
    return lambda **kw: BinanceFeed((SYM,), STREAMS, **kw)


def synced(make_feed: Callable[..., BinanceFeed], out: list[Record], **kw: object) -> BinanceFeed:
    """A feed whose book holds bids 99/98 and asks 101/102 at update id 100."""
    feed = make_feed(**kw)
    feed.handle(diff(95, 100, E0), 1, out)  # buffered, then stale against the snapshot
    assert (
        feed.on_snapshot(SYM, snapshot(100, [(99, 1), (98, 2)], [(101, 1), (102, 2)]), 2, out)
        == "synced"
    )
    return feed


# -- gaps and resync ----------------------------------------------------------------------


def test_a_missing_diff_opens_a_gap_and_books_wait_for_a_new_snapshot(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    frames, snap_at = recording(SYM)
    depth_at = [i for i, (_, f) in enumerate(frames) if i > snap_at and "@depth" in f[:40]]
    drop, snap_after = depth_at[100], depth_at[110]
    ids = {i: json.loads(frames[i][1])["data"]["u"] for i in depth_at}
    resync_id = ids[depth_at[105]]  # the new snapshot falls inside the buffered diffs
    ref = rebuild(SYM, keep_full_at=frozenset({resync_id}))
    asked: list[str] = []
    feed = make_feed(request_snapshot=asked.append)
    out: list[Record] = []

    for i, (ts, f) in enumerate(frames):
        if i == snap_at:
            feed.on_snapshot(SYM, f, ts, out)
        elif i != drop:
            feed.handle(f, ts, out)
        if i == snap_after:  # the gap is open, nothing was written since
            gaps = of(Gap, out)
            assert [(g.stream, g.reason, g.end_ts) for g in gaps] == [
                ("book", "sequence_gap", None)
            ]
            assert "update ids missing" in gaps[0].detail
            assert not of(Book, out[out.index(gaps[0]) :])
            assert asked == [SYM, SYM] and feed.state[SYM].synced is False
            asks, bids = ref.full[resync_id]
            again = snapshot(resync_id, sorted(bids.items(), reverse=True), sorted(asks.items()))
            assert feed.on_snapshot(SYM, again, ts, out) == "synced"

    books = of(Book, out)
    expected = [(u, levels) for u, levels in ref.tops if u < ids[drop] or u > resync_id]
    assert [b.update_id for b in books] == [u for u, _ in expected]
    assert all(
        same_levels(b.levels, levels) for b, (_, levels) in zip(books, expected, strict=True)
    )
    opened, closed = of(Gap, out)
    assert closed.start_ts == opened.start_ts and closed.end_ts > opened.start_ts
    assert not feed.open_gaps and feed.stats["resyncs"] == 1
    assert feed.state[SYM].book.asks.levels() == ref.asks


def test_a_stale_snapshot_is_refused_and_asked_for_again(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    asked: list[str] = []
    feed = make_feed(request_snapshot=asked.append)
    out: list[Record] = []
    feed.handle(diff(101, 105, E0, b=[(99, 3)]), 7, out)

    outcome = feed.on_snapshot(SYM, snapshot(99, [(99, 1)], [(101, 1)]), 8, out)

    assert outcome == "stale" and out == [] and asked == [SYM]
    assert feed.stats["stale_snapshots"] == 1 and feed.state[SYM].snapshot_pending
    assert feed.on_snapshot(SYM, snapshot(103, [(99, 1)], [(101, 1)]), 9, out) == "synced"
    (book,) = out  # the buffered diff, applied on the new snapshot
    assert book == Book(*book)  # every field filled (the hot path builds records raw)
    assert (book.update_id, book.ts_event, book.ts_recv) == (105, E0 * NS_PER_MS, 7)
    assert book.levels[:2] == (101.0, 1.0) and book.levels[40:42] == (99.0, 3.0)
    assert feed.on_snapshot(SYM, snapshot(104, [], []), 10, out) == "ignored"


def test_a_trade_id_gap_writes_the_missing_range(make_feed: Callable[..., BinanceFeed]) -> None:
    feed = make_feed()
    out: list[Record] = []

    for tid, t_ms in ((10, E0), (11, E0 + 5), (14, E0 + 9), (15, E0 + 12), (15, E0 + 12)):
        feed.handle(trade(tid, t_ms), 100 + tid, out)

    assert [type(r).__name__ for r in out] == ["Trade", "Trade", "Gap", "Trade", "Trade"]
    gap = out[2]
    assert gap == Gap(
        "binance",
        SYM,
        "trade",
        (E0 + 5) * NS_PER_MS,
        (E0 + 9) * NS_PER_MS,
        "sequence_gap",
        "trade ids 12..13 missing (2)",
        114,
    )
    assert out[3] == Trade("binance", SYM, 14, 61_000.5, 0.25, "sell", (E0 + 9) * NS_PER_MS, 114)
    assert feed.stats["duplicate_trades"] == 1


# -- bad frames ---------------------------------------------------------------------------

GOOD_TRADE = trade(1, E0)


@pytest.mark.parametrize(
    ("bad", "symbol", "reason"),
    [
        (GOOD_TRADE[:-12], "", "malformed_json: "),
        ("not json at all", "", "malformed_json: "),
        (frame("kline_1m", {"e": "kline"}), "", "unexpected_stream: 'btcusdt@kline_1m'"),
        (
            json.dumps({"stream": "ethusdt@trade", "data": {}}),
            "",
            "unexpected_stream: 'ethusdt@trade'",
        ),
        (
            frame("trade", {"e": "trade", "E": E0, "t": 1, "q": "1", "T": E0, "m": True}),
            SYM,
            "bad_payload: btcusdt@trade payload: Object missing required field `p`",
        ),
        (
            frame("bookTicker", {"u": 5, "b": "x", "B": "1", "a": "2", "A": "1"}),
            SYM,
            "bad_payload: btcusdt@bookTicker payload",
        ),
        (
            diff(101, 101, E0, b=[(99, 1)]).replace('"99.00000000"', '"abc"'),
            SYM,
            "bad_payload: btcusdt@depth@100ms payload",
        ),
        (
            diff(101, 101, E0).replace('"b":[]', '"b":[["1","2","3"]]'),
            SYM,
            "bad_payload: btcusdt@depth@100ms payload",
        ),
        ('{"unexpected": true}', "", "unexpected_frame: no stream"),
    ],
)
def test_a_bad_frame_becomes_a_dead_letter_and_the_feed_keeps_going(
    make_feed: Callable[..., BinanceFeed], bad: str, symbol: str, reason: str
) -> None:
    out: list[Record] = []
    feed = synced(make_feed, out)
    out.clear()

    feed.handle(bad, 42, out)
    feed.handle(GOOD_TRADE, 43, out)
    feed.handle(diff(101, 101, E0 + 1, b=[(99, 5)]), 44, out)

    letter, good_trade, book = out
    assert type(letter) is DeadLetter and letter.frame == bad and letter.ts_recv == 42
    assert letter.symbol == symbol and letter.reason.startswith(reason)
    assert type(good_trade) is Trade and type(book) is Book and book.update_id == 101
    assert feed.stats["dead_letters"] == 1 and feed.frames == 4


def test_bytes_frames_and_quotes(make_feed: Callable[..., BinanceFeed]) -> None:
    feed = make_feed()
    out: list[Record] = []
    quote = frame(
        "bookTicker",
        {
            "u": 400900217,
            "s": "BTCUSDT",
            "b": "25.35190000",
            "B": "31.21000000",
            "a": "25.36520000",
            "A": "40.66000000",
        },
    )

    feed.handle(quote.encode(), 5, out)

    assert out == [Quote("binance", SYM, 400900217, 25.3519, 31.21, 25.3652, 40.66, 5, 5)]


def test_a_level_only_the_general_decoder_reads_is_applied_the_same(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = synced(make_feed, out)
    out.clear()

    # "-0": msgspec reads 0.0 (delete); the C level parser takes no sign and passes the frame on.
    feed.handle(diff(101, 101, E0, b=[(99, 1)]).replace('"1.00000000"', '"-0"'), 1, out)

    (book,) = out
    assert book.levels[40:42] == (98.0, 2.0) and 99.0 not in feed.state[SYM].book.bids.levels()


# -- cadence and crossed books ------------------------------------------------------------


def test_cadence_100ms_writes_each_bucket_once_with_its_last_state(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = synced(make_feed, out, book_cadence="100ms")
    out.clear()
    updates = [
        (101, 10, 5.0),
        (102, 50, 6.0),
        (103, 99, 7.0),  # bucket 0
        (104, 100, 8.0),  # bucket 1
        (105, 350, 9.0),
    ]  # bucket 3

    for u, dt_ms, qty in updates:
        feed.handle(diff(u, u, E0 + dt_ms, b=[(99, qty)]), 1000 + u, out)
        if u == 103:
            assert out == []  # nothing until the bucket has ended
    feed.flush(out)

    books = of(Book, out)
    assert [(b.update_id, b.ts_event, b.ts_recv, b.levels[41]) for b in books] == [
        (103, (E0 + 99) * NS_PER_MS, 1103, 7.0),
        (104, (E0 + 100) * NS_PER_MS, 1104, 8.0),
        (105, (E0 + 350) * NS_PER_MS, 1105, 9.0),
    ]
    feed.flush(out)
    assert len(of(Book, out)) == 3  # nothing changed since


def test_a_crossed_book_is_dropped_with_a_gap_and_resynced(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    asked: list[str] = []
    out: list[Record] = []
    feed = synced(make_feed, out, request_snapshot=asked.append)
    asked.clear()
    out.clear()

    feed.handle(diff(101, 101, E0, b=[(101.5, 1)]), 7, out)  # bid above the best ask
    feed.handle(diff(102, 102, E0 + 100, a=[(103, 1)]), 8, out)

    (gap,) = out
    assert (gap.stream, gap.reason, gap.end_ts) == ("book", "crossed_book", None)
    assert gap.detail == "best bid 101.5 >= best ask 101.0 at update id 101"
    assert asked == [SYM] and feed.stats["crossed_books"] == 1
    assert not feed.state[SYM].synced and len(feed.state[SYM].buffer) == 1
