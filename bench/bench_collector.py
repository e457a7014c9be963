"""Frames per second through parse + local book + normalized records, CCF vs cryptofeed.

Replays the real Binance spot recordings (``$CCF_SHARED/data/binance``) at full
speed through:

- CCF's ``BinanceFeed`` with each book implementation it has (the C book with
  its level parser, and the pure-Python book with msgspec's typed decoding),
  emitting a top-20 ``Book`` record at every depth update, a ``Trade`` per
  trade and a ``Quote`` per bookTicker, drained every 5,000 records as the
  collector does;
- cryptofeed 2.4.1's Binance handler fed the same frames, driven offline as
  ``shared/reference/cryptofeed_offline.md`` says (trade frames rewritten to
  the aggTrade shape before the timed loop, snapshot served by a fake
  ``http_conn``, no-op callbacks);
- ``orjson.loads`` alone, as the floor of any JSON-parsing handler.

It prints frames/s (best of ``--repeats`` runs, variants interleaved), µs per
frame overall and per kind, p50/p99 of one call's latency, and the peak RSS
growth of a fresh process running the replay once. Then it checks, in the same
run, that the final books of every CCF variant, cryptofeed and a plain-dict
rebuild following Binance's procedure are identical, and that the CCF variants
emit identical records. Exit status 1 when a check fails.

    python bench/bench_collector.py                      # BTCUSDT
    python bench/bench_collector.py --symbols btcusdt,ethusdt --repeats 7
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccf.config import shared_dir
from ccf.records import Book, Record
from ccf.sources.binance import book as book_impl
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.recording import read_frames

STREAMS = ("depth@100ms", "trade", "bookTicker")
DEPTH = 20
DRAIN_EVERY = 5000  # records, like the collector's batch
KINDS = ("depth", "trade", "bookTicker")
CRYPTOFEED = "cryptofeed 2.4.1"
ORJSON = "orjson.loads only"


def ccf_variant(impl: str) -> str:
    return f"ccf, {'C' if impl == 'c' else 'Python'} book"


# -- the recording ------------------------------------------------------------------------


@dataclass
class Recording:
    symbol: str
    frames: list[tuple[int, str]]  # (ts_recv ns, frame), the snapshot line included
    snap_at: int  # index of the REST snapshot line
    kinds: list[str]  # per frame: depth | trade | bookTicker | snapshot

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.kinds)


def load_recording(data_dir: Path, symbol: str) -> Recording:
    files = [data_dir / f"spot_{symbol}_{day}.jsonl.gz" for day in ("20240808", "20240809")]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        sys.exit(
            f"missing recordings {missing}: set CCF_SHARED or --data to the folder "
            "holding spot_<symbol>_2024080[89].jsonl.gz"
        )
    frames = [fr for f in files for fr in read_frames(f)]
    snap_at = next(i for i, (_, f) in enumerate(frames) if f.startswith('{"lastUpdateId"'))
    kinds = []
    for i, (_, f) in enumerate(frames):
        if i == snap_at:
            kinds.append("snapshot")
        else:
            stream = f[11 : f.find('"', 11)]  # {"stream":"btcusdt@depth@100ms",...
            kinds.append(stream.split("@")[1])  # depth | trade | bookTicker
    return Recording(symbol, frames, snap_at, kinds)


# -- the variants: each returns (seconds, latencies ns or None, final state) ---------------


@dataclass
class Run:
    seconds: float
    latencies: list[int] | None = None
    state: Any = None
    records: list[Record] = field(default_factory=list)


def run_ccf(rec: Recording, impl: str, *, latency: bool = False, keep: bool = False) -> Run:
    """One replay through BinanceFeed with ``impl`` books (set before the feed is built)."""
    saved, book_impl.DEFAULT_IMPL = book_impl.DEFAULT_IMPL, impl
    try:
        feed = BinanceFeed((rec.symbol,), STREAMS, book_depth=DEPTH)
    finally:
        book_impl.DEFAULT_IMPL = saved
    sym, frames, snap_at = rec.symbol, rec.frames, rec.snap_at
    handle, out, kept = feed.handle, [], []
    lat: list[int] | None = [] if latency else None
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for i, (ts, frame) in enumerate(frames):
        if i == snap_at:
            feed.on_snapshot(sym, frame, ts, out)
        elif lat is None:
            handle(frame, ts, out)
        else:
            t = clock()
            handle(frame, ts, out)
            lat.append(clock() - t)
        if len(out) >= DRAIN_EVERY:
            if keep:
                kept += out
            out.clear()
    seconds = time.perf_counter() - t0
    kept += out
    return Run(seconds, lat, feed, kept if keep else [])


class _SnapshotHttp:
    """Stands in for cryptofeed's ``http_conn``: serves the recorded REST snapshot."""

    def __init__(self, body: str) -> None:
        self.body = body

    async def read(self, *args: Any, **kwargs: Any) -> str:
        return self.body

    async def close(self) -> None:
        pass


