"""Lead time: how late after its origin bucket a forecast was stored, and how much of its
horizon was still ahead then.

Both are measured on the *event clock* (exchange time), the clock the buckets are cut
on. A wall clock is the wrong ruler for a replay: at ``replay.speed=10`` exchange time
runs ten times faster than the wall, and a wall-clock "lag" comes out minutes negative.
The event clock now is read off the newest raw record the collector stored for the
symbol: its event time, plus the wall time since it was received, times the replay
speed (1 live). So at any speed the figure is in exchange seconds, and the share of
the horizon left is a pure ratio. With ``replay.speed=0`` (flat out) the event clock has
no rate: it is taken as the newest event time seen, a lower bound of the delay.

    delay_s, left = lead(event_now, origin_end, horizon_ns)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ccf.config import Settings

_NAN = float("nan")


def lead(event_now_ns: int, origin_end_ns: int, horizon_ns: int) -> tuple[float, float]:
    """(delay after the origin bucket's end in seconds, share of the horizon left).

    The horizon runs from the origin bucket's end to the target bucket's end; a share
    <= 0 means the forecast was stored after its target bucket had closed.

    >>> lead(1_100_000_000, 1_000_000_000, 1_000_000_000)
    (0.1, 0.9)
    """
    delay = event_now_ns - origin_end_ns
    return delay / 1e9, (1.0 - delay / horizon_ns) if horizon_ns > 0 else _NAN


def clock_rate(settings: Settings) -> float:
    """Event seconds per wall second: the replay's speed, 1 for a live exchange."""
    return float(settings.replay.speed) if settings.source == "replay" else 1.0


class EventClock:
    """The event clock now, per symbol, from the raw store's newest record (see above)."""

    def __init__(self, settings: Settings, raw: Any | None) -> None:
        self.exchange = settings.exchange
        self.rate = clock_rate(settings)
        self.raw = raw
        m = "?"  # both raw stores' query() take SQLite's placeholders
        where = f"WHERE exchange = {m} AND symbol = {m}"
        self._book_source = settings.features.book_source
        self._sql = (  # both read the newest row of their primary key
            f"SELECT ts_event, ts_recv FROM book {where} AND source = {m} "
            "ORDER BY update_id DESC LIMIT 1",
            f"SELECT ts_event, ts_recv FROM trade {where} ORDER BY trade_id DESC LIMIT 1",
        )

    def now(self, symbol: str) -> int | None:
        """Exchange time now for ``symbol``, or None before it has a record (or without a
        raw store: the caller then leaves the lead time NaN rather than guess)."""
        if self.raw is None:
            return None
        newest: tuple[int, int] | None = None
        book, trade = self._sql
        for sql, params in (
            (book, (self.exchange, symbol, self._book_source)),
            (trade, (self.exchange, symbol)),
        ):
            rows = self.raw.query(sql, params)
            if rows and rows[0][0] is not None and (newest is None or rows[0][1] > newest[1]):
                newest = (int(rows[0][0]), int(rows[0][1]))
        if newest is None:
            return None
        ts_event, ts_recv = newest
        since = max(0, time.time_ns() - ts_recv)
        return ts_event + int(since * self.rate)


def lead_summary(
    delays: Iterable[float], late: Mapping[int, int], left_min: float | None
) -> dict[str, Any]:
    """What a heartbeat says about lead times: p50/p99 of the recent delays (s), the
    forecasts stored after their target bucket closed per horizon, the least share left."""
    d = np.fromiter(delays, float)
    return {
        "delay_p50_s": None if not len(d) else round(float(np.percentile(d, 50)), 4),
        "delay_p99_s": None if not len(d) else round(float(np.percentile(d, 99)), 4),
        "n": int(len(d)),
        "after_target": {str(h): n for h, n in sorted(late.items())},
        "horizon_left_min": None if left_min is None else round(left_min, 4),
    }
