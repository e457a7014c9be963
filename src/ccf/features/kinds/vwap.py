"""Book VWAP: the average price of walking one side of the book, to a depth or a notional.

What a market order of a given size would pay on average, so it sees liquidity that the
best level hides. Two ways to size it (give exactly one):

- ``depth: d``: over levels 0..d-1, Σ p_i·q_i / Σ q_i. NaN if any of those levels is
  missing: a thin book does not silently become a shallower VWAP.
- ``notional: N`` (quote currency): walk levels from the best until p·q adds up to N,
  taking the last level partly; VWAP = N / quantity taken. NaN when the book (or its
  first missing level) ends before N is filled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import NAN
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params, label

Levels = tuple[tuple[str, str], ...]


def vwap_to_depth(row: Row, levels: Levels) -> float:
    """Σ p·q / Σ q over the given (price, qty) columns; NaN if any is NaN or Σ q is 0."""
    paid = qty = 0.0
    for pc, qc in levels:
        p, q = row[pc], row[qc]
        paid += p * q
        qty += q
    return paid / qty if qty else NAN


def vwap_to_notional(row: Row, levels: Levels, notional: float) -> float:
    """``notional`` / the quantity that buys it, walking levels in order (last one partly)."""
    left, qty = notional, 0.0
    for pc, qc in levels:
        p, q = row[pc], row[qc]
        if not (p > 0 and q >= 0):  # also catches NaN: the walk cannot go on
            return NAN
        if p * q >= left:
            taken = qty + left / p  # 0 only when left / p underflows on a nonsense price
            return notional / taken if taken else NAN
        left -= p * q
        qty += q
    return NAN


def _side_levels(side: str, depth: int) -> Levels:
    return tuple((f"{side}_p_{i}", f"{side}_q_{i}") for i in range(depth))


def _vwap_kind(
    name: str, sides: tuple[str, ...], params: Mapping[str, Any], columns: Sequence[str]
) -> Built:
    p = Params(params, columns)
    depth = p.integer("depth", None)
    notional = p.number("notional", None)
    p.finish()
    if (depth is None) == (notional is None):
        raise ValueError(
            "give exactly one of depth (levels, e.g. depth: 5) or notional (e.g. notional: 10000)"
        )
    if depth is not None:
        name = f"{name}_{depth}"
        walks = tuple(_side_levels(side, depth) for side in sides)
        for levels in walks:
            p.require(*(c for level in levels for c in level))
        return (name,), lambda: _Vwap(name, walks, None)
    name = f"{name}_n{label(notional)}"
    for side in sides:
        p.require(f"{side}_p_0", f"{side}_q_0")
    walks = tuple(_side_levels(side, _book_depth(side, columns)) for side in sides)
    return (name,), lambda: _Vwap(name, walks, notional)


def _book_depth(side: str, columns: Sequence[str]) -> int:
    depth = 0
    while f"{side}_p_{depth}" in columns and f"{side}_q_{depth}" in columns:
        depth += 1
    return depth


class _Vwap:
    __slots__ = ("_name", "_sides", "_notional")

    def __init__(self, name: str, sides: tuple[Levels, ...], notional: float | None) -> None:
        self._name, self._sides, self._notional = name, sides, notional

    def step(self, row: Row) -> None:
        n = self._notional
        vwaps = [
            vwap_to_depth(row, levels) if n is None else vwap_to_notional(row, levels, n)
            for levels in self._sides
        ]
        row[self._name] = vwaps[0] if len(vwaps) == 1 else (vwaps[0] + vwaps[1]) / 2


@kind("vwap_ask")
def vwap_ask(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """VWAP of the asks (what a buy pays), to ``depth`` levels or a ``notional``.

    Config: {kind: vwap_ask, depth: 2}
    Columns: vwap_ask_<depth> or vwap_ask_n<notional> (notional: 2500.5 -> vwap_ask_n2500p5)
    Example: asks 100 x 1, 102 x 3: depth 2 -> (100 + 306) / 4 = 101.5;
    notional 202 -> 100 for the first 1, 102 for 1 more -> 202 / 2 = 101.
    """
    return _vwap_kind("vwap_ask", ("a",), params, columns)


@kind("vwap_bid")
def vwap_bid(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """VWAP of the bids (what a sell gets), to ``depth`` levels or a ``notional``.

    Config: {kind: vwap_bid, notional: 10000}
    Columns: vwap_bid_<depth> or vwap_bid_n<notional>
    Example: bids 99 x 1, 98 x 2: depth 2 -> (99 + 196) / 3 = 98.333...
    """
    return _vwap_kind("vwap_bid", ("b",), params, columns)


@kind("vwap_mid")
def vwap_mid(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Mean of the ask and bid VWAPs to the same ``depth`` or ``notional``: a depth-aware mid.

    Config: {kind: vwap_mid, depth: 5}
    Columns: vwap_mid_<depth> or vwap_mid_n<notional>
    Example: vwap_ask_2 = 101.5, vwap_bid_2 = 98.5 -> vwap_mid_2 = 100.
    """
    return _vwap_kind("vwap_mid", ("a", "b"), params, columns)
