"""Coinbase's ISO-8601 times (``2021-04-17T16:43:37.075687Z``) as int ns, without datetime
objects on the hot path: the date's midnight is cached, the rest is integer arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=64)
def _midnight_ns(date: str) -> int:
    return int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


def iso_ns(text: str) -> int:
    """``2021-04-17T16:43:37.075687Z`` -> ns since the epoch; ValueError if it is not that shape."""
    if len(text) < 20 or text[10] != "T" or text[-1] != "Z":
        raise ValueError(f"not a Coinbase UTC time: {text!r}")
    secs = int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
    frac = text[20:-1] if text[19] == "." else ""
    return _midnight_ns(text[:10]) + secs * 1_000_000_000 + int((frac + "000000000")[:9])