async def _noop(*args: Any) -> None:
    pass


_cryptofeed_ready: dict[str, Any] = {}


def cryptofeed_setup(data_dir: Path) -> Any:
    """Load cryptofeed's symbol table from the recorded exchangeInfo (no network)."""
    if "Binance" not in _cryptofeed_ready:
        from cryptofeed.exchanges import Binance
        from cryptofeed.symbols import Symbols

        with open(data_dir / "fixtures" / "BINANCE.0", encoding="utf-8") as f:
            line = f.readline()  # "<url> -> <ts>: {json}"
        info = json.loads(line.split(": ", 1)[1])
        Symbols.set("BINANCE", *Binance._parse_symbol_data(info))
        _cryptofeed_ready["Binance"] = Binance
    return _cryptofeed_ready["Binance"]


def cryptofeed_frames(rec: Recording) -> list[tuple[float, str]]:
    """The frames cryptofeed reads: trades in the aggTrade shape, receive times in s."""
    out = []
    for i, (ts, frame) in enumerate(rec.frames):
        if i == rec.snap_at:
            continue
        if rec.kinds[i] == "trade":  # 2.4.1 drops raw @trade frames; "a" carries the id
            msg = json.loads(frame)
            data = msg["data"]
            data["e"], data["a"] = "aggTrade", data.pop("t")
            frame = json.dumps(msg, separators=(",", ":"))
        out.append((ts / 1e9, frame))
    return out


def run_cryptofeed(
    rec: Recording, frames: list[tuple[float, str]], data_dir: Path, *, latency: bool = False
) -> Run:
    from cryptofeed.defines import L2_BOOK, TICKER, TRADES
    from cryptofeed.symbols import Symbols

    binance = cryptofeed_setup(data_dir)
    normalized, _ = Symbols.get("BINANCE")  # "BTC-USDT" -> "BTCUSDT"
    pair = next(std for std, ex in normalized.items() if ex == rec.symbol.upper())

    async def replay() -> Run:
        feed = binance(
            symbols=[pair],
            channels=[L2_BOOK, TRADES, TICKER],
            callbacks={L2_BOOK: _noop, TRADES: _noop, TICKER: _noop},
        )
        feed.http_conn = _SnapshotHttp(rec.frames[rec.snap_at][1])
        conn, handle = object(), feed.message_handler
        lat: list[int] | None = [] if latency else None
        clock = time.perf_counter_ns
        t0 = time.perf_counter()
        if lat is None:
            for ts, frame in frames:
                await handle(frame, conn, ts)
        else:
            for ts, frame in frames:
                t = clock()
                await handle(frame, conn, ts)
                lat.append(clock() - t)
        seconds = time.perf_counter() - t0
        return Run(seconds, lat, (feed, pair))

    return asyncio.run(replay())


def run_orjson(frames: list[str]) -> Run:
    import orjson

    loads = orjson.loads
    t0 = time.perf_counter()
    for frame in frames:
        loads(frame)
    return Run(time.perf_counter() - t0)


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    best_s: float = math.inf
    latencies: list[int] | None = None  # from the latency run with the smallest total
    peak_mib: float | None = None


def timer_overhead_ns() -> int:
    clock = time.perf_counter_ns
    return min(-(clock() - clock()) for _ in range(20_000))


