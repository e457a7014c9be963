"""OKX frames in, CCF records out: books checked against OKX's checksum at every update.

Book rule (OKX v5 ``books``): the first push after subscribing is a ``snapshot``
(400 levels), then ``update``s; a zero size deletes a level. After every push the
local book's top 25 levels must give the push's ``checksum``
(:mod:`.checksum`), and where the push carries ``seqId``/``prevSeqId`` (OKX added
them in 2022) each update's ``prevSeqId`` must equal the previous ``seqId``. Either
failure writes a gap and resubscribes that instrument's ``books`` only: OKX
answers with a new snapshot. OKX announced that from 23 June 2026 ``checksum`` is
always 0 (to be ignored, seqId/prevSeqId instead): a 0 is taken as no checksum, so
the live feed relies on the sequence rule while recordings are still checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from ccf.records import NS_PER_MS, Book, Quote, Record, Trade
from ccf.sources.venues.feedbase import Instrument, VenueFeedBase, check_depth, decode_kind
from ccf.sources.venues.okx import schemas as wire
from ccf.sources.venues.okx.checksum import checksum
from ccf.sources.venues.okx.symbols import to_common

log = logging.getLogger(__name__)

EXCHANGE = "okx"
CHANNELS = ("books", "trades", "tickers")
DecodeErrors = (msgspec.ValidationError, msgspec.DecodeError)
_decode_push = msgspec.json.Decoder(wire.Push).decode
_decode_book = msgspec.json.Decoder(list[wire.BookData]).decode
_decode_trades = msgspec.json.Decoder(list[wire.TradeData]).decode
_decode_tickers = msgspec.json.Decoder(list[wire.TickerData]).decode
_new = tuple.__new__


def subscribe_message(
    channels: Sequence[str], inst_ids: Sequence[str], op: str = "subscribe"
) -> str:
    """``{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"},...]}``."""
    args = [{"channel": c, "instId": i} for c in channels for i in inst_ids]
    return orjson.dumps({"op": op, "args": args}).decode()


class OkxFeed(VenueFeedBase):
    exchange = EXCHANGE

    def __init__(
        self,
        symbols: tuple[str, ...],
        channels: tuple[str, ...] = CHANNELS,
        *,
        depth: int = 10,
    ) -> None:
        for sym in symbols:
            to_common(sym.upper())  # refuses what CCF does not collect (options)
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"OKX channels {sorted(unknown)} unknown: use {CHANNELS}")
        check_depth(depth, EXCHANGE)
        super().__init__(symbols)
        self.depth = depth
        self.channels = tuple(channels)
        self.trades = "trades" in channels
        self._handlers: dict[str, Any] = {
            "books": self._on_books,
            "trades": self._on_trades,
            "tickers": self._on_tickers,
        }

    def subscribe_messages(self) -> list[str]:
        return [subscribe_message(self.channels, list(self.by_id))]

    def resubscribe_messages(self, inst: Instrument) -> list[str]:
        return [
            subscribe_message(["books"], [inst.venue_id], "unsubscribe"),
            subscribe_message(["books"], [inst.venue_id]),
        ]

    def handle(self, frame: str, ts_recv: int, out: list[Record]) -> None:
        self.frames += 1
        if frame == "pong":  # the answer to our keep-alive "ping"
            return
        try:
            push = _decode_push(frame)
        except DecodeErrors as e:
            self.dead_letter("", f"not an OKX frame: {e}", frame, ts_recv, out, decode_kind(e))
            return
        arg = push.arg
        if not push.data or arg is None:
            self._on_event(push, frame, ts_recv, out)
            return
        inst = self.by_id.get(arg.instId)
        handler = self._handlers.get(arg.channel)
        if inst is None or handler is None:
            self.dead_letter(
                "",
                f"unsubscribed {arg.channel} {arg.instId}",
                frame,
                ts_recv,
                out,
                "unexpected_stream",
            )
            return
        try:
            handler(inst, push, ts_recv, out)
        except DecodeErrors as e:
            self.dead_letter(inst.symbol, f"bad {arg.channel} data: {e}", frame, ts_recv, out)

    def _on_event(self, push: wire.Push, frame: str, ts_recv: int, out: list[Record]) -> None:
        if push.event in ("subscribe", "unsubscribe"):
            return
        if push.event == "error":
            self.stats["errors"] += 1
            log.error("part=collect exchange=okx error code=%s: %s", push.code, push.msg)
        self.dead_letter("", f"OKX event {push.event!r}", frame, ts_recv, out, "unexpected_frame")

    # -- books ------------------------------------------------------------------------------

    def _on_books(self, inst: Instrument, push: wire.Push, ts_recv: int, out: list[Record]) -> None:
        for d in _decode_book(push.data):
            ts = int(d.ts) * NS_PER_MS
            book = inst.book
            if push.action == "snapshot":
                book.bids.load((lv[0], lv[1]) for lv in d.bids)
                book.asks.load((lv[0], lv[1]) for lv in d.asks)
            elif not inst.synced:
                continue  # an update before the snapshot we asked for: the snapshot has it
            else:
                if d.prevSeqId is not None and inst.last_seq >= 0 and d.prevSeqId != inst.last_seq:
                    detail = f"prevSeqId {d.prevSeqId} after seqId {inst.last_seq}"
                    self.lose_sync(inst, "sequence_gap", detail, ts, ts_recv, out)
                    continue
                book.bids.update(d.bids)
                book.asks.update(d.asks)
            if d.checksum:  # 0: not sent (OKX retired the field in June 2026)
                mine = checksum(book)
                if mine != d.checksum:
                    self.stats["checksum_mismatches"] += 1
                    detail = f"checksum {d.checksum} sent, {mine} computed ({push.action})"
                    self.lose_sync(inst, "checksum_mismatch", detail, ts, ts_recv, out)
                    continue
                self.stats["checksums_verified"] += 1
            if d.seqId is not None:
                inst.last_seq = d.seqId
            if push.action == "snapshot":
                self.synced(inst, ts, ts_recv, out)
            inst.last_ts["book"] = ts
            uid = d.seqId if d.seqId is not None else inst.next_update_id(ts)
            inst.update_id = uid
            out.append(
                _new(
                    Book, (EXCHANGE, inst.symbol, "diff", uid, ts, ts_recv, book.levels(self.depth))
                )
            )

    # -- trades and tickers -----------------------------------------------------------------

    def _on_trades(
        self, inst: Instrument, push: wire.Push, ts_recv: int, out: list[Record]
    ) -> None:
        for t in _decode_trades(push.data):
            ts = int(t.ts) * NS_PER_MS
            side = "buy" if t.side == "buy" else "sell"
            out.append(
                _new(
                    Trade,
                    (
                        EXCHANGE,
                        inst.symbol,
                        int(t.tradeId),
                        float(t.px),
                        float(t.sz),
                        side,
                        ts,
                        ts_recv,
                        False,
                    ),
                )
            )
            self.trade_seen(inst, ts, ts_recv, out)

    def _on_tickers(
        self, inst: Instrument, push: wire.Push, ts_recv: int, out: list[Record]
    ) -> None:
        for t in _decode_tickers(push.data):
            ts = int(t.ts) * NS_PER_MS
            out.append(
                _new(
                    Quote,
                    (
                        EXCHANGE,
                        inst.symbol,
                        ts,
                        float(t.bidPx),
                        float(t.bidSz),
                        float(t.askPx),
                        float(t.askSz),
                        ts,
                        ts_recv,
                    ),
                )
            )
