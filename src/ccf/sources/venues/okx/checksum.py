"""OKX's order book checksum (v5 ``books`` channel).

The string is the top 25 levels interleaved as ``bid1_px:bid1_sz:ask1_px:ask1_sz:
bid2_px:...``, a side that has run out simply skipped, each value the venue's own
text; the checksum is its CRC32 as a signed 32-bit integer.
"""

from __future__ import annotations

from itertools import chain
from zlib import crc32

from ccf.sources.venues import strbook
from ccf.sources.venues.strbook import Side, StrBook

DEPTH = 25


def _pieces(side: Side) -> list[str]:
    """``["30243.5:1.2112", ...]``: the side's top levels, each ``px:sz``."""
    levels = side.levels
    return [levels[k][0] + ":" + levels[k][1] for k in side.keys[:DEPTH]]


def checksum_text(book: StrBook) -> str:
    if strbook.USE_C:
        b, a = book.bids, book.asks
        return strbook._strlevels.okx_text(b.keys, b.levels, a.keys, a.levels, DEPTH)  # type: ignore[no-any-return]
    bids: list[str] = book.bids.cached("okx", _pieces)  # type: ignore[assignment]
    asks: list[str] = book.asks.cached("okx", _pieces)  # type: ignore[assignment]
    n = min(len(bids), len(asks))
    both = chain.from_iterable(zip(bids[:n], asks[:n], strict=True))
    return ":".join(chain(both, bids[n:], asks[n:]))


def checksum(book: StrBook) -> int:
    """The signed CRC32 OKX sends in ``checksum`` (recomputed only when a top level moved)."""
    vb, va = book.bids.version, book.asks.version
    last = book.bids.cache.get("okx-crc")
    if last is not None and last[0] == (vb, va):
        return last[1]  # type: ignore[return-value]
    c = crc32(checksum_text(book).encode())
    c = c - 0x1_0000_0000 if c >= 0x8000_0000 else c
    book.bids.cache["okx-crc"] = ((vb, va), c)  # type: ignore[assignment]
    return c
