"""Events/s through the feature engine, against the original system's pandas approach.

    python bench/bench_features.py                     # BTCUSDT, default feature set
    python bench/bench_features.py --repeats 5 --baseline-events 8000

The events are the collector's own records for the real BTCUSDT recording
(``$CCF_SHARED/data/binance``): its feed turns the frames into top-20 books
(one per depth update) and trades, which are then put in event-time order,
the order the engine applies them in (live and batch alike). Variants, in
one run on the same events:

- ``ccf engine, default set``: the incremental engine with the full default
  feature set from ``conf/ccf.yaml``.
- ``ccf engine, log-ratio set``: the engine with just the features the
  baseline computes (m_p, the book's prices, their log-ratios to m_p, the
  mid's log return), for a like-for-like ratio.
- ``pandas, 300 s buffer``: the original system's approach. Every event is
  appended to a DataFrame holding the last 300 s; at each new 1 s bucket the
  buffer is resampled to 1 s (last), forward-filled, and the log-ratio
  features are recomputed over the whole buffer; the newest complete row is
  the output.
- ``pandas, 300 s buffer, batched appends``: the same, but the events of a
  bucket are appended in one concat at the bucket's end (a kinder baseline).

Then the live runner's cycle, with and without checkpoints, in the same run: the
events in polls of 0.2 s of event time (what a caught-up ``ccf features`` reads
each ``poll_interval_s``), the rows each poll closes written to a SQLite feature
store in one transaction, once as before (rows only) and once with the symbol's
checkpoint (its pickled feature state) in the same transaction. The rows of both
must be the same bytes; a restore from every 50th checkpoint must continue
bit-equal to the uninterrupted run.

The rows both sides compute are compared, bucket by bucket, bit for bit (NaN
equal to NaN): numpy's vectorized ``np.log`` and the C library's ``log`` (the
kinds use ``math.log``) round a few results differently, so log-ratios 1 ulp
apart are counted separately; the script exits with status 1 if any bucket is
missing or any value differs by more. Peak memory is
the tracemalloc peak of one separate run of each variant.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import struct
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ccf.config import load_settings, shared_dir
from ccf.features.checkpoint import Checkpoint
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.online import OnlineRings
from ccf.features.spec import FeatureSet, feature_set
from ccf.features.store import FeatureStore
from ccf.records import Book, Trade, book_columns
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.recording import read_frames

DEPTH = 5  # the default set's book_depth
BUFFER_S = 300
S = 1_000_000_000
LOGRATIO_SET = [
    "features.features=[{kind: m_p}, {kind: get, columns: [a_p_*, b_p_*]}, "
    "{kind: relative, columns: [a_p_*, b_p_*], op: lograt, reference: m_p}, "
    "{kind: relative, columns: m_p, op: lograt, shift: 1}]"
]
PRICES = [c for c in book_columns(DEPTH) if "_p_" in c]


def load_events(data: Path, symbol: str) -> list[Any]:
    """The collector's books and trades for the recording, in event-time order."""
    files = [data / f"spot_{symbol}_{day}.jsonl.gz" for day in ("20240808", "20240809")]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        sys.exit(f"missing recordings {missing}: set CCF_SHARED or --data")
    feed = BinanceFeed((symbol,), ("depth@100ms", "trade", "bookTicker"), book_depth=20)
    out: list[Any] = []
    for f in files:
        for ts, frame in read_frames(f):
            if frame.startswith('{"lastUpdateId"'):
                feed.on_snapshot(symbol, frame, ts, out)
            else:
                feed.handle(frame, ts, out)
    events = [r for r in out if type(r) in (Book, Trade)]
    # the engine's order: (event time, stream, id)
    events.sort(
        key=lambda r: (
            (r.ts_event, 1, r.trade_id) if type(r) is Trade else (r.ts_event, 0, r.update_id)
        )
    )
    return events


# -- the variants: each returns {bucket start: {column: value}} -----------------------------


def run_engine(fs: FeatureSet, events: Sequence[Any]) -> list[FeatureRow]:
    engine = FeatureEngine(fs, [events[0].symbol])
    push = engine.push
    rows: list[FeatureRow] = []
    for r in events:
        out = push(r)
        if out:
            rows += out
    return rows


