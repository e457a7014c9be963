"""Klines: bars built from the trades the replay has played, plus optional 1m CSV history.

Trade bars carry the same exchange times as the stream (pass period and
rebase shift included). CSV bars keep the times in their files: they are
history of their own, served whatever the replay clock says.
"""

from __future__ import annotations

import csv
import gzip
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccf.sources.replay.market import Market
from ccf.sources.replay.timeline import TradeTape
from ccf.sources.replay.wire import NS_PER_MS

INTERVALS_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
_WEEK_ORIGIN_MS = 4 * 86_400_000  # weekly candles open on Monday; 1970-01-01 was a Thursday

# open_ms, open, high, low, close, volume, quote volume, trades, taker-buy volume, taker-buy quote
Bar = tuple[int, float, float, float, float, float, float, int, float, float]


def bucket_open(t_ms: int, iv_ms: int) -> int:
    origin = _WEEK_ORIGIN_MS if iv_ms == INTERVALS_MS["1w"] else 0
    return t_ms - (t_ms - origin) % iv_ms


def _merge_bar(a: Bar, b: Bar) -> Bar:
    """``a`` then ``b`` as one bar (b is later)."""
    return (
        a[0],
        a[1],
        max(a[2], b[2]),
        min(a[3], b[3]),
        b[4],
        a[5] + b[5],
        a[6] + b[6],
        a[7] + b[7],
        a[8] + b[8],
        a[9] + b[9],
    )


def tape_bars(
    tape: TradeTape, iv_ms: int, shift_ms: int, lo: int = 0, hi: int | None = None
) -> list[Bar]:
    """Bars of ``iv_ms`` from trades of indexes [lo, hi), trade times shifted by ``shift_ms``."""
    hi = len(tape.times_ms) if hi is None else hi
    bars: list[Bar] = []
    cur: list[Any] | None = None
    times, prices, qtys, buys = tape.times_ms, tape.prices, tape.qtys, tape.taker_buy
    for i in range(lo, hi):
        t = bucket_open(times[i] + shift_ms, iv_ms)
        p, q = prices[i], qtys[i]
        bq = q if buys[i] else 0.0
        if cur is None or cur[0] != t:
            if cur is not None:
                bars.append(tuple(cur))  # type: ignore[arg-type]
            cur = [t, p, p, p, p, q, p * q, 1, bq, p * bq]
        else:
            cur[2] = max(cur[2], p)
            cur[3] = min(cur[3], p)
            cur[4] = p
            cur[5] += q
            cur[6] += p * q
            cur[7] += 1
            cur[8] += bq
            cur[9] += p * bq
    if cur is not None:
        bars.append(tuple(cur))  # type: ignore[arg-type]
    return bars


def aggregate_bars(bars: Sequence[Bar], iv_ms: int) -> list[Bar]:
    """Re-bucket sorted bars into ``iv_ms`` bars (a coarser or equal interval)."""
    out: list[Bar] = []
    for b in bars:
        t = bucket_open(b[0], iv_ms)
        if out and out[-1][0] == t:
            out[-1] = _merge_bar(out[-1], b)
        else:
            out.append((t, *b[1:]))  # type: ignore[arg-type]
    return out


