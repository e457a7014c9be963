"""The feature workers' bookkeeping, without a broker: the event-time aligner across
topics and the offsets a stateful worker may commit."""

from __future__ import annotations

import random

from ccf.records import Book, Gap, Trade
from ccf.transport.align import Aligner
from ccf.transport.checkpoints import NEVER, Checkpoints
from tests.scale.kafka_data import market_records

SYMS = ("btcusdt", "ethusdt", "solusdt")


def trade(sym: str, ts: int, tid: int = 0) -> Trade:
    return Trade("binance", sym, tid, 1.0, 1.0, "buy", ts, ts)


# -- aligner --------------------------------------------------------------------------------


def test_an_empty_input_holds_its_lane_back_until_it_reaches_its_end() -> None:
    a = Aligner()
    a.reset({0: ["book", "trade"], 1: ["book", "trade"]})
    for off, ts in enumerate((10, 20, 30)):
        a.add(0, "trade", off, ts, ("t", ts))
    assert a.release(0) == []  # a book older than 10 may still come
    a.add(0, "book", 0, 15, ("b", 15))
    # the book input empties after 15: the trades after it wait for the next book
    assert [x[2] for x in a.release(0)] == [("t", 10), ("b", 15)]
    a.end(0, "book")
    assert [x[2] for x in a.release(0)] == [("t", 20), ("t", 30)]
    assert a.release(1) == []  # lanes are independent
    a.add(0, "book", 1, 40, ("b", 40))  # a new record: the input is no longer at its end
    a.add(0, "trade", 3, 50, ("t", 50))
    assert [x[2] for x in a.release(0)] == [("b", 40)]
    assert not a.caught_up()


def test_the_aligner_merges_recorded_books_and_trades_into_event_time_order() -> None:
    records = market_records(("btcusdt",), (Book, Trade))
    books = [r for r in records if type(r) is Book]
    trades = [r for r in records if type(r) is Trade]
    a = Aligner()
    a.reset({3: ["book", "trade"]})
    out = []
    # Kafka hands them over in uneven chunks: all trades first, books in dribbles
    for off, t in enumerate(trades):
        a.add(3, "trade", off, t.ts_event, t)
    a.end(3, "trade")
    for i in range(0, len(books), 97):
        for off, b in enumerate(books[i : i + 97], start=i):
            a.add(3, "book", off, b.ts_event, b)
        out += a.release(3)
    a.end(3, "book")
    out += a.release(3)
    assert a.caught_up()
    times = [r.ts_event for _, _, r in out]
    assert len(out) == len(records) and times == sorted(times)
    # each input leaves in its own order
    assert [off for i, off, _ in out if i == "book"] == list(range(len(books)))


# -- checkpoints ----------------------------------------------------------------------------


def test_a_commit_never_passes_a_record_a_new_owner_needs() -> None:
    """Random records of three symbols, event times out of order across and within them:
    the safe offset is the first record whose event time reaches its symbol's floor."""
    rng = random.Random(7)
    for _ in range(200):
        cp = Checkpoints(SYMS, granularity_ns=1)
        records = []
        base = {s: rng.randrange(0, 1000) for s in SYMS}
        for off in range(rng.randrange(1, 60)):
            sym = rng.choice(SYMS)
            base[sym] += rng.randrange(-30, 100)  # mostly forward, sometimes back
            records.append(trade(sym, base[sym], off))
            cp.seen(off, records[-1])
        floors = {s: rng.randrange(-100, 3000) for s in SYMS if rng.random() < 0.9}
        needed = [off for off, r in enumerate(records) if r.ts_event >= floors.get(r.symbol, NEVER)]
        assert cp.safe_offset(floors) == (needed[0] if needed else len(records)), floors


def test_coarse_marks_only_commit_earlier_never_later() -> None:
    rng = random.Random(11)
    for _ in range(100):
        fine, coarse = Checkpoints(SYMS, granularity_ns=1), Checkpoints(SYMS, granularity_ns=50)
        t = {s: 0 for s in SYMS}
        for off in range(200):
            sym = rng.choice(SYMS)
            t[sym] += rng.randrange(-10, 20)
            fine.seen(off, trade(sym, t[sym]))
            coarse.seen(off, trade(sym, t[sym]))
        floors = {s: rng.randrange(0, 1500) for s in SYMS}
        a, b = coarse.safe_offset(floors), fine.safe_offset(floors)
        assert a is not None and b is not None and a <= b


def test_an_open_gap_is_replayed_until_the_record_that_closes_it() -> None:
    cp = Checkpoints(["btcusdt"], granularity_ns=1)
    opened = Gap("binance", "btcusdt", "book", 100, None, "disconnect", "", 100)
    cp.seen(0, trade("btcusdt", 50))
    cp.seen(1, opened)
    cp.seen(2, trade("btcusdt", 60))
    cp.seen(3, Gap("binance", "btcusdt", "quote", 70, None, "disconnect", "", 70))  # not read
    assert cp.safe_offset({"btcusdt": 1000}) == 1  # the open gap: still flags buckets
    cp.seen(4, opened._replace(end_ts=200))
    assert cp.safe_offset({"btcusdt": 1000}) == 5
    assert cp.safe_offset({"btcusdt": 150}) == 4  # the closed gap reaches past the floor


def test_a_symbol_with_nothing_stored_keeps_all_its_records() -> None:
    cp = Checkpoints(["btcusdt", "ethusdt"], granularity_ns=1)
    cp.seen(0, trade("btcusdt", 10))
    cp.seen(1, trade("ethusdt", 10))
    cp.seen(2, trade("xrpusdt", 10))  # not computed here: never needed
    assert cp.safe_offset({"btcusdt": 100}) == 1
    assert cp.safe_offset({"btcusdt": 100, "ethusdt": 100}) == 3
    cp.forget_before(3)
    cp.seen(3, trade("btcusdt", 500))
    assert cp.safe_offset({"btcusdt": 100, "ethusdt": 100}) == 3


def test_an_input_reported_at_its_end_early_still_gets_its_next_records_in_order() -> None:
    """Tansu reports a partition's end two records early: the books fetched meanwhile wait
    (for the grace period) instead of running ahead, so the trades after the early end are
    not late."""
    a = Aligner(grace_s=1.0)
    a.reset({0: ["book", "trade"]})
    for off, ts in enumerate((10, 20)):
        a.add(0, "trade", off, ts, ("t", ts))
    a.end(0, "trade", now=0.0)  # early: trades 30 and 40 are still to come
    for off, ts in enumerate(range(5, 105, 5)):  # a backlog of books
        a.add(0, "book", off, ts, ("b", ts))
    a.end(0, "book", now=0.0)
    first = [x[2] for x in a.release(0, now=0.1)]
    assert max(ts for _, ts in first) == 20  # nothing past the newest trade yet
    for off, ts in ((2, 30), (3, 40)):
        a.add(0, "trade", off, ts, ("t", ts))
    a.end(0, "trade", now=0.2)
    second = [x[2] for x in a.release(0, now=0.3)]
    after = [x[2] for x in a.release(0, now=1.5)]  # the trade input stayed quiet
    merged = first + second + after
    assert [ts for _, ts in merged] == sorted(ts for _, ts in merged)
    assert len(merged) == 24 and a.caught_up()
