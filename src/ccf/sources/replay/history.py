"""What the replay has played of a symbol's trades, addressed across loop passes.

REST history (trades, aggregate trades, klines) answers only what a
websocket client could already have seen: the trades played so far, earlier
passes included, with the ids and times they were sent with. Pass ``k``
replays the tape with ids moved by ``k`` id ranges and times by ``k``
periods, so every trade has a global ordinal ``g = k * n + i`` (``i``: its
place on the tape), and every aggregate one too; ids and times grow with the
ordinal, which makes each lookup a binary search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ccf.sources.replay.market import Market
from ccf.sources.replay.tape import TradeTape, agg_row, trade_row
from ccf.sources.replay.wire import NS_PER_MS


def lower_bound(n: int, key: Callable[[int], int], value: int) -> int:
    """The first ``g`` in ``[0, n)`` with ``key(g) >= value`` (``key`` non-decreasing), else n."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if key(mid) < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@dataclass(frozen=True, slots=True)
class Played:
    """One symbol's played trades at one moment: ordinals ``[0, trades)`` and ``[0, aggs)``."""

    tape: TradeTape
    trades: int
    aggs: int
    period_ms: int
    shift_ms: int  # the clock's rebase shift
    event_ms: int | None  # exchange time of the last frame played (any symbol)
    current_pass: int

    def dt(self, k: int) -> int:
        """Exchange time minus recorded time in pass ``k``."""
        return self.shift_ms + k * self.period_ms

    def trade_time(self, g: int) -> int:
        k, i = divmod(g, self.tape.count)
        return self.tape.times_ms[i] + self.dt(k)

    def trade_id(self, g: int) -> int:
        k, i = divmod(g, self.tape.count)
        return self.tape.ids[i] + k * self.tape.id_step

    def trade_price(self, g: int) -> int:
        return self.tape.prices[g % self.tape.count]

    def agg_time(self, a: int) -> int:
        k, j = divmod(a, self.tape.agg_count)
        return self.tape.times_ms[self.tape.agg_starts[j]] + self.dt(k)

    def trade_row(self, g: int) -> dict[str, Any]:
        k, i = divmod(g, self.tape.count)
        return trade_row(self.tape, i, k, self.dt(k))

    def agg_row(self, a: int) -> dict[str, Any]:
        k, j = divmod(a, self.tape.agg_count)
        return agg_row(self.tape, j, k, self.dt(k))

    def trade_from_id(self, trade_id: int) -> int:
        """Ordinal of the first played trade with id >= ``trade_id``."""
        return lower_bound(self.trades, self.trade_id, trade_id)

    def agg_from_id(self, agg_id: int) -> int:
        """Ordinal of aggregate ``agg_id`` (ids are consecutive from the tape's base)."""
        return min(max(agg_id - self.tape.agg_base, 0), self.aggs)

    def trade_at(self, t_ms: int) -> int:
        """Ordinal of the first played trade at or after ``t_ms``."""
        return lower_bound(self.trades, self.trade_time, t_ms)

    def agg_at(self, t_ms: int) -> int:
        return lower_bound(self.aggs, self.agg_time, t_ms)

    def segments(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """Ordinals ``[lo, hi)`` split by pass: ``(pass, first tape index, end tape index)``."""
        n, out = self.tape.count, []
        while lo < hi:
            k, i = divmod(lo, n)
            end = min(n, i + hi - lo)
            out.append((k, i, end))
            lo += end - i
        return out


def played(market: Market, sym: str) -> Played | None:
    """The played trades of ``sym``; None when it has no recorded trades."""
    tape = market.timeline.tapes.get(sym)
    if tape is None or not tape.count:
        return None
    k, i = market.pass_index, market.played.get(sym, 0)
    return Played(
        tape,
        k * tape.count + i,
        k * tape.agg_count + aggs_done(tape, i),
        market.timeline.period_ns // NS_PER_MS,
        market.time_shift_ms,
        market.event_ms,
        k,
    )


def aggs_done(tape: TradeTape, i: int) -> int:
    """Aggregates complete once the first ``i`` trades of a pass are played."""
    ends = tape.agg_starts
    return lower_bound(len(ends) - 1, lambda j: ends[j + 1], i + 1)