def run_live_cycle(
    fs: FeatureSet,
    events: Sequence[Any],
    path: Path,
    every_ns: int | None,
    poll_ns: int = S // 5,
) -> tuple[list[FeatureRow], list[Checkpoint]]:
    """The live runner's cycle: a poll's events into the engine, its rows (and, unless
    ``every_ns`` is None, the symbol's checkpoint once ``every_ns`` of event time passed
    since the last) into the store in one transaction."""
    sym = events[0].symbol
    engine = FeatureEngine(fs, [sym])
    store = FeatureStore(path, fs)
    push = engine.push
    rows: list[FeatureRow] = []
    saved: list[Checkpoint] = []
    poll: list[FeatureRow] = []
    next_poll = events[0].ts_event + poll_ns
    for r in events:
        if r.ts_event >= next_poll:
            if poll:
                cps = []
                if every_ns is not None and (not saved or poll[-1].ts - saved[-1].ts >= every_ns):
                    cps = [engine.checkpoint(sym)]
                store.write(poll, cps)  # type: ignore[arg-type]
                saved += cps  # type: ignore[arg-type]
                rows += poll
                poll = []
            next_poll = r.ts_event - r.ts_event % poll_ns + poll_ns
        out = push(r)
        if out:
            poll += out
    if poll:
        store.write(poll)
        rows += poll
    store.close()
    return rows, saved


def packed(rows: Sequence[FeatureRow]) -> list[tuple[int, bytes]]:
    """Rows as exact bytes (NaN equal to NaN)."""
    return [(r.ts, struct.pack(f"<{len(r.values)}d", *r.values)) for r in rows]


def restores_equal(
    fs: FeatureSet, events: Sequence[Any], rows: Sequence[FeatureRow], saved: list[Checkpoint]
) -> tuple[int, int]:
    """(restores tried, restores whose continuation differs from ``rows``)."""
    tried = bad = 0
    for cp in saved[::50]:
        engine = FeatureEngine(fs, [cp.symbol])
        engine.restore(cp)
        end = cp.ts + fs.bucket_ns
        got: list[FeatureRow] = []
        for r in events:
            if r.ts_event >= end:
                got += engine.push(r)
        want = [r for r in rows if r.ts > cp.ts]
        tried += 1
        bad += packed(got) != packed(want) or not got
    return tried, bad


def _book_row(b: Book) -> dict[str, float]:
    # the top DEPTH levels of a top-20 record, as the original kept them
    lv = b.levels
    row = {"ts": b.ts_event}
    for i in range(DEPTH):
        row[f"a_p_{i}"], row[f"a_q_{i}"] = lv[2 * i], lv[2 * i + 1]
        row[f"b_p_{i}"], row[f"b_q_{i}"] = lv[40 + 2 * i], lv[40 + 2 * i + 1]
    return row


def _features(buf: pd.DataFrame, bucket_end: int) -> pd.Series | None:
    """Resample the whole buffer to 1 s, forward-fill, recompute the log-ratio features;
    the newest complete bucket's row."""
    books = buf[buf["kind"] == 0]
    if books.empty:
        return None
    frame = books[PRICES].set_index(pd.to_datetime(books["ts"], unit="ns"))
    bars = frame.resample("1s").last().ffill()
    bars = bars[bars.index < pd.Timestamp(bucket_end, unit="ns")]
    if bars.empty:
        return None
    m_p = (bars["a_p_0"] + bars["b_p_0"]) / 2
    out = pd.DataFrame({"m_p": m_p})
    for c in PRICES:
        out[f"get_{c}"] = bars[c]
    for c in PRICES:
        out[f"lograt_{c}_m_p"] = np.log(bars[c] / m_p)
    out["lograt_m_p_1"] = np.log(m_p / m_p.shift(1))
    return out.iloc[-1]


def run_pandas(events: Sequence[Any], batched: bool) -> dict[int, dict[str, float]]:
    cols = ["ts", "kind", *book_columns(DEPTH), "price", "qty"]
    buf = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    pending: list[dict[str, float]] = []
    out: dict[int, dict[str, float]] = {}
    bucket = None
    for r in events:
        b = r.ts_event - r.ts_event % S
        if bucket is not None and b != bucket:
            if batched and pending:
                buf = pd.concat([buf, pd.DataFrame(pending, columns=cols)], ignore_index=True)
                pending = []
            buf = buf[buf["ts"] >= b - BUFFER_S * S]
            row = _features(buf, bucket + S)
            if row is not None:
                out[bucket] = row.to_dict()
        bucket = b
        if type(r) is Book:
            item = {**_book_row(r), "kind": 0}
        else:
            item = {"ts": r.ts_event, "kind": 1, "price": r.price, "qty": r.qty}
        if batched:
            pending.append(item)
        else:
            buf = pd.concat([buf, pd.DataFrame([item], columns=cols)], ignore_index=True)
    return out


