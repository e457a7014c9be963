"""Trade features: who is aggressing (taker flow imbalance), how long the tape has been quiet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import NAN, ratio
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params
from ccf.features.kinds.windows import RollingSum

NS = 1e9


@kind("trade_flow_imbalance")
def trade_flow_imbalance(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Taker imbalance (B - S) / (B + S), with B, S the buy and sell qty over the last w buckets.

    In [-1, 1]; +1 = only taker buys. NaN when the window had no trades at all: "no
    flow" is not "balanced flow", and 0 would tell a model the latter. Windows follow
    :mod:`~ccf.features.kinds.windows` (NaN until w buckets have been seen).

    Config: {kind: trade_flow_imbalance, windows: [1, 10]}
    Columns: trade_flow_imbalance_<w>
    Example: buys 3, 1 and sells 0, 2 over 2 buckets -> (4 - 2) / 6 = 1/3.
    """
    p = Params(params, columns)
    windows = p.windows([1])
    p.finish()
    p.require("buy_qty", "sell_qty")
    names = tuple(f"trade_flow_imbalance_{w}" for w in windows)
    return names, lambda: _FlowImbalance(names, windows)


class _FlowImbalance:
    __slots__ = ("_outs",)

    def __init__(self, names: tuple[str, ...], windows: tuple[int, ...]) -> None:
        self._outs = tuple(
            (name, RollingSum(w), RollingSum(w)) for name, w in zip(names, windows, strict=True)
        )

    def step(self, row: Row) -> None:
        buy, sell = row["buy_qty"], row["sell_qty"]
        for name, buys, sells in self._outs:
            buys.push(buy)
            sells.push(sell)
            if buys.full() and sells.full():
                b, s = buys.total(), sells.total()
                row[name] = ratio(b - s, b + s)
            else:
                row[name] = NAN


@kind("time_since_last_trade")
def time_since_last_trade(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Seconds from the latest trade so far to the bucket's end = (ts_end - last_trade_ts) / 1e9.

    Tells a quiet market from a busy one even when the book looks the same; NaN before
    the first trade. Integer nanoseconds in the row are welcome (exact difference).

    Config: {kind: time_since_last_trade}
    Columns: time_since_last_trade
    Example: ts_end = 10_000_000_000, last_trade_ts = 7_500_000_000 -> 2.5.
    """
    p = Params(params, columns)
    p.finish()
    p.require("ts_end", "last_trade_ts")
    return ("time_since_last_trade",), _SinceTrade


class _SinceTrade:
    __slots__ = ()

    def step(self, row: Row) -> None:
        row["time_since_last_trade"] = (row["ts_end"] - row["last_trade_ts"]) / NS
