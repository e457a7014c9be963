"""Kraken pair names <-> CCF's common symbols: ``XBT/CHF`` -> ``btc-chf``.

Kraken names bitcoin XBT and dogecoin XDG; CCF uses the common tickers.
"""

from __future__ import annotations

import msgspec

from ccf.sources.venues.kraken.schemas import AssetPairs

_TO_COMMON = {"XBT": "BTC", "XDG": "DOGE"}
_TO_VENUE = {v: k for k, v in _TO_COMMON.items()}


def to_common(pair: str) -> str:
    base, sep, quote = pair.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"Kraken pair {pair!r} is not BASE/QUOTE (e.g. XBT/USD)")
    return f"{_TO_COMMON.get(base, base)}-{_TO_COMMON.get(quote, quote)}".lower()


def to_venue(symbol: str) -> str:
    base, sep, quote = symbol.upper().partition("-")
    if not sep or "-" in quote:
        raise ValueError(f"{symbol!r} is not a CCF spot symbol (e.g. btc-usd)")
    return f"{_TO_VENUE.get(base, base)}/{_TO_VENUE.get(quote, quote)}"


ASSET_PAIRS_PATH = "/0/public/AssetPairs"


def ws_pairs(body: bytes | str) -> list[str]:
    """The websocket names (``wsname``) of ``GET /0/public/AssetPairs``; dark-pool pairs
    (``.d``) have none and are left out; raises ValueError on an error answer."""
    answer = msgspec.json.decode(body, type=AssetPairs)
    if answer.error:
        raise ValueError(f"Kraken AssetPairs error: {answer.error}")
    return [p.wsname for name, p in answer.result.items() if p.wsname and ".d" not in name]
