"""Frames per second through parse + book + records for Binance USD-M, CCF vs cryptofeed.

Replays the real USD-M recording (``$CCF_SHARED/data/binance/usdm_btcusdt_20240808
.jsonl.gz``: @depth@0ms with ``pu``, @trade, @bookTicker, one /fapi/v1/depth snapshot)
at full speed through:

- CCF's ``binance_usdm`` venue feed (``UsdmFeed``) with each book implementation,
  a top-20 ``Book`` record per depth update, a ``Trade`` per trade, a ``Quote`` per
  bookTicker, drained every 5,000 records as the collector does;
- cryptofeed 2.4.1's ``BinanceFutures`` handler on the same frames, driven offline as
  ``shared/reference/cryptofeed_offline.md`` says for spot (trade frames rewritten to
  the aggTrade shape before the timed loop, the snapshot served by a stand-in
  ``http_conn``, no-op callbacks). Its symbol table is one hand-written exchangeInfo
  entry for BTCUSDT PERPETUAL (no futures exchangeInfo is recorded; it only maps names).

Prints frames/s (best of ``--repeats``, variants interleaved) and µs per frame, then
checks in the same run that the final books of every variant equal a plain-dict rebuild
following the USD-M procedure (``pu`` continuity). Exit status 1 when a check fails.

    python bench/bench_usdm.py --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from ccf.config import shared_dir
from ccf.records import Record
from ccf.sources.binance import book as book_impl
from ccf.sources.recording import read_frames
from ccf.sources.venues.binance_usdm.feed import UsdmFeed

STREAMS = ("depth@0ms", "trade", "bookTicker")
DRAIN_EVERY = 5000
CRYPTOFEED = "cryptofeed 2.4.1 BinanceFutures"
INFO = {  # the one symbol cryptofeed must know; fields it reads
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "contractType": "PERPETUAL",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "filters": [{"tickSize": "0.10"}],
        }
    ]
}


def load(path: Path) -> tuple[list[tuple[int, str]], int]:
    frames = list(read_frames(path))
    snap_at = next(i for i, (_, f) in enumerate(frames) if f.startswith('{"lastUpdateId"'))
    return frames, snap_at


def run_ccf(frames: list[tuple[int, str]], snap_at: int, impl: str) -> tuple[float, UsdmFeed]:
    book_impl.DEFAULT_IMPL = impl
    feed = UsdmFeed(("btcusdt",), STREAMS, book_depth=20)
    out: list[Record] = []
    handle = feed.handle
    t0 = time.perf_counter()
    for i, (ts, frame) in enumerate(frames):
        if i == snap_at:
            feed.on_snapshot("btcusdt", frame, ts, out)
        else:
            handle(frame, ts, out)
        if len(out) >= DRAIN_EVERY:
            out = []
    return time.perf_counter() - t0, feed


class _SnapshotHttp:
    def __init__(self, body: str) -> None:
        self.body = body

    async def read(self, *args: Any, **kwargs: Any) -> str:
        return self.body

    async def close(self) -> None:
        pass


async def _noop(*args: Any) -> None:
    pass


def cryptofeed_frames(frames: list[tuple[int, str]], snap_at: int) -> list[tuple[float, str]]:
    out = []
    for i, (ts, frame) in enumerate(frames):
        if i == snap_at:
            continue
        if '"e":"trade"' in frame[:80]:  # 2.4.1 reads aggTrade only; "a" carries the id
            msg = json.loads(frame)
            msg["data"]["e"], msg["data"]["a"] = "aggTrade", msg["data"].pop("t")
            frame = json.dumps(msg, separators=(",", ":"))
        out.append((ts / 1e9, frame))
    return out


def run_cryptofeed(cf_frames: list[tuple[float, str]], snapshot: str) -> tuple[float, Any]:
    from cryptofeed.defines import L2_BOOK, TICKER, TRADES
    from cryptofeed.exchanges import BinanceFutures
    from cryptofeed.symbols import Symbols

    Symbols.set("BINANCE_FUTURES", *BinanceFutures._parse_symbol_data(INFO))
    pair = "BTC-USDT-PERP"

    async def replay() -> tuple[float, Any]:
        feed = BinanceFutures(
            symbols=[pair],
            channels=[L2_BOOK, TRADES, TICKER],
            callbacks={L2_BOOK: _noop, TRADES: _noop, TICKER: _noop},
        )
        feed.http_conn = _SnapshotHttp(snapshot)
        conn, handle = object(), feed.message_handler
        t0 = time.perf_counter()
        for ts, frame in cf_frames:
            await handle(frame, conn, ts)
        return time.perf_counter() - t0, (feed, pair)

    return asyncio.run(replay())


def rebuild(frames: list[tuple[int, str]], snap_at: int) -> tuple[dict, dict, int]:
    """The USD-M procedure with plain dicts: drop u < id, first U <= id <= u, then pu."""
    snap = json.loads(frames[snap_at][1])
    asks = {float(p): float(q) for p, q in snap["asks"]}
    bids = {float(p): float(q) for p, q in snap["bids"]}
    last, first = snap["lastUpdateId"], True
    for i, (_, f) in enumerate(frames):
        if i == snap_at or '"depthUpdate"' not in f[:80]:
            continue
        d = json.loads(f)["data"]
        if d["u"] < last or (not first and d["u"] <= last):
            continue
        if not (d["U"] <= last <= d["u"] if first else d["pu"] == last):
            raise SystemExit(f"the recording has a gap at u={d['u']}")
        first = False
        for side, book in (("a", asks), ("b", bids)):
            for p, q in d[side]:
                if float(q):
                    book[float(p)] = float(q)
                else:
                    book.pop(float(p), None)
        last = d["u"]
    return asks, bids, last


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-cryptofeed", dest="cryptofeed", action="store_false")
    args = ap.parse_args(argv)
    path = shared_dir() / "data" / "binance" / "usdm_btcusdt_20240808.jsonl.gz"
    frames, snap_at = load(path)
    n = len(frames) - 1
    print(
        f"bench_usdm: {path.name}: {n:,} frames + 1 snapshot; python {platform.python_version()}"
        f" on {os.cpu_count()} CPUs ({platform.machine()})"
    )
    impls = list(book_impl.IMPLEMENTATIONS)
    cf = cryptofeed_frames(frames, snap_at) if args.cryptofeed else []
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for impl in impls:
            gc.collect()
            best[f"CCF ({impl} book)"] = min(
                best.get(f"CCF ({impl} book)", 1e9), run_ccf(frames, snap_at, impl)[0]
            )
        if args.cryptofeed:
            gc.collect()
            best[CRYPTOFEED] = min(
                best.get(CRYPTOFEED, 1e9), run_cryptofeed(cf, frames[snap_at][1])[0]
            )
    ref = best.get(CRYPTOFEED)
    for name, s in best.items():
        x = f"  {ref / s:5.1f}x cryptofeed" if ref else ""
        print(f"  {name:34s} {n / s:11,.0f} frames/s  {1e6 * s / n:6.2f} µs/frame{x}")
    asks, bids, last = rebuild(frames, snap_at)
    books = {"dict rebuild": (asks, bids, last)}
    for impl in impls:
        b = run_ccf(frames, snap_at, impl)[1].state["btcusdt"].book
        books[f"CCF ({impl} book)"] = (b.asks.levels(), b.bids.levels(), b.update_id)
    if args.cryptofeed:
        feed, pair = run_cryptofeed(cf, frames[snap_at][1])[1]
        side = feed._l2_book[pair].book
        books[CRYPTOFEED] = (
            {float(p): float(q) for p, q in side.asks.to_dict().items()},
            {float(p): float(q) for p, q in side.bids.to_dict().items()},
            feed.last_update_id[pair],
        )
    bad = [k for k, v in books.items() if v != books["dict rebuild"]]
    print(
        f"  check: final books of {' == '.join(books)}: "
        + ("identical" if not bad else f"DIFFER ({', '.join(bad)})")
        + f" ({len(asks) + len(bids):,} levels, lastUpdateId {last})"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