def load_kline_csv(path: Path) -> tuple[str, list[Bar]]:
    """``(symbol, 1m bars)`` from ``SYMBOL-1m-...csv[.gz]``.

    Columns: open_time_ms,open,high,low,close,volume.

    The file has no quote volume, trade count or taker volume: quote volume is
    estimated at the typical price (h+l+c)/3, the others are 0.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    bars: list[Bar] = []
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for row in csv.DictReader(f):
            o, h, lo, c, v = (float(row[k]) for k in ("open", "high", "low", "close", "volume"))
            bars.append(
                (int(row["open_time_ms"]), o, h, lo, c, v, v * (h + lo + c) / 3, 0, 0.0, 0.0)
            )
    bars.sort()
    return path.name.split("-", 1)[0].lower(), bars


def select_window(
    bars: Sequence[Bar], iv_ms: int, start: int | None, end: int | None, limit: int, now_ms: int
) -> list[Bar]:
    """Binance kline paging over sorted, merged bars; empty intervals between bars are filled.

    With ``start`` the oldest ``limit`` bars opening at or after it, else the
    newest ``limit`` bars opening at or before ``end`` (and never after now).
    """
    hi = now_ms if end is None else min(end, now_ms)
    lo = -(10**18) if start is None else start
    filled: list[Bar] = []
    for b in bars:
        if not lo <= b[0] <= hi:
            continue
        while filled and filled[-1][0] + iv_ms < b[0]:
            c = filled[-1][4]
            filled.append((filled[-1][0] + iv_ms, c, c, c, c, 0.0, 0.0, 0, 0.0, 0.0))
        filled.append(b)
    return filled[:limit] if start is not None else filled[-limit:]


def merge_sorted_bars(groups: Sequence[Sequence[Bar]]) -> list[Bar]:
    """Merge bar lists; bars with the same open time (pass boundaries) combine in order."""
    out: list[Bar] = []
    for b in sorted((b for g in groups for b in g), key=lambda b: b[0]):
        if out and out[-1][0] == b[0]:
            out[-1] = _merge_bar(out[-1], b)
        else:
            out.append(b)
    return out


def bar_row(b: Bar, iv_ms: int) -> list[Any]:
    """The 12-column Binance kline array."""
    f = "{:.8f}".format
    return [
        b[0],
        f(b[1]),
        f(b[2]),
        f(b[3]),
        f(b[4]),
        f(b[5]),
        b[0] + iv_ms - 1,
        f(b[6]),
        b[7],
        f(b[8]),
        f(b[9]),
        "0",
    ]


def window_bounds(
    iv_ms: int, start: int | None, end: int | None, limit: int, now_ms: int
) -> tuple[int, int]:
    """Trade-time range [lo, hi) that can hold the answer's bars."""
    if start is not None:
        lo = bucket_open(start, iv_ms)
        hi = lo + (limit + 1) * iv_ms
        if end is not None:
            hi = min(hi, end + iv_ms)
    else:
        top = bucket_open(now_ms if end is None else min(end, now_ms), iv_ms)
        lo, hi = top - limit * iv_ms, top + iv_ms
    return lo, min(hi, now_ms + 1)


class Candles:
    """Klines from the trades the market has played so far (all passes), plus optional 1m CSVs.

    Bars of a finished pass never change, so they are cached per (symbol, interval, time shift).
    """

    _CACHE_MAX = 4096

    def __init__(self, market: Market, csv_bars: dict[str, list[Bar]] | None = None) -> None:
        self._market = market
        self._csv = csv_bars or {}
        self._cache: dict[tuple[str, int, int], list[Bar]] = {}

    def _pass_bars(self, sym: str, iv_ms: int, k: int, now_ms: int, shift_ms: int) -> list[Bar]:
        tape = self._market.timeline.tapes[sym]
        shift = shift_ms + k * self._market.timeline.period_ns // NS_PER_MS
        if k < self._market.pass_index:
            key = (sym, iv_ms, shift)
            if key not in self._cache:
                if len(self._cache) >= self._CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = tape_bars(tape, iv_ms, shift)
            return self._cache[key]
        return tape_bars(tape, iv_ms, shift, 0, bisect_right(tape.times_ms, now_ms - shift))

    def rows(
        self,
        sym: str,
        iv_ms: int,
        start: int | None,
        end: int | None,
        limit: int,
        now_ms: int,
        shift_ms: int = 0,
    ) -> list[list[Any]]:
        """Binance's 12-column kline rows.

        ``now_ms`` and the paging bounds are exchange times: recorded trade times
        plus the pass period and ``shift_ms`` (the clock's rebase).
        """
        csv_bars = self._csv.get(sym)
        # CSV history may lie after the recording: it is served whatever the replay clock says
        horizon = max(now_ms, csv_bars[-1][0] + 59_999) if csv_bars else now_ms
        lo, hi = window_bounds(iv_ms, start, end, limit, horizon)
        groups: list[Sequence[Bar]] = []
        tape = self._market.timeline.tapes.get(sym)
        if tape is not None and tape.times_ms:
            period = self._market.timeline.period_ns // NS_PER_MS
            k_lo = max(0, (lo - shift_ms - tape.times_ms[-1]) // period)
            k_hi = min(self._market.pass_index, (hi - shift_ms - tape.times_ms[0]) // period)
            groups += [
                self._pass_bars(sym, iv_ms, k, now_ms, shift_ms) for k in range(k_lo, k_hi + 1)
            ]
        if csv_bars and iv_ms % 60_000 == 0:
            i, j = bisect_left(csv_bars, (lo,)), bisect_left(csv_bars, (hi,))
            groups.append(aggregate_bars(csv_bars[i:j], iv_ms))
        bars = select_window(merge_sorted_bars(groups), iv_ms, start, end, limit, horizon)
        return [bar_row(b, iv_ms) for b in bars]
