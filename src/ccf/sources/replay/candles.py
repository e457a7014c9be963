"""REST klines: candles of the trades played so far, or of a one-minute CSV played alongside.

Two sources, one per (symbol, interval):

- **trades**: bars folded from the played trades (:mod:`.bars`), every pass
  with the times it was sent with. Empty intervals are filled from the
  previous close up to the candle holding the replay's current time, as on
  Binance; there are no candles before a symbol's first trade.
- **csv** (``replay.klines``, intervals that are whole minutes), in two parts:

  * *history*: the file's bars at their own times, when the file ends before
    the replay starts (the default: recordings are rebased to now), so a
    backfill finds the symbol's past;
  * *live*: the same bars again, moved by a whole number of minutes so the
    first opens at the first minute boundary at or after the replay's first
    event, and played at the replay's pace: a bar exists once its close time
    has been played, when its ``@kline_*`` frame is sent (:mod:`.klines_live`).

  Candles are counted as on Binance, where paging skips a span without
  candles: the history's end and the live start are months apart. The file
  has no trade count, quote or taker volume (0) nor trade ids (-1). A symbol
  with a CSV takes its minute candles from it; ``1s`` still come from its trades.

Bars of a finished pass never change, so they are cached per (symbol, interval, pass).
"""

from __future__ import annotations

import csv
import gzip
import zlib
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

from ccf.sources.replay.bars import (
    DAY_MS,
    MINUTE_MS,
    Bar,
    bucket_open,
    by_month,
    empty_bar,
    fill,
    fold,
    kline_row,
    merge_runs,
    month_page,
    next_month,
    rebucket,
    window,
)
from ccf.sources.replay.clock import ReplayClock
from ccf.sources.replay.history import Played, played
from ccf.sources.replay.market import Market
from ccf.sources.replay.tape import to_units
from ccf.sources.replay.wire import NS_PER_MS

_ALL_DAYS = 1 << 20  # every daily candle (1M klines regroup them)


_CSV_COLUMNS = ("open_time_ms", "open", "high", "low", "close", "volume")


def _csv_bar(row: dict[str, str]) -> Bar:
    o, h, lo, c, v = (to_units(row[k]) for k in _CSV_COLUMNS[1:])
    if min(o, h, lo, c, v) < 0 or (v and not 0 < lo <= min(o, c) <= max(o, c) <= h):
        raise ValueError("prices must be positive with low <= open, close <= high; volume >= 0")
    return Bar(int(row["open_time_ms"]), o, h, lo, c, v, 0, 0, 0, 0, -1, -1)


