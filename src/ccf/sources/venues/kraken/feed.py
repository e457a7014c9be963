"""Kraken frames in, CCF records out: books checked against Kraken's checksum at every update.

Book rule (websocket v1 ``book``, depth D): the first frame after subscribing is a
snapshot (``as``/``bs``), then updates (``a``/``b``) applied in the order sent; a
zero volume deletes a level, and after each update the book is cut back to D
levels per side (Kraken sends no delete for a level pushed out of the subscribed
depth). Every update carries ``c``, the CRC32 of the top 10 levels
(:mod:`.checksum`); a mismatch writes a gap and resubscribes that pair's book
only, which brings a new snapshot. Kraken v1 trades carry no trade id, so CCF
takes only books from Kraken.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
import orjson

from ccf.records import Book, Record
from ccf.sources.venues.feedbase import Instrument, VenueFeedBase, check_depth, decode_kind
from ccf.sources.venues.kraken import schemas as wire
from ccf.sources.venues.kraken.checksum import checksum
from ccf.sources.venues.kraken.symbols import to_common

log = logging.getLogger(__name__)

EXCHANGE = "kraken"
DEPTHS = (10, 25, 100, 500, 1000)
DecodeErrors = (msgspec.ValidationError, msgspec.DecodeError)
_decode_frame = msgspec.json.Decoder(list[int | str | wire.BookPart]).decode
_decode_event = msgspec.json.Decoder(wire.Event).decode
_new = tuple.__new__


def _ts_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def book_message(pairs: Sequence[str], depth: int, event: str = "subscribe") -> str:
    """``{"event":"subscribe","pair":["XBT/USD"],"subscription":{"name":"book","depth":1000}}``."""
    return orjson.dumps(
        {"event": event, "pair": list(pairs), "subscription": {"name": "book", "depth": depth}}
    ).decode()


class KrakenFeed(VenueFeedBase):
    exchange = EXCHANGE

    trades = False

    def __init__(
        self,
        symbols: tuple[str, ...],
        channels: tuple[str, ...] = ("book",),
        *,
        depth: int = 10,
        book_depth: int = 1000,
    ) -> None:
        if book_depth not in DEPTHS:
            raise ValueError(f"Kraken book depth {book_depth} is not one of {DEPTHS}")
        if tuple(channels) != ("book",):
            raise ValueError(f"Kraken channels {channels}: CCF reads only 'book' from Kraken")
        for sym in symbols:
            to_common(sym.upper())  # refuses a name that is not BASE/QUOTE
        check_depth(depth, EXCHANGE)
        super().__init__(symbols, max_levels=book_depth)
        self.depth = depth  # levels in each Book record
        self.book_depth = book_depth  # levels subscribed (and kept)
        self.channels = ("book",)

    def subscribe_messages(self) -> list[str]:
        return [book_message(list(self.by_id), self.book_depth)]

    def resubscribe_messages(self, inst: Instrument) -> list[str]:
        return [
            book_message([inst.venue_id], self.book_depth, "unsubscribe"),
            book_message([inst.venue_id], self.book_depth),
        ]

    def handle(self, frame: str, ts_recv: int, out: list[Record]) -> None:
        self.frames += 1
        try:
            if frame[:1] != "[":
                self._on_event(_decode_event(frame), frame, ts_recv, out)
                return
            items = _decode_frame(frame)  # one pass: [channelID, {..}, ({..},) name, pair]
            n = len(items)
            pair, name = items[-1], items[-2]
            if n < 4 or type(pair) is not str or type(name) is not str:
                raise msgspec.ValidationError(f"not [channelID, payload.., name, pair]: {n} items")
            parts = items[1:-2]
            if not all(type(p) is wire.BookPart for p in parts):
                raise msgspec.ValidationError(f"{name} {pair}: a payload is not a book object")
        except DecodeErrors as e:
            self.dead_letter(
                "", f"not a Kraken book frame: {e}", frame, ts_recv, out, decode_kind(e)
            )
            return
        inst = self.by_id.get(pair)
        if inst is None or not name.startswith("book"):
            self.dead_letter(
                "", f"unsubscribed {name} {pair}", frame, ts_recv, out, "unexpected_stream"
            )
            return
        self._on_book(inst, parts, ts_recv, out)  # type: ignore[arg-type]

    def _on_event(self, ev: wire.Event, frame: str, ts_recv: int, out: list[Record]) -> None:
        if ev.event in ("heartbeat", "systemStatus", "pong"):
            return
        if ev.event == "subscriptionStatus" and ev.status in ("subscribed", "unsubscribed"):
            return
        self.stats["errors"] += 1
        log.error(
            "part=collect exchange=kraken symbol=%s event=%s status=%s: %s",
            ev.pair or "-",
            ev.event,
            ev.status,
            ev.errorMessage,
        )
        self.dead_letter(
            "",
            f"Kraken event {ev.event!r} {ev.errorMessage or ''}",
            frame,
            ts_recv,
            out,
            "unexpected_frame",
        )

    def _on_book(
        self, inst: Instrument, parts: list[wire.BookPart], ts_recv: int, out: list[Record]
    ) -> None:
        book = inst.book
        first = parts[0]
        if first.as_ is not None or first.bs is not None:  # a snapshot
            book.asks.load((lv[0], lv[1]) for lv in first.as_ or ())
            book.bids.load((lv[0], lv[1]) for lv in first.bs or ())
            ts = max(
                (_ts_ns(lv[2]) for lv in (first.as_ or []) + (first.bs or [])), default=ts_recv
            )
            self.synced(inst, ts, ts_recv, out)
        else:
            if not inst.synced:
                return  # an update before the snapshot we asked for
            sent = None
            stamp = ""
            for part in parts:
                if part.a:
                    book.asks.update(part.a)
                    stamp = max(stamp, part.a[-1][2])  # the last entries are the most recent
                if part.b:
                    book.bids.update(part.b)
                    stamp = max(stamp, part.b[-1][2])
                if part.c is not None:
                    sent = part.c
            book.asks.truncate()
            book.bids.truncate()
            ts = _ts_ns(stamp) if stamp else ts_recv
            if sent is not None:
                mine = checksum(book)
                if mine != sent:
                    self.stats["checksum_mismatches"] += 1
                    detail = f"checksum {sent} sent, {mine} computed"
                    self.lose_sync(inst, "checksum_mismatch", detail, ts, ts_recv, out)
                    return
                self.stats["checksums_verified"] += 1
        inst.last_ts["book"] = ts
        uid = inst.next_update_id(ts)
        out.append(
            _new(Book, (EXCHANGE, inst.symbol, "diff", uid, ts, ts_recv, book.levels(self.depth)))
        )
