"""Binance spot wire messages, field names verbatim.

Decoded with msgspec in non-strict mode, so the exchange's decimal strings
("61837.63000000") become floats inside the C decoder instead of a Python
``float()`` call per value. Conversion to CCF records happens in ``feed``.

Every wire value is checked where it is decoded, by msgspec's constraints (in C,
on both the hot path and the general one): prices finite and > 0, quantities
finite and >= 0 (a book level's 0 deletes it; a trade's must be > 0), ids within
int64 and >= 0, event times > 0 and small enough that their nanoseconds fit
int64. A value that fails is a ValidationError, so the frame is a dead letter,
never a record: NaN, inf or a 30-digit id never reaches a book or the store.

The hot-path structs are ``gc=False``: they hold only numbers and lists of
number pairs, never a reference cycle, so the garbage collector need not track
them (each tracked allocation also brings the next collection closer).
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Annotated, Generic, TypeVar

import msgspec

try:
    from ccf.sources.binance._cbook import parse_levels
except ImportError:  # no C extension: DepthDiffRaw is not used
    parse_levels = None

INT64_MAX = 2**63 - 1
NS_PER_MS = 1_000_000
_FINITE = sys.float_info.max
Id = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
TimeMs = Annotated[int, msgspec.Meta(gt=0, le=INT64_MAX // NS_PER_MS)]  # its ns fit int64
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Price = Annotated[float, msgspec.Meta(gt=0.0, le=_FINITE)]  # NaN fails every comparison
Qty = Annotated[float, msgspec.Meta(ge=0.0, le=_FINITE)]  # a book level's 0 deletes it
TradeQty = Annotated[float, msgspec.Meta(gt=0.0, le=_FINITE)]
Level = tuple[Price, Qty]
T = TypeVar("T")


class Envelope(msgspec.Struct):
    """A combined-stream frame: ``{"stream": "btcusdt@trade", "data": {...}}``."""

    stream: str
    data: msgspec.Raw


class Frame(msgspec.Struct, Generic[T], gc=False):
    """A combined-stream frame whose payload type is known from its stream name,
    decoded in one pass (the hot path)."""

    stream: str
    data: T


@cache
def stream_frame(stream: str, payload: type) -> type[msgspec.Struct]:
    """The frame of one subscribed stream as a tagged struct, e.g. for
    ``stream_frame("btcusdt@trade", TradeMsg)``:
    ``{"stream":"btcusdt@trade","data":{...}}`` -> ``StreamFrame(data=TradeMsg(...))``.

    A decoder for the union of every subscribed stream's frame reads the stream
    name as the tag and the payload in one pass; an unknown stream is a
    ValidationError. Binance writes ``stream`` first, which is where msgspec
    looks for a tag without buffering.
    """
    return msgspec.defstruct(
        "StreamFrame",
        [("data", payload)],
        tag_field="stream",
        tag=stream,
        gc=False,
        module=__name__,
    )


_decode_levels = msgspec.json.Decoder(list[Level], strict=False).decode


class DepthDiff(msgspec.Struct, gc=False):
    """``<symbol>@depth[@100ms]``:
    ``{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT","U":50093239189,"u":50093239202,
    "b":[["61737.63000000","0.00000000"]],"a":[...]}``

    ``b`` and ``a`` are read raw and then decoded as ``list[Level]``, as
    ``DepthDiffRaw`` reads them for the C book: a frame that repeats a key is
    then read the same way by both (the last one counts, and only it is checked).
    """

    E: TimeMs
    U: Id
    u: Id
    b: msgspec.Raw  # a list[Level] once decoded
    a: msgspec.Raw

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError of the decode.
        for side in ("b", "a"):
            try:
                setattr(self, side, _decode_levels(getattr(self, side)))
            except msgspec.ValidationError as e:
                raise ValueError(f"{e} in `{side}`") from None


class DepthDiffRaw(msgspec.Struct, gc=False):
    """``DepthDiff`` for the hot path with the C book: ``b`` and ``a`` are read as
    raw JSON and parsed by ``_cbook.parse_levels`` into ``Levels``, one flat array
    of doubles per side, where msgspec would build a tuple and two floats per
    level (~70% of a depth frame's decode time). Iterating ``Levels`` gives the
    same (price, qty) pairs. A list the C parser refuses (anything but plain
    finite numbers, prices > 0 and quantities >= 0: the rules of ``Level``) fails
    the decode, and the feed's general decoder, with ``DepthDiff``, decides what
    the frame is."""

    E: TimeMs
    U: Id
    u: Id
    b: msgspec.Raw  # a _cbook.Levels once decoded
    a: msgspec.Raw

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError of the decode.
        self.b = parse_levels(self.b)
        self.a = parse_levels(self.a)


class PartialDepth(msgspec.Struct):
    """``<symbol>@depth20@100ms``: ``{"lastUpdateId":160,"bids":[...],"asks":[...]}``; no
    symbol and no event time, the stream name gives the symbol."""

    lastUpdateId: Id
    bids: list[Level]
    asks: list[Level]


DepthSnapshot = PartialDepth  # REST /api/v3/depth has the same shape


class TradeMsg(msgspec.Struct, gc=False):
    """``<symbol>@trade``: ``{"e":"trade","E":..,"s":"BTCUSDT","t":3735683259,
    "p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}``;
    ``m`` true means the buyer was the maker, so the taker sold."""

    E: TimeMs
    t: Id
    p: Price
    q: TradeQty
    T: TimeMs
    m: bool


class BookTickerMsg(msgspec.Struct, gc=False):
    """``<symbol>@bookTicker``: ``{"u":400900217,"s":"BNBUSDT","b":"25.35","B":"31.21",
    "a":"25.36","A":"40.66"}``; no event time on spot."""

    u: Id
    b: Price
    B: Qty
    a: Price
    A: Qty


class KlineBody(msgspec.Struct):
    t: TimeMs
    T: TimeMs
    i: str
    o: Price
    c: Price
    h: Price
    l: Price  # noqa: E741 - Binance's name
    v: Qty
    n: Count
    x: bool
    q: Qty
    V: Qty
    Q: Qty


class KlineMsg(msgspec.Struct):
    """``<symbol>@kline_1m``: ``{"e":"kline","E":..,"s":..,"k":{"t":..,"T":..,"i":"1m",...}}``."""

    E: TimeMs
    k: KlineBody


class EventOnly(msgspec.Struct):
    """Any payload with an event type, e.g. ``{"e":"serverShutdown","E":1770123456789}``."""

    e: str = ""
    E: int = 0


class ControlReply(msgspec.Struct):
    """Answer to SUBSCRIBE and friends: ``{"result":null,"id":1}`` or an error."""

    id: int | str | None = None
    result: msgspec.Raw | None = None
    code: int | None = None
    msg: str | None = None