def load_kline_csv(path: Path) -> tuple[str, list[Bar]]:
    """``(symbol, 1m bars)`` from ``SYMBOL-1m-...csv[.gz]``, gaps filled with empty bars.

    Columns: open_time_ms,open,high,low,close,volume (no trade count, quote or
    taker volume: they stay 0, trade ids -1). A missing column or a row that
    is not a candle raises ValueError naming the file and the line.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[Bar] = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            reader = csv.DictReader(f)
            missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(
                    f"{path}: missing column(s) {', '.join(missing)}; a klines file has the "
                    f"header {','.join(_CSV_COLUMNS)}"
                )
            for row in reader:
                try:
                    rows.append(_csv_bar(row))
                except (ValueError, TypeError, ArithmeticError) as e:
                    raise ValueError(
                        f"{path} line {reader.line_num}: not a candle ({e}): {row}"
                    ) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: a damaged gzip file ({e})") from None
    rows.sort()
    bars: list[Bar] = []
    for b in rows:
        if bars and b.open_ms <= bars[-1].open_ms:
            continue  # a repeated minute: the first one stays
        if bars:
            close = bars[-1].c
            bars += (
                empty_bar(t, close)
                for t in range(bars[-1].open_ms + MINUTE_MS, b.open_ms, MINUTE_MS)
            )
        bars.append(b)
    return path.name.split("-", 1)[0].lower(), bars


class Candles:
    """Kline rows for REST, and the CSV placement the live streams share."""

    _CACHE_MAX = 4096

    def __init__(
        self, market: Market, clock: ReplayClock, csv_bars: dict[str, list[Bar]] | None = None
    ) -> None:
        self._market = market
        self._clock = clock
        self.csv = {s: bars for s, bars in (csv_bars or {}).items() if bars}
        self._csv_opens = {s: [b.open_ms for b in bars] for s, bars in self.csv.items()}
        self._cache: dict[tuple[str, int, int, int], list[Bar]] = {}
        self._regrouped: dict[tuple[str, int, int], tuple[list[Bar], list[int]]] = {}

    @property
    def symbols(self) -> set[str]:
        """Symbols with candles: recorded ones and those with a CSV."""
        return set(self._market.timeline.symbols) | set(self.csv)

    def uses_csv(self, sym: str, iv_ms: int) -> bool:
        return sym in self.csv and iv_ms % MINUTE_MS == 0

    def _replay_start_ms(self) -> int:
        """Exchange time of the replay's first event (before the start: if it started now)."""
        return self._market.timeline.start_ns // NS_PER_MS + self._clock.shift_ms

    def csv_offset(self, sym: str) -> int:
        """Milliseconds added to the CSV's times: its first bar opens as the replay starts."""
        start = self._replay_start_ms()
        return -(-start // MINUTE_MS) * MINUTE_MS - self.csv[sym][0].open_ms

    def csv_available(self, sym: str, event_ms: int | None) -> int:
        """How many CSV bars have closed by ``event_ms`` (moved by :meth:`csv_offset`)."""
        if event_ms is None or not self.csv.get(sym):
            return 0
        return bisect_right(self._csv_opens[sym], event_ms - MINUTE_MS - self.csv_offset(sym))

    def rows(
        self, sym: str, iv_ms: int, start: int | None, end: int | None, limit: int
    ) -> list[list[Any]]:
        """Binance's 12-column kline rows, paged as ``/api/v3/klines`` pages them."""
        return [kline_row(b, iv_ms) for b in self.bars(sym, iv_ms, start, end, limit)]

    def bars(
        self, sym: str, iv_ms: int, start: int | None, end: int | None, limit: int
    ) -> list[Bar]:
        if self.uses_csv(sym, iv_ms):
            return self._csv_rows(sym, iv_ms, start, end, limit)
        view = played(self._market, sym)
        return self._trade_rows(view, sym, iv_ms, start, end, limit) if view else []

    def month_rows(
        self, sym: str, start: int | None, end: int | None, limit: int
    ) -> list[list[Any]]:
        """``interval=1M``: daily candles regrouped by calendar month (UTC), then paged."""
        months = by_month(self.bars(sym, DAY_MS, None, None, _ALL_DAYS))
        return [
            kline_row(b, next_month(b.open_ms) - b.open_ms)
            for b in month_page(months, start, end, limit)
        ]

    # --- trades --------------------------------------------------------------

    def _trade_rows(
        self, v: Played, sym: str, iv: int, start: int | None, end: int | None, limit: int
    ) -> list[Bar]:
        if not v.trades or v.event_ms is None:
            return []
        bottom = bucket_open(v.trade_time(0), iv)
        span = window(iv, start, end, limit, bottom, bucket_open(v.event_ms, iv))
        if span is None:
            return []
        first, last = span
        lo, hi = v.trade_at(first), v.trade_at(last + iv)
        seed = v.trade_price(lo - 1) if lo else None
        groups = []
        for k, i, j in v.segments(lo, hi):
            if k < v.current_pass:  # a finished pass: cut its cached bars to the window
                bars = self._pass_bars(v, sym, iv, k)
                groups.append(bars[bisect_left(bars, (first,)) : bisect_left(bars, (last + 1,))])
            else:
                groups.append(fold(v.tape, i, j, iv, v.dt(k), k * v.tape.id_step))
        return fill(merge_runs(groups), iv, first, last, seed)

    def _pass_bars(self, v: Played, sym: str, iv: int, k: int) -> list[Bar]:
        key = (sym, iv, k, v.shift_ms)
        bars = self._cache.get(key)
        if bars is None:
            if len(self._cache) >= self._CACHE_MAX:
                self._cache.clear()
            bars = fold(v.tape, 0, v.tape.count, iv, v.dt(k), k * v.tape.id_step)
            self._cache[key] = bars
        return bars

    # --- CSV -------------------------------------------------------------------

    def _csv_rows(
        self, sym: str, iv: int, start: int | None, end: int | None, limit: int
    ) -> list[Bar]:
        """The oldest ``limit`` candles from ``start``, else the newest up to ``end``."""
        bars = self.csv[sym]
        parts = []  # (candles, their opens, how many exist yet), oldest part first
        if bars[-1].open_ms + MINUTE_MS <= self._replay_start_ms():
            past, past_opens = self._regroup(sym, iv, 0)
            parts.append((past, past_opens, len(past)))
        n = self.csv_available(sym, self._market.event_ms)
        if n:
            offset = self.csv_offset(sym)
            live, opens = self._regroup(sym, iv, offset)
            last = bucket_open(bars[n - 1].open_ms + offset, iv)
            count = bisect_right(opens, last)
            # the newest candle holds only the minutes closed so far
            newest = bisect_left(self._csv_opens[sym], last - offset, 0, n)
            live = live[: count - 1] + rebucket(bars[newest:n], iv, offset)
            parts.append((live, opens, count))
        hi_open = end if end is not None else 1 << 62
        out: list[Bar] = []
        if start is not None:
            for candles, opens, count in parts:
                i = bisect_left(opens, start, 0, count)
                j = min(bisect_right(opens, hi_open, 0, count), i + limit - len(out))
                out += candles[i:j]
            return out
        for candles, opens, count in reversed(parts):
            j = bisect_right(opens, hi_open, 0, count)
            out[:0] = candles[max(0, j - limit + len(out)) : j]
        return out

    def _regroup(self, sym: str, iv: int, offset: int) -> tuple[list[Bar], list[int]]:
        """The CSV moved by ``offset`` in ``iv`` candles, and their opens (cached)."""
        key = (sym, iv, offset)
        got = self._regrouped.get(key)
        if got is None:
            if len(self._regrouped) >= self._CACHE_MAX:
                self._regrouped.clear()
            candles = rebucket(self.csv[sym], iv, offset)
            got = self._regrouped[key] = (candles, [b.open_ms for b in candles])
        return got
