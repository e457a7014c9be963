"""A price-level book that keeps each level's text as the venue sent it.

OKX and Kraken checksum the text of their top levels (``"30243.5"``, not the
float 30243.5), so the book keeps the venue's price and quantity strings next
to the parsed floats. Each side is a dict keyed by a sort key (the price for
asks, minus the price for bids) plus a sorted list of those keys, so the best
``n`` levels are a slice and an insert is a bisect. One class for every venue
that sends price levels (OKX, Coinbase, Kraken); the checksum rules live in
the venues' folders.

Most updates land below the top of the book, so each side counts the changes
that touch its best ``watch`` levels (``version``): the top-N record and the
checksum are recomputed only when that count moved, which a comparison with
the ``watch``-th key tells without a search.
"""

from __future__ import annotations

import os
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from itertools import chain

try:  # the same loops in C (setup.py builds it); CCF_BOOK_IMPL=python keeps the Python ones
    from ccf.sources.venues import _strlevels
except ImportError:
    _strlevels = None  # type: ignore[assignment]
USE_C = _strlevels is not None and os.environ.get("CCF_BOOK_IMPL") != "python"

Level = tuple[str, str, tuple[float, float]]  # price text, quantity text, (price, quantity)


class Side:
    """One side of the book; ``bids=True`` keeps the highest price first."""

    __slots__ = ("keys", "levels", "sign", "max_levels", "watch", "version", "cache")

    def __init__(self, *, bids: bool, max_levels: int = 0, watch: int = 25) -> None:
        self.keys: list[float] = []  # ascending sort keys: best level first
        self.levels: dict[float, Level] = {}
        self.sign = -1.0 if bids else 1.0
        self.max_levels = max_levels  # 0: unbounded; else keep only the best N (Kraken)
        if max_levels and max_levels < watch:
            raise ValueError(f"max_levels {max_levels} < watch {watch}: the top would go stale")
        self.watch = watch  # the deepest top that a record or checksum reads
        self.version = 0  # changes to the best `watch` levels so far
        self.cache: dict[object, tuple[int, object]] = {}  # what -> (version, value) of the top

    def cached(self, what: object, make: Callable[[Side], object]) -> object:
        """``make(self)`` memoised until the top changes (records, checksum pieces)."""
        hit = self.cache.get(what)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        value = make(self)
        self.cache[what] = (self.version, value)
        return value

    def __len__(self) -> int:
        return len(self.keys)

    def clear(self) -> None:
        self.keys.clear()
        self.levels.clear()
        self.version += 1

    def update(self, pairs: Sequence[Sequence[str]]) -> None:
        """Set each ``[price, quantity, ...]`` level in order (the venue's text)."""
        if USE_C:
            self.version += _strlevels.apply(self.keys, self.levels, self.sign, self.watch, pairs)
        else:
            for lv in pairs:
                self.set(lv[0], lv[1])

    def set(self, px: str, qty: str) -> None:
        """Set one level from the venue's text; a zero quantity deletes it."""
        if USE_C:
            self.version += _strlevels.apply(
                self.keys, self.levels, self.sign, self.watch, ((px, qty),)
            )
            return
        p = float(px)
        k = self.sign * p
        q = float(qty)
        levels = self.levels
        keys = self.keys
        top = len(keys) <= self.watch or k <= keys[self.watch - 1]
        if q == 0.0:
            if levels.pop(k, None) is not None:
                del keys[bisect_left(keys, k)]
                if top:
                    self.version += 1
            return
        if k not in levels:
            insort(keys, k)
        levels[k] = (px, qty, (p, q))
        if top:
            self.version += 1

    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Replace the side with a snapshot's levels (zero quantities skipped)."""
        self.clear()
        sign = self.sign
        levels = self.levels
        for px, qty in pairs:
            q = float(qty)
            if q != 0.0:
                p = float(px)
                levels[sign * p] = (px, qty, (p, q))
        self.keys = sorted(levels)
        self.truncate()

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
        return dict(v[2] for v in self.levels.values())


def _flat_top(depth: int) -> Callable[[Side], tuple[float, ...]]:
    pad = (float("nan"),) * (2 * depth)

    def make(side: Side) -> tuple[float, ...]:
        if USE_C:
            return _strlevels.flat(side.keys, side.levels, depth)  # type: ignore[no-any-return]
        levels = side.levels
        flat = tuple(chain.from_iterable([levels[k][2] for k in side.keys[:depth]]))
        return flat + pad[len(flat) :] if len(flat) < 2 * depth else flat

    return make


_FLAT = {d: _flat_top(d) for d in range(1, 26)}


class StrBook:
    """Bids and asks of one instrument."""

    __slots__ = ("bids", "asks", "_last")

    def __init__(self, max_levels: int = 0, watch: int = 25) -> None:
        self.bids = Side(bids=True, max_levels=max_levels, watch=watch)
        self.asks = Side(bids=False, max_levels=max_levels, watch=watch)
        self._last: tuple[int, int, int, tuple[float, ...]] = (-1, -1, 0, ())

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def levels(self, depth: int) -> tuple[float, ...]:
        """Top ``depth`` levels in :func:`ccf.records.book_columns` order, NaN where missing
        (``depth`` at most the sides' ``watch``); each side is rebuilt only when its top moved."""
        va, vb = self.asks.version, self.bids.version
        last = self._last
        if last[0] == va and last[1] == vb and last[2] == depth:
            return last[3]
        make = _FLAT[depth]
        flat = self.asks.cached(make, make) + self.bids.cached(make, make)  # type: ignore[operator]
        self._last = (va, vb, depth, flat)
        return flat
