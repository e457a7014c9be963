"""Kraken websocket v1 messages, field names verbatim.

Data frames are JSON arrays: ``[channelID, {payload}, ({payload},) channelName, pair]``,
e.g. ``[992,{"b":[["354.15000000","5.00000000","1618678133.365913"]],
"c":"2583817756"},"book-1000","XMR/USD"]``; a book update can carry an ``"a"``
object and a ``"b"`` object, the checksum ``"c"`` in the last one. Events are
JSON objects (``{"event":"heartbeat"}``, ``{"event":"subscriptionStatus",...}``).
Prices and volumes stay strings: the checksum is over the venue's text.
"""

from __future__ import annotations

import msgspec

# [price, volume, timestamp] (+ "r" on a republished update)
WireLevel = list[str]


class BookPart(msgspec.Struct, gc=False):
    """``{"as":[...],"bs":[...]}`` (snapshot) or ``{"a":[...],"b":[...],"c":"974947235"}``."""

    as_: list[WireLevel] | None = msgspec.field(default=None, name="as")
    bs: list[WireLevel] | None = None
    a: list[WireLevel] | None = None
    b: list[WireLevel] | None = None
    c: str | None = None


class TradePart(msgspec.Struct, array_like=True, gc=False):
    """``["5541.20000","0.15850568","1534614057.321597","s","l",""]``: price, volume,
    time, side (b/s, the taker's), order type, misc."""

    price: str
    volume: str
    time: str
    side: str
    ordertype: str
    misc: str


class Event(msgspec.Struct, gc=False):
    event: str
    status: str | None = None
    pair: str | None = None
    channelID: int | None = None
    channelName: str | None = None
    errorMessage: str | None = None


class AssetPair(msgspec.Struct):
    """One pair of ``GET /0/public/AssetPairs``: ``wsname`` is the websocket's name."""

    altname: str
    wsname: str = ""
    pair_decimals: int = 0
    lot_decimals: int = 0


class AssetPairs(msgspec.Struct):
    error: list[str]
    result: dict[str, AssetPair]
