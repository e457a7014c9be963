"""Playing a timeline: the books it moves, and each frame as a pass sends it.

Pass ``k`` adds ``k`` periods to every exchange time and ``k`` id steps to
every id, so passes join without a gap. On top, every exchange time gets the
clock's rebase shift (:meth:`Market.rebase`). Pass 0 without a shift sends the
recorded bytes untouched; with one, only the time digits are spliced.

The market also counts the trades each pass has played (``played``) and the
time of the last frame (``event_ms``): REST history answers no further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ccf.sources.replay.book import Book
from ccf.sources.replay.frames import Frame, Item, Resync
from ccf.sources.replay.stamps import shift_spans
from ccf.sources.replay.tape import agg_row
from ccf.sources.replay.timeline import Timeline
from ccf.sources.replay.wire import DEPTH, NS_PER_MS, TRADE, dumps, loads


@dataclass(slots=True)
class Emitted:
    """One frame leaving the market: ``payload`` is the raw (unwrapped) stream payload."""

    symbol: str
    kind: str
    payload: bytes
    data: dict[str, Any] | None  # parsed payload when it was needed anyway
    synthetic: bool = False
    tape_index: int = -1  # a trade's place on its symbol's tape


class Market:
    """The exchange's state while it plays a Timeline: books, last ids, renders passes."""

    def __init__(self, tl: Timeline) -> None:
        self.timeline = tl
        self.books = {s: Book(i.start) for s, i in tl.symbols.items()}
        self.last_trade_id: dict[str, int | None] = dict.fromkeys(tl.symbols)
        self.pass_index = 0
        self.time_shift_ms = 0
        self.played: dict[str, int] = dict.fromkeys(tl.symbols, 0)  # trades, current pass
        self.event_ms: int | None = None  # exchange time of the last frame played
        self._period_ms = tl.period_ns // NS_PER_MS
        self._dt_ms = 0  # added to recorded exchange times in the current pass

    def rebase(self, shift_ms: int) -> None:
        """Add ``shift_ms`` to every exchange time from now on (before the first frame)."""
        self.time_shift_ms = shift_ms
        self._dt_ms = shift_ms + self.pass_index * self._period_ms

    def event_ms_of(self, k: int, item: Item) -> int:
        """The exchange time ``item`` of pass ``k`` will be sent with (before :meth:`step`)."""
        return item.ts_ns // NS_PER_MS + self.time_shift_ms + k * self._period_ms

    def _id_shift(self, sym: str) -> int:
        return self.pass_index * self.timeline.symbols[sym].id_step

    def step(self, k: int, item: Item) -> Emitted:
        """Apply ``item`` of pass ``k`` to the book and render what the stream sends."""
        if k != self.pass_index:
            self.pass_index = k
            self._dt_ms = self.time_shift_ms + k * self._period_ms
            self.played = dict.fromkeys(self.played, 0)
        self.event_ms = item.ts_ns // NS_PER_MS + self._dt_ms
        sym = item.symbol
        if isinstance(item, Resync):
            return self._resync(item)
        shift = self._id_shift(sym)
        if item.kind == DEPTH:
            data = loads(item.payload)
            book = self.books[sym]
            if "pu" in data:  # USD-M: pu is the u sent before this diff
                data["pu"] = book.last_update_id
            book.apply(data["b"], data["a"])
            book.last_update_id = item.last_id + shift
            if k == 0 and not item.patched:
                if not self._dt_ms:
                    return Emitted(sym, DEPTH, item.payload, data)
                data["E"] += self._dt_ms
                return Emitted(sym, DEPTH, self._retimed(item, data), data)
            data["E"] += self._dt_ms
            if "T" in data:  # USD-M: the transaction time moves with the event time
                data["T"] += self._dt_ms
            data["U"] = item.first_id + shift
            data["u"] = book.last_update_id
            return Emitted(sym, DEPTH, dumps(data), data)
        if item.kind == TRADE:
            tshift = k * self.timeline.symbols[sym].trade_step
            self.last_trade_id[sym] = item.first_id + tshift
            i = self.played[sym]
            self.played[sym] = i + 1
            if k == 0:
                if not self._dt_ms:
                    return Emitted(sym, TRADE, item.payload, None, tape_index=i)
                return Emitted(sym, TRADE, self._retimed(item, None), None, tape_index=i)
            data = loads(item.payload)
            data["E"] += self._dt_ms
            data["T"] += self._dt_ms
            data["t"] += tshift
            return Emitted(sym, TRADE, dumps(data), data, tape_index=i)
        timed = self.timeline.symbols[sym].futures  # USD-M bookTicker carries E and T
        if k == 0 and not (timed and self._dt_ms):
            return Emitted(sym, item.kind, item.payload, None)
        data = loads(item.payload)
        data["u"] += shift
        if timed:
            data["E"] += self._dt_ms
            data["T"] += self._dt_ms
        return Emitted(sym, item.kind, dumps(data), data)

    def _retimed(self, item: Frame, shifted: dict[str, Any] | None) -> bytes:
        """The recorded payload with its times shifted: spliced, else re-serialized."""
        if item.stamps:
            return shift_spans(item.payload, item.stamps, self._dt_ms)
        if shifted is None:  # a frame whose digits were not found at load time
            shifted = loads(item.payload)
            for key in ("E", "T"):
                if key in shifted:
                    shifted[key] += self._dt_ms
        return dumps(shifted)

    def _resync(self, item: Resync) -> Emitted:
        sym, shift = item.symbol, self._id_shift(item.symbol)
        book = self.books[sym]
        bids, asks = book.diff_to(item.snapshot)
        previous_u = book.last_update_id
        book.reset(item.snapshot)
        book.last_update_id = item.last_id + shift
        recorded_ms = (item.ts_ns + self.pass_index * self.timeline.period_ns) // NS_PER_MS
        data = {
            "e": "depthUpdate",
            "E": recorded_ms + self.time_shift_ms,
            "s": sym.upper(),
            "U": item.first_id + shift,
            "u": book.last_update_id,
            "b": bids,
            "a": asks,
        }
        if self.timeline.symbols[sym].futures:  # USD-M diffs also carry pu and T
            data["pu"] = previous_u
            data["T"] = data["E"]
        return Emitted(sym, DEPTH, dumps(data), data, synthetic=True)

    def depth(self, sym: str, limit: int) -> dict[str, Any]:
        """The REST snapshot of the current book."""
        book = self.books[sym]
        bids, asks = book.top(limit)
        return {"lastUpdateId": book.last_update_id, "bids": bids, "asks": asks}

    def stale_depth(self, sym: str, limit: int) -> dict[str, Any]:
        """The snapshot the timeline started from (pass 0 ids): older than any live diff."""
        snap = self.timeline.symbols[sym].start
        return {
            "lastUpdateId": snap.last_update_id,
            "bids": list(snap.bids[:limit]),
            "asks": list(snap.asks[:limit]),
        }

    def partial(self, sym: str, levels: int) -> bytes:
        """A ``<sym>@depth<levels>`` payload from the current book (no e/E/s, like spot)."""
        return dumps(self.depth(sym, levels))

    def agg_trade(self, em: Emitted) -> bytes | None:
        """The ``@aggTrade`` payload of the aggregate this trade completes; None mid-aggregate.

        Same ids and values as ``/api/v3/aggTrades``; ``E`` is the completing trade's event time.
        """
        tape = self.timeline.tapes[em.symbol]
        j = tape.agg_ending[em.tape_index] if em.tape_index >= 0 else -1
        if j < 0:
            return None
        head = {"e": "aggTrade", "E": self.event_ms, "s": em.symbol.upper()}
        return dumps(head | agg_row(tape, j, self.pass_index, self._dt_ms))
