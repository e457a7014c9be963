"""Coinbase's ISO-8601 times (``2021-04-17T16:43:37.075687Z``) as int ns, without datetime
objects on the hot path: the date's midnight is cached, the rest is integer arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=256)
def _minute_ns(minute: str) -> int:
    """``2021-04-17T16:43`` -> ns since the epoch at that minute."""
    return int(datetime.fromisoformat(minute).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


_SECONDS: dict[str, int] = {}  # "2021-04-17T16:43:37" -> ns; bounded below


def iso_ns(text: str) -> int:
    """``2021-04-17T16:43:37.075687Z`` -> ns since the epoch; ValueError if it is not that shape."""
    if len(text) < 20 or text[-1] != "Z" or text[10] != "T" or text[16] != ":":
        raise ValueError(f"not a Coinbase UTC time: {text!r}")
    if text[19] == ".":
        frac = text[20:-1]
        frac_ns = int(frac) * 10 ** (9 - len(frac)) if 0 < len(frac) <= 9 else int(frac[:9])
    else:
        frac_ns = 0
    head = text[:19]
    sec = _SECONDS.get(head)
    if sec is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        sec = _SECONDS[head] = _minute_ns(text[:16]) + int(text[17:19]) * 1_000_000_000
    return sec + frac_ns
