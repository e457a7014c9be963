"""Rows per second into the embedded store, on records from the real recordings.

Feeds both recorded symbols through the collector's parser to get the real
mix of records (book top-20, trades, quotes), then times, in one run:

- ``SqliteStore.write`` in the collector's batch size, per record kind and mixed;
- the ``StoreWriter`` thread end to end (submit everything, close = all committed);
- references: the same rows with ``executemany`` into tables without keys (the
  ceiling of Python's sqlite3 here), and a naive writer committing every row.

Run: ``python bench/bench_store.py [--batch 5000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ccf.config import shared_dir
from ccf.records import Book, Quote, Record, Trade
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.recording import read_frames
from ccf.storage import SqliteStore, StoreWriter


def recorded_records() -> list[Record]:
    out: list[Record] = []
    for sym in ("btcusdt", "ethusdt"):
        feed = BinanceFeed((sym,), ("depth@100ms", "trade", "bookTicker"))
        files = [
            shared_dir() / "data" / "binance" / f"spot_{sym}_{d}.jsonl.gz"
            for d in ("20240808", "20240809")
        ]
        for path in files:
            for ts, frame in read_frames(path):
                if frame.startswith('{"lastUpdateId"'):
                    feed.on_snapshot(sym, frame, ts, out)
                else:
                    feed.handle(frame, ts, out)
    out.sort(key=lambda r: r.ts_recv)
    return out


def best_of(repeat: int, run: Callable[[Path], int]) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            rows = run(Path(d))
            best = min(best, time.perf_counter() - t0)
    return best, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=5000, help="rows per transaction")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is shown")
    args = ap.parse_args()
    records = recorded_records()
    kinds = {k: [r for r in records if type(r) is k] for k in (Book, Trade, Quote)}
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} python "
        f"{platform.python_version()} sqlite {sqlite3.sqlite_version}"
    )
    mix = ", ".join(f"{k.__name__} {len(v):,}" for k, v in kinds.items())
    print(f"records: {len(records):,} ({mix})")

    def store_write(rows: list[Record]) -> Callable[[Path], int]:
        def run(d: Path) -> int:
            store = SqliteStore(d / "s.sqlite")
            for i in range(0, len(rows), args.batch):
                store.write(rows[i : i + args.batch])
            store.close()
            return len(rows)

        return run

    def writer_thread(d: Path) -> int:
        w = StoreWriter(lambda: SqliteStore(d / "s.sqlite"), batch_rows=args.batch)
        for i in range(0, len(records), 1000):
            w.submit(records[i : i + 1000])
        w.close()
        return w.rows_written

    def ceiling(d: Path) -> int:
        con = sqlite3.connect(d / "c.sqlite", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        flat = {
            Book: [(*b[:6], *b.levels) for b in kinds[Book]],
            Trade: kinds[Trade],
            Quote: kinds[Quote],
        }
        for k, rows in flat.items():
            n = len(rows[0])
            con.execute(f"CREATE TABLE t{k.__name__} ({', '.join(f'c{i}' for i in range(n))})")
            sql = f"INSERT INTO t{k.__name__} VALUES ({', '.join('?' * n)})"
            for i in range(0, len(rows), args.batch):
                con.execute("BEGIN")
                con.executemany(sql, rows[i : i + args.batch])
                con.execute("COMMIT")
        return sum(len(v) for v in flat.values())

    def naive(d: Path) -> int:
        store = SqliteStore(d / "s.sqlite")
        rows = records[:3000]
        for r in rows:
            store.write([r])  # one transaction (one WAL commit) per row
        return len(rows)

    cases = [(f"SqliteStore.write {k.__name__.lower()}", store_write(v)) for k, v in kinds.items()]
    cases += [
        ("SqliteStore.write mixed", store_write(records)),
        ("StoreWriter thread, mixed (end to end)", writer_thread),
        ("reference: executemany, no keys", ceiling),
        ("reference: commit per row", naive),
    ]
    print(f"\n{'case':<40} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'µs/row':>7}")
    for name, run in cases:
        secs, rows = best_of(args.repeat, run)
        print(f"{name:<40} {rows:>9,} {secs:>8.3f} {rows / secs:>10,.0f} {secs / rows * 1e6:>7.2f}")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
