"""A symbol's recorded trades as columns, and the aggregate trades built from them.

Decimals are kept as integers of 1e-8 (spot's 8 decimals), so every sum the
exchange answers (aggregate quantities, kline volumes) is exact and the
same whichever way it is grouped: a candle folded trade by trade on the
stream equals the one REST builds from cached pieces.

Aggregation rule. Binance aggregates "trades that fill at the same time,
from the same taker order, with the same price". The recordings carry no
order ids (removed from the trade stream in 2024), so the closest observable
rule is used: a run of consecutive trade ids with the same trade time ``T``,
the same price and the same side (``m``) is one aggregate. One taker order
that sweeps several levels gives one aggregate per price, as on Binance.

    >>> tape = TradeTape()
    >>> for tid, p, q in ((7, "1.5", "0.1"), (8, "1.5", "0.2"), (9, "1.6", "1")):
    ...     tape.add(tid, 1000, p, q, True, 1001)
    >>> tape.finish()
    >>> agg_row(tape, 0, 0, 0)["q"], tape.agg_count
    ('0.30000000', 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import Any

SCALE = 10**8  # units per 1: spot prices and quantities have 8 decimals


def to_units(text: str) -> int:
    """``"61837.63000000"`` -> 6183763000000; refuses more than 8 decimals (not exact)."""
    d = Decimal(text) * SCALE
    if not d.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    if d != d.to_integral_value():
        raise ValueError(f"{text!r} has more than 8 decimals")
    return int(d)


def fmt8(units: int) -> str:
    """Units as Binance writes decimals: ``"0.02000000"``."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), SCALE)
    return f"{sign}{whole}.{frac:08d}"


def quote_units(price: int, qty: int) -> int:
    """``price * qty`` rounded half-even to 8 decimals (a trade's ``quoteQty``)."""
    whole, rest = divmod(price * qty, SCALE)
    if rest * 2 > SCALE or (rest * 2 == SCALE and whole % 2):
        whole += 1
    return whole


@dataclass(slots=True)
class TradeTape:
    """Pass-0 trades in play order (= id order, trade time non-decreasing) as columns."""

    ids: list[int] = field(default_factory=list)
    times_ms: list[int] = field(default_factory=list)
    prices: list[int] = field(default_factory=list)
    qtys: list[int] = field(default_factory=list)
    quotes: list[int] = field(default_factory=list)
    buy_qtys: list[int] = field(default_factory=list)  # qty when the taker bought, else 0
    buy_quotes: list[int] = field(default_factory=list)
    maker: list[bool] = field(default_factory=list)  # m: the buyer was the maker
    lag_ms: int = 0  # most a trade's event time (its frame's place) runs after its T
    # aggregates, set by finish(): agg j is trades [agg_starts[j], agg_starts[j + 1])
    agg_starts: list[int] = field(default_factory=list)
    agg_qtys: list[int] = field(default_factory=list)
    agg_ending: list[int] = field(default_factory=list)  # per trade: the agg it completes, or -1
    agg_base: int = 0
    # running sums, set by finish(): cum_qtys[i] = sum(qtys[:i]) (24 h tickers, avgPrice)
    cum_qtys: list[int] = field(default_factory=list)
    cum_quotes: list[int] = field(default_factory=list)
    high: int = 0  # the tape's highest and lowest price (a whole pass in a 24 h window)
    low: int = 0

    def add(self, tid: int, t_ms: int, price: str, qty: str, maker: bool, event_ms: int) -> None:
        p, q = to_units(price), to_units(qty)
        quote = quote_units(p, q)
        self.ids.append(tid)
        self.times_ms.append(t_ms)
        self.prices.append(p)
        self.qtys.append(q)
        self.quotes.append(quote)
        self.buy_qtys.append(0 if maker else q)
        self.buy_quotes.append(0 if maker else quote)
        self.maker.append(maker)
        self.lag_ms = max(self.lag_ms, event_ms - t_ms)

    def finish(self) -> None:
        """Group the trades into aggregates (see the module docstring for the rule)."""
        ids, times, prices, maker = self.ids, self.times_ms, self.prices, self.maker
        starts: list[int] = []
        for i in range(len(ids)):
            joins = (
                i > 0
                and ids[i] == ids[i - 1] + 1
                and times[i] == times[i - 1]
                and prices[i] == prices[i - 1]
                and maker[i] == maker[i - 1]
            )
            if not joins:
                starts.append(i)
        starts.append(len(ids))
        self.agg_starts = starts
        self.agg_qtys = [sum(self.qtys[a:b]) for a, b in zip(starts, starts[1:], strict=False)]
        ending = [-1] * len(ids)
        for j, b in enumerate(starts[1:]):
            ending[b - 1] = j
        self.agg_ending = ending
        # A range of their own, below the trade ids (aggregates are fewer than trades):
        # a client that mixes the two kinds of id up gets nothing that looks right.
        self.agg_base = ids[0] // 2 if ids else 0
        self.cum_qtys = list(accumulate(self.qtys, initial=0))
        self.cum_quotes = list(accumulate(self.quotes, initial=0))
        self.high, self.low = (max(self.prices), min(self.prices)) if ids else (0, 0)

    def __repr__(self) -> str:
        return f"TradeTape(trades={self.count}, aggs={self.agg_count}, lag_ms={self.lag_ms})"

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def agg_count(self) -> int:
        return len(self.agg_qtys)

    @property
    def id_step(self) -> int:
        """Trade ids advance this much per loop pass (the recorded id range)."""
        return self.ids[-1] - self.ids[0] + 1 if self.ids else 0


def trade_row(tape: TradeTape, i: int, k: int, dt_ms: int) -> dict[str, Any]:
    """Trade ``i`` of pass ``k`` as ``/api/v3/historicalTrades`` shows it."""
    p, q = tape.prices[i], tape.qtys[i]
    return {
        "id": tape.ids[i] + k * tape.id_step,
        "price": fmt8(p),
        "qty": fmt8(q),
        "quoteQty": fmt8(tape.quotes[i]),
        "time": tape.times_ms[i] + dt_ms,
        "isBuyerMaker": tape.maker[i],
        "isBestMatch": True,
    }


def agg_row(tape: TradeTape, j: int, k: int, dt_ms: int) -> dict[str, Any]:
    """Aggregate ``j`` of pass ``k`` as ``/api/v3/aggTrades`` shows it; ids run on across passes."""
    s, e = tape.agg_starts[j], tape.agg_starts[j + 1] - 1
    shift = k * tape.id_step
    return {
        "a": tape.agg_base + k * tape.agg_count + j,
        "p": fmt8(tape.prices[s]),
        "q": fmt8(tape.agg_qtys[j]),
        "f": tape.ids[s] + shift,
        "l": tape.ids[e] + shift,
        "T": tape.times_ms[s] + dt_ms,
        "m": tape.maker[s],
        "M": True,
    }
