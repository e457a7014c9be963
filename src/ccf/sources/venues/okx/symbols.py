"""OKX instrument ids <-> CCF's common symbols.

The common form is lower case, base-quote, and says what kind of contract it is:

| OKX | CCF |
|---|---|
| ``BTC-USDT`` (SPOT) | ``btc-usdt`` |
| ``UNI-USD-SWAP`` (perpetual) | ``uni-usd-perp`` |
| ``BTC-USD-220527`` (FUTURES, expiry 2022-05-27) | ``btc-usd-20220527`` |

Futures carry the full expiry date (YYYYMMDD) so two expiries never share a name.
"""

from __future__ import annotations

import re

import msgspec

from ccf.sources.venues.okx.schemas import Instruments

_FUTURE = re.compile(r"^([A-Z0-9]+)-([A-Z0-9]+)-(\d{6})$")
_SPOT = re.compile(r"^([A-Z0-9]+)-([A-Z0-9]+)$")


def to_common(inst_id: str) -> str:
    """``BTC-USD-220527`` -> ``btc-usd-20220527``; raises ValueError for options and
    anything else CCF does not collect."""
    if inst_id.endswith("-SWAP"):
        m = _SPOT.match(inst_id[:-5])
        if m:
            return f"{m[1]}-{m[2]}-perp".lower()
    elif m := _FUTURE.match(inst_id):
        return f"{m[1]}-{m[2]}-20{m[3]}".lower()
    elif m := _SPOT.match(inst_id):
        return inst_id.lower()
    raise ValueError(
        f"OKX instrument {inst_id!r} is not spot (BTC-USDT), a swap (BTC-USD-SWAP) "
        "or a dated future (BTC-USD-220527)"
    )


def to_venue(symbol: str) -> str:
    """``btc-usd-perp`` -> ``BTC-USD-SWAP``; the inverse of :func:`to_common`."""
    parts = symbol.upper().split("-")
    if len(parts) == 3 and parts[2] == "PERP":
        return f"{parts[0]}-{parts[1]}-SWAP"
    if len(parts) == 3 and len(parts[2]) == 8 and parts[2].isdigit():
        return f"{parts[0]}-{parts[1]}-{parts[2][2:]}"
    if len(parts) == 2:
        return "-".join(parts)
    raise ValueError(
        f"{symbol!r} is not a CCF symbol for OKX: use btc-usdt, btc-usd-perp or btc-usd-20220527"
    )


INSTRUMENTS_PATH = "/api/v5/public/instruments?instType={}"  # SPOT, SWAP, FUTURES


def instrument_ids(body: bytes | str) -> list[str]:
    """The live instruments of one ``GET /api/v5/public/instruments`` answer that CCF
    collects (spot, swaps, dated futures); raises ValueError on an error answer."""
    answer = msgspec.json.decode(body, type=Instruments)
    if answer.code != "0":
        raise ValueError(f"OKX instruments answer code {answer.code}")
    return [
        i.instId
        for i in answer.data
        if i.instType in ("SPOT", "SWAP", "FUTURES") and i.state in ("live", "")
    ]
