"""Durations and event-time buckets.

Buckets are aligned to the epoch (a 1 s bucket starts on a whole second,
a 1 m bucket on a whole minute), so every process, live or batch, cuts
time at the same places without agreeing on a start.

>>> parse_duration("100ms"), parse_duration("1m")
(100000000, 60000000000)
>>> bucket_start(1_234_567_891, 1_000_000_000)
1000000000
"""

from __future__ import annotations

import re

NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
NS["m"] = 60 * NS["s"]
NS["h"] = 60 * NS["m"]
NS["d"] = 24 * NS["h"]
DURATION_RE = re.compile(r"^(\d+)(ns|us|ms|s|m|h|d)$")


def parse_duration(text: str) -> int:
    """``"100ms"`` -> 100_000_000 ns; a ValueError says how to write one."""
    m = DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration; write e.g. 100ms, 1s, 5m, 1h")
    return int(m.group(1)) * NS[m.group(2)]


def interval_ns(text: str) -> int:
    """A candle interval (``1m``, ``4h``, ``1w``) in ns; months have no fixed length."""
    if text.endswith("w"):
        return 7 * parse_duration(text[:-1] + "d")
    if text.endswith("M"):
        raise ValueError(f"{text!r}: months have no fixed length; use 1w or shorter")
    return parse_duration(text)


def bucket_start(ts: int, size: int) -> int:
    """Start of the bucket holding ``ts`` (floor, also for times before the epoch)."""
    return ts - ts % size
