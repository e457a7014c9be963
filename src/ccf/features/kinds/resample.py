"""``resample``: a coarser view of columns, kept incrementally at every bucket.

The original system resampled its bucket frame to a coarser rule. A stream cannot wait
for the coarse bar to close, so this is the rolling form: at each bucket, the aggregate
of the last ``window`` buckets (a 1 s stream with window 60 sees a sliding 1 min bar).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import NAN
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params
from ccf.features.kinds.windows import RollingExtreme, RollingLast, RollingSum

AGGS = ("last", "mean", "sum", "min", "max")


@kind("resample")
def resample(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """``agg`` of each column over the last w buckets: last | mean | sum | min | max.

    Like pandas' resample, missing (NaN) values are skipped (``last`` is the latest
    present value) and a window needs ``min_periods`` present values (default 1; set it
    to w for full windows only), else NaN. min/max use a monotonic deque, sums are exact
    (:mod:`~ccf.features.kinds.windows`): O(1) per bucket.

    Config: {kind: resample, columns: m_p, agg: mean, windows: [3, 60]}
    Columns: <agg>_<col>_<w>
    Example: m_p 1, 2, NaN, 6 with agg mean, window 3 -> 1, 1.5, 1.5, (2 + 6) / 2 = 4.
    """
    p = Params(params, columns)
    found = p.globs()
    agg = p.choice("agg", AGGS)
    windows = p.windows()
    min_periods = p.integer("min_periods", 1)
    p.finish()
    if min_periods > min(windows):
        raise ValueError(f"min_periods {min_periods} exceeds window {min(windows)}: never ready")
    outs = tuple((c, w, f"{agg}_{c}_{w}") for c in found for w in windows)
    return tuple(name for *_, name in outs), lambda: _Resample(outs, agg, min_periods)


class _Resample:
    __slots__ = ("_outs", "_agg", "_min_periods")

    def __init__(self, outs: tuple[tuple[str, int, str], ...], agg: str, min_periods: int) -> None:
        self._agg, self._min_periods = agg, min_periods
        self._outs = tuple((src, name, RollingSum(w), _extra(agg, w)) for src, w, name in outs)

    def step(self, row: Row) -> None:
        agg = self._agg
        for src, name, window, extra in self._outs:
            x = row[src]
            window.push(x)
            if extra is not None:
                extra.push(x)
            if window.count < self._min_periods:
                row[name] = NAN
            elif agg == "sum":
                row[name] = window.total()
            elif agg == "mean":
                row[name] = window.mean()
            else:
                row[name] = extra.value()


def _extra(agg: str, n: int) -> RollingExtreme | RollingLast | None:
    """The window state beside count and sum that ``agg`` needs, if any."""
    if agg == "last":
        return RollingLast(n)
    if agg in ("min", "max"):
        return RollingExtreme(n, largest=agg == "max")
    return None
