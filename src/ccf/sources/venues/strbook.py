"""A price-level book that keeps each level's text as the venue sent it.

OKX and Kraken checksum the text of their top levels (``"30243.5"``, not the
float 30243.5), so the book keeps the venue's price and quantity strings next
to the parsed floats. Each side is a dict keyed by a sort key (the price for
asks, minus the price for bids) plus a sorted list of those keys, so the best
``n`` levels are a slice and an insert is a bisect. One class for every venue
that sends price levels (OKX, Coinbase, Kraken); the checksum rules live in
the venues' folders.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable

Level = tuple[str, str, float]  # price text, quantity text, quantity


class Side:
    """One side of the book; ``bids=True`` keeps the highest price first."""

    __slots__ = ("keys", "levels", "sign", "max_levels")

    def __init__(self, *, bids: bool, max_levels: int = 0) -> None:
        self.keys: list[float] = []  # ascending sort keys: best level first
        self.levels: dict[float, Level] = {}
        self.sign = -1.0 if bids else 1.0
        self.max_levels = max_levels  # 0: unbounded; else keep only the best N (Kraken)

    def __len__(self) -> int:
        return len(self.keys)

    def clear(self) -> None:
        self.keys.clear()
        self.levels.clear()

    def set(self, px: str, qty: str) -> None:
        """Set one level from the venue's text; a zero quantity deletes it."""
        k = self.sign * float(px)
        q = float(qty)
        levels = self.levels
        if q == 0.0:
            if levels.pop(k, None) is not None:
                del self.keys[bisect_left(self.keys, k)]
            return
        if k not in levels:
            insort(self.keys, k)
        levels[k] = (px, qty, q)

    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Replace the side with a snapshot's levels."""
        self.clear()
        for px, qty in pairs:
            self.set(px, qty)

    def truncate(self) -> None:
        """Drop the levels past ``max_levels``: the venue sends no delete for a level
        that falls out of the subscribed depth (Kraken's rule)."""
        n = self.max_levels
        if n and len(self.keys) > n:
            for k in self.keys[n:]:
                del self.levels[k]
            del self.keys[n:]

    def top(self, n: int) -> list[Level]:
        """The best ``n`` levels, best first."""
        levels = self.levels
        return [levels[k] for k in self.keys[:n]]

    def as_floats(self) -> dict[float, float]:
        """Every level as ``{price: quantity}`` (tests and benchmark comparisons)."""
        return {self.sign * k: v[2] for k, v in self.levels.items()}


class StrBook:
    """Bids and asks of one instrument."""

    __slots__ = ("bids", "asks")

    def __init__(self, max_levels: int = 0) -> None:
        self.bids = Side(bids=True, max_levels=max_levels)
        self.asks = Side(bids=False, max_levels=max_levels)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def levels(self, depth: int) -> tuple[float, ...]:
        """Top ``depth`` levels in :func:`ccf.records.book_columns` order, NaN where missing."""
        out: list[float] = []
        nan = float("nan")
        for side in (self.asks, self.bids):
            top = side.top(depth)
            sign = side.sign
            for k, (_, _, q) in zip(side.keys, top, strict=False):
                out.append(sign * k)
                out.append(q)
            out.extend((nan, nan) * (depth - len(top)))
        return tuple(out)
