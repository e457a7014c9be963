"""Top-of-book features of one bucket's book: mid, spread, micro-price, depth imbalance.

Stateless: each reads the bucket's last book only (a carried bucket gives the same
values again). A missing level is NaN in the row, and so is every feature built on it;
a crossed book (ask below bid, possible for an instant across venues' updates) passes
through: its spread is negative, not an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import ratio
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params

BEST = ("a_p_0", "a_q_0", "b_p_0", "b_q_0")


@kind("m_p")
def m_p(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Mid price, the original system's ``m_p`` = (a_p_0 + b_p_0) / 2.

    Config: {kind: m_p}
    Columns: m_p
    Example: a_p_0=101, b_p_0=99 -> m_p=100.
    """
    p = Params(params, columns)
    p.finish()
    p.require("a_p_0", "b_p_0")
    return ("m_p",), _Mid


class _Mid:
    __slots__ = ()

    def step(self, row: Row) -> None:
        row["m_p"] = (row["a_p_0"] + row["b_p_0"]) / 2


@kind("spread")
def spread(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Quoted spread in price units = a_p_0 - b_p_0 (negative when the book is crossed).

    Config: {kind: spread}
    Columns: spread
    Example: a_p_0=101, b_p_0=99 -> spread=2.
    """
    p = Params(params, columns)
    p.finish()
    p.require("a_p_0", "b_p_0")
    return ("spread",), _Spread


class _Spread:
    __slots__ = ()

    def step(self, row: Row) -> None:
        row["spread"] = row["a_p_0"] - row["b_p_0"]


@kind("rel_spread")
def rel_spread(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Spread over the mid = (a_p_0 - b_p_0) / ((a_p_0 + b_p_0) / 2): comparable across symbols.

    Config: {kind: rel_spread}
    Columns: rel_spread
    Example: a_p_0=101, b_p_0=99 -> rel_spread = 2 / 100 = 0.02.
    """
    p = Params(params, columns)
    p.finish()
    p.require("a_p_0", "b_p_0")
    return ("rel_spread",), _RelSpread


class _RelSpread:
    __slots__ = ()

    def step(self, row: Row) -> None:
        a, b = row["a_p_0"], row["b_p_0"]
        row["rel_spread"] = ratio(a - b, (a + b) / 2)


@kind("micro_price")
def micro_price(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Size-weighted mid = (b_p_0·a_q_0 + a_p_0·b_q_0) / (a_q_0 + b_q_0).

    Leans toward the side likely to be hit next: a thin ask pulls it up to the ask.
    NaN when both best sizes are 0.

    Config: {kind: micro_price}
    Columns: micro_price
    Example: ask 101 x 1, bid 99 x 3 -> (99·1 + 101·3) / 4 = 100.5.
    """
    p = Params(params, columns)
    p.finish()
    p.require(*BEST)
    return ("micro_price",), _MicroPrice


class _MicroPrice:
    __slots__ = ()

    def step(self, row: Row) -> None:
        aq, bq = row["a_q_0"], row["b_q_0"]
        row["micro_price"] = ratio(row["b_p_0"] * aq + row["a_p_0"] * bq, aq + bq)


@kind("depth_imbalance")
def depth_imbalance(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Resting-size imbalance (bq - aq) / (bq + aq), in [-1, 1]; positive = more bids.

    Per level i < ``levels`` (``depth_imbalance_<i>``) and, when levels > 1, over the
    sizes summed across those levels (``depth_imbalance_cum_<levels>``). NaN when a
    level is missing (NaN) or both sizes are 0.

    Config: {kind: depth_imbalance, levels: 2}
    Columns: depth_imbalance_0, depth_imbalance_1, depth_imbalance_cum_2
    Example: b_q=(3, 1), a_q=(1, 1) -> level 0: (3-1)/4 = 0.5, level 1: 0, cum: (4-2)/6 = 1/3.
    """
    p = Params(params, columns)
    levels = p.integer("levels", 1)
    p.finish()
    for i in range(levels):
        p.require(f"a_q_{i}", f"b_q_{i}")
    cum = f"depth_imbalance_cum_{levels}" if levels > 1 else None
    names = tuple(f"depth_imbalance_{i}" for i in range(levels)) + ((cum,) if cum else ())
    return names, lambda: _DepthImbalance(levels, cum)


class _DepthImbalance:
    __slots__ = ("_levels", "_cum")

    def __init__(self, levels: int, cum: str | None) -> None:
        self._levels = tuple(
            (f"depth_imbalance_{i}", f"b_q_{i}", f"a_q_{i}") for i in range(levels)
        )
        self._cum = cum

    def step(self, row: Row) -> None:
        bids = asks = 0.0
        for name, b, a in self._levels:
            bq, aq = row[b], row[a]
            row[name] = ratio(bq - aq, bq + aq)
            bids += bq
            asks += aq
        if self._cum:
            row[self._cum] = ratio(bids - asks, bids + asks)
