"""Binance USD-M futures wire messages, field names verbatim.

Where they differ from spot (``ccf.sources.binance.schemas``): a depth diff
carries ``pu`` (the previous event's ``u``) and the transaction time ``T``;
bookTicker carries event and transaction times (spot has none); trades carry
``X`` (``MARKET``, or ``INSURANCE_FUND``/``ADL`` liquidation fills); the
REST snapshot (``/fapi/v1/depth``) adds ``E`` and ``T``. Prices come with the
contract's tick decimals (``"61800.20"``), quantities with three.

Not handled yet: ``@markPrice`` (mark, index, funding rate, next funding time) has no
CCF record kind to go to; the recording holds none.
"""

from __future__ import annotations

import msgspec

from ccf.sources.binance.schemas import Level, parse_levels


class DepthDiff(msgspec.Struct, gc=False):
    """``<symbol>@depth[@0ms|@100ms|@250ms|@500ms]``: ``{"e":"depthUpdate","E":1723161256299,
    "T":1723161256298,"s":"BTCUSDT","U":5123107832006,"u":5123107837557,"pu":5123107831937,
    "b":[["58710.20","0.014"]],"a":[...]}``"""

    E: int
    T: int
    U: int
    u: int
    pu: int
    b: list[Level]
    a: list[Level]


class DepthDiffRaw(msgspec.Struct, gc=False):
    """``DepthDiff`` with levels parsed by the C book's parser (see spot's ``DepthDiffRaw``)."""

    E: int
    T: int
    U: int
    u: int
    pu: int
    b: msgspec.Raw
    a: msgspec.Raw

    def __post_init__(self) -> None:
        self.b = parse_levels(self.b)
        self.a = parse_levels(self.a)


class TradeMsg(msgspec.Struct, gc=False):
    """``<symbol>@trade``: ``{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT",
    "t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}``"""

    E: int
    t: int
    p: float
    q: float
    T: int
    m: bool
    X: str = "MARKET"


class BookTickerMsg(msgspec.Struct, gc=False):
    """``<symbol>@bookTicker``: ``{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT",
    "b":"61800.20","B":"2.507","a":"61800.30","A":"2.510","T":1723161256313,
    "E":1723161256313}``"""

    u: int
    b: float
    B: float
    a: float
    A: float
    E: int
    T: int
