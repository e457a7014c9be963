"""The engine on small made-up books and trades: buckets, watermark, lateness, gaps."""

from __future__ import annotations

import math
import random

import pytest

from ccf.features.engine import FeatureEngine
from tests.features.helpers import (
    MS,
    SYM,
    S,
    as_dicts,
    bits,
    book,
    candle,
    gap,
    news,
    run,
    tiny_set,
    trade,
)


def test_a_bucket_is_emitted_only_once_the_watermark_passes_its_end() -> None:
    fs = tiny_set()  # 1 s buckets, 500 ms lateness
    engine = FeatureEngine(fs, [SYM])
    assert not engine.push(book(100 * MS, 1))
    assert not engine.push(book(900 * MS, 2, ask=102))
    # 1.4 s - 0.5 s = 0.9 s: the watermark has not passed the first bucket's end yet
    assert not engine.push(book(1400 * MS, 3, ask=103))
    rows = engine.push(book(1500 * MS, 4, ask=104))  # watermark 1.0 s = the end: closes
    assert [(r.ts, r.ts_end) for r in rows] == [(0, S)]
    (row,) = as_dicts(fs, rows)
    assert row["a_p_0"] == 102 and row["book_updates"] == 2  # the last state in [0, 1 s)
    assert row["t_mid"] == (102 + 99) / 2 and row["t_rows"] == 1
    # nothing after the watermark was applied: the next row holds only 1.4 s and 1.5 s
    rows = engine.push(book(2600 * MS, 5))
    (row,) = as_dicts(fs, rows)
    assert row["ts"] == S and row["a_p_0"] == 104 and row["book_updates"] == 2


def test_book_state_is_the_last_by_event_time_then_update_id() -> None:
    fs = tiny_set()
    rows, _ = run(
        fs,
        [
            book(300 * MS, 12, ask=112),  # same time, higher id: this one is last
            book(300 * MS, 11, ask=111),  # arrives later but sorts before 12
            book(200 * MS, 13, ask=113),  # older event time, within the lateness
            book(2 * S, 14),
        ],
    )
    (row,) = as_dicts(fs, rows)
    assert row["a_p_0"] == 112 and row["book_updates"] == 3


def test_trades_split_by_taker_side() -> None:
    fs = tiny_set()
    rows, _ = run(
        fs,
        [
            book(0, 1),
            trade(100 * MS, 1, 100.0, 2.0, "buy"),
            trade(200 * MS, 2, 101.0, 1.0, "buy"),
            trade(300 * MS, 3, 99.0, 0.5, "sell"),
            book(2 * S, 2),
        ],
    )
    (row,) = as_dicts(fs, rows)
    assert (row["buy_count"], row["buy_qty"], row["buy_notional"]) == (2, 3.0, 301.0)
    assert (row["sell_count"], row["sell_qty"], row["sell_notional"]) == (1, 0.5, 49.5)
    assert row["buy_notional"] / row["buy_qty"] == pytest.approx(100.3333333)  # VWAP
    assert row["last_trade_ts"] == 300 * MS and row["last_trade_price"] == 99.0


def test_empty_buckets_carry_the_book_and_say_so() -> None:
    fs = tiny_set()
    rows, _ = run(
        fs,
        [book(100 * MS, 1, ask=105), trade(200 * MS, 1, 100.0, 1.0, "buy"), book(3500 * MS, 2)],
    )
    got = as_dicts(fs, rows)
    assert [r["ts"] for r in got] == [0, S, 2 * S]
    assert [r["carried"] for r in got] == [0.0, 1.0, 1.0]
    assert [r["a_p_0"] for r in got] == [105, 105, 105]
    assert [r["buy_count"] for r in got] == [1, 0, 0]
    assert [r["last_trade_price"] for r in got] == [100.0, 100.0, 100.0]  # carried too
    assert [r["t_rows"] for r in got] == [1, 2, 3]  # features step on carried rows too


def test_late_events_are_counted_and_never_mixed_in() -> None:
    fs = tiny_set()
    engine = FeatureEngine(fs, [SYM])
    rows = []
    for r in [book(100 * MS, 1), book(1600 * MS, 2)]:  # closes [0, 1 s)
        rows += engine.push(r)
    assert len(rows) == 1
    # 0.5 s is behind the watermark (1.1 s): its bucket is gone
    assert not engine.push(trade(500 * MS, 1, 100.0, 1.0, "buy"))
    # 1.05 s is behind the watermark too, although its bucket is still open
    assert not engine.push(trade(1050 * MS, 2, 100.0, 1.0, "buy"))
    rows = engine.push(book(3 * S, 3))
    assert all(r["buy_count"] == 0 for r in as_dicts(fs, rows))
    assert engine.stats(SYM).late == 2


def test_buckets_overlapping_a_gap_are_flagged() -> None:
    fs = tiny_set()
    records = [
        gap(1500 * MS, 2500 * MS),  # [1.5 s, 2.5 s): buckets 1 and 2
        gap(0, 4 * S, stream="quote"),  # not a stream the rows come from
        book(100 * MS, 1),
        book(5600 * MS, 2),
    ]
    rows, _ = run(fs, records)
    assert [r["gap"] for r in as_dicts(fs, rows)] == [0, 1, 1, 0, 0]
    # a gap still open flags every bucket from its start on
    rows, _ = run(fs, [gap(2 * S, None, stream="trade"), book(100 * MS, 1), book(4600 * MS, 2)])
    assert [r["gap"] for r in as_dicts(fs, rows)] == [0, 0, 1, 1]


