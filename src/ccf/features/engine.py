"""The feature engine: raw records in, one row per symbol per closed bucket out.

Per symbol, events wait in a small reorder buffer until the watermark passes
them, and are then applied to the open bucket in one order: (event time,
stream, id). A bucket is closed, run through the configured features and
emitted once the watermark passes its end, so a row is never half full. An
event older than the watermark is *late*: counted and dropped, never mixed in.

The watermark (``watermark="streams"``, the default) is per stream: each
stream feeding a symbol (books, trades; or candles) arrives in order, so once
every stream has passed a time in event time nothing older can come. A stream
silent for ``idle_ns`` on the receive clock (the newest ``ts_recv`` the
symbol has seen) is left out: a calm second with no trades does not hold the
books' buckets back. The watermark never trails the newest event by more than
the allowed lateness, the old rule (``watermark="lateness"``), which bounds
the wait for a stream that is slow but not silent. The decisions depend only
on the records and their order of receipt, so live and batch, fed the same
records in receive order, drop the same late events and emit equal rows bit
for bit.

Each event costs O(1): appended to the sorted buffer (an out-of-order one is
inserted a few places back), taken from its front, added into the bucket's
running sums. Features run once per closed bucket, not per event.

    engine = FeatureEngine(feature_set(settings.features), ["btcusdt"])
    for record in records:
        for row in engine.push(record):
            ...  # FeatureRow(symbol, ts, ts_end, values)
    engine.flush(until_ns)  # history is complete up to here: close what it allows

``checkpoint(symbol)`` is the symbol's state right after its last closed bucket
(its features' objects and what the open bucket carries over) and
``restore(checkpoint)`` continues from it in a fresh engine, fed the records
from that bucket's end on: the rows that follow are the uninterrupted run's,
bit for bit (see :mod:`ccf.features.checkpoint`).

Crossed books pass through unchanged (they are what the exchange said); the
collector writes a ``crossed_book`` gap for them, so their buckets carry the
``gap`` flag, and the engine counts the rows closing on a crossed book.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from operator import itemgetter
from typing import Any, NamedTuple

from ccf.features.aggregate import Bucket
from ccf.features.buckets import bucket_start, interval_ns
from ccf.features.checkpoint import Checkpoint, CheckpointError, decode_state, encode_state
from ccf.features.kinds.base import Feature
from ccf.features.spec import FeatureSet
from ccf.records import Book, Candle, Gap, NewsItem, Trade

log = logging.getLogger(__name__)

_BOOK, _TRADE, _CANDLE, _NEWS = 0, 1, 2, 3  # tie order of events at one event time
_NONE: tuple[()] = ()
_NEVER = -(2**63)


def _insort(buf: deque[tuple[Any, ...]], key: tuple[Any, ...]) -> None:
    """Put an out-of-order event in its place, searching from the newest end (it is
    rarely more than a few places back)."""
    i = len(buf) - 1
    while i > 0 and buf[i - 1] > key:
        i -= 1
    buf.insert(i, key)


class FeatureRow(NamedTuple):
    """One closed bucket of one symbol; ``values`` follow ``FeatureSet.float_columns``."""

    symbol: str
    ts: int
    ts_end: int
    values: tuple[float, ...]


class SymbolStats(NamedTuple):
    events: int  # applied to a bucket
    late: int  # older than the watermark when they came: dropped
    late_gaps: int  # gap records that came after a bucket they cover was emitted
    rows: int
    crossed_rows: int  # rows whose book was crossed (best bid >= best ask)
    frontier: int  # the watermark, event time ns
    next_bucket: int | None  # start of the open bucket


class _Symbol:
    __slots__ = (
        "name",
        "acc",
        "features",
        "buf",
        "frontier",
        "start",
        "end",
        "gaps",
        "known_gaps",
        "events",
        "late",
        "late_gaps",
        "rows",
        "crossed",
        "carry",
        "floor",
        "replayed",
        "seen",
        "recv",
        "clock",
        "newest",
    )

    def __init__(self, name: str, acc: Bucket, features: list[Feature]) -> None:
        self.name = name
        self.acc = acc
        self.features = features
        # the reorder buffer, sorted: (ts, stream, id, record)
        self.buf: deque[tuple[Any, ...]] = deque()
        self.frontier = _NEVER
        self.start: int | None = None  # the open bucket, once the first event is applied
        self.end = 0
        self.gaps: dict[tuple[str, int], int | None] = {}  # (stream, start) -> end, may flag
        self.known_gaps: dict[tuple[str, int], int | None] = {}  # every one seen
        self.events = self.late = self.late_gaps = self.rows = self.crossed = 0
        # what the bucket carries past its last close (book, last trade, last close):
        # captured at each close, so a checkpoint taken later is the state *at* that close
        self.carry: tuple[Any, ...] | None = None
        self.floor = _NEVER  # restored from a checkpoint: events before this are in it
        self.replayed = 0  # events before ``floor`` read again after a restore: dropped
        # per stream (_BOOK, _TRADE, _CANDLE): newest event time and newest receive time
        self.seen = [_NEVER, _NEVER, _NEVER]
        self.recv = [_NEVER, _NEVER, _NEVER]
        self.clock = _NEVER  # the receive clock: the newest ts_recv of any stream
        self.newest = _NEVER  # the newest event time of any stream


class FeatureEngine:
    """Buckets and features for a set of symbols; see the module docstring."""

    def __init__(self, fs: FeatureSet, symbols: Iterable[str] = ()) -> None:
        self.fs = fs
        self._per_stream = fs.watermark == "streams"
        self._idle = fs.idle_ns
        self.columns = fs.columns
        self.float_columns = fs.float_columns
        self._values = itemgetter(*self.float_columns)
        self._bucket = fs.bucket_ns
        self._lateness = fs.lateness_ns
        self._candles = fs.source == "candle"
        self._book_source = fs.book_source
        self._candle_ns = interval_ns(fs.candle_interval) if self._candles else 0
        self._gap_streams = {"candle"} if self._candles else {"book", "trade"}
        self._streams = (_CANDLE,) if self._candles else (_BOOK, _TRADE)
        self._syms: dict[str, _Symbol] = {}
        for s in symbols:
            self._symbol(s)

    @property
    def symbols(self) -> list[str]:
        return list(self._syms)

    def _symbol(self, name: str) -> _Symbol:
        st = self._syms.get(name)
        if st is None:
            acc = Bucket(self.fs.book_depth, candles=self._candles)
            st = self._syms[name] = _Symbol(name, acc, self.fs.make())
        return st

    # -- input ----------------------------------------------------------------------------------

    def push(self, rec: Any) -> list[FeatureRow] | tuple[()]:
        """Take one raw record; returns the rows it closed (often none)."""
        t = type(rec)
        if t is Trade:  # the most frequent first
            if self._candles:
                return _NONE
            key = (rec.ts_event, _TRADE, rec.trade_id, rec)
        elif t is Book:
            if self._candles or rec.source != self._book_source:
                return _NONE
            key = (rec.ts_event, _BOOK, rec.update_id, rec)
        elif t is Candle:
            if not self._candles or not rec.closed or rec.interval != self.fs.candle_interval:
                return _NONE
            # known at its close: ordered (and bucketed) by the end of its interval
            key = (rec.open_time + self._candle_ns - 1, _CANDLE, rec.open_time, rec)
        elif t is Gap:
            self._gap(rec)
            return _NONE
        elif t is NewsItem:
            return self._news(rec)
        else:
            raise TypeError(f"the feature engine takes Book, Trade, Candle, Gap, NewsItem: {t}")
        st = self._syms.get(rec.symbol) or self._symbol(rec.symbol)
        ts = key[0]
        if ts < st.frontier:
            if ts < st.floor:
                st.replayed += 1  # already inside the restored checkpoint
            else:
                st.late += 1
            return _NONE
        buf = st.buf
        if not buf or key >= buf[-1]:
            buf.append(key)  # in order: the usual case
        else:
            _insort(buf, key)
        if ts > st.newest:
            st.newest = ts
        if self._per_stream:
            f = self._watermark(st, key[1], ts, rec.ts_recv)
        else:
            f = st.newest - self._lateness
        if f > st.frontier:
            st.frontier = f
            if st.buf[0][0] < f or (st.start is not None and st.end <= f):
                return self._release(st)
        return _NONE

    def _watermark(self, st: _Symbol, stream: int, ts: int, recv: int) -> int:
        """The per-stream watermark after an event of ``stream``: the oldest of the
        streams heard from within ``idle_ns`` on the receive clock, never more than the
        allowed lateness behind the newest event."""
        seen, heard = st.seen, st.recv
        if st.clock == _NEVER:  # the symbol's first event: every stream starts heard now
            for k in self._streams:
                heard[k] = recv
        if ts > seen[stream]:
            seen[stream] = ts
        if recv > heard[stream]:
            heard[stream] = recv
        if recv > st.clock:
            st.clock = recv
        quiet = st.clock - self._idle
        w = None
        for k in self._streams:
            if heard[k] > quiet:  # still talking: it holds the watermark back
                s = seen[k]
                if w is None or s < w:
                    w = s
        if w is None:
            w = st.newest
        f = st.newest - self._lateness
        return w if w > f else f

    def _news(self, item: NewsItem) -> list[FeatureRow] | tuple[()]:
        """A story counts for every symbol, in the bucket it was *ingested* in."""
        key = (item.ingested_at, _NEWS, item.item_id, item)
        for st in self._syms.values():
            if item.ingested_at < st.frontier:
                if item.ingested_at < st.floor:
                    st.replayed += 1
                else:
                    st.late += 1
            elif not st.buf or key >= st.buf[-1]:
                st.buf.append(key)  # news never moves the watermark
            else:
                _insort(st.buf, key)
        return _NONE

    def _gap(self, g: Gap) -> None:
        if g.stream not in self._gap_streams:
            return
        st = self._syms.get(g.symbol) or self._symbol(g.symbol)
        key = (g.stream, g.start_ts)
        known = key in st.known_gaps
        old_end = st.known_gaps.get(key)
        if known and old_end == g.end_ts:
            return  # the same gap again (a reader may see a record twice)
        st.known_gaps[key] = st.gaps[key] = g.end_ts
        if st.start is None or st.rows == 0:
            return
        # Buckets already emitted were flagged with what was known then.
        if (not known and g.start_ts < st.start) or (
            known and old_end is None and g.end_ts is not None and g.end_ts < st.start
        ):
            st.late_gaps += 1
            log.warning(
                "part=features symbol=%s gap stream=%s start_ts=%d came after rows covering it "
                "were emitted: their gap flags may differ from a batch run",
                st.name,
                g.stream,
                g.start_ts,
            )

    def flush(self, until_ns: int, symbols: Iterable[str] | None = None) -> list[FeatureRow]:
        """History is complete up to ``until_ns`` (event time): release what came before it
        and close the buckets ending by then. The batch path calls this at the end of
        what the store holds; it never closes a bucket that could still get events."""
        out: list[FeatureRow] = []
        for name in self._syms if symbols is None else symbols:
            st = self._symbol(name)
            if until_ns > st.frontier:
                st.frontier = until_ns
                out += self._release(st)
        return out

    # -- buckets --------------------------------------------------------------------------------

    def _release(self, st: _Symbol) -> list[FeatureRow]:
        """Apply the buffered events older than the watermark, in order; close buckets."""
        buf, frontier, acc = st.buf, st.frontier, st.acc
        out: list[FeatureRow] = []
        applied = 0
        end = st.end
        while buf and buf[0][0] < frontier:
            ts, kind, _, rec = buf.popleft()
            if st.start is None:
                if kind == _NEWS:
                    continue  # before the symbol's first market event: nothing to count into
                st.start = bucket_start(ts, self._bucket)
                st.end = end = st.start + self._bucket
            while ts >= end:
                out.append(self._close(st))
                end = st.end
            applied += 1
            if kind == _TRADE:
                acc.add_trade(rec.price, rec.qty, rec.side == "buy", ts)
            elif kind == _BOOK:
                acc.add_book(rec.levels)
            elif kind == _CANDLE:
                acc.add_candle(rec.open, rec.high, rec.low, rec.close, rec.volume)
            else:
                acc.add_news()
        st.events += applied
        if st.start is not None:
            while st.end <= frontier:
                out.append(self._close(st))
        return out

    def _close(self, st: _Symbol) -> FeatureRow:
        start, end = st.start, st.end
        assert start is not None
        gap = False
        if st.gaps:
            gap = self._gap_flag(st, start, end)
        acc = st.acc
        row = acc.close_row(start, end, gap)
        st.carry = (acc.levels, acc.last_trade_ts, acc.last_trade_price, acc.close)
        for f in st.features:
            f.step(row)
        if row["a_p_0"] <= row["b_p_0"]:  # False for NaN
            st.crossed += 1
        st.rows += 1
        st.start, st.end = end, end + self._bucket
        return FeatureRow(st.name, start, end, self._values(row))

    @staticmethod
    def _gap_flag(st: _Symbol, start: int, end: int) -> bool:
        flag = False
        for key, g_end in list(st.gaps.items()):
            if g_end is not None and g_end <= start:
                del st.gaps[key]  # over before this bucket: never flags another one
            elif key[1] < end:
                flag = True
        return flag

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, symbol: str) -> Checkpoint | None:
        """The symbol's state right after its last closed bucket (None before the first).

        Features change only when a bucket closes, and what the open bucket carries over was
        captured at that close, so this is exact even after later events went into the open
        bucket: a restore replays the raw records from the checkpoint's ``ts_end`` on.
        """
        st = self._syms.get(symbol)
        if st is None or st.carry is None or st.start is None:
            return None
        return Checkpoint(symbol, st.start - self._bucket, encode_state(st.features, st.carry))

    def restore(self, cp: Checkpoint) -> None:
        """Continue ``cp.symbol`` from a checkpoint: the next bucket is the one after
        ``cp.ts``; events before it are dropped as already counted (``replayed``). Raises
        :class:`~ccf.features.checkpoint.CheckpointError` when the state does not fit this
        feature set (the caller then warms up from raw history instead)."""
        features, carry = decode_state(cp.state, self.fs.make())
        st = self._symbol(cp.symbol)
        if st.start is not None or st.buf:
            raise CheckpointError(f"{cp.symbol}: restore before the first event, not after")
        st.features, st.carry = features, carry
        acc = st.acc
        acc.levels, acc.last_trade_ts, acc.last_trade_price, acc.close = carry
        st.start = cp.ts + self._bucket
        st.end = st.start + self._bucket
        st.frontier = st.floor = st.start

    # -- what it did ----------------------------------------------------------------------------

    def frontier(self, symbol: str) -> int:
        """The symbol's watermark: an event older than this is late."""
        return self._symbol(symbol).frontier

    def stats(self, symbol: str) -> SymbolStats:
        st = self._syms[symbol]
        return SymbolStats(
            st.events,
            st.late,
            st.late_gaps,
            st.rows,
            st.crossed,
            st.frontier,
            st.start,
        )
