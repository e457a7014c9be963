"""OKX's order book checksum (v5 ``books`` channel).

The string is the top 25 levels interleaved as ``bid1_px:bid1_sz:ask1_px:ask1_sz:
bid2_px:...``, a side that has run out simply skipped, each value the venue's own
text; the checksum is its CRC32 as a signed 32-bit integer.
"""

from __future__ import annotations

from zlib import crc32

from ccf.sources.venues.strbook import StrBook

DEPTH = 25


def checksum_text(book: StrBook, depth: int = DEPTH) -> str:
    bids = book.bids.top(depth)
    asks = book.asks.top(depth)
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts.append(bids[i][0])
            parts.append(bids[i][1])
        if i < len(asks):
            parts.append(asks[i][0])
            parts.append(asks[i][1])
    return ":".join(parts)


def checksum(book: StrBook) -> int:
    """The signed CRC32 OKX sends in ``checksum``."""
    c = crc32(checksum_text(book).encode())
    return c - 0x1_0000_0000 if c >= 0x8000_0000 else c
