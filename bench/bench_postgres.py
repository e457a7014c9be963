"""The PostgreSQL stores against the embedded ones, on the real recordings.

Raw records: both recorded symbols through the collector's parser (book top-20,
trades, quotes), written in the collector's batch size by ``SqliteStore.write``
and ``PgRawStore.write`` (binary COPY into a staging table, then one
``INSERT ... SELECT ... ON CONFLICT`` per kind), per kind and mixed; as a
reference, the same trades through ``executemany`` of an ``INSERT ... ON
CONFLICT`` (what a writer without COPY does). Feature rows: the default book set
over the recordings and the candle preset over the whole BTCUSDT kline file,
written to both feature stores and read back: ``frame()`` of everything and
``last(symbol, 120)``, the window a model reads per bucket.

Every PostgreSQL case runs in a scratch schema that is dropped afterwards.

Run: ``python bench/bench_postgres.py [--batch 5000] [--repeat 3] [key=value ...]``,
where the overrides point at the server, e.g. ``storage.postgres.dbname=ccf_bench
storage.postgres.password=env:PGPASSWORD``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ccf.config import PostgresConfig, load_settings, shared_dir
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.spec import FeatureSet, feature_set
from ccf.features.store import FeatureStore
from ccf.ml.sources import CANDLE_PRESET
from ccf.records import Book, Gap, Quote, Record, Trade
from ccf.sources import archive
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.recording import read_frames
from ccf.storage.postgres.connect import connect, describe
from ccf.storage.postgres.features import PgFeatureStore
from ccf.storage.postgres.raw import PgRawStore
from ccf.storage.sqlite import SqliteStore

SYMBOLS = ("btcusdt", "ethusdt")
KLINES = shared_dir() / "data" / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"


def recorded_records() -> list[Record]:
    out: list[Record] = []
    for sym in SYMBOLS:
        feed = BinanceFeed((sym,), ("depth@100ms", "trade", "bookTicker"))
        for day in ("20240808", "20240809"):
            path = shared_dir() / "data" / "binance" / f"spot_{sym}_{day}.jsonl.gz"
            for ts, frame in read_frames(path):
                if frame.startswith('{"lastUpdateId"'):
                    feed.on_snapshot(sym, frame, ts, out)
                else:
                    feed.handle(frame, ts, out)
    out.sort(key=lambda r: r.ts_recv)
    return out


def feature_rows(
    fs: FeatureSet, symbols: Sequence[str], records: Sequence[Any]
) -> list[FeatureRow]:
    engine = FeatureEngine(fs, list(symbols))
    rows: list[FeatureRow] = []
    for r in records:
        rows += engine.push(r)
    for sym in symbols:
        last = max(r.ts_event for r in records if r.symbol == sym)
        rows += engine.flush(last - fs.lateness_ns, [sym])
    return rows


class Scratch:
    """A fresh schema per run, dropped afterwards: runs never see each other's rows."""

    def __init__(self, cfg: PostgresConfig) -> None:
        self.base = cfg
        self.n = 0

    def __enter__(self) -> PostgresConfig:
        self.n += 1
        self.cfg = self.base.model_copy(update={"db_schema": f"ccf_bench_{os.getpid()}_{self.n}"})
        return self.cfg

    def __exit__(self, *exc: object) -> None:
        con = connect(self.base)
        con.execute(f"DROP SCHEMA IF EXISTS {self.cfg.db_schema} CASCADE")
        con.close()


