"""Rolling state over the bucket stream: O(1) per bucket, exact, equal to the batch result.

One rule for every rolling kind, pandas' ``rolling(n, min_periods)``: the window at
bucket t holds buckets t-n+1..t (fewer at the start of the stream); non-finite values
(NaN, ±inf) in it are *missing*; a result needs ``min_periods`` present values, else it
is NaN. With ``min_periods == n`` (what most kinds use) that is: NaN until n buckets
have been seen, and NaN while a missing value is inside the window.

Gaps: nothing resets at a gap bucket; a window holds the last n buckets, whatever they
were. A gap bucket's book is the resynced (or carried) book, and its trade and news
counts are what did arrive, so a window spanning a gap may undercount flow; the row's
``gap`` column says so. Resetting instead would blank every windowed feature for a whole
window after each reconnect and stall live forecasts for that long.
"""

from __future__ import annotations

import math
from collections import deque

from ccf.features.kinds.arith import NAN, add_exact, two_product


class Lags:
    """The last ``n`` values pushed, oldest first out (NaN before they exist)."""

    __slots__ = ("_ring", "_pos")

    def __init__(self, n: int) -> None:
        self._ring = [NAN] * n
        self._pos = 0

    def ago(self, k: int) -> float:
        """The value pushed ``k`` pushes ago, ``1 <= k <= n`` (read before pushing x[t])."""
        return self._ring[(self._pos - k) % len(self._ring)]

    def push(self, x: float) -> float:
        """Store ``x``; return the value that leaves, pushed ``n`` pushes ago."""
        ring, pos = self._ring, self._pos
        out = ring[pos]
        ring[pos] = x
        self._pos = pos + 1 if pos + 1 < len(ring) else 0
        return out


class RollingSum:
    """Count and exact sum (and optionally sum of squares) of the present values in a window.

    >>> w = RollingSum(2)
    >>> for x in (1.0, float("nan"), 3.0, 4.0):
    ...     w.push(x)
    >>> w.count, w.total(), w.mean()
    (2, 7.0, 3.5)
    """

    __slots__ = ("n", "count", "_lags", "_sum", "_squares")

    def __init__(self, n: int, *, squares: bool = False) -> None:
        self.n = n
        self.count = 0
        self._lags = Lags(n)
        self._sum: list[float] = []
        self._squares: list[float] | None = [] if squares else None

    def push(self, x: float) -> None:
        out = self._lags.push(x)
        if math.isfinite(x):
            self.count += 1
            self._add(x)
        if math.isfinite(out):
            self.count -= 1
            self._add(-out, out)

    def full(self) -> bool:
        """n values seen and none of the last n missing: the default readiness rule."""
        return self.count == self.n

    def _add(self, signed: float, x: float | None = None) -> None:
        add_exact(self._sum, signed)
        if self._squares is not None:
            hi, lo = two_product(signed, signed if x is None else x)
            add_exact(self._squares, hi)
            add_exact(self._squares, lo)

    def total(self) -> float:
        """Sum of the present values, correctly rounded (0.0 when none)."""
        return math.fsum(self._sum)

    def mean(self) -> float:
        return math.fsum(self._sum) / self.count if self.count else NAN

    def variance(self) -> float:
        """Sample variance (ddof=1) of the present values, correctly rounded before ÷(k(k-1)).

        Computes k·Σx² − (Σx)² exactly (every product split with ``two_product``), so
        there is no cancellation: a constant window gives exactly 0.
        """
        k = self.count
        if k < 2 or self._squares is None:
            return NAN
        terms: list[float] = []
        for s in self._squares:
            terms.extend(two_product(float(k), s))
        for s in self._sum:
            for t in self._sum:
                terms.extend(two_product(-s, t))
        return max(math.fsum(terms), 0.0) / (k * (k - 1))


class RollingExtreme:
    """Max (or min) of the present values in a window: a monotonic deque, amortized O(1)."""

    __slots__ = ("_n", "_largest", "_t", "_queue")

    def __init__(self, n: int, *, largest: bool) -> None:
        self._n = n
        self._largest = largest
        self._t = 0
        self._queue: deque[tuple[int, float]] = deque()

    def push(self, x: float) -> None:
        t, q = self._t, self._queue
        self._t = t + 1
        if math.isfinite(x):
            # An older value beaten by x can never be the extreme again while x is inside.
            if self._largest:
                while q and q[-1][1] <= x:
                    q.pop()
            else:
                while q and q[-1][1] >= x:
                    q.pop()
            q.append((t, x))
        while q and q[0][0] <= t - self._n:
            q.popleft()

    def value(self) -> float:
        return self._queue[0][1] if self._queue else NAN


class RollingLast:
    """The latest present value in a window (NaN when the window has none)."""

    __slots__ = ("_n", "_t", "_at", "_x")

    def __init__(self, n: int) -> None:
        self._n = n
        self._t = 0
        self._at = -n
        self._x = NAN

    def push(self, x: float) -> None:
        if math.isfinite(x):
            self._at, self._x = self._t, x
        self._t += 1

    def value(self) -> float:
        return self._x if self._at >= self._t - self._n else NAN
