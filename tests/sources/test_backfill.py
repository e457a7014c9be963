"""Backfill over REST against the replay exchange serving real candles and trades."""

from __future__ import annotations

import gzip
from pathlib import Path

import aiohttp
import pytest

from ccf.config import ReplayConfig, shared_dir
from ccf.sources.backfill import Backfill, Summary
from ccf.sources.binance.rest import BinanceRest
from ccf.sources.replay.exchange import ReplayExchange, running_exchange
from ccf.sources.replay.timeline import Timeline, load_timeline
from ccf.storage import SqliteStore
from tests.sources.recorded import recording_files

KLINES = shared_dir() / "data" / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
NS = 1_000_000
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return load_timeline(recording_files(("btcusdt",)))


@pytest.fixture(scope="module")
def csv_bars() -> dict[int, tuple[float, ...]]:
    with gzip.open(KLINES, "rt") as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    return {int(r[0]): tuple(map(float, r[1:6])) for r in rows}


class Interrupted(Exception):
    """Stands in for Ctrl-C or a crash in the middle of a backfill."""


async def backfill_klines(
    ex: ReplayExchange,
    store: SqliteStore,
    start: int,
    end: int,
    stop_after_pages: int | None = None,
) -> tuple[Summary, BinanceRest]:
    pages = 0

    def progress(pos_ms: int, rows: int) -> None:
        nonlocal pages
        pages += 1
        if stop_after_pages is not None and pages >= stop_after_pages:
            raise Interrupted

    async with aiohttp.ClientSession() as session:
        rest = BinanceRest(session, ex.url)
        job = Backfill(store, progress)
        return await job.klines(rest, "btcusdt", "1m", start, end), rest


async def test_klines_page_resume_and_rerun_changes_nothing(
    tmp_path: Path, timeline: Timeline, csv_bars: dict[int, tuple[float, ...]]
) -> None:
    start = min(csv_bars) + DAY_MS - min(csv_bars) % DAY_MS  # a whole UTC day onwards
    end = start + 3 * DAY_MS  # 4,320 candles: five pages of up to 1,000
    store = SqliteStore(tmp_path / "s.sqlite")
    cfg = ReplayConfig(port=0, klines=(KLINES,))
    async with running_exchange(cfg, timeline) as ex:
        with pytest.raises(Interrupted):
            await backfill_klines(ex, store, start, end, stop_after_pages=2)
        (kept,) = store.query("SELECT count(*) FROM candle")[0]
        assert kept == 2000  # what it fetched before the interruption is stored
        resumed, _ = await backfill_klines(ex, store, start, end)
        again, _ = await backfill_klines(ex, store, start, end)
    assert resumed.resumed_from_ms == start + 1999 * 60_000
    assert (resumed.new_rows, resumed.rows) == (2320, 2320)  # only what was missing
    assert again.new_rows == 0 and again.gaps == []
    rows = store.query(
        "SELECT open_time, open, high, low, close, volume, closed FROM candle ORDER BY open_time"
    )
    assert [r[0] // NS for r in rows] == list(range(start, end, 60_000))
    assert all(r[1:6] == csv_bars[r[0] // NS] and r[6] == 1 for r in rows)


async def test_rate_limits_and_overlapping_pages(
    tmp_path: Path, timeline: Timeline, csv_bars: dict[int, tuple[float, ...]]
) -> None:
    start = min(csv_bars)
    end = start + 2500 * 60_000
    store = SqliteStore(tmp_path / "s.sqlite")
    async with running_exchange(ReplayConfig(port=0, klines=(KLINES,)), timeline) as ex:
        ex.set_faults(rest_429=1, rest_418=1, retry_after_s=1, rest_duplicate_pages=2)
        summary, rest = await backfill_klines(ex, store, start, end)
        assert ex.state()["fault_counts"]["rest_duplicate_pages"] == 2
    assert rest.stats["rate_limited"] == 1 and rest.stats["banned"] == 1
    assert summary.rows == 2500 and summary.new_rows == 2500 and summary.gaps == []
    assert store.query("SELECT count(*) FROM candle") == [(2500,)]


async def played_out(ex: ReplayExchange) -> None:
    """Wait until the whole recording has been played: all of it is history now."""
    import asyncio

    for _ in range(1200):
        if ex.state()["finished"]:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the replay did not finish")


async def test_agg_trades_cover_every_recorded_trade_once(
    tmp_path: Path, timeline: Timeline
) -> None:
    from decimal import Decimal

    from tests.sources.recorded import recorded

    rec = recorded("btcusdt")
    cfg = ReplayConfig(port=0, speed=0, loop=False, start="immediately")
    store = SqliteStore(tmp_path / "s.sqlite")
    async with running_exchange(cfg, timeline) as ex:
        await played_out(ex)
        shift = ex.state()["time_shift_ms"]
        times = [t for t, _, _ in rec.trades.values()]
        start, end = min(times) + shift, max(times) + shift + 1
        async with aiohttp.ClientSession() as session:
            rest = BinanceRest(session, ex.url)
            job = Backfill(store)
            first = await job.agg_trades(rest, "btcusdt", start, end)
            ex.set_faults(rest_duplicate_pages=3)
            store2 = SqliteStore(tmp_path / "dup.sqlite")
            dup = await Backfill(store2).agg_trades(rest, "btcusdt", start, end)
            again = await job.agg_trades(rest, "btcusdt", start, end)
    assert first.gaps == [] and again.new_rows == 0
    rows = store.query(
        "SELECT first_trade_id, last_trade_id, qty, price, ts_event FROM agg_trade ORDER BY agg_id"
    )
    covered = [t for f, last, *_ in rows for t in range(f, last + 1)]
    assert covered == sorted(rec.trades)  # every trade exactly once, in order
    for f, last, qty, price, ts in rows:
        parts = [rec.trades[t] for t in range(f, last + 1)]
        assert {p for _, p, _ in parts} == {price}
        assert {t for t, _, _ in parts} == {ts // NS - shift}
        assert Decimal(str(qty)) == sum(Decimal(str(q)) for _, _, q in parts)
    assert dup.rows >= first.rows and store2.query("SELECT count(*) FROM agg_trade") == [
        (len(rows),)
    ]  # overlapping pages deduplicated by key
