"""Candle math shared by REST klines and the live kline streams: pure functions on int bars.

Every decimal is an integer of 1e-8 (see :mod:`.tape`), so folding trades
into a bar is exact and associative: the stream folds a bar piece by piece
as trades are played, REST folds a whole pass at once (and caches it), and
both give the same bar, field for field.

An empty interval (no trades) is a bar with ``o = h = l = c`` = the previous
close, ``v = n = 0`` and ``f = L = -1``, as Binance sends it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ccf.sources.replay.tape import TradeTape, fmt8

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
MINUTE_MS = 60_000
DAY_MS = 86_400_000
MONTH = "1M"  # calendar months: not a fixed length, so not in INTERVALS_MS
_WEEK_ORIGIN_MS = 4 * 86_400_000  # weekly candles open on Monday; 1970-01-01 was a Thursday


class Bar(NamedTuple):
    """One candle; prices and volumes in units of 1e-8, trade ids -1 when unknown."""

    open_ms: int
    o: int
    h: int
    l: int  # noqa: E741 - Binance's name
    c: int
    v: int  # base volume
    q: int  # quote volume
    n: int  # trades
    bv: int  # taker-buy base volume
    bq: int  # taker-buy quote volume
    first_id: int
    last_id: int

    @property
    def empty(self) -> bool:
        return self.v == 0 and self.n == 0


def bucket_open(t_ms: int, iv_ms: int) -> int:
    """Open time of the ``iv_ms`` candle holding ``t_ms`` (UTC, weeks from Monday)."""
    origin = _WEEK_ORIGIN_MS if iv_ms == INTERVALS_MS["1w"] else 0
    return t_ms - (t_ms - origin) % iv_ms


def month_open(t_ms: int) -> int:
    """Open time of the calendar month (UTC) holding ``t_ms``."""
    d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
    return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)


def next_month(open_ms: int) -> int:
    """Open time of the month after the one opening at ``open_ms``."""
    d = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(y, m, 1, tzinfo=UTC).timestamp() * 1000)


def by_month(days: Sequence[Bar]) -> list[Bar]:
    """Sorted daily bars regrouped into calendar-month bars."""
    out: list[Bar] = []
    for b in days:
        t = month_open(b.open_ms)
        if out and out[-1].open_ms == t:
            out[-1] = merge(out[-1], b)
        else:
            out.append(b._replace(open_ms=t))
    return out


def month_page(months: Sequence[Bar], start: int | None, end: int | None, limit: int) -> list[Bar]:
    """Binance's klines paging over month bars: from ``startTime`` the oldest, else the newest."""
    opens = [b.open_ms for b in months]
    hi = len(months) if end is None else bisect_right(opens, end)
    if start is not None:
        lo = bisect_left(opens, start)
        return list(months[lo : min(hi, lo + limit)])
    return list(months[max(0, hi - limit) : hi])


def empty_bar(open_ms: int, close: int) -> Bar:
    return Bar(open_ms, close, close, close, close, 0, 0, 0, 0, 0, -1, -1)


def merge(a: Bar, b: Bar) -> Bar:
    """``a`` then ``b`` as one bar (``b`` later); an empty part adds nothing."""
    if b.empty:
        return a
    if a.empty:
        return b._replace(open_ms=a.open_ms)
    return Bar(
        a.open_ms,
        a.o,
        max(a.h, b.h),
        min(a.l, b.l),
        b.c,
        a.v + b.v,
        a.q + b.q,
        a.n + b.n,
        a.bv + b.bv,
        a.bq + b.bq,
        a.first_id if a.first_id >= 0 else b.first_id,
        b.last_id if b.last_id >= 0 else a.last_id,
    )


def fold(tape: TradeTape, lo: int, hi: int, iv_ms: int, dt_ms: int, id_shift: int) -> list[Bar]:
    """Bars of trades ``[lo, hi)`` of the tape, their times shifted by ``dt_ms``."""
    times, prices = tape.times_ms, tape.prices
    bars: list[Bar] = []
    i = lo
    while i < hi:
        t0 = bucket_open(times[i] + dt_ms, iv_ms)
        j = bisect_left(times, t0 + iv_ms - dt_ms, i, hi)
        window = prices[i:j]
        bars.append(
            Bar(
                t0,
                prices[i],
                max(window),
                min(window),
                prices[j - 1],
                sum(tape.qtys[i:j]),
                sum(tape.quotes[i:j]),
                j - i,
                sum(tape.buy_qtys[i:j]),
                sum(tape.buy_quotes[i:j]),
                tape.ids[i] + id_shift,
                tape.ids[j - 1] + id_shift,
            )
        )
        i = j
    return bars


