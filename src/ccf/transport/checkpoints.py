"""Where a stateful consumer may commit: the offset a new owner must start replaying from.

A feature worker's output for a symbol is durable up to its last stored bucket ``L``. A
new owner resumes the way ``ccf features`` does after a restart: it replays ``warmup``
of history before the first bucket to write, ``floor = L + bucket - warmup``, to rebuild
the features' state, and writes only the buckets after ``L``. So the committed offset of
an input may pass a record only if the new owner does not need it: its *relevance* (the
latest event time it matters for) is before its symbol's floor.

Records of one partition are not in event-time order (several symbols share it; a gap is
written when it closes, long after it started), so the rule is kept exactly: per symbol,
the running maximum relevance of everything released before an offset. That maximum only
grows with the offset, so the offsets that may be committed are a prefix, and the newest
of them is found by bisection among marks: the offset of a record that raised its
symbol's maximum by ``granularity`` or more, with the maxima of everything before it.
The newest offset (after the last record seen) is always a candidate too.

A gap still open at its record is needed until the record that closes it (same symbol,
stream and start) has been seen: the engine flags buckets by it for as long as it is open.

>>> from ccf.records import Trade
>>> cp = Checkpoints(["btcusdt"], granularity_ns=1)
>>> for off, ts in enumerate([10, 20, 30]):
...     cp.seen(off, Trade("binance", "btcusdt", off, 1.0, 1.0, "buy", ts, ts))
>>> cp.safe_offset({"btcusdt": 25}), cp.safe_offset({"btcusdt": 31}), cp.safe_offset({})
(2, 3, 0)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ccf.records import NS_PER_MS, AggTrade, Book, Candle, Gap, Quote, Trade

NEVER = -(2**63)
"""The floor of a symbol with nothing durable yet: all of its records are needed."""

_BY_EVENT_TIME = (Book, Trade, Quote, AggTrade)


class Checkpoints:
    """Offsets of one input (a topic partition) and what replaying from each would skip."""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        gap_streams: Collection[str] = ("book", "trade", "candle"),
        granularity_ns: int = 100 * NS_PER_MS,
    ) -> None:
        self._index = {s: i for i, s in enumerate(symbols)}
        self._gap_streams = frozenset(gap_streams)  # gaps of other streams flag nothing
        self._symbols = tuple(symbols)
        self._g = granularity_ns
        self._high = [NEVER] * len(symbols)  # running max relevance per symbol
        self._marked = list(self._high)  # per symbol, the relevance that made its last mark
        self._offsets: list[int] = []  # marks: offsets, ascending...
        self._highs: list[tuple[int, ...]] = []  # ...and the maxima of what precedes each
        self._tail: int | None = None  # next offset after the newest record seen
        self._open: dict[tuple[str, str, int], int] = {}  # open gap -> its record's offset

    def seen(self, offset: int, record: Any) -> None:
        """``record`` at ``offset`` was handed to the engine (in offset order)."""
        self._tail = offset + 1
        t = type(record)
        i = self._index.get(getattr(record, "symbol", None))  # type: ignore[arg-type]
        if i is None:
            return  # not a symbol this consumer computes: never needed again
        if t in _BY_EVENT_TIME:
            relevance = record.ts_event
        elif t is Candle:
            relevance = record.close_time + NS_PER_MS  # the engine files it at its close
        elif t is Gap:
            if record.stream not in self._gap_streams:
                return
            key = (record.symbol, record.stream, record.start_ts)
            if record.end_ts is None:
                self._open.setdefault(key, offset)
                return
            self._open.pop(key, None)
            relevance = record.end_ts
        else:
            return
        high = self._high
        if relevance > high[i]:
            if relevance - self._marked[i] >= self._g:
                # replaying from here skips only what came before this record
                self._offsets.append(offset)
                self._highs.append(tuple(high))
                self._marked[i] = relevance
            high[i] = relevance

    def safe_offset(self, floors: Mapping[str, int]) -> int | None:
        """The newest offset a new owner may start from, given each symbol's floor (event
        time ns; a symbol not named counts as :data:`NEVER`); None before any record. The
        first offset seen is always safe: it is where this consumer itself started."""
        limits = [floors.get(s, NEVER) for s in self._symbols]

        def ok(highs: Sequence[int]) -> bool:
            return all(h == NEVER or h < lim for h, lim in zip(highs, limits, strict=True))

        best: int | None = None
        if self._tail is not None and ok(self._high):
            best = self._tail
        else:
            lo, hi = 0, len(self._offsets)  # marks[:lo] ok, marks[hi:] not
            while lo < hi:
                mid = (lo + hi) // 2
                if ok(self._highs[mid]):
                    lo = mid + 1
                else:
                    hi = mid
            if lo:
                best = self._offsets[lo - 1]
        if self._open and best is not None:
            best = min(best, min(self._open.values()))
        return best

    def forget_before(self, offset: int) -> None:
        """Drop marks before a committed ``offset``: later commits only move forward."""
        cut = bisect_right(self._offsets, offset)
        if cut > 1:
            del self._offsets[: cut - 1]
            del self._highs[: cut - 1]
