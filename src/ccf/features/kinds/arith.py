"""Float arithmetic for feature math: ratios that never raise, sums that never drift.

Features see NaN for anything unknown (a missing book level, no trades yet), and a
feature of NaN is NaN, never an exception: Python's ``x / 0`` and ``log(0)`` raise, so
kinds divide and take logs through these helpers. Undefined ratios (÷0, log of a
non-positive ratio) are NaN too, not ±inf, so one bad bucket cannot blow up a model.
"""

from __future__ import annotations

import math

NAN = math.nan
_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's splitter for 53-bit doubles


def ratio(x: float, y: float) -> float:
    """x / y; NaN when y is 0 or either is NaN.

    >>> ratio(3.0, 2.0), ratio(1.0, 0.0)
    (1.5, nan)
    """
    return x / y if y else NAN  # NaN is truthy, and x / NaN is NaN


def log_ratio(x: float, y: float) -> float:
    """log(x / y); NaN unless x / y is a positive number.

    >>> log_ratio(1.0, 1.0), log_ratio(-1.0, 1.0)
    (0.0, nan)
    """
    r = ratio(x, y)
    return math.log(r) if r > 0 else NAN


def add_exact(partials: list[float], x: float) -> None:
    """Add finite ``x`` to an exact sum held as partials; ``math.fsum(partials)`` reads it.

    Shewchuk's algorithm (the ``msum`` recipe behind ``math.fsum``): the partials are
    non-overlapping, so adding a value and later adding its negation restores the sum
    exactly, and a rolling sum kept this way is bit-equal to ``math.fsum(window)`` however
    long it runs. A plain running sum drifts: after a large value leaves, its rounding
    error stays. The list stays short (a handful of entries; at most ~40 for doubles).
    """
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


def two_product(a: float, b: float) -> tuple[float, float]:
    """``(p, e)`` with ``p = fl(a * b)`` and ``a * b == p + e`` exactly (Dekker).

    Lets a sum of squares or products be kept exactly with :func:`add_exact`, which is
    what makes a rolling variance immune to cancellation (``math.fma`` is 3.13+).
    """
    p = a * b
    c = _SPLIT * a
    a_hi = c - (c - a)
    a_lo = a - a_hi
    c = _SPLIT * b
    b_hi = c - (c - b)
    b_lo = b - b_hi
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
