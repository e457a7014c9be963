"""History and news throughput: imports, REST backfill, feed parsing.

In one run, on the real data under ``$CCF_SHARED/data``:

- ``ccf backfill import`` of the shipped one-minute candle files, against the
  floor of reading the same CSV with the csv module alone;
- a REST klines backfill of those candles from the replay exchange on
  loopback (29 pages of up to 1,000), i.e. the client, paging and store cost;
- news: the saved CoinDesk and Cointelegraph feeds through ``parse_feed``
  against ``feedparser.parse`` alone.

Run: ``python bench/bench_history.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import feedparser

from ccf.config import ReplayConfig, load_settings, shared_dir
from ccf.sources.backfill import Backfill, run_import
from ccf.sources.binance.rest import BinanceRest
from ccf.sources.news.parse import parse_feed
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.timeline import load_timeline
from ccf.storage import SqliteStore

DATA = shared_dir() / "data"
KLINES = sorted((DATA / "klines").glob("*-1m-*.csv.gz"))
FEEDS = sorted((DATA / "news").glob("*.xml"))


def best(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    secs, n = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = run()
        secs = min(secs, time.perf_counter() - t0)
    return secs, n


def line(name: str, n: int, secs: float, unit: str) -> None:
    print(f"{name:<46} {n:>9,} {unit:<7} {secs:>8.3f} s {n / secs:>12,.0f} {unit}/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is shown")
    args = ap.parse_args()

    def import_all() -> int:
        with tempfile.TemporaryDirectory() as d:
            s = load_settings([f"data_dir={d}"], environ={})
            return sum(run_import(s, str(p)).new_rows for p in KLINES)

    def csv_floor() -> int:
        n = 0
        for p in KLINES:
            with gzip.open(p, "rt") as f:
                n += sum(1 for _ in csv.reader(f)) - 1
        return n

    secs, n = best(args.repeat, import_all)
    line("ccf backfill import (2 candle files)", n, secs, "rows")
    secs, n = best(args.repeat, csv_floor)
    line("reference: csv.reader over the same files", n, secs, "rows")

    async def rest_backfill() -> tuple[float, int]:
        timeline = await asyncio.to_thread(
            load_timeline, sorted((DATA / "binance").glob("spot_btcusdt_*.jsonl.gz"))
        )
        cfg = ReplayConfig(port=0, klines=(KLINES[0],))
        first = int(gzip.open(KLINES[0], "rt").read().splitlines()[1].split(",")[0])
        async with running_exchange(cfg, timeline) as ex, aiohttp.ClientSession() as session:
            secs = float("inf")
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as d:
                    store = SqliteStore(Path(d) / "s.sqlite")
                    job = Backfill(store)
                    t0 = time.perf_counter()
                    summary = await job.klines(
                        BinanceRest(session, ex.url),
                        "btcusdt",
                        "1m",
                        first,
                        first + 28_071 * 60_000,
                    )
                    secs = min(secs, time.perf_counter() - t0)
                    store.close()
        return secs, summary.rows

    secs, n = asyncio.run(rest_backfill())
    line("REST klines backfill from the replay (loopback)", n, secs, "rows")

    bodies = [p.read_bytes() for p in FEEDS]
    reps = 20

    def ours() -> int:
        return sum(
            len(parse_feed(b, source="x", url="http://x/", ingested_at=0).entries)
            for _ in range(reps)
            for b in bodies
        )

    def floor() -> int:
        return sum(
            len(feedparser.parse(io.BytesIO(b)).entries) for _ in range(reps) for b in bodies
        )

    secs, n = best(args.repeat, ours)
    line("news: parse_feed (normalize, dedupe keys)", n, secs, "items")
    secs, n = best(args.repeat, floor)
    line("reference: feedparser.parse alone", n, secs, "items")


if __name__ == "__main__":
    main()
