"""Order-flow imbalance (Cont, Kukanov & Stoikov 2014) between consecutive buckets' books.

Net pressure on the best quotes, read from two book snapshots: bid size that arrived
(or a bid that stepped up) counts +, bid size that left counts −, and the mirror for
asks. Over short horizons, mid-price changes are close to linear in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import NAN
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params
from ccf.features.kinds.windows import RollingSum

Quote = tuple[float, float, float, float]  # bid price, bid qty, ask price, ask qty


def ofi_step(prev: Quote, now: Quote) -> float:
    """e_n for one level from the previous and the current (pb, qb, pa, qa); NaN if any is NaN.

    e_n = 1{Pb_n >= Pb_n-1}·qb_n − 1{Pb_n <= Pb_n-1}·qb_n-1
          − 1{Pa_n <= Pa_n-1}·qa_n + 1{Pa_n >= Pa_n-1}·qa_n-1
    """
    pb0, qb0, pa0, qa0 = prev
    pb, qb, pa, qa = now
    if pb0 != pb0 or qb0 != qb0 or pa0 != pa0 or qa0 != qa0:
        return NAN
    if pb != pb or qb != qb or pa != pa or qa != qa:
        return NAN
    e = 0.0
    if pb >= pb0:
        e += qb
    if pb <= pb0:
        e -= qb0
    if pa <= pa0:
        e -= qa
    if pa >= pa0:
        e += qa0
    return e


@kind("ofi")
def ofi(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Order-flow imbalance e_n, summed over book ``levels`` and the last ``windows`` buckets.

    Per level m < ``levels`` (multi-level OFI uses a_p_m, a_q_m, b_p_m, b_q_m) e_n as in
    :func:`ofi_step`, added across levels, then summed over each window of buckets (window
    1 = this bucket's e_n). NaN in the first bucket (no previous book) and wherever a
    level is missing; a carried bucket (same book) gives 0. Windows follow
    :mod:`~ccf.features.kinds.windows`: a full window with nothing missing.

    Config: {kind: ofi, levels: 1, windows: [1, 10]}
    Columns: ofi_<w> for levels 1, ofi_l<levels>_<w> otherwise
    Example: bid 99 x 2 -> 99 x 5, ask 101 x 3 -> 100 x 1: e = 5 - 2 - 1 + 0 = 2
    (bid size grew by 3, a new better ask of 1 arrived).
    """
    p = Params(params, columns)
    levels = p.integer("levels", 1)
    windows = p.windows([1])
    p.finish()
    quotes = tuple((f"b_p_{m}", f"b_q_{m}", f"a_p_{m}", f"a_q_{m}") for m in range(levels))
    for quote in quotes:
        p.require(*quote)
    prefix = "ofi" if levels == 1 else f"ofi_l{levels}"
    names = tuple(f"{prefix}_{w}" for w in windows)
    return names, lambda: _Ofi(quotes, names, windows)


class _Ofi:
    __slots__ = ("_quotes", "_prev", "_outs")

    def __init__(
        self, quotes: tuple[tuple[str, ...], ...], names: tuple[str, ...], windows: tuple[int, ...]
    ) -> None:
        self._quotes = quotes
        self._prev: list[Quote] = [(NAN, NAN, NAN, NAN)] * len(quotes)
        self._outs = tuple((name, RollingSum(w)) for name, w in zip(names, windows, strict=True))

    def step(self, row: Row) -> None:
        e = 0.0
        for m, (pb, qb, pa, qa) in enumerate(self._quotes):
            now = (row[pb], row[qb], row[pa], row[qa])
            e += ofi_step(self._prev[m], now)
            self._prev[m] = now
        for name, window in self._outs:
            window.push(e)
            row[name] = window.total() if window.full() else NAN
