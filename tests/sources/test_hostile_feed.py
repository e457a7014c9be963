"""Hostile input at the collector's edge (issue 17): no frame, snapshot or REST answer
stops a part, and none becomes a record.

Each test sends the measured failure of the issue and checks what must happen
instead: a dead letter with its reason kind, a gap and a resync where ids jump,
a refused snapshot that is fetched again, and the good frames around it still
giving exactly the records they give alone. Every test runs with each book
implementation (the C book's level parser and the msgspec path must agree).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

from ccf.records import Book, DeadLetter, Gap, Record, Trade
from ccf.sources.binance.feed import BinanceFeed, dead_letter_kind
from ccf.sources.binance.rest import MAX_RETRY_AFTER_S, BinanceRest, retry_after_s
from tests.sources.test_feed import E0, SYM, diff, frame, make_feed, of, snapshot, synced, trade

__all__ = ["make_feed"]  # the fixture, shared with test_feed
NEAR = 10  # a small max_id_jump, so a jump of 11 is "far"


def kinds(out: list[Record]) -> list[str]:
    return [dead_letter_kind(r.reason) for r in of(DeadLetter, out)]


def data_frame(stream: str, **data: object) -> str:
    return frame(stream, data)


# -- 1. nesting ------------------------------------------------------------------------------

NESTED = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        ('{"stream":"btcusdt@trade","data":' + NESTED + "}", "too_deep"),
        ('{"stream":"btcusdt@trade","data":{"x":' + NESTED + "}}", "too_deep"),
        (
            '{"stream":"btcusdt@depth@100ms","data":{"E":1,"U":1,"u":1,"b":' + NESTED + "}}",
            "too_deep",
        ),
        ('{"stream":"nosuch","data":' + NESTED + "}", "too_deep"),
        ('{"id":' + NESTED + "}", "too_deep"),
        ('{"result":' + NESTED + "}", "too_deep"),
        (NESTED, "unexpected_frame"),  # a top-level array is refused before any recursion
    ],
)
def test_a_frame_nested_1000_deep_is_a_dead_letter(
    make_feed: Callable[..., BinanceFeed], bad: str, kind: str
) -> None:
    out: list[Record] = []
    feed = synced(make_feed, out)
    out.clear()
    feed.handle(bad, 5, out)  # the issue: RecursionError out of handle, `ccf collect` exit 1
    feed.handle(trade(1, E0), 6, out)
    assert kinds(out) == [kind] and of(DeadLetter, out)[0].frame == bad
    assert [t.trade_id for t in of(Trade, out)] == [1]  # and the feed goes on


# -- 2. values -------------------------------------------------------------------------------

BAD_NUMBERS = ["NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1", "0", "-0.0"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("field", ["p", "q"])
def test_a_trade_with_a_bad_price_or_quantity_is_a_dead_letter(
    make_feed: Callable[..., BinanceFeed], field: str, value: str
) -> None:
    out: list[Record] = []
    feed = make_feed()
    good = json.loads(trade(1, E0))
    good["data"][field] = value
    feed.handle(json.dumps(good), 5, out)
    feed.handle(trade(1, E0), 6, out)
    assert kinds(out) == ["invalid_value"], out
    assert [(t.trade_id, t.price, t.qty) for t in of(Trade, out)] == [(1, 61_000.5, 0.25)]


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f in "bBaA" for v in BAD_NUMBERS if not (f in "BA" and v in ("0", "-0.0"))],
)  # a quantity of 0 is a valid (empty) side of a quote
def test_a_quote_with_a_bad_value_is_a_dead_letter(
    make_feed: Callable[..., BinanceFeed], field: str, value: str
) -> None:
    out: list[Record] = []
    feed = make_feed()
    data = {"u": 5, "s": "BTCUSDT", "b": "25.35", "B": "31.21", "a": "25.36", "A": "40.66"}
    data[field] = value
    feed.handle(frame("bookTicker", data), 5, out)
    assert kinds(out) == ["invalid_value"]


@pytest.mark.parametrize(
    ("level", "side"),
    [
        (["NaN", "1"], "b"),
        (["99", "nan"], "b"),
        (["inf", "1"], "a"),
        (["101", "1e400"], "a"),
        (["-99", "1"], "b"),
        (["99", "-1"], "b"),  # a negative quantity (69 books of the issue held one)
        (["0", "1"], "a"),
        ([99, -0.5], "b"),
    ],
)
def test_a_diff_with_a_bad_level_is_a_dead_letter_and_the_book_is_untouched(
    make_feed: Callable[..., BinanceFeed], level: list, side: str
) -> None:
    out: list[Record] = []
    feed = synced(make_feed, out)
    out.clear()
    bad = json.loads(diff(101, 101, E0 + 1))
    bad["data"][side] = [level]
    feed.handle(json.dumps(bad), 5, out)
    feed.handle(diff(101, 101, E0 + 2, b=[(99, 5)]), 6, out)
    assert kinds(out) == ["invalid_value"]
    (book,) = of(Book, out)
    assert book.update_id == 101 and book.levels[:4] == (101.0, 1.0, 102.0, 2.0)
    assert book.levels[40:44] == (99.0, 5.0, 98.0, 2.0)
    assert not of(Gap, out) and feed.state[SYM].synced


# -- 3. integers beyond int64 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "patch",
    [{"t": 2**64}, {"t": 10**30}, {"T": 2**63}, {"E": -5}, {"t": -1}, {"T": 10**13}],
)
def test_an_id_or_time_beyond_int64_is_refused_at_the_edge(
    make_feed: Callable[..., BinanceFeed], patch: dict
) -> None:
    out: list[Record] = []
    feed = make_feed()
    bad = json.loads(trade(1, E0))
    bad["data"].update(patch)
    feed.handle(json.dumps(bad), 5, out)
    assert kinds(out) == ["invalid_value"]
    bad_diff = json.loads(diff(1, 2**64, E0))
    feed.handle(json.dumps(bad_diff), 6, out)
    assert kinds(out) == ["invalid_value"] * 2


# -- 4. ids far ahead ------------------------------------------------------------------------


def test_a_diff_whose_u_jumps_far_ahead_is_a_gap_and_a_resync_not_stale_forever(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    asked: list[str] = []
    out: list[Record] = []
    feed = synced(make_feed, out, max_id_jump=NEAR, request_snapshot=asked.append)
    out.clear()
    asked.clear()
    stale = feed.stats["stale_diffs"]  # the set-up's one buffered diff
    feed.handle(diff(101, 101 + 10**9, E0 + 1, b=[(97, 1)]), 5, out)
    assert kinds(out) == ["id_jump"]
    (gap,) = of(Gap, out)
    assert (gap.stream, gap.reason, gap.end_ts) == ("book", "id_jump", None)
    assert asked == [SYM] and not feed.state[SYM].synced
    # the real stream goes on; a snapshot brings the book back, and no diff is "stale"
    out.clear()
    feed.handle(diff(101, 102, E0 + 2, b=[(99, 5)]), 6, out)
    assert feed.on_snapshot(SYM, snapshot(101, [(99, 1)], [(101, 1)]), 7, out) == "synced"
    feed.handle(diff(103, 103, E0 + 3, a=[(101, 3)]), 8, out)
    assert [b.update_id for b in of(Book, out)] == [102, 103]
    assert [g.end_ts is not None for g in of(Gap, out)] == [True]
    assert feed.stats["stale_diffs"] == stale  # the issue: the next 4,290 diffs were "stale"


def test_a_diff_whose_big_U_opens_a_gap_is_not_left_at_the_head_of_the_buffer(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = synced(make_feed, out, max_id_jump=NEAR)
    out.clear()
    feed.handle(diff(10**9, 10**9 + 1, E0 + 1), 5, out)
    assert kinds(out) == ["id_jump"] and [g.reason for g in of(Gap, out)] == ["id_jump"]
    feed.handle(diff(101, 102, E0 + 2, b=[(99, 5)]), 6, out)
    # the issue: 1,428 snapshots in a row were "stale" against the bogus head
    assert feed.on_snapshot(SYM, snapshot(101, [(99, 1)], [(101, 1)]), 7, out) == "synced"
    assert of(Book, out)[-1].update_id == 102


def test_a_bogus_first_buffered_diff_is_dropped_when_the_snapshot_comes(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = make_feed(max_id_jump=NEAR)
    feed.handle(diff(10**9, 10**9, E0), 1, out)  # nothing to compare it with yet
    feed.handle(diff(100, 101, E0 + 1, b=[(99, 5)]), 2, out)
    assert feed.on_snapshot(SYM, snapshot(100, [(99, 1)], [(101, 1)]), 3, out) == "synced"
    assert kinds(out) == ["id_jump"] and of(Book, out)[-1].update_id == 101
    feed.handle(diff(10**9 + 5, 10**9 + 5, E0 + 2), 4, out)  # once synced: a resync
    assert kinds(out) == ["id_jump"] * 2


def test_a_snapshot_far_behind_the_buffered_diffs_is_refused_not_them(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = make_feed(max_id_jump=NEAR)
    feed.handle(diff(100, 101, E0, b=[(99, 5)]), 1, out)
    feed.handle(diff(102, 102, E0 + 1, b=[(99, 6)]), 2, out)
    assert feed.on_snapshot(SYM, snapshot(3, [(99, 1)], [(101, 1)]), 3, out) == "refused"
    assert kinds(out) == ["bad_snapshot"]  # the diffs are kept: they agree with each other
    assert feed.on_snapshot(SYM, snapshot(100, [(99, 1)], [(101, 1)]), 4, out) == "synced"
    assert [b.update_id for b in of(Book, out)] == [101, 102]


def test_a_snapshot_far_ahead_of_the_buffered_diffs_is_refused(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = make_feed(max_id_jump=NEAR)
    feed.handle(diff(100, 101, E0, b=[(99, 5)]), 1, out)
    assert feed.on_snapshot(SYM, snapshot(10**9, [(99, 1)], [(101, 1)]), 2, out) == "refused"
    assert kinds(out) == ["bad_snapshot"] and not feed.state[SYM].synced
    assert feed.on_snapshot(SYM, snapshot(100, [(99, 1)], [(101, 1)]), 3, out) == "synced"


def test_a_trade_id_jump_does_not_make_the_real_trades_duplicates(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = make_feed(max_id_jump=NEAR)
    feed.handle(trade(1, E0), 1, out)
    feed.handle(trade(10**9, E0 + 1), 2, out)  # bogus: held
    for tid in range(2, 6):
        feed.handle(trade(tid, E0 + tid), 3, out)
    assert [t.trade_id for t in of(Trade, out)] == [1, 2, 3, 4, 5]
    assert kinds(out) == ["id_jump"] and "no trade followed it" in of(DeadLetter, out)[0].reason
    assert not of(Gap, out) and feed.stats["duplicate_trades"] == 0


def test_a_real_trade_id_jump_is_confirmed_by_the_next_trade_and_is_a_gap(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    gaps: list[tuple[int, int]] = []
    out: list[Record] = []
    feed = make_feed(max_id_jump=NEAR, on_trade_gap=lambda s, a, b, g: gaps.append((a, b)))
    feed.handle(trade(1, E0), 1, out)
    feed.handle(trade(1000, E0 + 1), 2, out)  # after an outage: held ...
    assert [t.trade_id for t in of(Trade, out)] == [1]
    feed.handle(trade(1001, E0 + 2), 3, out)  # ... and confirmed
    assert [t.trade_id for t in of(Trade, out)] == [1, 1000, 1001]
    assert [g.detail for g in of(Gap, out)] == ["trade ids 2..999 missing (998)"]
    assert gaps == [(2, 999)] and not of(DeadLetter, out)


def test_a_trade_far_behind_is_held_too_and_real_ones_go_on(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = make_feed(max_id_jump=NEAR)
    feed.handle(trade(100, E0), 1, out)
    feed.handle(trade(3, E0 + 1), 2, out)  # far behind: held, not a "duplicate"
    feed.handle(trade(101, E0 + 2), 3, out)
    feed.handle(trade(95, E0 + 3), 4, out)  # within the bound behind: a duplicate
    assert [t.trade_id for t in of(Trade, out)] == [100, 101]
    assert kinds(out) == ["id_jump"] and feed.stats["duplicate_trades"] == 1


def test_two_bogus_trades_in_a_row_are_both_dead_letters(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = make_feed(max_id_jump=NEAR)
    feed.handle(trade(1, E0), 1, out)
    feed.handle(trade(10**9, E0 + 1), 2, out)
    feed.handle(trade(5 * 10**9, E0 + 1), 2, out)
    feed.handle(trade(2, E0 + 2), 3, out)
    assert [t.trade_id for t in of(Trade, out)] == [1, 2] and kinds(out) == ["id_jump"] * 2


def test_a_trade_still_held_at_the_end_is_a_dead_letter(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    out: list[Record] = []
    feed = make_feed(max_id_jump=NEAR)
    feed.handle(trade(1, E0), 1, out)
    feed.handle(trade(10**9, E0 + 1), 2, out)
    feed.release_held(out)
    assert kinds(out) == ["id_jump"] and json.loads(of(DeadLetter, out)[0].frame)["data"]["t"]


# -- 5. bad snapshots ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "malformed_json"),
        (b"", "malformed_json"),
        (b'{"code":-1003,"msg":"Too many requests"}', "bad_payload"),
        (snapshot(100, [(99, 1)], [(101, 1)]).replace('"1.00000000"', '"-1"', 1), "invalid_value"),
        (snapshot(100, [(99, 1)], [(101, 1)]).replace('"99.00000000"', '"NaN"'), "invalid_value"),
        (snapshot(100, [(102, 1)], [(101, 1)]), "crossed"),
        (snapshot(100, [(101, 1)], [(101, 1)]), "crossed"),
        (snapshot(2**64, [(99, 1)], [(101, 1)]), "invalid_value"),
        ('{"lastUpdateId":100,"x":' + "[" * 5000 + "]" * 5000 + "}", "too_deep"),
    ],
)
def test_a_bad_snapshot_is_refused_with_a_reason_and_never_synced(
    make_feed: Callable[..., BinanceFeed], body: bytes | str, why: str
) -> None:
    out: list[Record] = []
    feed = make_feed()
    feed.handle(diff(100, 101, E0, b=[(99, 5)]), 1, out)
    assert feed.on_snapshot(SYM, body, 2, out) == "refused"
    (letter,) = of(DeadLetter, out)
    assert letter.reason.startswith(f"bad_snapshot: {why}") and letter.symbol == SYM
    assert not feed.state[SYM].synced and not of(Book, out)
    assert feed.state[SYM].snapshot_pending  # the caller fetches another
    assert feed.on_snapshot(SYM, snapshot(100, [(99, 1)], [(101, 1)]), 3, out) == "synced"
    assert of(Book, out)[-1].update_id == 101


# -- 5. bad REST answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "attempt", "wait"),
    [
        ("3", 0, 3.0),
        ("0", 0, 0.0),
        ("soon", 0, 1.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 3, 8.0),
        ("nan", 1, 2.0),
        ("-5", 0, 1.0),
        ("inf", 0, 1.0),
        ("1e9", 0, MAX_RETRY_AFTER_S),
        (None, 2, 4.0),
        ("", 0, 1.0),
    ],
)
def test_retry_after_is_read_safely(header: str | None, attempt: int, wait: float) -> None:
    assert retry_after_s(header, attempt) == wait


async def test_a_non_numeric_retry_after_waits_and_retries_instead_of_crashing() -> None:
    """A real HTTP server (aiohttp's, on a local port) answering 429 with
    ``Retry-After: soon``, then the snapshot."""
    calls: list[int] = []

    async def depth(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            return web.Response(status=429, headers={"Retry-After": "soon"})
        return web.Response(body=snapshot(100, [(99, 1)], [(101, 1)]).encode())

    app = web.Application()
    app.router.add_get("/api/v3/depth", depth)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            rest = BinanceRest(session, f"http://127.0.0.1:{port}")
            body, _ = await rest.depth(SYM, 5)
    finally:
        await runner.cleanup()
    assert json.loads(body)["lastUpdateId"] == 100
    assert rest.stats["rate_limited"] == 1 and len(calls) == 2


def test_valid_frames_around_hostile_ones_give_exactly_their_records(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    """The same good frames, alone and with every kind of hostile frame between them."""
    good = [
        diff(101, 101, E0 + 1, b=[(99, 5)]),
        trade(1, E0 + 1),
        diff(102, 103, E0 + 2, a=[(101, 0), (103, 1)]),
        trade(2, E0 + 2),
        data_frame("bookTicker", u=103, s="BTCUSDT", b="99", B="5", a="102", A="2"),
    ]
    hostile = [
        NESTED,
        trade(2**70, E0),
        trade(10**9, E0 + 3).replace('"61000.50000000"', '"NaN"'),
        diff(104, 104, E0 + 3, b=[(99, 1)]).replace('"1.00000000"', '"-1"'),
        data_frame("bookTicker", u=103, s="BTCUSDT", b="inf", B="5", a="102", A="2"),
        "<html>",
    ]
    alone: list[Record] = []
    synced(make_feed, alone)
    clean = synced(make_feed, [])
    alone = []
    for f in good:
        clean.handle(f, 9, alone)
    mixed: list[Record] = []
    feed = synced(make_feed, [])
    for i, f in enumerate(good):
        feed.handle(hostile[i % len(hostile)], 9, mixed)
        feed.handle(f, 9, mixed)
    records = [r for r in mixed if type(r) not in (DeadLetter, Gap)]
    assert records == alone
    assert len(of(DeadLetter, mixed)) == len(good)


def test_a_repeated_key_is_read_the_same_by_both_parsers(
    make_feed: Callable[..., BinanceFeed],
) -> None:
    """Found by the fuzz run: with a key given twice, the C book's raw read took the last
    ``a`` and msgspec's typed read refused the first. Both take the last one now."""
    out: list[Record] = []
    feed = synced(make_feed, out)
    out.clear()
    good = diff(101, 101, E0 + 1, a=[(101, 7)])
    twice = good.replace('"a":', '"a":[["1.2.3","x"]],"a":', 1)
    feed.handle(twice, 5, out)
    (book,) = of(Book, out)
    assert book.levels[:2] == (101.0, 7.0) and not of(DeadLetter, out)


def test_a_crossed_partial_depth_book_is_a_dead_letter() -> None:
    out: list[Record] = []
    feed = BinanceFeed((SYM,), ("depth20@100ms",))
    body = {"lastUpdateId": 5, "bids": [["101", "1"]], "asks": [["100", "1"]]}
    feed.handle(frame("depth20@100ms", body), 1, out)
    assert kinds(out) == ["invalid_value"] and not of(Book, out)
    body["bids"] = [["99", "1"]]
    feed.handle(frame("depth20@100ms", body), 2, out)
    assert [b.update_id for b in of(Book, out)] == [5]