def best_of(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=5000, help="rows per transaction")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is shown")
    ap.add_argument("overrides", nargs="*", help="storage.postgres.* overrides (key=value)")
    args = ap.parse_args()
    cfg = load_settings(args.overrides).storage.postgres
    scratch = Scratch(cfg)
    con = connect(cfg)
    server = con.execute("SHOW server_version").fetchone()[0]
    con.close()
    records = recorded_records()
    kinds = {k: [r for r in records if type(r) is k] for k in (Book, Trade, Quote)}
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, python "
        f"{platform.python_version()}, PostgreSQL {server} at {describe(cfg)}"
    )
    mix = ", ".join(f"{k.__name__} {len(v):,}" for k, v in kinds.items())
    print(f"records: {len(records):,} ({mix}); batch {args.batch:,}; best of {args.repeat}")

    def sqlite_write(rows: list[Record]) -> Callable[[], float]:
        def run() -> float:
            with tempfile.TemporaryDirectory() as d:
                store = SqliteStore(Path(d) / "s.sqlite")
                t0 = time.perf_counter()
                for i in range(0, len(rows), args.batch):
                    store.write(rows[i : i + args.batch])
                secs = time.perf_counter() - t0
                store.close()
            return secs

        return run

    def pg_write(rows: list[Record]) -> Callable[[], float]:
        def run() -> float:
            with scratch as c:
                store = PgRawStore(c)
                t0 = time.perf_counter()
                for i in range(0, len(rows), args.batch):
                    store.write(rows[i : i + args.batch])
                secs = time.perf_counter() - t0
                store.close()
            return secs

        return run

    def pg_executemany(trades: list[Trade]) -> Callable[[], float]:
        rows = [(*t[:-1], int(t.backfilled)) for t in trades]  # the column is smallint

        def run() -> float:
            with scratch as c:
                store = PgRawStore(c)
                sql = (
                    f"INSERT INTO trade ({', '.join(Trade._fields)}) VALUES "
                    f"({', '.join(['%s'] * len(Trade._fields))}) ON CONFLICT DO NOTHING"
                )
                t0 = time.perf_counter()
                for i in range(0, len(rows), args.batch):
                    with store._con.transaction(), store._con.cursor() as cur:
                        cur.executemany(sql, rows[i : i + args.batch])
                secs = time.perf_counter() - t0
                store.close()
            return secs

        return run

    print(f"\n{'raw records':<44} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'µs/row':>7}")
    for kind, rows in [*kinds.items(), (Record, records)]:
        name = "mixed" if kind is Record else kind.__name__.lower()
        cases = [(f"SqliteStore.write {name}", sqlite_write(rows))]
        cases.append((f"PgRawStore.write {name} (COPY)", pg_write(rows)))
        if kind is Trade:
            ref = pg_executemany(rows)  # type: ignore[arg-type]
            cases.append(("reference: executemany INSERT, trade", ref))
        for label, run in cases:
            secs = best_of(args.repeat, run)
            n = len(rows)
            print(f"{label:<44} {n:>9,} {secs:>8.3f} {n / secs:>10,.0f} {secs / n * 1e6:>7.2f}")
    bench_features(args.repeat, scratch)


def bench_features(repeat: int, scratch: Scratch) -> None:
    settings = load_settings([f"symbols=[{','.join(SYMBOLS)}]"], environ={})
    book_set = feature_set(settings.features)
    raw = [r for r in recorded_records() if type(r) in (Book, Trade, Gap)]
    candle_set = feature_set(load_settings(["symbols=[btcusdt]"], [CANDLE_PRESET]).features)
    _, bars = archive.parse(
        archive.csv_text(KLINES.read_bytes(), KLINES.name), KLINES.name, ts_recv=0
    )
    sets = [
        ("book set", book_set, feature_rows(book_set, SYMBOLS, raw)),
        ("candle set", candle_set, feature_rows(candle_set, ("btcusdt",), list(bars))),
    ]
    print(
        f"\n{'feature rows':<28} {'rows':>7} {'cols':>5} {'write rows/s':>13} "
        f"{'frame() ms':>11} {'last(120) µs':>13}"
    )
    for label, fs, rows in sets:
        for backend in ("sqlite", "postgres"):
            write_s, frame_s, last_s = [], [], []
            for _ in range(repeat):
                with tempfile.TemporaryDirectory() as d, scratch as c:
                    store: Any = (
                        FeatureStore(Path(d) / "f.sqlite", fs)
                        if backend == "sqlite"
                        else PgFeatureStore(c, fs)
                    )
                    t0 = time.perf_counter()
                    for i in range(0, len(rows), 5000):
                        store.write(rows[i : i + 5000])
                    write_s.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    frame = store.frame()
                    frame_s.append(time.perf_counter() - t0)
                    assert len(frame) == len(rows)
                    sym = rows[-1].symbol
                    for _ in range(50):
                        t0 = time.perf_counter()
                        store.last(sym, 120)
                        last_s.append(time.perf_counter() - t0)
                    store.close()
            print(
                f"{label + ', ' + backend:<28} {len(rows):>7,} {len(fs.columns):>5} "
                f"{len(rows) / min(write_s):>13,.0f} {min(frame_s) * 1e3:>11.1f} "
                f"{statistics.median(last_s) * 1e6:>13.0f}"
            )


if __name__ == "__main__":
    main()
