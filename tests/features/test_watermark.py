"""The per-stream watermark: a bucket closes once every stream feeding it passed its end,
or went silent past the idle timeout on the receive clock; never later than the lateness.

Unit cases on made-up books and trades (receive time = event time + a fixed delay unless
said), then live against batch on the real recordings at their real receive times (1x),
where the idle rule acts hundreds of times.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ccf.features.engine import FeatureEngine
from ccf.features.runner import FeatureRunner
from tests.features.helpers import MS, SYM, S, as_dicts, book, tiny_set, trade
from tests.features.test_runner import (
    BATCH_LATE,
    batch_rows,
    caught_up,
    fill,
    settings_for,
    table,
)

DELAY = 5 * MS  # network: every record is received this long after its event time


def at(rec, recv: int | None = None):  # type: ignore[no-untyped-def]
    return rec._replace(ts_recv=rec.ts_event + DELAY if recv is None else recv)


def streams(**kw: str):  # type: ignore[no-untyped-def]
    return tiny_set(watermark="streams", allowed_lateness="1s", idle_timeout="150ms", **kw)


def test_a_silent_trade_stream_does_not_hold_buckets_back() -> None:
    engine = FeatureEngine(streams(), [SYM])
    assert not engine.push(at(trade(300 * MS, 1, 100.0, 1.0, "buy")))
    rows = []
    uid = 0
    for ms in range(0, 1200, 100):  # depth updates every 100 ms; no trade after 0.3 s
        uid += 1
        out = engine.push(at(book(ms * MS, uid)))
        rows += [(ms, r.ts) for r in out]
    # the first book past the end closes [0, 1 s): the trades had been silent for 0.7 s
    assert rows == [(1000, 0)]
    assert engine.stats(SYM).late == 0


def test_a_talking_trade_stream_holds_the_bucket_until_it_passes_the_end() -> None:
    engine = FeatureEngine(streams(), [SYM])
    uid = tid = 0
    closed_at = None
    for ms in range(0, 1400, 50):  # a book every 100 ms, a trade every 50 ms ...
        if ms % 100 == 0:
            uid += 1
            if engine.push(at(book(ms * MS, uid))) and closed_at is None:
                closed_at = ("book", ms)
        tid += 1
        # ... but the trades arrive 120 ms behind the books (slow, not silent)
        t = trade(ms * MS, tid, 100.0, 1.0, "buy")
        if engine.push(at(t, t.ts_event + 120 * MS + DELAY)) and closed_at is None:
            closed_at = ("trade", ms)
    # closed by the first trade at the end, although the books passed it before
    assert closed_at == ("trade", 1000)
    assert engine.stats(SYM).late == 0


def test_a_trade_inside_the_lateness_is_included_one_beyond_it_is_counted() -> None:
    fs = streams()
    engine = FeatureEngine(fs, [SYM])
    rows = []
    uid = tid = 0
    in_first = 0  # trades with event time in [0, 1 s) that were pushed in time
    # the trade stream keeps talking every 100 ms, but its event times trail the books'
    # by 0.7 s (inside the 1 s lateness): the watermark waits for it
    for ms in range(0, 2500, 100):
        uid += 1
        rows += engine.push(at(book(ms * MS, uid)))
        tid += 1
        ev = max(0, ms - 700)
        in_first += ev < 1000
        rows += engine.push(at(trade(ev * MS, tid, 100.0, 1.0, "buy"), (ms + 5) * MS))
        if ms == 1500:  # really out of order: 1.35 s behind the newest book, beyond it
            tid += 1
            rows += engine.push(at(trade(150 * MS, tid, 100.0, 3.0, "sell"), (ms + 6) * MS))
    first = as_dicts(fs, [r for r in rows if r.ts == 0])
    assert len(first) == 1
    assert first[0]["buy_count"] == in_first == 17  # the 0.7 s late ones are all in
    assert first[0]["sell_count"] == 0  # the one beyond the lateness was never mixed in
    assert engine.stats(SYM).late == 1


def test_a_stream_that_stops_entirely_is_handled_by_the_idle_rule() -> None:
    engine = FeatureEngine(streams(), [SYM])
    rows = []
    uid = tid = 0
    for ms in range(0, 5000, 100):
        if ms < 1500:  # the book stream stops at 1.5 s; trades go on every 100 ms
            uid += 1
            rows += [(ms, r.ts) for r in engine.push(at(book(ms * MS, uid)))]
        tid += 1
        rows += [(ms, r.ts) for r in engine.push(at(trade(ms * MS, tid, 100.0, 1.0, "buy")))]
    closes = dict((ts, ms) for ms, ts in rows)
    # buckets 1 s .. 3 s close on the trades alone, once the books were silent 150 ms
    assert sorted(closes) == [0, 1 * S, 2 * S, 3 * S]
    assert closes[2 * S] == 3000 and closes[3 * S] == 4000  # at their end, not 1 s later
    assert engine.stats(SYM).late == 0


def test_the_old_rule_waits_the_whole_lateness() -> None:
    engine = FeatureEngine(tiny_set(watermark="lateness", allowed_lateness="1s"), [SYM])
    rows = []
    for uid, ms in enumerate(range(0, 2200, 100), 1):
        rows += [(ms, r.ts) for r in engine.push(at(book(ms * MS, uid)))]
    assert rows == [(2000, 0)]  # one second of lateness after the end, where streams: 1000


async def test_live_equals_batch_on_the_real_recordings_at_their_receive_times(
    tmp_path: Path,
) -> None:
    """The store grows in slices while the runner follows it; the recordings' own receive
    times (1x) make the idle rule act, and some trades come after their bucket closed:
    live drops and counts exactly what batch does, and the rows are equal bit for bit."""
    settings = settings_for(tmp_path, "symbols=[btcusdt,ethusdt]")
    runner = FeatureRunner(settings)
    stop = asyncio.Event()
    fill(settings, (0.0, 0.01))
    following = asyncio.create_task(runner.run(stop))
    cuts = [0.01, 0.15, 0.4, 0.41, 0.7, 1.0]
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        fill(settings, (lo, hi))
        deadline = time.monotonic() + 60
        while not caught_up(runner, settings):
            assert time.monotonic() < deadline and not following.done(), runner.status()
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(following, 30)
    live = table(settings.features_path, settings)
    batch = batch_rows(settings, tmp_path, "symbols=[btcusdt,ethusdt]")
    assert len(live) > 1200
    assert live == batch
    late = {s: runner.engine.stats(s).late for s in ("btcusdt", "ethusdt")}
    assert late == dict(BATCH_LATE) and sum(late.values()) > 0, (late, BATCH_LATE)
