"""The live runner's in-process window: the last rows per symbol in a numpy ring.

A model in the same process reads its encoder window from here without
touching SQLite: one or two slice copies, a few microseconds. Values go
through the same float64 conversion as the store's blobs, so a window read
here equals the same window read from the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ccf.features.engine import FeatureRow
from ccf.features.store import Window


class _Ring:
    __slots__ = ("ts", "values", "n")

    def __init__(self, size: int, width: int) -> None:
        self.ts = np.zeros(size, dtype=np.int64)
        self.values = np.full((size, width), np.nan)
        self.n = 0  # rows ever added; the next goes to n % size


class OnlineRings:
    """The last ``size`` rows of each symbol."""

    def __init__(self, columns: Sequence[str], size: int) -> None:
        self.columns = tuple(columns)
        self.size = size
        self._rings: dict[str, _Ring] = {}

    def add(self, rows: Sequence[FeatureRow]) -> None:
        for r in rows:
            ring = self._rings.get(r.symbol)
            if ring is None:
                ring = self._rings[r.symbol] = _Ring(self.size, len(self.columns))
            i = ring.n % self.size
            ring.ts[i] = r.ts
            ring.values[i] = r.values
            ring.n += 1

    def last(self, symbol: str, n: int) -> Window:
        """The last ``n`` rows of ``symbol``, oldest first (fewer if fewer are kept)."""
        ring = self._rings.get(symbol)
        if ring is None:
            return Window(np.zeros(0, np.int64), np.zeros((0, len(self.columns))), self.columns)
        n = min(n, ring.n, self.size)
        end = ring.n % self.size
        start = end - n
        if start >= 0:
            return Window(ring.ts[start:end].copy(), ring.values[start:end].copy(), self.columns)
        return Window(
            np.concatenate((ring.ts[start:], ring.ts[:end])),
            np.concatenate((ring.values[start:], ring.values[:end])),
            self.columns,
        )
