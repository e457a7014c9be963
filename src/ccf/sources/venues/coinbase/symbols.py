"""Coinbase product ids <-> CCF's common symbols: ``BTC-USD`` <-> ``btc-usd`` (spot only)."""

from __future__ import annotations

import msgspec

from ccf.sources.venues.coinbase.schemas import Product


def to_common(product_id: str) -> str:
    base, sep, quote = product_id.partition("-")
    if not sep or not base or not quote or "-" in quote:
        raise ValueError(f"Coinbase product {product_id!r} is not BASE-QUOTE (e.g. BTC-USD)")
    return product_id.lower()


def to_venue(symbol: str) -> str:
    return to_common(symbol.upper()).upper()


PRODUCTS_PATH = "/products"


def product_ids(body: bytes | str) -> list[str]:
    """The product ids of ``GET /products`` that trade (status ``online``)."""
    return [
        p.id for p in msgspec.json.decode(body, type=list[Product]) if p.status in ("online", "")
    ]