def bench_feeds(rec: Recording, args: argparse.Namespace) -> dict[str, Result]:
    """Best-of-N throughput and one-call latency per variant, variants interleaved."""
    variants: dict[str, Callable[[bool], Run]] = {
        ccf_variant(impl): (lambda lat, impl=impl: run_ccf(rec, impl, latency=lat))
        for impl in args.impls
    }
    if args.cryptofeed:
        cf_frames = cryptofeed_frames(rec)  # rewritten before any timed loop
        variants[CRYPTOFEED] = lambda lat: run_cryptofeed(rec, cf_frames, args.data, latency=lat)
    results = {name: Result(name) for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            gc.collect()
            results[name].best_s = min(results[name].best_s, run(False).seconds)
    for _ in range(max(1, args.repeats // 2)):
        for name, run in variants.items():
            gc.collect()
            lat = run(True).latencies
            old = results[name].latencies
            if old is None or sum(lat) < sum(old):
                results[name].latencies = lat
    raw = [f for i, (_, f) in enumerate(rec.frames) if i != rec.snap_at]
    results[ORJSON] = Result(ORJSON, min(run_orjson(raw).seconds for _ in range(args.repeats)))
    if args.memory:
        for name in variants:
            results[name].peak_mib = peak_rss_growth_mib(name, rec.symbol, args)
    return results


def peak_rss_growth_mib(variant: str, symbol: str, args: argparse.Namespace) -> float | None:
    """Run one replay in a fresh process; its peak RSS above what it held before the run."""
    cmd = [
        sys.executable,
        __file__,
        "--memory-child",
        variant,
        "--symbols",
        symbol,
        "--data",
        str(args.data),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  (memory run of {variant!r} failed: {proc.stderr.strip()[-300:]})")
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise OSError(f"{field_name} not in /proc/self/status")


def memory_child(args: argparse.Namespace) -> None:
    """``--memory-child VARIANT``: replay once, print the peak RSS growth in MiB."""
    rec = load_recording(args.data, args.symbols[0])
    variant = args.memory_child
    if variant == CRYPTOFEED:
        frames = cryptofeed_frames(rec)
        cryptofeed_setup(args.data)
        run = lambda: run_cryptofeed(rec, frames, args.data)  # noqa: E731
    else:
        impl = next(i for i in book_impl.IMPLEMENTATIONS if ccf_variant(i) == variant)
        run = lambda: run_ccf(rec, impl)  # noqa: E731
    gc.collect()
    before = _rss_kib("VmRSS")
    try:  # reset the high-water mark so loading the frames does not count (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass
    run()
    print((_rss_kib("VmHWM") - before) / 1024)


# -- checking -----------------------------------------------------------------------------


def rebuild(rec: Recording) -> tuple[dict[float, float], dict[float, float], int]:
    """The book by Binance's procedure with plain dicts: snapshot, drop diffs with
    ``u <= lastUpdateId``, require ``U <= last + 1``, set or delete each level."""
    snap = json.loads(rec.frames[rec.snap_at][1])
    asks = {float(p): float(q) for p, q in snap["asks"]}
    bids = {float(p): float(q) for p, q in snap["bids"]}
    last = snap["lastUpdateId"]
    for i, (_, frame) in enumerate(rec.frames):
        if rec.kinds[i] != "depth":
            continue
        d = json.loads(frame)["data"]
        if d["u"] <= last:
            continue
        if d["U"] > last + 1:
            raise AssertionError(f"the recording has a gap before U={d['U']}")
        for side, levels in ((bids, d["b"]), (asks, d["a"])):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
        last = d["u"]
    return asks, bids, last


def top_levels(asks: dict[float, float], bids: dict[float, float], depth: int) -> tuple:
    out: list[float] = []
    for side, prices in ((asks, sorted(asks)[:depth]), (bids, sorted(bids, reverse=True)[:depth])):
        for p in prices:
            out += [p, side[p]]
        out += [math.nan] * (2 * (depth - len(prices)))
    return tuple(out)


def same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(
        x == y or (x != x and y != y) for x, y in zip(a, b, strict=True)
    )


def verify(rec: Recording, args: argparse.Namespace) -> tuple[list[Record], bool]:
    """Final books of every variant equal the plain-dict rebuild; CCF variants emit the
    same records. Returns the first CCF variant's records and whether all checks held."""
    asks, bids, last = rebuild(rec)
    levels = len(asks) + len(bids)
    books: dict[str, tuple[dict, dict, int]] = {"dict rebuild": (asks, bids, last)}
    runs = {impl: run_ccf(rec, impl, keep=True) for impl in args.impls}
    for impl, run in runs.items():
        b = run.state.state[rec.symbol].book
        books[ccf_variant(impl)] = (b.asks.levels(), b.bids.levels(), b.update_id)
    if args.cryptofeed:
        feed, pair = run_cryptofeed(rec, cryptofeed_frames(rec), args.data).state
        side = feed._l2_book[pair].book
        books[CRYPTOFEED] = (
            {float(p): float(q) for p, q in side.asks.to_dict().items()},
            {float(p): float(q) for p, q in side.bids.to_dict().items()},
            feed.last_update_id[pair],
        )
    ok = True
    bad = [name for name, b in books.items() if b != books["dict rebuild"]]
    print(
        f"  check: final books of {' == '.join(books)}: "
        + ("identical" if not bad else f"DIFFER ({', '.join(bad)})")
        + f" ({levels:,} levels, lastUpdateId {last})"
    )
    ok &= not bad
    first, *others = runs.values()
    ccf_books = [r for r in first.records if type(r) is Book]
    last_top_ok = bool(ccf_books) and same(ccf_books[-1].levels, top_levels(asks, bids, DEPTH))
    print(
        f"  check: last Book record's top {DEPTH} == the rebuild's: "
        + ("yes" if last_top_ok else "NO")
    )
    ok &= last_top_ok
    if others:
        equal = all(
            len(r.records) == len(first.records)
            and all(
                repr(x) == repr(y)  # repr: NaN equals NaN
                for x, y in zip(r.records, first.records, strict=True)
            )
            for r in others
        )
        print(
            f"  check: {' and '.join(ccf_variant(i) for i in runs)} emit identical records "
            f"({len(first.records):,} records, {len(ccf_books):,} books): "
            + ("yes" if equal else "NO")
        )
        ok &= equal
    return first.records, ok


# -- output -------------------------------------------------------------------------------


def print_environment(args: argparse.Namespace) -> None:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"Python {platform.python_version()} on {cpu}, {os.cpu_count()} cores, load {load}; "
        f"book implementations here: {', '.join(book_impl.IMPLEMENTATIONS)}; "
        f"best of {args.repeats} runs, one core"
    )


def print_table(rec: Recording, results: dict[str, Result]) -> None:
    counts = rec.counts
    n = len(rec.frames) - 1  # the snapshot line is not a frame
    overhead = timer_overhead_ns()
    print(
        f"\n{rec.symbol.upper()}: {n:,} frames ({counts['depth']:,} depth, "
        f"{counts['trade']:,} trade, {counts['bookTicker']:,} bookTicker)"
    )
    head = (
        f"  {'variant':<22}{'frames/s':>11}{'µs/frame':>10}{'µs/depth':>10}{'µs/trade':>10}"
        f"{'µs/ticker':>10}{'p50 µs':>8}{'p99 µs':>8}{'peak MiB':>10}{'vs cf':>7}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    cf = results.get(CRYPTOFEED)
    for r in results.values():
        per_kind = {k: "" for k in KINDS}
        p50 = p99 = ""
        if r.latencies is not None:
            lat = [max(0, x - overhead) for x in r.latencies]
            by_kind: dict[str, list[int]] = {k: [] for k in KINDS}
            kinds = (k for i, k in enumerate(rec.kinds) if i != rec.snap_at)
            for x, k in zip(lat, kinds, strict=True):
                by_kind[k].append(x)
            per_kind = {k: f"{statistics.fmean(v) / 1e3:.2f}" for k, v in by_kind.items() if v}
            qs = statistics.quantiles(lat, n=100)
            p50, p99 = f"{qs[49] / 1e3:.2f}", f"{qs[98] / 1e3:.1f}"
        peak = "" if r.peak_mib is None else f"{r.peak_mib:.1f}"
        ratio = f"{cf.best_s / r.best_s:.2f}x" if cf else ""
        print(
            f"  {r.name:<22}{n / r.best_s:>11,.0f}{r.best_s / n * 1e6:>10.2f}"
            f"{per_kind['depth']:>10}{per_kind['trade']:>10}{per_kind['bookTicker']:>10}"
            f"{p50:>8}{p99:>8}{peak:>10}{ratio:>7}"
        )
    print(
        f"  (frames/s and µs/frame: best full run; per-kind µs and p50/p99: one call of "
        f"handle(), timed separately, timer overhead of {overhead} ns removed; peak MiB: "
        f"RSS growth of a fresh process replaying once)"
    )


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Frames/s through parse + local book + records: CCF's BinanceFeed (each book "
        "implementation) vs cryptofeed 2.4.1 on the real recordings, with checks "
        "that every final book is identical.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--symbols",
        default="btcusdt",
        help="comma-separated recordings to replay: btcusdt, ethusdt",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs per variant; the best counts (this machine may be noisy)",
    )
    p.add_argument(
        "--impls",
        default=",".join(book_impl.IMPLEMENTATIONS),
        help="CCF book implementations to run: c, python",
    )
    p.add_argument(
        "--no-cryptofeed",
        dest="cryptofeed",
        action="store_false",
        help="skip cryptofeed (e.g. where it is not installed)",
    )
    p.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the peak-memory runs (one fresh process per variant)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=shared_dir() / "data" / "binance",
        help="folder with spot_<symbol>_2024080[89].jsonl.gz and fixtures/BINANCE.0",
    )
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.symbols = [s.strip().lower() for s in args.symbols.split(",") if s.strip()]
    args.impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    unknown = [i for i in args.impls if i not in book_impl.IMPLEMENTATIONS]
    if unknown:
        p.error(
            f"--impls {','.join(unknown)} not available here; choose from "
            f"{','.join(book_impl.IMPLEMENTATIONS)} (the C book needs `pip install -e .` "
            "with a C compiler)"
        )
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.cryptofeed:
        try:
            import cryptofeed  # noqa: F401
        except ImportError:
            p.error(
                "cryptofeed is not installed: `pip install -e '.[dev]'`, or pass --no-cryptofeed"
            )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return 0
    print_environment(args)
    ok = True
    for symbol in args.symbols:
        rec = load_recording(args.data, symbol)
        results = bench_feeds(rec, args)
        print_table(rec, results)
        records, passed = verify(rec, args)
        ok &= passed
        # Further sections append here, fed with this symbol's CCF ``records``.
        del records
    print("\nall checks passed" if ok else "\nCHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
