"""Binance frames in, CCF records out: parsing and the local order books.

``BinanceFeed.handle`` is synchronous and does no I/O, so the same code runs
under the live websocket, the replay exchange, the benchmark and the tests.
It asks for I/O through callbacks: ``request_snapshot(symbol)`` when a
book must be (re)synchronised from REST, answered later with
``on_snapshot``; ``on_server_shutdown()`` when the exchange announces one;
and ``on_trade_gap(symbol, first, last, gap)`` when trade ids are missing, so
the collector can fetch them over REST.

Books follow Binance's official procedure ("How to manage a local order book
correctly"): buffer diffs, take a REST snapshot whose ``lastUpdateId`` is not
older than the first buffered ``U``, drop diffs with ``u <= lastUpdateId``,
then require ``U <= last + 1`` for every diff. Any break writes a gap record,
resyncs that symbol only, and no book record is emitted until the book is
whole again.

The hot path is one msgspec decode per frame: every subscribed stream's frame
is a tagged struct (``schemas.stream_frame``), so one decoder reads the stream
name and the payload in a single pass, and the struct's type picks the handler.
With the C book, depth levels are parsed by its own exact decimal parser into
flat arrays instead of a tuple and two floats per level. Whatever that decoder
refuses (an unknown stream, bad JSON, a bad payload) takes the general path,
which decides what the frame is and keeps bad ones as dead letters.
bench/bench_collector.py measures it against cryptofeed.

No input stops the feed. Values are checked where they are decoded (see
``schemas``); a frame nested too deep for the decoder is a dead letter too.
Ids are trusted only within ``max_id_jump`` of the stream's last one: a diff
that jumps further is a dead letter, a gap and a resync (not a book stuck on a
bogus id that makes every real diff "stale"); a snapshot or buffered diff that
far away is refused; a trade that far from the last id (ahead or behind) is
held until a later trade says whether the stream really moved there (then a
gap and the trade) or the held one was the odd one out (a dead letter), so one
bogus id never turns the real trades after it into "duplicates". (The very
first trade, with no last id from the stream or the store, is taken as it is.)
Each dead letter's reason starts with its kind (``DEAD_LETTER_KINDS``), which
metrics count.
"""

from __future__ import annotations

import logging
import operator
import re
from collections import Counter
from collections.abc import Callable
from functools import reduce
from typing import Any, Literal

import msgspec

from ccf.records import NS_PER_MS, Book, Candle, DeadLetter, Gap, GapReason, Quote, Record, Trade
from ccf.sources.binance import schemas as wire
from ccf.sources.binance.book import OrderBook
from ccf.sources.gaps import GapLedger

log = logging.getLogger(__name__)

EXCHANGE = "binance"
CADENCE_NS = {"update": 0, "100ms": 100 * NS_PER_MS, "1s": 1000 * NS_PER_MS}
MAX_BUFFERED_DIFFS = 20_000  # a snapshot that never comes must not eat the memory
MAX_HELD_TRADES = 8  # trades with unconfirmed ids kept at once (see _trade_out_of_line)
MAX_DEAD_LETTER_CHARS = 65_536
DEFAULT_MAX_ID_JUMP = 1_000_000  # collect.max_id_jump
SnapshotOutcome = Literal["synced", "stale", "ignored", "refused"]
DEAD_LETTER_KINDS = (
    "malformed_json",  # not JSON
    "too_deep",  # nested deeper than the decoder goes
    "unexpected_stream",  # a stream we did not subscribe to
    "unexpected_frame",  # JSON without a stream that is no control reply or event
    "bad_payload",  # a subscribed stream's payload of the wrong shape or type
    "invalid_value",  # NaN, inf, a price <= 0, a negative quantity, an id beyond int64
    "id_jump",  # an id beyond max_id_jump from the stream's last one
    "bad_snapshot",  # a REST depth snapshot refused (not JSON, bad values, crossed, ...)
)
_CONSTRAINT = re.compile(r"Expected `(?:int|float)` [<>]|Number out of range|out of range")
Handler = Callable[["SymbolState", Any, int, list[Record]], None]
DecodeErrors = (msgspec.ValidationError, msgspec.DecodeError)
# Builds a record NamedTuple from a ready tuple without its keyword-handling __new__
# (~3x cheaper). It fills no defaults: the hot path passes every field, in order, and
# this check stops the import if a record gains a field that the hot path does not fill.
_new = tuple.__new__
_HOT_RECORD_FIELDS = {Book: 7, Trade: 9, Quote: 9}
for _record, _n in _HOT_RECORD_FIELDS.items():
    if len(_record._fields) != _n:
        raise ImportError(
            f"records.{_record.__name__} now has {len(_record._fields)} fields; "
            f"BinanceFeed builds it with {_n}: update its _new(...) calls"
        )

