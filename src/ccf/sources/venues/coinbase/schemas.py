"""Coinbase Exchange websocket messages, field names verbatim.

Every message is an object whose first field is ``type``, which msgspec reads as
the tag of a union: one decode per frame. Prices and sizes are decimal strings.
"""

from __future__ import annotations

import msgspec


class Snapshot(msgspec.Struct, tag_field="type", tag="snapshot", gc=False):
    """``{"type":"snapshot","product_id":"BAND-GBP","asks":[["14.8024","12.77"],...],
    "bids":[...]}``"""

    product_id: str
    asks: list[tuple[str, str]]
    bids: list[tuple[str, str]]


class L2Update(msgspec.Struct, tag_field="type", tag="l2update", gc=False):
    """``{"type":"l2update","product_id":"SKL-BTC","changes":[["sell","0.00001306","660.5"]],
    "time":"2021-04-17T16:43:37.075687Z"}``; a size of 0 deletes the level."""

    product_id: str
    changes: list[tuple[str, str, str]]
    time: str = ""


class Match(msgspec.Struct, tag_field="type", tag="match", gc=False):
    """``{"type":"match","trade_id":280232,"maker_order_id":"..","taker_order_id":"..",
    "side":"sell","size":"985","price":"0.00001305","product_id":"SKL-BTC",
    "sequence":177100030,"time":"2021-04-17T16:43:37.089723Z"}``; ``side`` is the
    maker's, so the taker did the opposite."""

    trade_id: int
    side: str
    size: str
    price: str
    product_id: str
    sequence: int
    time: str


class LastMatch(Match, tag="last_match"):
    """The product's last match, sent once on subscribing to ``matches``."""


class Ticker(msgspec.Struct, tag_field="type", tag="ticker", gc=False):
    """``{"type":"ticker","sequence":333938798,"product_id":"BAND-GBP","price":"14.7775",
    ...,"best_bid":"14.7550","best_ask":"14.8060","side":"buy","time":"..."}``;
    newer feeds add ``best_bid_size``/``best_ask_size``."""

    sequence: int
    product_id: str
    best_bid: str
    best_ask: str
    time: str = ""
    best_bid_size: str = "nan"
    best_ask_size: str = "nan"


class Subscriptions(msgspec.Struct, tag_field="type", tag="subscriptions", gc=False):
    channels: list[msgspec.Raw]


class Heartbeat(msgspec.Struct, tag_field="type", tag="heartbeat", gc=False):
    product_id: str = ""
    sequence: int = 0


class Error(msgspec.Struct, tag_field="type", tag="error", gc=False):
    message: str = ""
    reason: str = ""


Message = Snapshot | L2Update | Match | LastMatch | Ticker | Subscriptions | Heartbeat | Error


class Product(msgspec.Struct):
    """One row of ``GET /products``."""

    id: str
    base_currency: str
    quote_currency: str
    quote_increment: str = ""
    base_increment: str = ""
    status: str = ""
