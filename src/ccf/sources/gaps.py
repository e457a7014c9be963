"""Open and close gap records, one per outage of a (symbol, stream): shared by every feed.

A feed that mixes this in has ``exchange``, ``open_gaps`` (a dict keyed by
``(symbol, stream)``) and ``stats`` (a Counter).
"""

from __future__ import annotations

import logging
from collections import Counter

from ccf.records import Gap, GapReason, Record

log = logging.getLogger(__name__)


class GapLedger:
    exchange: str
    open_gaps: dict[tuple[str, str], Gap]
    stats: Counter[str]

    def open_gap(
        self,
        symbol: str,
        stream: str,
        reason: GapReason,
        detail: str,
        start_ts: int,
        ts_recv: int,
        out: list[Record],
    ) -> None:
        key = (symbol, stream)
        if key in self.open_gaps:  # one outage, one gap: keep its first cause
            return
        gap = Gap(self.exchange, symbol, stream, start_ts, None, reason, detail, ts_recv)
        self.open_gaps[key] = gap
        self.stats["gaps"] += 1
        out.append(gap)

    def close_gap(
        self,
        symbol: str,
        stream: str,
        end_ts: int,
        ts_recv: int,
        out: list[Record],
        detail: str = "",
    ) -> Gap:
        gap = self.open_gaps.pop((symbol, stream))
        text = f"{gap.detail}; {detail}" if detail else gap.detail
        closed = gap._replace(end_ts=max(end_ts, gap.start_ts), detail=text, ts_recv=ts_recv)
        out.append(closed)
        log.info(
            "part=collect exchange=%s symbol=%s stream=%s gap closed after %.3f s",
            self.exchange,
            symbol,
            stream,
            (end_ts - gap.start_ts) / 1e9,
        )
        return closed
