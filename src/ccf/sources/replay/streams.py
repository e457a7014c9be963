"""Stream names: what Binance accepts, what the replay serves, and microsecond times.

Binance answers a SUBSCRIBE naming a stream it does not know (a typo, an
unknown event type) with ``{"code":2,"msg":"Invalid request: invalid
stream"}``; a well-formed name for a symbol it does not list is acknowledged
and then silent (both as observed on the real exchange; the docs say
nothing). Names in a connection's URL are not checked at all (ccxt opens
``/ws/0``). The replay does the same, and answers a SUBSCRIBE to a
well-formed stream that Binance serves but the replay does not (time-zone
klines, rolling-window tickers) with the same error code and a message
naming it, so no client waits for frames that never come.
"""

from __future__ import annotations

import re
from typing import Any

from ccf.sources.replay.wire import dumps, loads

_IV = "1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w"
_SYM = r"[a-z0-9]{2,30}"
SERVED = re.compile(
    rf"{_SYM}@(trade|aggTrade|bookTicker|ticker|miniTicker|avgPrice|kline_({_IV})"
    r"|depth(5|10|20)?(@100ms|@1000ms)?)|!(ticker|miniTicker)@arr"
)
# Binance streams the replay does not serve (web-socket-streams.md)
_BINANCE_ONLY = re.compile(
    rf"{_SYM}@(kline_({_IV}|1M)(@\+08:00)?|ticker_(1h|4h|1d)|referencePrice|blockTrade)"
    r"|!ticker_(1h|4h|1d)@arr|!bookTicker"
)
INVALID = "Invalid request: invalid stream"
TIME_UNITS = {"MILLISECOND": False, "MICROSECOND": True}


def refusal(streams: list[str]) -> str | None:
    """The error message for the first stream the replay cannot serve, else None."""
    for s in streams:
        if SERVED.fullmatch(s):
            continue
        if _BINANCE_ONLY.fullmatch(s):
            return f"Invalid request: the replay exchange does not serve stream {s}"
        return INVALID
    return None


def stream_symbol(stream: str) -> str | None:
    """The symbol a stream names; None for the all-market ones."""
    return None if stream.startswith("!") else stream.partition("@")[0]


_TOP_TIMES = ("E", "T", "O", "C")
_KLINE_TIMES = ("t", "T")


def _to_micros(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_to_micros(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if "data" in obj and "stream" in obj:
        obj["data"] = _to_micros(obj["data"])
        return obj
    for key in _TOP_TIMES:
        v = obj.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            obj[key] = v * 1000
    k = obj.get("k")
    if isinstance(k, dict):
        for key in _KLINE_TIMES:
            if isinstance(k.get(key), int):
                k[key] *= 1000
    return obj


def micros(payload: bytes) -> bytes:
    """A frame with its times in microseconds (``timeUnit=MICROSECOND``); ids stay as they are.

    Times are ``E`` (event), ``T`` (trade, aggregate, avgPrice), ``O``/``C``
    (ticker window) and ``k.t``/``k.T`` (kline open and close).
    """
    return dumps(_to_micros(loads(payload)))
