"""Kraken's book checksum (websocket v1 ``book``, top 10 levels).

For the 10 best asks (lowest first) then the 10 best bids (highest first): the
price text without its ``.`` and leading zeros, then the volume text likewise, all
concatenated; the checksum is its CRC32 as an unsigned integer, sent as a string.
"""

from __future__ import annotations

from functools import lru_cache
from zlib import crc32

from ccf.sources.venues import strbook
from ccf.sources.venues.strbook import Side, StrBook

DEPTH = 10


@lru_cache(maxsize=65_536)
def _digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def _side_text(side: Side) -> str:
    if strbook.USE_C:
        return strbook._strlevels.kraken_side(side.keys, side.levels, DEPTH)  # type: ignore[no-any-return]
    levels = side.levels
    return "".join(_digits(levels[k][0]) + _digits(levels[k][1]) for k in side.keys[:DEPTH])


def checksum_text(book: StrBook) -> str:
    return book.asks.cached("kraken", _side_text) + book.bids.cached("kraken", _side_text)  # type: ignore[operator]


def checksum(book: StrBook) -> str:
    """The checksum as Kraken writes it in ``"c"``."""
    return str(crc32(checksum_text(book).encode()))
