"""What the venue recordings hold, read with json and Decimal, independently of CCF's parsers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache

from ccf.sources.replay.venues.recording import default_path, read_lines

OKX_SYMBOLS = ("btc-usdt", "btc-usd-220527", "uni-usd-swap")
KRAKEN_SYMBOLS = (
    "waves/eur",
    "xmr/usd",
    "ksm/xbt",
    "grt/eth",
    "sc/eur",
    "eth/chf",
    "ocean/xbt",
    "omg/usd",
    "xbt/chf",
    "ada/xbt",
)
COINBASE_SYMBOLS = (
    "skl-usd",
    "skl-btc",
    "band-gbp",
    "nmr-eur",
    "band-btc",
    "yfi-btc",
    "dash-btc",
    "nu-gbp",
    "crv-eur",
    "skl-gbp",
)


@dataclass
class Facts:
    frames: list[tuple[int, str]]
    book_updates_with_checksum: int = 0
    trades: dict[str, set[int]] = field(default_factory=dict)  # symbol -> trade ids
    final_books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = field(
        default_factory=dict
    )  # symbol -> (bids, asks)


@cache
def venue_facts(venue: str) -> Facts:
    lines = [ln for ln in read_lines(default_path(venue)) if not ln.sent]
    facts = Facts([(ln.ts_ns, ln.text) for ln in lines])
    for ln in lines:
        if ln.text in ("pong",):
            continue
        m = json.loads(ln.text)
        if venue == "okx" and isinstance(m, dict) and "data" in m:
            sym = m["arg"]["instId"].lower()
            if m["arg"]["channel"] == "books":
                facts.book_updates_with_checksum += sum("checksum" in d for d in m["data"])
            elif m["arg"]["channel"] == "trades":
                facts.trades.setdefault(sym, set()).update(int(d["tradeId"]) for d in m["data"])
        elif venue == "kraken" and isinstance(m, list):
            facts.book_updates_with_checksum += any("c" in part for part in m[1:-2])
        elif venue == "coinbase" and isinstance(m, dict):
            sym = m.get("product_id", "").lower()
            if m["type"] in ("match", "last_match"):
                facts.trades.setdefault(sym, set()).add(m["trade_id"])
            elif m["type"] == "snapshot":
                facts.final_books[sym] = (
                    {Decimal(p): Decimal(q) for p, q in m["bids"]},
                    {Decimal(p): Decimal(q) for p, q in m["asks"]},
                )
            elif m["type"] == "l2update":
                bids, asks = facts.final_books[sym]
                for side, p, q in m["changes"]:
                    book = bids if side == "buy" else asks
                    if Decimal(q) == 0:
                        book.pop(Decimal(p), None)
                    else:
                        book[Decimal(p)] = Decimal(q)
    return facts


SYMBOLS = {"okx": OKX_SYMBOLS, "coinbase": COINBASE_SYMBOLS, "kraken": KRAKEN_SYMBOLS}
