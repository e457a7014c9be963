"""The ``/api/v3/exchangeInfo`` the replay serves: the real one, cut to the served symbols."""

from __future__ import annotations

import logging
from typing import Any

from ccf.config import shared_dir
from ccf.sources.replay.wire import loads

log = logging.getLogger(__name__)

_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB", "EUR")


def load_exchange_info(symbols: list[str], weight_limit: int) -> dict[str, Any]:
    """The real 2021 exchangeInfo (fixtures/BINANCE.0) cut to the served symbols."""
    upper = [s.upper() for s in symbols]
    path = shared_dir() / "data" / "binance" / "fixtures" / "BINANCE.0"
    try:
        line = path.read_text(encoding="utf-8").split("\n", 1)[0]
        info = loads(line[line.index("{") :])
    except (OSError, ValueError) as e:
        log.info(
            "part=exchange exchangeInfo fixture unusable path=%s error=%s; using a minimal one",
            path,
            e,
        )
        info = {"timezone": "UTC", "serverTime": 0, "exchangeFilters": [], "symbols": []}
    known = {s["symbol"]: s for s in info.get("symbols", [])}
    info["symbols"] = [known.get(s) or _minimal_symbol(s) for s in upper]
    info["rateLimits"] = [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": weight_limit,
        },
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ]
    return info


def _minimal_symbol(sym: str) -> dict[str, Any]:
    """A plausible spot symbol entry for one the fixture does not list."""
    quote = next((q for q in _QUOTES if sym.endswith(q)), sym[-4:])
    return {
        "symbol": sym,
        "status": "TRADING",
        "baseAsset": sym[: -len(quote)],
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "isSpotTradingAllowed": True,
        "permissions": ["SPOT"],
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.01000000",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001000",
                "maxQty": "9000.00000000",
                "stepSize": "0.00001000",
            },
        ],
    }
