"""Kraken's book checksum (websocket v1 ``book``, top 10 levels).

For the 10 best asks (lowest first) then the 10 best bids (highest first): the
price text without its ``.`` and leading zeros, then the volume text likewise, all
concatenated; the checksum is its CRC32 as an unsigned integer, sent as a string.
"""

from __future__ import annotations

from zlib import crc32

from ccf.sources.venues.strbook import StrBook

DEPTH = 10


def _digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def checksum_text(book: StrBook, depth: int = DEPTH) -> str:
    parts = [_digits(px) + _digits(qty) for px, qty, _ in book.asks.top(depth)]
    parts += [_digits(px) + _digits(qty) for px, qty, _ in book.bids.top(depth)]
    return "".join(parts)


def checksum(book: StrBook) -> str:
    """The checksum as Kraken writes it in ``"c"``."""
    return str(crc32(checksum_text(book).encode()))
