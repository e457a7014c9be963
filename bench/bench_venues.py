"""Frames per second through parse + book + records for OKX, Coinbase and Kraken, CCF vs
cryptofeed 2.4.1's handler for the same venue, on the same recorded frames, in one run.

For each venue's recording (``$CCF_SHARED/data/venues``), at full speed:

- CCF: the venue's feed (``ccf.sources.venues.<venue>.feed``), checking the venue's
  checksum at every book update (OKX, Kraken) and writing a top-10 ``Book`` record
  per update, a ``Trade`` per trade, a ``Quote`` per ticker, drained every 5,000
  records as the collector does;
- cryptofeed 2.4.1: ``<Venue>.message_handler`` awaited per frame inside one loop,
  with ``checksum_validation=True`` where the venue sends checksums, no-op callbacks,
  symbols loaded from the recorded instrument lists (no network). cryptofeed 2.4.1's
  Coinbase handler reads only the Advanced Trade protocol (``l2_data``,
  ``market_trades``), so the recorded Exchange-feed frames are rewritten to that
  shape before the timed loop (same levels, trades and times).

Each variant runs ``--repeats`` times, interleaved; frames/s is the best run. The
same run then compares the final books of CCF and cryptofeed, every level of every
instrument, and exits 1 if any differs.

    python bench/bench_venues.py
    python bench/bench_venues.py --venues okx,kraken --repeats 9
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccf.config import shared_dir
from ccf.records import Record
from ccf.sources import venues
from ccf.sources.replay.venues.recording import default_path, venue_frames

DEPTH = 10
DRAIN_EVERY = 5000
CRYPTOFEED = "cryptofeed 2.4.1"
Books = dict[str, tuple[dict[float, float], dict[float, float]]]  # symbol -> (bids, asks)


def symbols_of(venue: str, frames: list[tuple[int, str]]) -> tuple[str, ...]:
    """The instruments the recording's data frames name, as the records' symbols."""
    found: dict[str, None] = {}
    for _, text in frames:
        m = json.loads(text)
        if venue == "okx" and isinstance(m, dict) and "data" in m:
            found[m["arg"]["instId"].lower()] = None
        elif venue == "coinbase" and isinstance(m, dict) and "product_id" in m:
            found[m["product_id"].lower()] = None
        elif venue == "kraken" and isinstance(m, list):
            found[m[-1].lower()] = None
    return tuple(found)


# -- CCF ------------------------------------------------------------------------------------


def run_ccf(venue: str, syms: tuple[str, ...], frames: list[tuple[int, str]]) -> tuple[float, Any]:
    v = venues.get(venue)
    feed = v.make_feed(syms, tuple(v.kinds), book_depth=DEPTH)
    handle = feed.handle
    out: list[Record] = []
    n = 0
    t0 = time.perf_counter()
    for ts, text in frames:
        handle(text, ts, out)
        if len(out) >= DRAIN_EVERY:
            n += len(out)
            out = []
    seconds = time.perf_counter() - t0
    feed.records = n + len(out)
    return seconds, feed


def ccf_books(feed: Any) -> Books:
    return {s: (i.book.bids.as_floats(), i.book.asks.as_floats()) for s, i in feed.state.items()}


# -- cryptofeed -----------------------------------------------------------------------------


def _rest_bodies(path: Path) -> list[Any]:
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            head, sep, body = line.partition(": ")
            if sep and " -> " in head:
                out.append(json.loads(body))
    return out


def cryptofeed_class(venue: str, data: Path) -> Any:
    """The cryptofeed feed class with its symbol table loaded from the recorded REST
    instrument lists (cryptofeed would fetch them over the network otherwise)."""
    from cryptofeed.exchanges import OKX, Coinbase, Kraken
    from cryptofeed.symbols import Symbols

    cls = {"okx": OKX, "coinbase": Coinbase, "kraken": Kraken}[venue]
    rest = data / f"{venue.upper()}.0.gz"
    bodies = _rest_bodies(rest)
    if venue == "okx":
        parsed = cls._parse_symbol_data(bodies[:5])  # one full set of instrument lists
    elif venue == "kraken":
        parsed = cls._parse_symbol_data(bodies[0])
    else:  # the Exchange /products list in the Advanced Trade shape cryptofeed reads
        products = [
            {
                "base_currency_id": p["base_currency"],
                "quote_currency_id": p["quote_currency"],
                "quote_increment": p["quote_increment"],
                "product_id": p["id"],
            }
            for p in bodies[0]
        ]
        parsed = cls._parse_symbol_data({"products": products})
    Symbols.set(cls.id, *parsed)
    return cls


def coinbase_advanced_trade(frames: list[tuple[int, str]]) -> list[tuple[float, str]]:
    """Exchange-feed frames rewritten to the Advanced Trade shape cryptofeed 2.4.1 reads."""
    out = []
    for ts, text in frames:
        m = json.loads(text)
        t = m.get("type")
        if t == "snapshot":
            ups = [{"side": "bid", "price_level": p, "new_quantity": q} for p, q in m["bids"]]
            ups += [{"side": "ask", "price_level": p, "new_quantity": q} for p, q in m["asks"]]
            ev = {"type": "snapshot", "product_id": m["product_id"], "updates": ups}
            msg = {"channel": "l2_data", "timestamp": "", "events": [ev]}
        elif t == "l2update":
            ups = [
                {"side": "bid" if s == "buy" else "ask", "price_level": p, "new_quantity": q}
                for s, p, q in m["changes"]
            ]
            ev = {"type": "update", "product_id": m["product_id"], "updates": ups}
            msg = {"channel": "l2_data", "timestamp": m["time"], "events": [ev]}
        elif t in ("match", "last_match"):
            trade = {
                "trade_id": m["trade_id"],
                "side": "BUY" if m["side"] == "sell" else "SELL",  # the taker's
                "size": m["size"],
                "price": m["price"],
                "product_id": m["product_id"],
                "time": m["time"],
            }
            msg = {"channel": "market_trades", "events": [{"type": "update", "trades": [trade]}]}
        else:
            continue  # tickers and subscriptions: cryptofeed's Coinbase has no such channel
        out.append((ts / 1e9, json.dumps(msg, separators=(",", ":"))))
    return out


async def _noop(*args: Any) -> None:
    return None


def run_cryptofeed(
    venue: str, cls: Any, syms: tuple[str, ...], frames: list[tuple[float, str]]
) -> tuple[float, Any]:
    from cryptofeed.defines import L2_BOOK, TICKER, TRADES
    from cryptofeed.symbols import Symbols

    normalized, _ = Symbols.get(cls.id)
    wire = {s.upper() for s in syms}
    pairs = [std for std, ex in normalized.items() if ex in wire]
    channels = {"okx": [L2_BOOK, TRADES, TICKER], "coinbase": [L2_BOOK, TRADES]}.get(
        venue, [L2_BOOK]
    )

    async def replay() -> tuple[float, Any]:
        feed = cls(
            symbols=pairs,
            channels=channels,
            callbacks={c: _noop for c in channels},
            checksum_validation=venue != "coinbase",
        )
        conn, handle = object(), feed.message_handler
        t0 = time.perf_counter()
        for ts, text in frames:
            await handle(text, conn, ts)
        return time.perf_counter() - t0, feed

    return asyncio.run(replay())


def cryptofeed_books(feed: Any, cls: Any) -> Books:
    from cryptofeed.symbols import Symbols

    normalized, _ = Symbols.get(cls.id)
    out: Books = {}
    for pair, ob in feed._l2_book.items():
        sym = normalized[pair].lower()
        bids = {float(p): float(q) for p, q in ob.book.bids.to_dict().items()}
        asks = {float(p): float(q) for p, q in ob.book.asks.to_dict().items()}
        out[sym] = (bids, asks)
    return out


# -- the run --------------------------------------------------------------------------------


def best_of(fn: Callable[[], tuple[float, Any]], repeats: int) -> tuple[float, Any]:
    best, last = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        seconds, last = fn()
        best = min(best, seconds)
    return best, last


def bench_venue(venue: str, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    frames = venue_frames(default_path(venue))
    syms = symbols_of(venue, frames)
    cls = cryptofeed_class(venue, args.data)
    cf_frames = (
        coinbase_advanced_trade(frames)
        if venue == "coinbase"
        else [(ts / 1e9, text) for ts, text in frames]
    )
    kinds: Counter[str] = Counter()
    res: dict[str, list[float]] = {"ccf": [], "cf": []}
    ccf_feed = cf_feed = None
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        s, ccf_feed = best_of(lambda: run_ccf(venue, syms, frames), 1)
        res["ccf"].append(s)
        s, cf_feed = best_of(lambda: run_cryptofeed(venue, cls, syms, cf_frames), 1)
        res["cf"].append(s)
    ccf_s, cf_s = min(res["ccf"]), min(res["cf"])
    mine, theirs = ccf_books(ccf_feed), cryptofeed_books(cf_feed, cls)
    same = mine.keys() == theirs.keys() and all(mine[s] == theirs[s] for s in mine)
    levels = sum(len(b) + len(a) for b, a in mine.values())
    kinds.update({k: v for k, v in ccf_feed.stats.items()})
    row = {
        "venue": venue,
        "frames": len(frames),
        "cf_frames": len(cf_frames),
        "ccf_fps": len(frames) / ccf_s,
        "cf_fps": len(cf_frames) / cf_s,
        "ccf_us": ccf_s / len(frames) * 1e6,
        "cf_us": cf_s / len(cf_frames) * 1e6,
        "records": ccf_feed.records,
        "verified": kinds.get("checksums_verified", 0),
        "levels": levels,
        "same_books": same,
    }
    if not same:
        for s in sorted(set(mine) | set(theirs)):
            if mine.get(s) != theirs.get(s):
                print(f"  {venue} {s}: final books differ", file=sys.stderr)
    return row, same


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--venues", default="okx,coinbase,kraken")
    p.add_argument("--repeats", type=int, default=7, help="runs per variant; best is reported")
    p.add_argument("--data", type=Path, default=shared_dir() / "data" / "venues")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # cryptofeed warns on frames it does not handle
    from ccf.sources.venues import strbook

    impl = "C levels (_strlevels)" if strbook.USE_C else "pure Python (CCF_BOOK_IMPL=python)"
    print(
        f"python {platform.python_version()} on {platform.machine()}, {args.repeats} repeats, "
        f"CCF book: {impl}"
    )
    ok = True
    print(
        f"{'venue':9} {'frames':>7} {'CCF fr/s':>10} {'cf fr/s':>10} {'CCF µs':>8} {'cf µs':>8} "
        f"{'speedup':>7} {'verified':>8} {'levels':>7} same books"
    )
    for venue in args.venues.split(","):
        row, same = bench_venue(venue, args)
        ok &= same
        print(
            f"{venue:9} {row['frames']:>7} {row['ccf_fps']:>10,.0f} {row['cf_fps']:>10,.0f} "
            f"{row['ccf_us']:>8.1f} {row['cf_us']:>8.1f} {row['ccf_fps'] / row['cf_fps']:>6.1f}x "
            f"{row['verified']:>8} {row['levels']:>7} {row['same_books']}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
