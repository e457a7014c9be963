"""Coinbase frames in, CCF records out.

Book rule (``level2``): a ``snapshot`` per product after subscribing, then
``l2update``s whose ``changes`` set a level's size (0 deletes it). ``level2``
carries no sequence number and no checksum, so a lost update cannot be seen on
the wire: a disconnect is what forces a resync. ``matches`` and ``ticker`` do
carry the product's ``sequence``, shared with all of that product's messages,
so numbers jump by design; one that does not move forward is a repeat and is
dropped (the store's keys would drop it anyway). A resync of one product is an
unsubscribe + subscribe of its ``level2``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
import orjson

from ccf.records import Book, Quote, Record, Trade
from ccf.sources.venues.coinbase import schemas as wire
from ccf.sources.venues.coinbase.symbols import to_common
from ccf.sources.venues.coinbase.times import iso_ns
from ccf.sources.venues.feedbase import Instrument, VenueFeedBase, check_depth, decode_kind

log = logging.getLogger(__name__)

EXCHANGE = "coinbase"
CHANNELS = ("level2", "matches", "ticker")
DecodeErrors = (msgspec.ValidationError, msgspec.DecodeError)
_decode = msgspec.json.Decoder(wire.Message).decode
_new = tuple.__new__
_TAKER = {"buy": "sell", "sell": "buy"}  # Coinbase's match side is the maker's


def subscribe_message(
    product_ids: Sequence[str], channels: Sequence[str], kind: str = "subscribe"
) -> str:
    """``{"type":"subscribe","product_ids":["BTC-USD"],"channels":["level2"]}``."""
    return orjson.dumps(
        {"type": kind, "product_ids": list(product_ids), "channels": list(channels)}
    ).decode()


class CoinbaseFeed(VenueFeedBase):
    exchange = EXCHANGE

    def __init__(
        self, symbols: tuple[str, ...], channels: tuple[str, ...] = CHANNELS, *, depth: int = 10
    ) -> None:
        for sym in symbols:
            to_common(sym.upper())  # refuses a name that is not BASE-QUOTE
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"Coinbase channels {sorted(unknown)} unknown: use {CHANNELS}")
        check_depth(depth, EXCHANGE)
        super().__init__(symbols)
        self.depth = depth
        self.channels = tuple(channels)
        self.trades = "matches" in channels
        self._quote_seq: dict[str, int] = {}

    def subscribe_messages(self) -> list[str]:
        return [subscribe_message(list(self.by_id), self.channels)]

    def resubscribe_messages(self, inst: Instrument) -> list[str]:
        return [
            subscribe_message([inst.venue_id], ["level2"], "unsubscribe"),
            subscribe_message([inst.venue_id], ["level2"]),
        ]

    def handle(self, frame: str, ts_recv: int, out: list[Record]) -> None:
        self.frames += 1
        try:
            m = _decode(frame)
            t = type(m)
            if t is wire.L2Update:
                self._on_update(m, ts_recv, out)
            elif t is wire.Match or t is wire.LastMatch:
                self._on_match(m, ts_recv, out)
            elif t is wire.Ticker:
                self._on_ticker(m, ts_recv, out)
            elif t is wire.Snapshot:
                self._on_snapshot(m, ts_recv, out)
            elif t is wire.Error:
                self.stats["errors"] += 1
                log.error("part=collect exchange=coinbase error: %s %s", m.message, m.reason)
                self.dead_letter(
                    "", f"Coinbase error: {m.message}", frame, ts_recv, out, "unexpected_frame"
                )
        except DecodeErrors as e:
            self.dead_letter(
                "", f"not a Coinbase message: {e}", frame, ts_recv, out, decode_kind(e)
            )
        except (KeyError, ValueError) as e:
            self.dead_letter("", f"bad Coinbase message: {e!r}", frame, ts_recv, out, "bad_payload")

    def _inst(self, product_id: str) -> Instrument:
        inst = self.by_id.get(product_id)
        if inst is None:
            raise KeyError(f"unsubscribed product {product_id}")
        return inst

    def _on_snapshot(self, m: wire.Snapshot, ts_recv: int, out: list[Record]) -> None:
        inst = self._inst(m.product_id)
        inst.book.bids.load(m.bids)
        inst.book.asks.load(m.asks)
        ts = ts_recv  # a level2 snapshot has no time of its own
        self.synced(inst, ts, ts_recv, out)
        self._book(inst, ts, ts_recv, out)

    def _on_update(self, m: wire.L2Update, ts_recv: int, out: list[Record]) -> None:
        inst = self.by_id.get(m.product_id)
        if inst is None:
            raise KeyError(f"unsubscribed product {m.product_id}")
        if not inst.synced:
            return
        book = inst.book
        bids, asks = book.bids, book.asks
        for side, px, qty in m.changes:
            if side == "buy":
                bids.set(px, qty)
            elif side == "sell":
                asks.set(px, qty)
            else:
                raise ValueError(f"change side {side!r} is neither buy nor sell")
        ts = iso_ns(m.time) if m.time else ts_recv
        inst.last_ts["book"] = ts
        uid = inst.update_id + 1
        if uid < ts // 1000:
            uid = ts // 1000
        inst.update_id = uid
        out.append(
            _new(Book, (EXCHANGE, inst.symbol, "diff", uid, ts, ts_recv, book.levels(self.depth)))
        )

    def _book(self, inst: Instrument, ts: int, ts_recv: int, out: list[Record]) -> None:
        inst.last_ts["book"] = ts
        uid = inst.next_update_id(ts)
        out.append(
            _new(
                Book,
                (EXCHANGE, inst.symbol, "diff", uid, ts, ts_recv, inst.book.levels(self.depth)),
            )
        )

    def _on_match(self, m: wire.Match, ts_recv: int, out: list[Record]) -> None:
        inst = self._inst(m.product_id)
        if m.sequence <= inst.last_seq:
            self.stats["repeated_matches"] += 1
            return
        inst.last_seq = m.sequence
        ts = iso_ns(m.time)
        out.append(
            _new(
                Trade,
                (
                    EXCHANGE,
                    inst.symbol,
                    m.trade_id,
                    float(m.price),
                    float(m.size),
                    _TAKER[m.side],
                    ts,
                    ts_recv,
                    False,
                ),
            )
        )
        self.trade_seen(inst, ts, ts_recv, out)

    def _on_ticker(self, m: wire.Ticker, ts_recv: int, out: list[Record]) -> None:
        inst = self._inst(m.product_id)
        if m.sequence <= self._quote_seq.get(m.product_id, -1):
            return
        self._quote_seq[m.product_id] = m.sequence
        ts = iso_ns(m.time) if m.time else ts_recv
        out.append(
            _new(
                Quote,
                (
                    EXCHANGE,
                    inst.symbol,
                    m.sequence,
                    float(m.best_bid),
                    float(m.best_bid_size),
                    float(m.best_ask),
                    float(m.best_ask_size),
                    ts,
                    ts_recv,
                ),
            )
        )