# -- checking and reporting -----------------------------------------------------------------


def ulps(a: float, b: float) -> int:
    """How many doubles apart two values are (0: the same bits; NaN equals NaN)."""
    if math.isnan(a) or math.isnan(b):
        return 0 if math.isnan(a) and math.isnan(b) else 2**63

    def key(x: float) -> int:
        i = struct.unpack("<q", struct.pack("<d", x))[0]
        return i if i >= 0 else -(2**63) - i  # monotonic over the doubles

    return abs(key(a) - key(b))


def compare(
    fs: FeatureSet, rows: Sequence[FeatureRow], base: dict[int, dict[str, float]]
) -> tuple[int, int, int, list[str]]:
    """(buckets, values compared, values 1 ulp apart, values further apart) over the
    baseline's columns. numpy's vectorized log and the C library's log (the kinds use
    ``math.log``) may round a result differently: 1 ulp, reported apart."""
    idx = {c: i for i, c in enumerate(fs.float_columns)}
    n = values = one_ulp = 0
    diffs: list[str] = []
    for r in rows:
        want = base.get(r.ts)
        if want is None:
            continue
        n += 1
        for c, v in want.items():
            values += 1
            d = ulps(r.values[idx[c]], v)
            if d == 1 and c.startswith("lograt_"):
                one_ulp += 1
            elif d:
                diffs.append(f"bucket {r.ts} {c}: engine {r.values[idx[c]]!r} pandas {v!r}")
    return n, values, one_ulp, diffs


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def peak_mib(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def online_reads(fs: FeatureSet, rows: Sequence[FeatureRow], repeats: int = 2000) -> None:
    """Median time to read a model's window: the in-process ring, and SQLite from a
    read-only connection (what another process does)."""
    sym = rows[0].symbol
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.sqlite"
        FeatureStore(path, fs).write(rows)
        reader = FeatureStore(path, fs, readonly=True)
        rings = OnlineRings(fs.float_columns, 1000)
        rings.add(rows)
        print(
            f"  online window reads, {len(fs.float_columns)} float columns (median of {repeats}):"
        )
        for n in (60, 300):
            for name, read in (
                ("in-process ring", rings.last),
                ("SQLite, other process", reader.last),
            ):
                times = []
                for _ in range(repeats):
                    t = time.perf_counter_ns()
                    read(sym, n)
                    times.append(time.perf_counter_ns() - t)
                print(f"    last {n:>3} rows, {name:<22}{statistics.median(times) / 1e3:>8.1f} µs")
        reader.close()


def live_cycle(fs: FeatureSet, events: Sequence[Any], repeats: int) -> bool:
    """Rows only against rows + checkpoint per write, side by side; True when both wrote
    the same rows and every restore tried continued bit-equal."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for poll_ns, what in ((S // 5, "caught up"), (60 * S, "catching up")):
            print(
                f"  live cycle, {what}: polls of {poll_ns / S:g} s of event time, each poll's "
                "rows in one transaction (best of the runs):"
            )
            for label, every in (
                ("rows only (before)", None),
                ("+ checkpoint every write", 0),
                ("+ checkpoint every 5 s (after)", 5 * S),
            ):
                best = math.inf
                for i in range(repeats):
                    path = Path(tmp) / f"{poll_ns}-{every}-{i}.sqlite"
                    t = time.perf_counter()
                    done = run_live_cycle(fs, events, path, every, poll_ns)
                    best = min(best, time.perf_counter() - t)
                if poll_ns == S // 5:
                    runs[label] = done
                rows, saved = done
                size = statistics.median(len(c.state) for c in saved) if saved else 0
                print(
                    f"    {label:<32}{len(events) / best:>10,.0f} events/s  {len(rows):>5,} rows "
                    f"{len(saved):>5,} checkpoints, median {size:,.0f} B each"
                )
    (before, _), (after, saved), (after5, _) = runs.values()
    engine = FeatureEngine(fs, [events[0].symbol])
    for r in events[: len(events) // 2]:
        engine.push(r)
    sym = events[0].symbol
    t_cp, _ = best_of(repeats, lambda: [engine.checkpoint(sym) for _ in range(1000)])
    print(f"    one checkpoint (pickle of the default set's state): {t_cp * 1e3:.1f} µs")
    tried, bad = restores_equal(fs, events, after, saved)
    same = packed(before) == packed(after) == packed(after5)
    print(
        f"    rows identical with and without checkpoints: {'yes' if same else 'NO'}; "
        f"restores from {tried} checkpoints continuing bit-equal: {tried - bad} of {tried}"
    )
    return same and bad == 0 and tried > 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--symbol", default="btcusdt")
    p.add_argument("--data", type=Path, default=shared_dir() / "data" / "binance")
    p.add_argument("--repeats", type=int, default=3, help="engine runs; the best counts")
    p.add_argument(
        "--baseline-events",
        type=int,
        default=0,
        help="time the per-event pandas baseline on the first N events only (0 = all)",
    )
    args = p.parse_args(argv)

    events = load_events(args.data, args.symbol)
    n_books = sum(type(r) is Book for r in events)
    full = feature_set(load_settings(environ={}).features)
    small = feature_set(load_settings(LOGRATIO_SET, environ={}).features)
    print(
        f"{args.symbol.upper()}: {len(events):,} events ({n_books:,} books, "
        f"{len(events) - n_books:,} trades) over "
        f"{(events[-1].ts_event - events[0].ts_event) / S:.0f} s; "
        f"Python {platform.python_version()}, pandas {pd.__version__}, numpy "
        f"{np.__version__}, {platform.machine()}"
    )
    results: list[tuple[str, int, float, float]] = []  # name, events, seconds, peak MiB
    engine_rows = {}
    old_rule = feature_set(load_settings(["features.watermark=lateness"], environ={}).features)
    variants = (
        ("default set", full),
        ("default set, old rule", old_rule),
        ("log-ratio set", small),
    )
    for label, fs in variants:  # old rule: watermark=lateness, no per-stream watermark
        secs, engine_rows[label] = best_of(args.repeats, lambda fs=fs: run_engine(fs, events))
        mib = peak_mib(lambda fs=fs: run_engine(fs, events))
        results.append((f"ccf engine, {label} ({len(fs.columns)} cols)", len(events), secs, mib))
    rows_full, rows_small = engine_rows["default set"], engine_rows["log-ratio set"]
    t_batched, base = best_of(1, lambda: run_pandas(events, batched=True))
    results.append(
        (
            "pandas 300 s buffer, batched appends",
            len(events),
            t_batched,
            peak_mib(lambda: run_pandas(events, batched=True)),
        )
    )
    sub = events[: args.baseline_events] if args.baseline_events else events
    t_naive, _ = best_of(1, lambda: run_pandas(sub, batched=False))
    results.append(
        (
            "pandas 300 s buffer (original)",
            len(sub),
            t_naive,
            peak_mib(lambda: run_pandas(sub[: min(len(sub), 5000)], batched=False)),
        )
    )

    naive_rate = results[-1][1] / results[-1][2]
    head = (
        f"  {'variant':<42}{'events':>8}{'seconds':>9}{'events/s':>12}{'µs/event':>10}"
        f"{'peak MiB':>10}{'vs original':>13}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for name, n, secs, mib in results:
        rate = n / secs
        print(
            f"  {name:<42}{n:>8,}{secs:>9.3f}{rate:>12,.0f}{secs / n * 1e6:>10.2f}"
            f"{mib:>10.1f}{rate / naive_rate:>12,.0f}x"
        )
    online_reads(full, rows_full)
    ok = live_cycle(full, events, args.repeats)
    for label, fs, rows in (("default set", full, rows_full), ("log-ratio set", small, rows_small)):
        n, values, one_ulp, diffs = compare(fs, rows, base)
        print(
            f"  rows vs pandas ({label}): {n:,} buckets ({len(base):,} from pandas), "
            f"{values:,} values: {values - one_ulp - len(diffs):,} identical bits, {one_ulp} "
            f"log-ratios 1 ulp apart (numpy's log vs libm's), {len(diffs)} different"
        )
        for d in diffs[:10]:
            print("    " + d)
        ok = ok and not diffs and n == len(rows) > 0  # every engine row checked
    print(
        "  (events/s: best of the engine runs, one run of each pandas variant; the original's "
        "peak MiB is from its first 5,000 events; rows compared on m_p, get_*, lograt_*)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
