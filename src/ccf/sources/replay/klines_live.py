"""Live ``<symbol>@kline_<interval>`` streams, built as the replay plays, equal to REST klines.

Each subscribed stream keeps the candle it is building: on every due tick
it folds the trades played since (the same :func:`.bars.fold` REST uses, on
exact integers, so the pieces add up to REST's bar field for field).

- ``x:false`` updates go out every 2000 ms of event time (1000 ms for ``1s``),
  at the first frame played at or after each multiple plus that delay (below),
  so the candle of the moment is the open one: after its predecessor closed.
- The closing ``x:true`` goes out at the first frame played at or after the
  candle's end plus the symbol's largest recorded delay between a trade's
  time ``T`` and its frame's event time (about 0.2 s in the recordings):
  frames play in event-time order, so no trade of the candle can come later.
- An interval without trades closes too, as an empty candle (o = h = l = c =
  the previous close, v = n = 0, f = L = -1). Before a symbol's first trade
  there is no candle.
- A CSV symbol's minute streams send one ``x:true`` per candle, once all its
  one-minute bars have closed (:class:`.candles.Candles` places them in time).

A stream's state starts when it is first seen subscribed, from the tape, so
a late subscriber's candles are whole; it is dropped when nobody listens.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

from ccf.sources.replay.bars import (
    INTERVALS_MS,
    Bar,
    bucket_open,
    empty_bar,
    fold,
    kline_event,
    merge,
    merge_runs,
)
from ccf.sources.replay.candles import Candles
from ccf.sources.replay.history import Played, played
from ccf.sources.replay.market import Market
from ccf.sources.replay.wire import dumps

log = logging.getLogger(__name__)

_NEVER = 1 << 62
_PUSH_MS = 2000
_PUSH_1S_MS = 1000


@dataclass(slots=True)
class _Stream:
    name: str
    sym: str
    interval: str
    iv: int
    csv: bool
    open_ms: int  # the candle being built
    pos: int  # next trade ordinal (or CSV bar index) to fold in
    prev_close: int | None
    bar: Bar | None = None
    next_push: int = _NEVER
    due: int = 0


def _next_push(iv_ms: int, event_ms: int, lag_ms: int) -> int:
    """The next update time after ``event_ms``: a multiple of the push period, plus ``lag_ms``."""
    push = _PUSH_1S_MS if iv_ms == 1000 else _PUSH_MS
    return (event_ms - lag_ms) // push * push + push + lag_ms


def parse_kline_stream(name: str) -> tuple[str, str] | None:
    """``"btcusdt@kline_1m"`` -> ``("btcusdt", "1m")``; None for other streams."""
    sym, _, rest = name.partition("@")
    if not rest.startswith("kline_"):
        return None
    interval = rest[6:]
    return (sym, interval) if interval in INTERVALS_MS else None


class LiveKlines:
    """Kline frames due at an event time: the player calls :meth:`tick` from ``due_ms`` on."""

    def __init__(self, market: Market, candles: Candles, subs: Mapping[str, object]) -> None:
        self._market = market
        self._candles = candles
        self._subs = subs
        self._streams: dict[str, _Stream] = {}
        self.due_ms = _NEVER

    def wake(self) -> None:
        """A subscription changed: look for kline streams at the next frame."""
        self.due_ms = -_NEVER

    def tick(self, event_ms: int) -> list[tuple[str, bytes]]:
        """``(stream, payload)`` for every update due at ``event_ms``, in order."""
        self._sync(event_ms)
        out: list[tuple[str, bytes]] = []
        for st in self._streams.values():
            if event_ms >= st.due:
                if st.csv:
                    self._advance_csv(st, event_ms, out)
                else:
                    self._advance_trades(st, event_ms, out)
        self.due_ms = min((st.due for st in self._streams.values()), default=_NEVER)
        return out

    def _sync(self, event_ms: int) -> None:
        for name in [n for n in self._streams if not self._subs.get(n)]:
            del self._streams[name]
        for name in self._subs:
            if name in self._streams or not self._subs.get(name):
                continue
            parsed = parse_kline_stream(name)
            if parsed is None or parsed[0] not in self._candles.symbols:
                continue
            st = self._start(name, *parsed, event_ms)
            if st is not None:
                self._streams[name] = st
                log.info("part=exchange kline stream started stream=%s", name)

    def _start(self, name: str, sym: str, interval: str, event_ms: int) -> _Stream | None:
        iv = INTERVALS_MS[interval]
        if self._candles.uses_csv(sym, iv):
            bars, offset = self._candles.csv[sym], self._candles.csv_offset(sym)
            open_ms = bucket_open(event_ms, iv)
            pos = bisect_left(bars, (open_ms - offset,))
            prev = bars[pos - 1].c if pos else None
            return _Stream(name, sym, interval, iv, True, open_ms, pos, prev)
        v = played(self._market, sym)
        if v is None:
            return None
        open_ms = bucket_open(event_ms - v.tape.lag_ms, iv)
        pos = v.trade_at(open_ms)
        prev = v.trade_price(pos - 1) if pos else None
        st = _Stream(name, sym, interval, iv, False, open_ms, pos, prev)
        st.next_push = _next_push(iv, event_ms, v.tape.lag_ms)
        return st

    def _emit(
        self,
        st: _Stream,
        bar: Bar | None,
        closed: bool,
        event_ms: int,
        out: list[tuple[str, bytes]],
    ) -> None:
        if bar is None:
            if st.prev_close is None:
                return  # nothing traded yet: no candle
            bar = empty_bar(st.open_ms, st.prev_close)
        payload = kline_event(st.sym, st.interval, st.iv, bar, closed, event_ms)
        out.append((st.name, dumps(payload)))

    def _advance_trades(self, st: _Stream, event_ms: int, out: list[tuple[str, bytes]]) -> None:
        v = played(self._market, st.sym)
        assert v is not None
        while True:
            end = st.open_ms + st.iv
            self._fold_trades(st, v, end)
            if event_ms < end + v.tape.lag_ms:
                break
            self._emit(st, st.bar, True, event_ms, out)
            if st.bar is not None:
                st.prev_close = st.bar.c
            st.open_ms, st.bar = end, None
            if st.prev_close is None:  # before the first trade: jump to the next one's candle
                nxt = v.trade_time(st.pos) if st.pos < v.trades else event_ms - v.tape.lag_ms
                st.open_ms = max(st.open_ms, bucket_open(nxt, st.iv))
        if event_ms >= st.next_push:
            if event_ms < st.open_ms + st.iv:  # past its end it only waits for its closing frame
                self._emit(st, st.bar, False, event_ms, out)
            st.next_push = _next_push(st.iv, event_ms, v.tape.lag_ms)
        st.due = min(st.open_ms + st.iv + v.tape.lag_ms, st.next_push)

    @staticmethod
    def _fold_trades(st: _Stream, v: Played, end: int) -> None:
        """Fold the played trades of the current candle (times before ``end``) into it."""
        hi = st.pos
        while hi < v.trades and v.trade_time(hi) < end:
            # jump by pass: the tape is sorted, so one binary search per pass
            k, i = divmod(hi, v.tape.count)
            stop = min(v.tape.count, i + v.trades - hi)
            j = bisect_left(v.tape.times_ms, end - v.dt(k), i, stop)
            hi += j - i
            if j < stop:
                break
        if hi == st.pos:
            return
        parts = [
            fold(v.tape, i, j, st.iv, v.dt(k), k * v.tape.id_step)
            for k, i, j in v.segments(st.pos, hi)
        ]
        folded = merge_runs(parts)
        bar = folded[0] if st.bar is None else merge(st.bar, folded[0])
        st.bar, st.pos = bar, hi

    def _advance_csv(self, st: _Stream, event_ms: int, out: list[tuple[str, bytes]]) -> None:
        bars = self._candles.csv[st.sym]
        offset = self._candles.csv_offset(st.sym)
        available = self._candles.csv_available(st.sym, event_ms)
        while True:
            end = st.open_ms + st.iv
            while st.pos < available and bars[st.pos].open_ms + offset < end:
                b = bars[st.pos]._replace(open_ms=st.open_ms)
                st.bar = b if st.bar is None else merge(st.bar, b)
                st.pos += 1
            if event_ms < end:
                break
            if st.bar is not None or st.pos < len(bars):  # nothing once the file has ended
                self._emit(st, st.bar, True, event_ms, out)
            if st.bar is not None:
                st.prev_close = st.bar.c
            st.open_ms, st.bar = end, None
        st.due = st.open_ms + st.iv