_decode_envelope = msgspec.json.Decoder(wire.Envelope).decode
_decode_control = msgspec.json.Decoder(wire.ControlReply).decode
_decode_event = msgspec.json.Decoder(wire.EventOnly).decode
_decode_snapshot = msgspec.json.Decoder(wire.DepthSnapshot, strict=False).decode
_encode = msgspec.json.encode
_PAYLOADS: dict[str, type] = {
    "book": wire.DepthDiff,
    "partial": wire.PartialDepth,
    "trade": wire.TradeMsg,
    "quote": wire.BookTickerMsg,
    "candle": wire.KlineMsg,
}
_PAYLOADS_C = {**_PAYLOADS, "book": wire.DepthDiffRaw}
_decode_frame = {
    k: msgspec.json.Decoder(wire.Frame[t], strict=False).decode for k, t in _PAYLOADS.items()
}
_decode_payload = {k: msgspec.json.Decoder(t, strict=False).decode for k, t in _PAYLOADS.items()}


class SpotSync:
    """Binance spot's diff rule: drop ``u <= last``; a diff needs ``U <= last + 1``."""

    @staticmethod
    def stale(last_id: int, ev: Any, first: bool) -> bool:
        return ev.u <= last_id

    @staticmethod
    def breaks(last_id: int, ev: Any, first: bool) -> str | None:
        if ev.U > last_id + 1:
            return (
                f"diff U={ev.U} after update id {last_id}: {ev.U - last_id - 1} update ids missing"
            )
        return None


def _decode_nothing(frame: str) -> Any:
    """The hot-path decoder of a feed with no streams: every frame takes the slow path."""
    raise msgspec.ValidationError("no stream subscribed")


def payload_problem(error: Exception) -> str:
    """The dead-letter kind of a payload msgspec refused: not JSON (``malformed_json``),
    a value out of its range (``invalid_value``) or the wrong shape (``bad_payload``)."""
    if not isinstance(error, msgspec.ValidationError):
        return "malformed_json"
    return "invalid_value" if _CONSTRAINT.search(str(error)) else "bad_payload"


def dead_letter_kind(reason: str) -> str:
    """``"invalid_value: ..."`` -> ``"invalid_value"`` (the metrics label)."""
    return reason.split(":", 1)[0]


def stream_kind(stream: str) -> str:
    """The record/gap name of a subscribed stream kind: ``depth@100ms`` -> ``book``."""
    if stream.startswith("depth"):
        return "book" if stream in ("depth", "depth@100ms", "depth@1000ms") else "partial"
    if stream.startswith("kline_"):
        return "candle"
    return {"trade": "trade", "bookTicker": "quote"}[stream]


class SymbolState:
    """Everything the feed tracks for one symbol."""

    __slots__ = (
        "symbol",
        "book",
        "synced",
        "snapshot_pending",
        "buffer",
        "bucket",
        "unsent",
        "last_ts",
        "last_recv",
        "last_trade_id",
        "fresh",
        "held_trades",
    )

    def __init__(self, symbol: str, depth: int) -> None:
        self.symbol = symbol
        self.book = OrderBook(depth)
        self.synced = False
        self.snapshot_pending = False
        self.buffer: list[tuple[wire.DepthDiff, int]] = []
        self.bucket = -1
        self.unsent = False  # the book changed since its last record (cadence mode)
        self.last_ts: dict[str, int] = {}  # kind -> last event time, ns
        self.last_recv = 0
        self.last_trade_id: int | None = None
        self.fresh = False  # the next diff is the first after a snapshot
        # trades whose ids are not within max_id_jump of the last one, until a trade
        # that follows one of them confirms it (see BinanceFeed._trade_out_of_line)
        self.held_trades: list[tuple[wire.TradeMsg, int]] = []