def test_a_gap_record_that_comes_after_its_buckets_were_emitted_is_counted() -> None:
    fs = tiny_set()
    engine = FeatureEngine(fs, [SYM])
    for r in [book(100 * MS, 1), book(3600 * MS, 2)]:
        engine.push(r)
    engine.push(gap(500 * MS, 1500 * MS))
    engine.push(gap(500 * MS, 1500 * MS))  # the same record read twice counts once
    assert engine.stats(SYM).late_gaps == 1


def test_a_crossed_book_passes_through_and_is_counted() -> None:
    fs = tiny_set()
    rows, engine = run(fs, [book(100 * MS, 1, ask=99.0, bid=100.0), book(2 * S, 2)])
    (row,) = as_dicts(fs, rows)
    assert (row["a_p_0"], row["b_p_0"]) == (99.0, 100.0)
    assert engine.stats(SYM).crossed_rows == 1


def test_missing_levels_are_nan() -> None:
    fs = tiny_set(book_depth=3)  # the records hold two levels
    b = book(100 * MS, 1)
    rows, _ = run(fs, [b._replace(levels=(*b.levels[:6], None, None)), book(2 * S, 2)])
    (row,) = as_dicts(fs, rows)
    assert math.isnan(row["b_p_1"]) and math.isnan(row["a_p_2"]) and row["a_p_1"] == 102


def test_news_counts_by_ingestion_time_never_publish_time() -> None:
    fs = tiny_set()
    records = [
        book(100 * MS, 1),
        news(200 * MS, "a", published_at=5 * S),  # published "later": still bucket 0
        news(1200 * MS, "b", published_at=0),  # published earlier: still bucket 1
        book(3 * S, 2),
    ]
    rows, _ = run(fs, records)
    assert [r["news_count"] for r in as_dicts(fs, rows)] == [1, 1]


def test_candles_fill_ohlcv_and_empty_buckets_are_flat_bars() -> None:
    fs = tiny_set(source="candle", bucket="2m", allowed_lateness="0s")
    m = 60 * S
    records = [
        candle(0, 10, 12, 9, 11, 1.0),
        candle(m, 11, 15, 10, 14, 2.0),
        candle(4 * m, 14, 14, 13, 13, 1.0),  # nothing for [2 m, 4 m)
        candle(7 * m, 13, 13, 13, 13, 1.0),
    ]
    rows, _ = run(fs, records)
    got = as_dicts(fs, rows)
    assert [(r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in got] == [
        (10, 15, 9, 14, 3.0),
        (14, 14, 14, 14, 0.0),
        (14, 14, 13, 13, 1.0),
    ]
    assert [r["carried"] for r in got] == [0, 1, 0]
    assert all(math.isnan(r["a_p_0"]) for r in got)


def test_flush_closes_only_what_history_covers() -> None:
    fs = tiny_set()
    engine = FeatureEngine(fs, [SYM])
    engine.push(book(100 * MS, 1))
    engine.push(book(2200 * MS, 2))  # watermark 1.7 s: bucket 0 out
    assert [r.ts for r in engine.flush(3 * S)] == [S, 2 * S]
    assert engine.flush(2 * S) == []  # never backwards


def _events(seed: int) -> list:
    rng = random.Random(seed)
    out: list = []
    ts, uid, tid = 0, 0, 0
    for _ in range(3000):
        ts += rng.randrange(0, 40) * MS
        if rng.random() < 0.4:
            uid += 1
            mid = 100 + rng.random()
            out.append(book(ts, uid, ask=mid + 0.01, bid=mid - 0.01))
        else:
            tid += 1
            side = rng.choice(["buy", "sell"])
            out.append(trade(ts, tid, 100 + rng.random(), rng.random(), side))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_arrival_order_within_the_lateness_does_not_change_a_bit(seed: int) -> None:
    """Live gets events in receive order, batch in event order: the rows are identical."""
    fs = tiny_set(allowed_lateness="300ms", bucket="100ms")
    events = _events(seed)
    rng = random.Random(seed + 100)
    # receive order: each event delayed by up to 250 ms (< the lateness)
    received = sorted(events, key=lambda r: r.ts_event + rng.randrange(0, 250) * MS)
    batch, e1 = run(fs, events)
    live, e2 = run(fs, received)
    assert e1.stats(SYM).late == e2.stats(SYM).late == 0
    assert len(batch) > 100 and bits(live) == bits(batch)


def test_symbols_are_independent() -> None:
    fs = tiny_set()
    rows, _ = run(
        fs,
        [book(100 * MS, 1), book(100 * MS, 1, sym="ethusdt", ask=5), book(2 * S, 2)],
        symbols=[SYM, "ethusdt"],
    )
    assert [(r.symbol, r.ts) for r in rows] == [(SYM, 0)]  # eth's watermark has not moved
