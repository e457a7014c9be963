"""What the shared recordings hold, read independently of CCF's parser.

Tests compare the collector's store with these facts: the trade ids sent
after each symbol's snapshot, and the book rebuilt with plain dicts at every
diff, following Binance's procedure step by step.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ccf.config import shared_dir
from ccf.sources.recording import read_frames

SYMBOLS = ("btcusdt", "ethusdt")


def recording_files(symbols: tuple[str, ...] = SYMBOLS) -> list[Path]:
    base = shared_dir() / "data" / "binance"
    return [base / f"spot_{s}_{day}.jsonl.gz" for s in symbols for day in ("20240808", "20240809")]


@dataclass
class Recorded:
    symbol: str
    snapshot_id: int
    trades: dict[int, tuple[int, float, float]] = field(default_factory=dict)  # id -> T, p, q
    books: dict[int, tuple[float, ...]] = field(default_factory=dict)  # u -> top-N flat levels
    diff_ids: list[tuple[int, int]] = field(default_factory=list)  # (U, u) after the snapshot


def _top(asks: dict[float, float], bids: dict[float, float], depth: int) -> tuple[float, ...]:
    out: list[float] = []
    for prices, book in ((heapq.nsmallest(depth, asks), asks), (heapq.nlargest(depth, bids), bids)):
        for p in prices:
            out += [p, book[p]]
        out += [math.nan] * (2 * (depth - len(prices)))
    return tuple(out)


@cache
def recorded(symbol: str, depth: int = 20) -> Recorded:
    """Replay ``symbol``'s files the way the official procedure says, with plain dicts."""
    lines = [f for p in recording_files((symbol,)) for _, f in read_frames(p)]
    snap_at = next(i for i, f in enumerate(lines) if f.startswith('{"lastUpdateId"'))
    snap = json.loads(lines[snap_at])
    rec = Recorded(symbol, snap["lastUpdateId"])
    asks = {float(p): float(q) for p, q in snap["asks"]}
    bids = {float(p): float(q) for p, q in snap["bids"]}
    last = snap["lastUpdateId"]
    for n, line in enumerate(lines):
        if n == snap_at:
            continue
        frame = json.loads(line)
        data = frame["data"]
        if frame["stream"].endswith("@trade"):
            if n < snap_at:
                continue  # the replay starts at the snapshot
            rec.trades[data["t"]] = (data["T"], float(data["p"]), float(data["q"]))
        elif "@depth" in frame["stream"]:
            if data["u"] <= last:
                continue  # stale: not newer than the snapshot (buffered diffs count)
            assert data["U"] <= last + 1, "the recording itself has a gap"
            for side, book in (("a", asks), ("b", bids)):
                for p, q in data[side]:
                    if float(q) == 0:
                        book.pop(float(p), None)
                    else:
                        book[float(p)] = float(q)
            last = data["u"]
            rec.diff_ids.append((data["U"], data["u"]))
            rec.books[last] = _top(asks, bids, depth)
    return rec


def same_levels(a: tuple[float | None, ...], b: tuple[float, ...]) -> bool:
    """Stored levels (NULL for a missing level) equal reference levels (NaN for missing)."""
    return len(a) == len(b) and all(
        (x is None or (isinstance(x, float) and math.isnan(x))) if math.isnan(y) else x == y
        for x, y in zip(a, b, strict=True)
    )