class BinanceFeed(GapLedger):
    """Turns Binance combined-stream frames into records for a set of symbols.

    A Binance-protocol venue with other payloads or another diff rule (USD-M
    futures) subclasses it and sets the class attributes below.
    """

    exchange: str = EXCHANGE  # the records' exchange = the venue's name
    PAYLOADS: dict[str, type] = _PAYLOADS
    PAYLOADS_C: dict[str, type] = _PAYLOADS_C
    decode_frame: dict[str, Callable[[str], Any]] = _decode_frame
    decode_payload: dict[str, Callable[[Any], Any]] = _decode_payload
    sync: Any = SpotSync()  # a venues.base.BookSync
    kind_of = staticmethod(lambda stream: stream_kind(stream))  # stream name -> record kind

    def __init__(
        self,
        symbols: tuple[str, ...],
        streams: tuple[str, ...],
        *,
        book_depth: int = 20,
        book_cadence: str = "update",
        request_snapshot: Callable[[str], None] = lambda symbol: None,
        on_server_shutdown: Callable[[], None] = lambda: None,
        on_trade_gap: Callable[[str, int, int, Gap], None] = lambda sym, first, last, gap: None,
        max_id_jump: int = DEFAULT_MAX_ID_JUMP,
    ) -> None:
        self.symbols = symbols
        self.streams = streams
        self.depth = book_depth
        self._cadence = CADENCE_NS[book_cadence]
        self._request_snapshot = request_snapshot
        self._on_server_shutdown = on_server_shutdown
        self._on_trade_gap = on_trade_gap  # (symbol, first missing id, last missing id, gap)
        self.max_id_jump = max_id_jump
        self.frames = 0
        self.stats: Counter[str] = Counter()
        self.dead_letter_kinds: Counter[str] = Counter()  # kind -> dead letters
        self.state = {s: SymbolState(s, book_depth) for s in symbols}
        self.open_gaps: dict[tuple[str, str], Gap] = {}
        self._routes: dict[str, tuple[Callable[[str], Any], str, Handler, SymbolState]] = {}
        for sym in symbols:
            for st in streams:
                kind = self.kind_of(st)
                self._routes[f"{sym}@{st}"] = (
                    self.decode_frame[kind],
                    kind,
                    self._handler(st, kind),
                    self.state[sym],
                )
        # The hot path: one decoder reads the stream name as a union tag and the payload
        # in the same pass; the frame's struct type then names its handler and symbol.
        payloads = self.PAYLOADS
        if wire.parse_levels is not None and all(s.book.impl == "c" for s in self.state.values()):
            payloads = self.PAYLOADS_C  # depth levels parsed straight into the C book's format
        frame_types = {
            wire.stream_frame(name, payloads[kind]): (handler, state)
            for name, (_, kind, handler, state) in self._routes.items()
        }
        self._by_type = frame_types
        self._decode = (
            msgspec.json.Decoder(reduce(operator.or_, frame_types), strict=False).decode
            if frame_types
            else _decode_nothing
        )

    def handle(self, frame: str, ts_recv: int, out: list[Record]) -> None:
        """Parse one frame, update state, append the records it yields to ``out``."""
        self.frames += 1
        if type(frame) is not str:
            frame = bytes(frame).decode("utf-8", "replace")
        try:
            msg = self._decode(frame)
        except DecodeErrors:  # not a subscribed stream's well-formed frame: find out what
            try:
                self._slow_path(frame, ts_recv, out)
            except RecursionError:  # raised by msgspec before any handler runs
                self._dead_letter("", "too_deep", "nested too deep to decode", frame, ts_recv, out)
            return
        except RecursionError:
            self._dead_letter("", "too_deep", "nested too deep to decode", frame, ts_recv, out)
            return
        handler, state = self._by_type[msg.__class__]
        handler(state, msg.data, ts_recv, out)

    def _slow_path(self, frame: str, ts_recv: int, out: list[Record]) -> None:
        """Any frame the fast path did not take: find out what it is, keep what is bad."""
        try:
            env = _decode_envelope(frame)
        except msgspec.ValidationError:
            self._not_a_stream_frame(frame, ts_recv, out)
            return
        except msgspec.DecodeError as e:
            self._dead_letter("", "malformed_json", str(e), frame, ts_recv, out)
            return
        route = self._routes.get(env.stream)
        if route is None:
            if env.stream == "!serverShutdown":
                self._server_shutdown()
                return
            self._dead_letter("", "unexpected_stream", repr(env.stream), frame, ts_recv, out)
            return
        _, kind, handler, state = route
        try:
            msg = self.decode_payload[kind](env.data)
        except DecodeErrors as e:
            kind = payload_problem(e)
            self._dead_letter(state.symbol, kind, f"{env.stream} payload: {e}", frame, ts_recv, out)
            return
        handler(state, msg, ts_recv, out)

    def _not_a_stream_frame(self, frame: str, ts_recv: int, out: list[Record]) -> None:
        """Valid JSON without a stream: a control reply, a raw event, or junk."""
        try:
            reply = _decode_control(frame)
        except DecodeErrors:
            reply = None
        if reply is not None and (reply.id is not None or reply.code is not None):
            if reply.code is not None:
                log.warning(
                    "part=collect exchange=%s control error code=%s msg=%s",
                    self.exchange,
                    reply.code,
                    reply.msg,
                )
                self.stats["control_errors"] += 1
            else:
                self.stats["control_replies"] += 1
            return
        try:
            event = _decode_event(frame)
        except DecodeErrors:
            event = None
        if event is not None and event.e == "serverShutdown":
            self._server_shutdown()
            return
        self._dead_letter("", "unexpected_frame", "no stream", frame, ts_recv, out)

    def _server_shutdown(self) -> None:
        self.stats["server_shutdowns"] += 1
        log.warning(
            "part=collect exchange=%s serverShutdown announced: reconnecting", self.exchange
        )
        self._on_server_shutdown()

    def _dead_letter(
        self, symbol: str, kind: str, detail: str, frame: str, ts_recv: int, out: list[Record]
    ) -> None:
        """Keep ``frame`` with its reason, ``"<kind>: <detail>"`` (kind from DEAD_LETTER_KINDS)."""
        reason = f"{kind}: {detail}"
        self.dead_letter_kinds[kind] += 1
        n = self.stats["dead_letters"] = self.stats["dead_letters"] + 1
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then every power of two: no log storm
            log.warning(
                "part=collect exchange=%s symbol=%s dead letter #%d: %s (all are kept in "
                "the dead_letter table)",
                self.exchange,
                symbol or "-",
                n,
                reason,
            )
        out.append(
            DeadLetter(self.exchange, symbol, reason, frame[:MAX_DEAD_LETTER_CHARS], ts_recv)
        )

    def _handler(self, stream: str, kind: str) -> Handler:
        if kind == "partial":
            source = stream.split("@", 1)[0]
            return lambda st, msg, ts, out: self._on_partial(st, source, msg, ts, out)
        return {
            "book": self._on_diff,
            "trade": self._on_trade,
            "quote": self._on_ticker,
            "candle": self._on_kline,
        }[kind]

    # -- diff depth and the local book ------------------------------------------------------

    def _on_diff(self, s: SymbolState, ev: wire.DepthDiff, ts_recv: int, out: list[Record]) -> None:
        if s.synced:
            self._apply_diff(s, ev, ts_recv, out)
            return
        bound = self.max_id_jump
        if ev.U > ev.u or ev.u - ev.U > bound or (s.buffer and ev.U - s.buffer[-1][0].u > bound):
            # Not buffered: one bogus diff at the head of the buffer would make every
            # snapshot look stale. A bogus first diff is caught when the snapshot comes.
            after = f" after buffered u={s.buffer[-1][0].u}" if s.buffer else ""
            self._bad_diff_ids(s, ev, f"diff U={ev.U} u={ev.u}{after}", ts_recv, out)
            return
        s.buffer.append((ev, ts_recv))
        if len(s.buffer) > MAX_BUFFERED_DIFFS:
            del s.buffer[: len(s.buffer) // 2]
            self.stats["buffer_overflows"] += 1
        if not s.snapshot_pending:
            s.snapshot_pending = True
            self._request_snapshot(s.symbol)

    def _apply_diff(
        self, s: SymbolState, ev: wire.DepthDiff, ts_recv: int, out: list[Record]
    ) -> None:
        book = s.book
        if self.sync.stale(book.update_id, ev, s.fresh):
            if book.update_id - ev.u > self.max_id_jump:  # the book's id itself is bogus
                self._id_jump_resync(s, ev, f"diff u={ev.u} far behind the book", ts_recv, out)
                return
            self.stats["stale_diffs"] += 1
            return
        if ev.u - book.update_id > self.max_id_jump or ev.U > ev.u:
            self._id_jump_resync(s, ev, f"diff U={ev.U} u={ev.u}", ts_recv, out)
            return
        ts = ev.E * NS_PER_MS
        broken = self.sync.breaks(book.update_id, ev, s.fresh)
        if broken is not None:
            self.lose_sync(
                s.symbol,
                "sequence_gap",
                broken,
                ts,
                ts_recv,
                out,
            )
            s.buffer.append((ev, ts_recv))
            return
        if self._cadence and s.unsent and ts // self._cadence != s.bucket:
            out.append(
                Book(
                    self.exchange,
                    s.symbol,
                    "diff",
                    book.update_id,
                    s.last_ts["book"],
                    s.last_recv,
                    book.top(),
                )
            )
            s.unsent = False
        book.apply(ev.b, ev.a, ev.u)
        s.fresh = False
        if book.crossed():
            self.stats["crossed_books"] += 1
            self.lose_sync(
                s.symbol,
                "crossed_book",
                f"best bid {book.best_bid()} >= best ask {book.best_ask()} at update id {ev.u}",
                ts,
                ts_recv,
                out,
            )
            return
        if self.open_gaps and (s.symbol, "book") in self.open_gaps:
            self.close_gap(s.symbol, "book", ts, ts_recv, out)
        s.last_ts["book"] = ts
        if self._cadence:
            s.bucket = ts // self._cadence
            s.unsent = True
            s.last_recv = ts_recv
        else:
            out.append(_new(Book, (self.exchange, s.symbol, "diff", ev.u, ts, ts_recv, book.top())))

    def _bad_diff_ids(
        self, s: SymbolState, ev: wire.DepthDiff, what: str, ts_recv: int, out: list[Record]
    ) -> None:
        """A dead letter for a diff whose ids are impossible or too far from the stream's."""
        self.stats["id_jumps"] += 1
        detail = (
            f"{what}: U > u or beyond collect.max_id_jump={self.max_id_jump}"
            f" of update id {s.book.update_id}"
        )
        data = {"E": ev.E, "U": ev.U, "u": ev.u, "b": list(ev.b), "a": list(ev.a)}
        frame = _encode({"stream": f"{s.symbol}@depth", "data": data}).decode()
        self._dead_letter(s.symbol, "id_jump", detail, frame, ts_recv, out)

    def _id_jump_resync(
        self, s: SymbolState, ev: wire.DepthDiff, what: str, ts_recv: int, out: list[Record]
    ) -> None:
        """A synced book met a diff beyond the id bound: the diff is a dead letter, the
        book a gap and a resync (whichever of the two is wrong, the book is not trusted)."""
        last = s.book.update_id
        self._bad_diff_ids(s, ev, what, ts_recv, out)
        self.lose_sync(
            s.symbol,
            "id_jump",
            f"{what} after update id {last}: beyond collect.max_id_jump={self.max_id_jump}",
            s.last_ts.get("book", ts_recv),
            ts_recv,
            out,
        )

    def on_snapshot(
        self, symbol: str, frame: str | bytes, ts_recv: int, out: list[Record]
    ) -> SnapshotOutcome:
        """Seed ``symbol``'s book from a REST ``/api/v3/depth`` answer.

        Returns ``stale`` when the snapshot is older than the first buffered
        diff (step 4 of the procedure): the caller must fetch another one.
        Returns ``refused`` for an answer that cannot seed a book (not JSON,
        bad values, a crossed book, an id far from the buffered diffs'): it is
        kept as a dead letter and logged, and the caller must retry later.
        """
        s = self.state[symbol]
        s.snapshot_pending = False
        if s.synced:
            return "ignored"
        try:
            snap = _decode_snapshot(frame)
        except DecodeErrors as e:
            return self._refuse_snapshot(s, f"{payload_problem(e)}: {e}", frame, ts_recv, out)
        except RecursionError:
            return self._refuse_snapshot(s, "too_deep: nested too deep", frame, ts_recv, out)
        bound = self.max_id_jump
        buf = s.buffer
        while len(buf) > 1 and abs(buf[1][0].U - buf[0][0].u) > bound:
            ev, recv = buf.pop(0)  # a bogus first diff, far from the next (see _on_diff)
            self._bad_diff_ids(s, ev, f"buffered diff U={ev.U} u={ev.u}", recv, out)
        if buf and not buf[0][0].U - bound <= snap.lastUpdateId <= buf[-1][0].u + bound:
            return self._refuse_snapshot(
                s,
                f"id_jump: lastUpdateId={snap.lastUpdateId} beyond collect.max_id_jump="
                f"{bound} of the buffered diffs' U={buf[0][0].U}..u={buf[-1][0].u}",
                frame,
                ts_recv,
                out,
            )
        if s.buffer and snap.lastUpdateId < s.buffer[0][0].U:
            self.stats["stale_snapshots"] += 1
            log.info(
                "part=collect exchange=%s symbol=%s snapshot lastUpdateId=%d older than "
                "first buffered U=%d: fetching again",
                self.exchange,
                symbol,
                snap.lastUpdateId,
                s.buffer[0][0].U,
            )
            s.snapshot_pending = True
            return "stale"
        book = OrderBook(self.depth)
        book.reset(snap.bids, snap.asks, snap.lastUpdateId)
        if book.crossed():
            return self._refuse_snapshot(
                s,
                f"crossed: best bid {book.best_bid()} >= best ask {book.best_ask()}",
                frame,
                ts_recv,
                out,
            )
        s.book = book
        s.synced = True
        s.fresh = True
        s.unsent = False
        s.bucket = -1
        self.stats["snapshots"] += 1
        buffered, s.buffer = s.buffer, []
        log.info(
            "part=collect exchange=%s symbol=%s book synced lastUpdateId=%d levels=%d buffered=%d",
            self.exchange,
            symbol,
            snap.lastUpdateId,
            len(s.book),
            len(buffered),
        )
        for ev, recv in buffered:
            if s.synced:
                self._apply_diff(s, ev, recv, out)
            else:  # a hole inside the buffer: keep the rest for the next snapshot
                s.buffer.append((ev, recv))
        return "synced"

    def _refuse_snapshot(
        self, s: SymbolState, why: str, frame: str | bytes, ts_recv: int, out: list[Record]
    ) -> SnapshotOutcome:
        self.stats["refused_snapshots"] += 1
        log.warning(
            "part=collect exchange=binance symbol=%s depth snapshot refused (%s): fetching "
            "another after a backoff",
            s.symbol,
            why[:300],
        )
        text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
        self._dead_letter(s.symbol, "bad_snapshot", why, text, ts_recv, out)
        s.snapshot_pending = True
        return "refused"

    def lose_sync(
        self,
        symbol: str,
        reason: GapReason,
        detail: str,
        ts_event: int,
        ts_recv: int,
        out: list[Record],
        *,
        refetch: bool = True,
    ) -> None:
        """Drop ``symbol``'s book, write a gap, and (unless told not to) ask for a snapshot."""
        s = self.state[symbol]
        s.synced = False
        s.unsent = False
        s.book = OrderBook(self.depth)
        s.buffer = []
        self.stats["resyncs"] += 1
        self.open_gap(symbol, "book", reason, detail, s.last_ts.get("book", ts_event), ts_recv, out)
        log.warning(
            "part=collect exchange=%s symbol=%s book out of sync (%s): %s",
            self.exchange,
            symbol,
            reason,
            detail,
        )
        if refetch and not s.snapshot_pending:
            s.snapshot_pending = True
            self._request_snapshot(symbol)

    # -- gaps -------------------------------------------------------------------------------

    def on_disconnect(
        self,
        symbols: tuple[str, ...],
        ts_recv: int,
        out: list[Record],
        reason: GapReason = "disconnect",
        detail: str = "connection lost",
    ) -> None:
        """Open a gap on every stream of ``symbols``; books wait for the next connection."""
        self.flush(out)
        kinds = {self.kind_of(st) for st in self.streams}
        for sym in symbols:
            s = self.state[sym]
            for kind in kinds:
                if kind == "book":
                    self.lose_sync(sym, reason, detail, ts_recv, ts_recv, out, refetch=False)
                    s.snapshot_pending = False
                else:
                    self.open_gap(
                        sym, kind, reason, detail, s.last_ts.get(kind, ts_recv), ts_recv, out
                    )

    def resume_from(
        self,
        symbol: str,
        kind: str,
        last_ts: int,
        ts_recv: int,
        out: list[Record],
        last_trade_id: int | None = None,
    ) -> None:
        """After a restart: open a gap from what the store last holds for ``symbol``/``kind``."""
        s = self.state[symbol]
        s.last_ts[kind] = last_ts
        if kind == "trade" and last_trade_id is not None:
            s.last_trade_id = last_trade_id
        self.open_gap(symbol, kind, "restart", "collector restarted", last_ts, ts_recv, out)

    def flush(self, out: list[Record]) -> None:
        """Emit books that changed since their last record (cadence mode)."""
        for s in self.state.values():
            if s.unsent and s.synced:
                out.append(
                    Book(
                        self.exchange,
                        s.symbol,
                        "diff",
                        s.book.update_id,
                        s.last_ts["book"],
                        s.last_recv,
                        s.book.top(),
                    )
                )
                s.unsent = False

    # -- other streams ----------------------------------------------------------------------

    def _on_partial(
        self, s: SymbolState, source: str, m: wire.PartialDepth, ts_recv: int, out: list[Record]
    ) -> None:
        book = OrderBook(self.depth)
        book.reset(m.bids, m.asks, m.lastUpdateId)
        if book.crossed():  # the exchange's own top levels never cross: not a book
            frame = _encode({"stream": f"{s.symbol}@{source}", "data": m}).decode()
            detail = f"crossed partial book: best bid {book.best_bid()} >= best ask " + str(
                book.best_ask()
            )
            self._dead_letter(s.symbol, "invalid_value", detail, frame, ts_recv, out)
            return
        # Spot partial depth has no event time: our receive time stands in.
        self._resume(s, "partial", ts_recv, ts_recv, out)
        out.append(
            Book(self.exchange, s.symbol, source, m.lastUpdateId, ts_recv, ts_recv, book.top())
        )

    def _on_trade(self, s: SymbolState, m: wire.TradeMsg, ts_recv: int, out: list[Record]) -> None:
        ts = m.T * NS_PER_MS
        last = s.last_trade_id
        if last is None or m.t != last + 1 or s.held_trades:
            if not self._trade_out_of_line(s, m, ts, ts_recv, out):
                return
        elif self.open_gaps and (s.symbol, "trade") in self.open_gaps:
            self.close_gap(s.symbol, "trade", ts, ts_recv, out, "no trade ids missing")
        s.last_trade_id = m.t  # as _append_trade, inlined on the hot path
        s.last_ts["trade"] = ts
        out.append(
            _new(
                Trade,
                (
                    self.exchange,
                    s.symbol,
                    m.t,
                    m.p,
                    m.q,
                    "sell" if m.m else "buy",
                    ts,
                    ts_recv,
                    False,
                ),
            )
        )  # live, not backfilled

    def _append_trade(
        self, s: SymbolState, m: wire.TradeMsg, ts: int, ts_recv: int, out: list[Record]
    ) -> None:
        s.last_trade_id = m.t
        s.last_ts["trade"] = ts
        side = "sell" if m.m else "buy"
        out.append(Trade(EXCHANGE, s.symbol, m.t, m.p, m.q, side, ts, ts_recv, False))

    def _trade_out_of_line(
        self, s: SymbolState, m: wire.TradeMsg, ts: int, ts_recv: int, out: list[Record]
    ) -> bool:
        """A trade that is not simply the next id: True when the caller is to write it.

        Within max_id_jump after the last id: written (with a gap for ids skipped); at
        or before it (within the bound): a duplicate. Anything else is held until a
        later trade follows one held trade within the bound: that
        one is then written, a gap for what it skipped, and the other held ones are
        dead letters; so are held ones the stream goes on without. The first trade
        (no last id) is written as it is."""
        last = s.last_trade_id
        if last is None:
            if (s.symbol, "trade") in self.open_gaps:
                self.close_gap(s.symbol, "trade", ts, ts_recv, out, "no trade ids missing")
            return True
        bound = self.max_id_jump
        if last < m.t <= last + bound:
            self._drop_held(s, out, f"the trades went on from {last}")
            if m.t == last + 1:
                if (s.symbol, "trade") in self.open_gaps:
                    self.close_gap(s.symbol, "trade", ts, ts_recv, out, "no trade ids missing")
            else:
                self._trade_gap(s, last, m.t, ts, ts_recv, out)
            return True
        if last - bound <= m.t <= last:
            self.stats["duplicate_trades"] += 1
            return False
        for k, (h, h_recv) in enumerate(s.held_trades):
            if h.t < m.t <= h.t + bound:  # the stream is where h is: h was no odd one out
                del s.held_trades[k]
                self._drop_held(s, out, f"the trades went on from {h.t}")
                h_ts = h.T * NS_PER_MS
                if h.t > last + 1:
                    self._trade_gap(s, last, h.t, h_ts, h_recv, out)
                else:
                    log.warning(
                        "part=collect exchange=binance symbol=%s trade ids went back from %d "
                        "to %d: the trades after %d follow the new ids",
                        s.symbol,
                        last,
                        h.t,
                        h.t,
                    )
                self._append_trade(s, h, h_ts, h_recv, out)
                if m.t != h.t + 1:
                    self._trade_gap(s, h.t, m.t, ts, ts_recv, out)
                elif (s.symbol, "trade") in self.open_gaps:
                    self.close_gap(s.symbol, "trade", ts, ts_recv, out, "no trade ids missing")
                return True
        s.held_trades.append((m, ts_recv))
        self.stats["held_trades"] += 1
        if len(s.held_trades) > MAX_HELD_TRADES:
            h, h_recv = s.held_trades.pop(0)
            self._held_dead_letter(s, h, h_recv, "too many trades held", out)
        return False

    def _drop_held(self, s: SymbolState, out: list[Record], why: str) -> None:
        for h, h_recv in s.held_trades:
            self._held_dead_letter(s, h, h_recv, f"no trade followed it ({why})", out)
        s.held_trades.clear()

    def _held_dead_letter(
        self, s: SymbolState, h: wire.TradeMsg, h_recv: int, why: str, out: list[Record]
    ) -> None:
        self.stats["id_jumps"] += 1
        self._dead_letter(
            s.symbol,
            "id_jump",
            f"trade id {h.t} after {s.last_trade_id}: beyond collect.max_id_jump="
            f"{self.max_id_jump}, and {why}",
            _encode({"stream": f"{s.symbol}@trade", "data": h}).decode(),
            h_recv,
            out,
        )

    def release_held(self, out: list[Record]) -> None:
        """At the end: trades still held (no later trade confirmed them) are dead letters."""
        for s in self.state.values():
            self._drop_held(s, out, "the stream ended")

    def _trade_gap(
        self, s: SymbolState, last: int, tid: int, ts: int, ts_recv: int, out: list[Record]
    ) -> None:
        missing = f"trade ids {last + 1}..{tid - 1} missing ({tid - last - 1})"
        if (s.symbol, "trade") in self.open_gaps:
            gap = self.close_gap(s.symbol, "trade", ts, ts_recv, out, missing)
        else:
            self.stats["gaps"] += 1
            start = s.last_ts.get("trade", ts)
            gap = Gap(self.exchange, s.symbol, "trade", start, ts, "sequence_gap", missing, ts_recv)
            out.append(gap)
            log.warning("part=collect exchange=%s symbol=%s %s", self.exchange, s.symbol, missing)
        self._on_trade_gap(s.symbol, last + 1, tid - 1, gap)

    def _on_ticker(
        self, s: SymbolState, m: wire.BookTickerMsg, ts_recv: int, out: list[Record]
    ) -> None:
        if self.open_gaps:
            self._resume(s, "quote", ts_recv, ts_recv, out)
        s.last_ts["quote"] = ts_recv
        out.append(
            _new(Quote, (self.exchange, s.symbol, m.u, m.b, m.B, m.a, m.A, ts_recv, ts_recv))
        )

    def _on_kline(self, s: SymbolState, m: wire.KlineMsg, ts_recv: int, out: list[Record]) -> None:
        k = m.k
        ts = m.E * NS_PER_MS
        self._resume(s, "candle", ts, ts_recv, out)
        out.append(
            Candle(
                self.exchange,
                s.symbol,
                k.i,
                k.t * NS_PER_MS,
                k.T * NS_PER_MS,
                k.o,
                k.h,
                k.l,
                k.c,
                k.v,
                k.q,
                k.n,
                k.V,
                k.Q,
                k.x,
                ts,
                ts_recv,
            )
        )

    def _resume(self, s: SymbolState, kind: str, ts: int, ts_recv: int, out: list[Record]) -> None:
        if (s.symbol, kind) in self.open_gaps:
            self.close_gap(s.symbol, kind, ts, ts_recv, out)
        s.last_ts[kind] = ts
