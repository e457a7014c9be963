"""A price-level order book that answers its top N levels cheaply.

Each side keeps every level in a dict (key -> quantity) and, beside it, a
sorted list of only the best ``keep`` keys ("near" levels). On the recorded
BTCUSDT stream 87% of level changes insert or delete a level, most of them
far from the touch: those cost a dict operation and a float comparison
instead of a ``bisect`` insert into a list of thousands of prices. When
deletions thin the near list below the depth asked for, it is rebuilt from
the dict with a partial sort (rare). Bids are keyed by negated price so both
sides sort best-first ascending. bench/bench_collector.py measures this
against a plain sorted list (1.6x slower) and cryptofeed's C order book.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from heapq import nsmallest

NAN = float("nan")
INF = float("inf")
Levels = Iterable[tuple[float, float]]


class BookSide:
    """One side of the book; ``sign`` is 1.0 for asks and -1.0 for bids."""

    __slots__ = ("qty", "near", "bound", "keep", "sign")

    def __init__(self, sign: float, keep: int = 100) -> None:
        self.sign = sign
        self.keep = keep
        self.qty: dict[float, float] = {}
        self.near: list[float] = []  # sorted best-first; holds every key <= bound
        self.bound = INF

    def reset(self, levels: Levels) -> None:
        s = self.sign
        self.qty = {s * p: q for p, q in levels if q}
        self._refill()

    def _refill(self) -> None:
        if len(self.qty) > self.keep:
            self.near = sorted(nsmallest(self.keep, self.qty))
            self.bound = self.near[-1]
        else:
            self.near = sorted(self.qty)
            self.bound = INF

    def apply(self, levels: Levels, depth: int) -> None:
        """Set each level; quantity zero removes it. ``depth`` levels stay answerable."""
        qty, near, bound, s = self.qty, self.near, self.bound, self.sign
        for p, q in levels:
            k = s * p
            if q:
                if k <= bound and k not in qty:
                    insort(near, k)
                qty[k] = q
            elif k in qty:
                del qty[k]
                if k <= bound:
                    del near[bisect_left(near, k)]
        n = len(near)
        if n > 2 * self.keep:
            del near[self.keep :]
            self.bound = near[-1]
        elif n < depth and bound != INF:
            self._refill()

    def best(self) -> float:
        return self.sign * self.near[0] if self.near else NAN

    def top(self, depth: int) -> list[float]:
        """``[price_0, qty_0, price_1, qty_1, ...]`` padded with NaN to ``depth`` levels."""
        qty, s = self.qty, self.sign
        keys = self.near[:depth]
        out = [x for k in keys for x in (s * k, qty[k])]
        if len(keys) < depth:
            out += [NAN] * (2 * (depth - len(keys)))
        return out

    def levels(self) -> dict[float, float]:
        """Every level as price -> quantity (for checks, not the hot path)."""
        return {self.sign * k: q for k, q in self.qty.items()}

    def __len__(self) -> int:
        return len(self.qty)


class OrderBook:
    """Both sides of one symbol's book; ``update_id`` is the last id applied."""

    __slots__ = ("asks", "bids", "update_id", "depth")

    def __init__(self, depth: int = 20) -> None:
        keep = max(100, 4 * depth)
        self.asks = BookSide(1.0, keep)
        self.bids = BookSide(-1.0, keep)
        self.update_id = -1
        self.depth = depth

    def reset(self, bids: Levels, asks: Levels, update_id: int) -> None:
        self.bids.reset(bids)
        self.asks.reset(asks)
        self.update_id = update_id

    def apply(self, bids: Levels, asks: Levels, update_id: int) -> None:
        self.bids.apply(bids, self.depth)
        self.asks.apply(asks, self.depth)
        self.update_id = update_id

    def best_bid(self) -> float:
        return self.bids.best()

    def best_ask(self) -> float:
        return self.asks.best()

    def crossed(self) -> bool:
        b, a = self.bids.near, self.asks.near
        return bool(b and a and -b[0] >= a[0])

    def top(self) -> tuple[float, ...]:
        """Flat levels in ``records.book_columns`` order, NaN where the book is thinner."""
        return (*self.asks.top(self.depth), *self.bids.top(self.depth))

    def __len__(self) -> int:
        return len(self.asks) + len(self.bids)
