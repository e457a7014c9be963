"""``realized_vol``: the recent variability of a price, from its bucket-to-bucket log returns."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import NAN, log_ratio
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params
from ccf.features.kinds.windows import RollingSum


@kind("realized_vol")
def realized_vol(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """sqrt(Σ r²) over the last w buckets, r_t = log(x_t / x_t-1) of ``column`` (default m_p).

    Not annualized and not demeaned (the usual high-frequency estimator). A carried
    bucket is a zero return. NaN until w returns without a missing one (w + 1 prices),
    per :mod:`~ccf.features.kinds.windows`. One column per window.

    Config: {kind: realized_vol, column: m_p, windows: [2, 60]}
    Columns: realized_vol_<column>_<w>
    Example: m_p 100, 110, 99 -> r = log 1.1, log 0.9 -> realized_vol_m_p_2 =
    sqrt(0.0953² + 0.1054²) = 0.1421.
    """
    p = Params(params, columns)
    column = p.column("column", "m_p")
    windows = p.windows()
    p.finish()
    names = tuple(f"realized_vol_{column}_{w}" for w in windows)
    return names, lambda: _RealizedVol(column, names, windows)


class _RealizedVol:
    __slots__ = ("_column", "_prev", "_outs")

    def __init__(self, column: str, names: tuple[str, ...], windows: tuple[int, ...]) -> None:
        self._column = column
        self._prev = NAN
        self._outs = tuple((name, RollingSum(w)) for name, w in zip(names, windows, strict=True))

    def step(self, row: Row) -> None:
        x = row[self._column]
        r = log_ratio(x, self._prev)
        self._prev = x
        for name, window in self._outs:
            window.push(r * r)
            row[name] = math.sqrt(window.total()) if window.full() else NAN
