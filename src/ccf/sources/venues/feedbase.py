"""What the OKX, Coinbase and Kraken feeds share: per-instrument state, gaps, resyncs.

A feed is synchronous and does no I/O. It reads frames (``handle``) and writes
records into ``out``; when an instrument's book must be rebuilt it queues the
venue's own unsubscribe + subscribe messages for that instrument only, which the
connection sends (``take_outgoing``): all three venues answer a (re)subscription
with a fresh snapshot. A book that failed its checksum or sequence check writes
a gap record (open) at once and the same gap closed when the next snapshot
makes it whole; no book record is written in between.
"""

from __future__ import annotations

import logging
from collections import Counter

import msgspec

from ccf.records import DeadLetter, Gap, GapReason, Record
from ccf.sources.gaps import GapLedger
from ccf.sources.venues.base import SnapshotOutcome
from ccf.sources.venues.strbook import StrBook

log = logging.getLogger(__name__)

MAX_DEAD_LETTER_CHARS = 65_536
WATCH = 25  # the deepest top read per update: OKX's checksum; records take at most this


def check_depth(depth: int, venue: str) -> None:
    if not 1 <= depth <= WATCH:
        raise ValueError(f"{venue} book records hold 1 to {WATCH} levels per side, not {depth}")


class Instrument:
    """Everything a feed tracks for one instrument."""

    __slots__ = (
        "venue_id",
        "symbol",
        "book",
        "synced",
        "update_id",
        "last_seq",
        "last_ts",
        "channel_id",
    )

    def __init__(self, venue_id: str, max_levels: int = 0) -> None:
        self.venue_id = venue_id  # as on the wire: "BTC-USDT", "XBT/CHF"
        self.symbol = venue_id.lower()  # the records' symbol: the venue's name in lower case
        self.book = StrBook(max_levels, watch=min(WATCH, max_levels) if max_levels else WATCH)
        self.synced = False
        self.update_id = 0  # the last book record's update_id
        self.last_seq = -1  # the venue's sequence number, where it sends one
        self.last_ts: dict[str, int] = {}  # stream -> last event time, ns
        self.channel_id = -1  # Kraken's channelID

    def next_update_id(self, ts_event: int) -> int:
        """A book update id for venues without one: the event time in microseconds,
        moved up by one where two updates share a microsecond (ids must be unique)."""
        uid = max(self.update_id + 1, ts_event // 1000)
        self.update_id = uid
        return uid


class VenueFeedBase(GapLedger):
    """Gap, dead letter and resync bookkeeping; subclasses parse their venue's frames."""

    exchange = ""
    trades = True  # the venue has a trade stream this feed reads

    def __init__(self, symbols: tuple[str, ...], max_levels: int = 0) -> None:
        self.by_id: dict[str, Instrument] = {}  # wire name -> state
        self.state: dict[str, Instrument] = {}  # records' symbol -> the same state
        for sym in symbols:
            inst = Instrument(sym.upper(), max_levels)
            self.by_id[inst.venue_id] = inst
            self.state[inst.symbol] = inst
        self.frames = 0
        self.dead_letter_kinds: Counter[str] = Counter()  # kind -> dead letters (metrics)
        self.open_gaps: dict[tuple[str, str], Gap] = {}
        self.outgoing: list[str] = []
        self.stats: Counter[str] = Counter()

    # -- resync -----------------------------------------------------------------------------

    def resubscribe_messages(self, inst: Instrument) -> list[str]:
        """The venue's unsubscribe + subscribe of ``inst``'s book (a new snapshot follows)."""
        raise NotImplementedError

    def take_outgoing(self) -> list[str]:
        """Messages the connection must send now (resyncs), oldest first."""
        msgs, self.outgoing = self.outgoing, []
        return msgs

    def lose_sync(
        self,
        inst: Instrument,
        reason: GapReason,
        detail: str,
        ts_event: int,
        ts_recv: int,
        out: list[Record],
        *,
        resubscribe: bool = True,
    ) -> None:
        """Drop ``inst``'s book, write a gap and ask the venue for a new snapshot."""
        was_synced = inst.synced
        inst.synced = False
        inst.book.clear()
        self.stats["resyncs"] += 1
        start = inst.last_ts.get("book", ts_event)
        self.open_gap(inst.symbol, "book", reason, detail, start, ts_recv, out)
        log.warning(
            "part=collect exchange=%s symbol=%s book out of sync (%s): %s",
            self.exchange,
            inst.symbol,
            reason,
            detail,
        )
        if resubscribe and (was_synced or reason != "disconnect"):
            self.outgoing.extend(self.resubscribe_messages(inst))

    def synced(self, inst: Instrument, ts_event: int, ts_recv: int, out: list[Record]) -> None:
        """A snapshot made ``inst``'s book whole: close its book gap if one is open."""
        inst.synced = True
        if (inst.symbol, "book") in self.open_gaps:
            self.close_gap(inst.symbol, "book", ts_event, ts_recv, out, "snapshot")

    # -- gaps -------------------------------------------------------------------------------

    def on_disconnect(
        self,
        symbols: tuple[str, ...],
        ts_recv: int,
        out: list[Record],
        reason: GapReason = "disconnect",
        detail: str = "connection lost",
    ) -> None:
        """Every book of ``symbols`` waits for the next connection's snapshots; trades
        get a gap each, closed by the first trade after the reconnect."""
        for sym in symbols:
            inst = self.state[sym]
            self.lose_sync(inst, reason, detail, ts_recv, ts_recv, out, resubscribe=False)
            if self.trades:
                start = inst.last_ts.get("trade", ts_recv)
                self.open_gap(inst.symbol, "trade", reason, detail, start, ts_recv, out)
        self.outgoing.clear()  # the new connection subscribes to everything anyway

    def resume_from(
        self,
        symbol: str,
        kind: str,
        last_ts: int,
        ts_recv: int,
        out: list[Record],
        last_trade_id: int | None = None,
    ) -> None:
        """After a restart: what the store holds ends at ``last_ts``; the time since is
        a gap until the stream is back (a book at its snapshot, trades at the next one)."""
        inst = self.state[symbol]
        inst.last_ts[kind] = last_ts
        if kind in ("book", "trade") and last_ts < ts_recv:
            self.open_gap(symbol, kind, "restart", "collector restarted", last_ts, ts_recv, out)

    def on_snapshot(
        self, symbol: str, frame: str | bytes, ts_recv: int, out: list[Record]
    ) -> SnapshotOutcome:
        """Books come from the websocket's own snapshots here, never from REST."""
        return "ignored"

    def flush(self, out: list[Record]) -> None:
        """Nothing is held back: every update writes its book record at once."""

    def release_held(self, out: list[Record]) -> None:
        """Nothing is held back either: trades are written as they come (the collector
        calls this at the end for feeds that hold trades awaiting confirmation)."""

    def trade_seen(self, inst: Instrument, ts_event: int, ts_recv: int, out: list[Record]) -> None:
        inst.last_ts["trade"] = ts_event
        if (inst.symbol, "trade") in self.open_gaps:
            self.close_gap(inst.symbol, "trade", ts_event, ts_recv, out, "trades again")

    # -- bad frames -------------------------------------------------------------------------

    def dead_letter(
        self,
        symbol: str,
        reason: str,
        frame: str,
        ts_recv: int,
        out: list[Record],
        kind: str = "bad_payload",
    ) -> None:
        """Keep ``frame`` with ``"<kind>: <reason>"``, the kinds of Binance's feed
        (``malformed_json``, ``unexpected_stream``, ``unexpected_frame``, ``bad_payload``)."""
        reason = f"{kind}: {reason}"
        self.dead_letter_kinds[kind] += 1
        n = self.stats["dead_letters"] = self.stats["dead_letters"] + 1
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then every power of two
            log.warning(
                "part=collect exchange=%s symbol=%s dead letter #%d: %s (kept in dead_letter)",
                self.exchange,
                symbol or "-",
                n,
                reason,
            )
        out.append(
            DeadLetter(self.exchange, symbol, reason, frame[:MAX_DEAD_LETTER_CHARS], ts_recv)
        )


def decode_kind(e: Exception) -> str:
    """The dead-letter kind of a decode failure: not JSON, or JSON of the wrong shape."""
    return (
        "malformed_json"
        if isinstance(e, msgspec.DecodeError) and not isinstance(e, msgspec.ValidationError)
        else "bad_payload"
    )
