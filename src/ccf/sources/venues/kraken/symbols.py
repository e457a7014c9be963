"""Kraken pair names <-> CCF's common symbols: ``XBT/CHF`` -> ``btc-chf``.

Kraken names bitcoin XBT and dogecoin XDG; CCF uses the common tickers.
"""

from __future__ import annotations

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