def merge_runs(groups: Sequence[Sequence[Bar]]) -> list[Bar]:
    """Concatenate time-ordered bar lists; bars sharing an open time (pass joins) merge."""
    out: list[Bar] = []
    for group in groups:
        for b in group:
            if out and out[-1].open_ms == b.open_ms:
                out[-1] = merge(out[-1], b)
            else:
                out.append(b)
    return out


def rebucket(bars: Sequence[Bar], iv_ms: int, offset_ms: int = 0) -> list[Bar]:
    """Sorted bars moved by ``offset_ms`` and regrouped into ``iv_ms`` bars (coarser or equal)."""
    out: list[Bar] = []
    for b in bars:
        t = bucket_open(b.open_ms + offset_ms, iv_ms)
        if out and out[-1].open_ms == t:
            out[-1] = merge(out[-1], b)
        else:
            out.append(b._replace(open_ms=t))
    return out


def fill(bars: Sequence[Bar], iv_ms: int, first: int, last: int, seed: int | None) -> list[Bar]:
    """Bars opening in ``[first, last]``, empty intervals filled from the previous close.

    ``bars`` are the non-empty bars in that range, sorted; ``seed`` is the close
    before ``first`` (None: nothing traded before, so no candle until the first bar).
    """
    out: list[Bar] = []
    close = seed
    t = first
    for b in bars:
        if close is not None:
            out += (empty_bar(x, close) for x in range(t, b.open_ms, iv_ms))
        out.append(b)
        close, t = b.c, b.open_ms + iv_ms
    if close is not None:
        out += (empty_bar(x, close) for x in range(t, last + 1, iv_ms))
    return out


def window(
    iv_ms: int, start: int | None, end: int | None, limit: int, bottom: int, top: int
) -> tuple[int, int] | None:
    """Open times ``(first, last)`` a klines call asks for, among candles ``[bottom, top]``.

    With ``startTime`` the oldest ``limit`` candles opening at or after it, else
    the newest ``limit`` opening at or before ``endTime`` (or ``top``).
    """
    last = top if end is None else min(top, bucket_open(end, iv_ms))
    if start is not None:
        first = bucket_open(start, iv_ms)
        if first < start:
            first += iv_ms
        first = max(first, bottom)
        last = min(last, first + (limit - 1) * iv_ms)
    else:
        first = max(last - (limit - 1) * iv_ms, bottom)
    return (first, last) if first <= last else None


def kline_row(b: Bar, iv_ms: int) -> list[Any]:
    """The 12-column ``/api/v3/klines`` row."""
    return [
        b.open_ms,
        fmt8(b.o),
        fmt8(b.h),
        fmt8(b.l),
        fmt8(b.c),
        fmt8(b.v),
        b.open_ms + iv_ms - 1,
        fmt8(b.q),
        b.n,
        fmt8(b.bv),
        fmt8(b.bq),
        "0",
    ]


def kline_event(
    symbol: str, interval: str, iv_ms: int, b: Bar, closed: bool, event_ms: int
) -> dict[str, Any]:
    """The ``<symbol>@kline_<interval>`` payload (binance_formats.md 2.7)."""
    sym = symbol.upper()
    k = {
        "t": b.open_ms,
        "T": b.open_ms + iv_ms - 1,
        "s": sym,
        "i": interval,
        "f": b.first_id,
        "L": b.last_id,
        "o": fmt8(b.o),
        "c": fmt8(b.c),
        "h": fmt8(b.h),
        "l": fmt8(b.l),
        "v": fmt8(b.v),
        "n": b.n,
        "x": closed,
        "q": fmt8(b.q),
        "V": fmt8(b.bv),
        "Q": fmt8(b.bq),
        "B": "0",
    }
    return {"e": "kline", "E": event_ms, "s": sym, "k": k}
