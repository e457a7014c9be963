"""OKX v5 public websocket messages, field names verbatim.

A push is ``{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[...]}``;
``data`` is decoded a second time by channel (msgspec.Raw is a slice, not a copy).
Prices and sizes stay strings: the book checksum is over the venue's text.
"""

from __future__ import annotations

import msgspec

# [price, size, "0" (deprecated liquidated orders), number of orders]
WireLevel = tuple[str, str, str, str]


class Arg(msgspec.Struct, gc=False):
    channel: str
    instId: str = ""


class Push(msgspec.Struct, gc=False):
    """Any frame: a data push (``arg`` + ``data``) or an event
    (``{"event":"subscribe","arg":{...}}``, ``{"event":"error","code":"60012","msg":"..."}``)."""

    arg: Arg | None = None
    data: msgspec.Raw = msgspec.Raw(b"")  # empty on an event
    action: str | None = None  # books only: "snapshot" or "update"
    event: str | None = None
    code: str | None = None
    msg: str | None = None


class BookData(msgspec.Struct, gc=False):
    """``{"asks":[["30249.4","0","0","0"]],"bids":[...],"ts":"1652459225464",
    "checksum":-914047754,"prevSeqId":123,"seqId":124}``; ``seqId``/``prevSeqId``
    came with a 2022 API change (absent from older recordings); ``prevSeqId`` is -1
    on a snapshot."""

    asks: list[WireLevel]
    bids: list[WireLevel]
    ts: str
    checksum: int | None = None
    seqId: int | None = None
    prevSeqId: int | None = None


class TradeData(msgspec.Struct, gc=False):
    """``{"instId":"BTC-USDT","tradeId":"338476307","px":"30236","sz":"0.0002",
    "side":"buy","ts":"1652459224818"}``; ``side`` is the taker's."""

    instId: str
    tradeId: str
    px: str
    sz: str
    side: str
    ts: str


class TickerData(msgspec.Struct, gc=False):
    """``{"instType":"SPOT","instId":"BTC-USDT","last":"30236","askPx":"30228.7",
    "askSz":"1.55896972","bidPx":"30228.6","bidSz":"0.23393",...,"ts":"1652459224956"}``."""

    instId: str
    askPx: str
    askSz: str
    bidPx: str
    bidSz: str
    ts: str


class Instrument(msgspec.Struct):
    """One row of ``GET /api/v5/public/instruments?instType=...``."""

    instId: str
    instType: str
    tickSz: str = ""
    lotSz: str = ""
    expTime: str = ""
    state: str = ""


class Instruments(msgspec.Struct):
    code: str
    data: list[Instrument]
