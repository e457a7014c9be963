"""Backfill over REST against the replay exchange serving real candles and trades."""

from __future__ import annotations

import gzip
from pathlib import Path

import aiohttp
import pytest

from ccf.config import ReplayConfig, load_settings, shared_dir
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

    settings = load_settings(environ={})
    async with aiohttp.ClientSession() as session:
        rest = BinanceRest(session, ex.url)
        job = Backfill(settings, store, progress)
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
        ex.set_faults(rest_429=1, rest_418=1, retry_after_s=1)
        summary, rest = await backfill_klines(ex, store, start, end)
    assert rest.stats["rate_limited"] == 1 and rest.stats["banned"] == 1
    assert summary.rows == 2500 and summary.gaps == []
    assert store.query("SELECT count(*) FROM candle") == [(2500,)]
