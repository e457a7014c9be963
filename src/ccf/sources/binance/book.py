"""A price-level order book that answers its top N levels cheaply.

Each side keeps every level in a dict (key -> quantity) and, beside it, a
sorted list of only the best ``keep`` keys ("near" levels). On the recorded
BTCUSDT stream 87% of level changes insert or delete a level, most of them
far from the touch: those cost a dict operation and a float comparison
instead of a ``bisect`` insert into a list of thousands of prices. When
deletions thin the near list below the depth asked for, it is rebuilt from
the dict with a partial sort (rare: ~50 times in 6,500 updates). Bids are
keyed by negated price so both sides sort best-first ascending.

Two implementations of a side share that design and API: the C one in
``_cbook.c`` (built by setup.py; with its level parser, a depth frame costs
~9 µs instead of ~30 µs in the feed) and the pure-Python :class:`BookSide`
below, the fallback where no compiler was available and the reference the
tests hold the C one to. Both take any iterable of (price, qty) pairs; the C
one reads its parser's ``Levels`` without a Python object per level.
``CCF_BOOK_IMPL=python`` forces the fallback, and so does setting
:data:`DEFAULT_IMPL` before a feed is built (the benchmark does);
bench/bench_collector.py measures both against cryptofeed.

>>> book = OrderBook(depth=2)
>>> book.reset(bids=[(99.0, 1.0)], asks=[(101.0, 2.0), (102.0, 1.0)], update_id=7)
>>> book.apply(bids=[(100.0, 3.0)], asks=[(101.0, 0.0)], update_id=8)
>>> book.top()
(102.0, 1.0, nan, nan, 100.0, 3.0, 99.0, 1.0)
"""

from __future__ import annotations

import os
from bisect import bisect_left, insort
from collections.abc import Iterable
from heapq import nsmallest

try:
    from ccf.sources.binance import _cbook
except ImportError:  # no compiler at install time: the pure-Python side serves
    _cbook = None

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


IMPLEMENTATIONS: tuple[str, ...] = ("c", "python") if _cbook is not None else ("python",)
_SIDES = {"python": BookSide, **({"c": _cbook.BookSide} if _cbook is not None else {})}


def _default_impl() -> str:
    name = os.environ.get("CCF_BOOK_IMPL") or IMPLEMENTATIONS[0]
    if name not in IMPLEMENTATIONS:
        raise ImportError(
            f"CCF_BOOK_IMPL={name!r} is not available here: use one of "
            f"{', '.join(IMPLEMENTATIONS)} (the C book needs `pip install -e .` "
            "with a C compiler)"
        )
    return name


DEFAULT_IMPL = _default_impl()


class OrderBook:
    """Both sides of one symbol's book; ``update_id`` is the last id applied.

    ``impl`` picks the side implementation ("c" or "python"); None takes
    :data:`DEFAULT_IMPL` (C where it was built, unless ``CCF_BOOK_IMPL`` says).
    """

    __slots__ = ("asks", "bids", "update_id", "depth", "impl", "_ctop")

    def __init__(self, depth: int = 20, impl: str | None = None) -> None:
        impl = impl or DEFAULT_IMPL
        if impl not in _SIDES:
            raise ValueError(
                f"book impl {impl!r} is not available: use one of {', '.join(IMPLEMENTATIONS)}"
            )
        side = _SIDES[impl]
        keep = max(100, 4 * depth)
        self.asks = side(1.0, keep)
        self.bids = side(-1.0, keep)
        self.update_id = -1
        self.depth = depth
        self.impl = impl
        self._ctop = _cbook.top if impl == "c" else None

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
        return self.bids.best() >= self.asks.best()  # False while a side is empty (NaN)

    def top(self) -> tuple[float, ...]:
        """Flat levels in ``records.book_columns`` order, NaN where the book is thinner."""
        if self._ctop is not None:
            return self._ctop(self.asks, self.bids, self.depth)
        return (*self.asks.top(self.depth), *self.bids.top(self.depth))

    def __len__(self) -> int:
        return len(self.asks) + len(self.bids)
