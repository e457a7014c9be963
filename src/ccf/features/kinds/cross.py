"""Cross-venue features: they read another venue's columns joined into the row.

A row of one venue's instrument gets the same bucket's row of another venue's
instrument joined in by :class:`ccf.features.cross.VenueJoin`, its columns
prefixed with an alias (``perp.m_p``: the perpetual's mid). These kinds run
after that join (the join's ``features`` list), one bucket at a time like
every kind, so live = batch holds for them as for the rest:

- ``basis``: the perpetual-spot basis = (perp mid - spot mid) / spot mid;
- ``mid_deviation``: one venue's mid from another's, in basis points;
- ``lead_lag_return``: a venue's last-k-bucket log return as an input to
  another venue's forecast (which venue moves first).

A column missing on either side (the other venue had no book yet, or a
bucket without its row) gives NaN, never an error.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params


class _Basis:
    __slots__ = ("perp", "spot", "out")

    def __init__(self, perp: str, spot: str, out: str) -> None:
        self.perp, self.spot, self.out = perp, spot, out

    def step(self, row: Row) -> None:
        spot = row[self.spot]
        row[self.out] = (row[self.perp] - spot) / spot if spot else math.nan

    def __getstate__(self) -> tuple[str, str, str]:
        return self.perp, self.spot, self.out

    def __setstate__(self, state: tuple[str, str, str]) -> None:
        self.perp, self.spot, self.out = state


@kind("basis")
def basis(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """The perpetual-spot basis = (perp - spot) / spot, of two mid columns.

    In a venue join: {kind: basis, perp: perp.m_p, spot: m_p}; any two price columns work.

    Config: {kind: basis, perp: a_p_0, spot: m_p, name: basis}
    Columns: the ``name`` given (default ``basis``)
    Example: perp.m_p=100.5, m_p=100 -> basis=0.005.
    """
    p = Params(params, columns)
    perp = p.column("perp", "perp.m_p")
    spot = p.column("spot", "m_p")
    out = p._get("name", "basis", "name: basis")
    p.finish()
    return (out,), lambda: _Basis(perp, spot, out)


class _Deviation(_Basis):
    __slots__ = ()

    def step(self, row: Row) -> None:
        ref = row[self.spot]
        row[self.out] = 1e4 * (row[self.perp] - ref) / ref if ref else math.nan


@kind("mid_deviation")
def mid_deviation(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """One venue's mid from another's, in basis points = 1e4 * (of - ref) / ref.

    In a venue join: {kind: mid_deviation, of: perp.m_p, ref: m_p}.

    Config: {kind: mid_deviation, of: b_p_0, ref: m_p, name: mid_dev_bps}
    Columns: the ``name`` given (default ``mid_dev_bps``)
    Example: of=100.02, ref=100 -> 2.0 bps.
    """
    p = Params(params, columns)
    of = p.column("of")
    ref = p.column("ref", "m_p")
    out = p._get("name", "mid_dev_bps", "name: mid_dev_bps")
    p.finish()
    return (out,), lambda: _Deviation(of, ref, out)


class _LeadLag:
    """The last ``k + 1`` values of a price column; log(newest / oldest)."""

    __slots__ = ("col", "out", "seen")

    def __init__(self, col: str, out: str, k: int) -> None:
        self.col, self.out = col, out
        self.seen: deque[float] = deque(maxlen=k + 1)

    def step(self, row: Row) -> None:
        seen = self.seen
        seen.append(row[self.col])
        if len(seen) < seen.maxlen:  # type: ignore[operator]
            row[self.out] = math.nan
            return
        old, new = seen[0], seen[-1]
        ratio = new / old if old > 0 and new > 0 else math.nan
        row[self.out] = math.log(ratio) if ratio > 0 else math.nan  # 0: an underflow

    def __getstate__(self) -> tuple[str, str, int, list[float]]:
        return self.col, self.out, self.seen.maxlen or 1, list(self.seen)

    def __setstate__(self, state: tuple[str, str, int, list[float]]) -> None:
        self.col, self.out, maxlen, values = state
        self.seen = deque(values, maxlen=maxlen)


@kind("lead_lag_return")
def lead_lag_return(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Another venue's log return over the last ``k`` buckets = log(x_t / x_{t-k}).

    In a venue join: {kind: lead_lag_return, col: perp.m_p, k: 5, name: perp_ret_5}.

    Config: {kind: lead_lag_return, col: m_p, k: 5, name: ret_5}
    Columns: the ``name`` given (default ``<col>_ret_<k>``); NaN for the first k buckets
    Example: col 100 five buckets ago and 101 now -> log(1.01) = 0.00995.
    """
    p = Params(params, columns)
    col = p.column("col")
    k = p.integer("k", 1)
    out = p._get("name", f"{col}_ret_{k}", "name: perp_ret_5")
    p.finish()
    return (out,), lambda: _LeadLag(col, out, k)
