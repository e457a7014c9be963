"""Durations as people read them."""

from __future__ import annotations


def readable_s(seconds: float | None) -> str:
    """A duration for people: ms below a second, then s, min, h, d.

    >>> readable_s(0.0123), readable_s(42), readable_s(5400), readable_s(72524903)
    ('12.3 ms', '42.0 s', '1.5 h', '839.4 d')
    """
    if seconds is None or seconds != seconds:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds * 1000:.1f} ms"
