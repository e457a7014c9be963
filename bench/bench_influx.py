"""Lines per second: records encoded as line protocol, and lines written to a real InfluxDB.

Feeds both recorded symbols (``$CCF_SHARED/data/binance``) through the
collector's parser to get the real mix of raw records (top-20 books, trades,
quotes), and the BTCUSDT ones through the feature engine with the default
feature set for real feature rows. Then, in one run:

- encoding: ``raw_lines`` per record kind and mixed, and ``feature_lines``
  (best of ``--repeat``), in lines/s and µs/line;
- writing: the mixed lines through ``InfluxWriter`` (gzip, ``--batch`` lines per
  request, one kept-alive connection) into Debian's ``influxd`` started on a
  free port under a temporary directory, from the first ``write`` to
  ``flush()`` returning (everything acknowledged); then counted back with
  ``SELECT count(...)`` to check nothing is missing.

Run: ``python bench/bench_influx.py [--batch 5000] [--repeat 3]``. Needs
``influxd`` (``apt-get install influxdb``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from ccf.config import InfluxConfig, load_settings, shared_dir
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.spec import feature_set
from ccf.records import Book, Quote, Record, Trade
from ccf.sinks import InfluxWriter
from ccf.sinks import lineprotocol as lp
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.recording import read_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.infra's Influxd
from tests.infra import Influxd  # noqa: E402

PREFIX = "ccf_"


def recorded(symbol: str) -> list[Record]:
    feed = BinanceFeed((symbol,), ("depth@100ms", "trade", "bookTicker"))
    out: list[Record] = []
    for day in ("20240808", "20240809"):
        path = shared_dir() / "data" / "binance" / f"spot_{symbol}_{day}.jsonl.gz"
        if not path.exists():
            sys.exit(f"missing recording {path}: set CCF_SHARED")
        for ts, frame in read_frames(path):
            if frame.startswith('{"lastUpdateId"'):
                feed.on_snapshot(symbol, frame, ts, out)
            else:
                feed.handle(frame, ts, out)
    return out


def feature_rows(records: Sequence[Record]) -> tuple[tuple[str, ...], list[FeatureRow]]:
    fs = feature_set(load_settings([], environ={}).features)
    events = sorted(
        (r for r in records if type(r) in (Book, Trade)),
        key=lambda r: (r.ts_event, 1 if type(r) is Trade else 0),
    )
    engine = FeatureEngine(fs, [events[0].symbol])
    rows: list[FeatureRow] = []
    for r in events:
        rows += engine.push(r)
    return fs.float_columns, rows


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = run()
        best = min(best, time.perf_counter() - t0)
    return best, n


def count_back(url: str, measurements: Sequence[str]) -> int:
    total = 0
    for m in measurements:
        q = urllib.parse.urlencode({"db": "ccf", "q": f'SELECT count("ts_recv") FROM "{m}"'})
        with urllib.request.urlopen(f"{url}/query?{q}", timeout=60) as resp:
            series = json.load(resp)["results"][0].get("series", [])
        total += series[0]["values"][0][1] if series else 0
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=5000, help="lines per request")
    ap.add_argument("--repeat", type=int, default=3, help="encoding runs; the best is shown")
    args = ap.parse_args()

    records = recorded("btcusdt") + recorded("ethusdt")
    records.sort(key=lambda r: r.ts_recv)
    columns, rows = feature_rows([r for r in records if r.symbol == "btcusdt"])
    print(f"python {platform.python_version()}, {platform.machine()}, {len(records):,} records")
    print(f"\n{'encode':<34}{'lines':>9}{'lines/s':>12}{'µs/line':>9}")
    for name, kinds in (
        ("book (top 20)", (Book,)),
        ("trade", (Trade,)),
        ("quote", (Quote,)),
        ("mixed raw", (Book, Trade, Quote)),
    ):
        subset = [r for r in records if type(r) in kinds]
        s, n = best_of(args.repeat, lambda subset=subset: len(lp.raw_lines(subset, PREFIX)))
        print(f"{name:<34}{n:>9,}{n / s:>12,.0f}{s / n * 1e6:>9.2f}")
    s, n = best_of(
        args.repeat,
        lambda: len(lp.feature_lines(columns, rows, exchange="binance", prefix=PREFIX)),
    )
    label = f"feature rows ({len(columns)} columns)"
    print(f"{label:<34}{n:>9,}{n / s:>12,.0f}{s / n * 1e6:>9.2f}")

    lines = lp.raw_lines(records, PREFIX)
    mb = sum(map(len, lines)) / 1e6
    with tempfile.TemporaryDirectory() as d, Influxd(Path(d)) as server:
        cfg = InfluxConfig(
            enabled=True, url=server.url, batch_lines=args.batch, flush_interval_s=0.2
        )
        writer = InfluxWriter(cfg)
        chunk = 5000  # as the collector hands records over
        t0 = time.perf_counter()
        for i in range(0, len(lines), chunk):
            writer.write(lines[i : i + chunk])
        ok = writer.flush(600)
        s = time.perf_counter() - t0
        stats = writer.stats()
        writer.close()
        back = count_back(server.url, [f"{PREFIX}{k}" for k in ("book", "trade", "quote")])
    print(f"\nwrite to influxd {server.url} (InfluxDB 1.6.7, gzip, batch {args.batch:,})")
    print(f"{'lines':>9}{'MB text':>9}{'seconds':>9}{'lines/s':>12}{'batches':>9}{'read back':>11}")
    print(
        f"{len(lines):>9,}{mb:>9.1f}{s:>9.2f}{len(lines) / s:>12,.0f}"
        f"{stats.batches_written:>9,}{back:>11,}"
    )
    if not ok or back != len(lines) or stats.batches_failed:
        sys.exit(f"FAILED: flushed={ok} written={stats.lines_written} read back={back} {stats}")


if __name__ == "__main__":
    main()
