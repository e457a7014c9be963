"""Scoring a forecast against what happened, and rolling its scores up: pure functions.

A :class:`~ccf.records.Prediction` forecasts the log return of its target column
from the origin bucket (``last_value``) to the bucket at ``target_ts``; once that
bucket is closed its value gives the truth. The signal rule is the one the
offline evaluation uses (:mod:`ccf.ml.metrics` ``trades``): BUY above
``+threshold_bps``, SELL below ``-threshold_bps``, each trade paying ``fee_bps``.

>>> central_intervals((0.1, 0.25, 0.5, 0.75, 0.9))
((0, 4, 0.8), (1, 3, 0.5))
>>> round(pinball_mean((0.1, 0.5, 0.9), (-0.01, 0.0, 0.01), 0.02), 6)
0.007333
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from ccf.records import Prediction, Score

BPS = 1e4  # log-return units -> basis points


class SignalRule(NamedTuple):
    """BUY/SELL/HOLD from the point forecast (``ml.evaluate.threshold_bps``/``fee_bps``)."""

    threshold_bps: float
    fee_bps: float


class Unscorable(NamedTuple):
    """Why a prediction got no score; every prediction gets a score or one of these."""

    reason: str  # no_forecast, gap, missing, no_value, no_origin_value


def truth_of(last_value: float, value: float) -> float:
    """The realized log return from the origin's value to the target bucket's."""
    return math.log(value / last_value)


def central_intervals(levels: Sequence[float]) -> tuple[tuple[int, int, float], ...]:
    """(low index, high index, nominal coverage) of each central interval, widest first:
    the quantile pairs q / 1-q around the median."""
    out = []
    n = len(levels)
    for i in range(n // 2):
        lo, hi = levels[i], levels[n - 1 - i]
        if abs(lo + hi - 1) < 1e-9 and lo < 0.5:
            out.append((i, n - 1 - i, round(hi - lo, 9)))
    return tuple(out)


def inside(levels: Sequence[float], quantiles: Sequence[float], truth: float) -> tuple[float, ...]:
    """Per central interval (widest first): 1.0 when the truth fell inside (bounds
    included), 0.0 outside, NaN when the interval's bounds are unknown."""
    out = []
    for lo, hi, _ in central_intervals(levels):
        a, b = quantiles[lo], quantiles[hi]
        if math.isnan(a) or math.isnan(b):
            out.append(math.nan)
        else:
            out.append(1.0 if a <= truth <= b else 0.0)
    return tuple(out)


def pinball_mean(levels: Sequence[float], quantiles: Sequence[float], truth: float) -> float:
    """Quantile loss averaged over the levels: q*(y-f) when y is above f, (1-q)*(f-y) below."""
    if not levels:
        return math.nan
    total = 0.0
    for q, f in zip(levels, quantiles, strict=True):
        d = truth - f
        total += max(q * d, (q - 1) * d)
    return total / len(levels)


def direction_hit(point: float, truth: float) -> float:
    """1.0 when forecast and move have the same sign; NaN when either is zero (a zero says
    nothing about direction, so it is neither a hit nor a miss)."""
    if point == 0 or truth == 0 or math.isnan(point) or math.isnan(truth):
        return math.nan
    return 1.0 if (point > 0) == (truth > 0) else 0.0


def signal_of(point: float, rule: SignalRule) -> int:
    """+1 BUY, -1 SELL, 0 HOLD."""
    bps = point * BPS
    if bps > rule.threshold_bps:
        return 1
    if bps < -rule.threshold_bps:
        return -1
    return 0


def signal_return(signal: int, truth: float, rule: SignalRule) -> float:
    """What the signal earned in log-return units: side * truth less the fee when it traded."""
    if signal == 0:
        return 0.0
    return signal * truth - rule.fee_bps / BPS


def has_forecast(p: Prediction) -> bool:
    """A flagged prediction (gap in its window, warming up) carries NaN forecasts."""
    return not math.isnan(p.point)


def unscorable(p: Prediction, value: float | None, gap: float | None) -> Unscorable | None:
    """Why ``p`` cannot be scored against the target bucket's ``value`` (None: no row),
    or None when it can. ``gap`` is the row's gap flag."""
    if not has_forecast(p):
        return Unscorable("no_forecast")
    if value is None:
        return Unscorable("missing")
    if gap is not None and gap > 0:
        return Unscorable("gap")
    if math.isnan(value) or value <= 0:
        return Unscorable("no_value")
    if math.isnan(p.last_value) or p.last_value <= 0:
        return Unscorable("no_origin_value")
    return None


def score(p: Prediction, value: float, rule: SignalRule, scored_at: int) -> Score:
    """Join ``p`` with the target bucket's ``value`` (check :func:`unscorable` first)."""
    truth = truth_of(p.last_value, value)
    error = p.point - truth
    signal = signal_of(p.point, rule)
    return Score(
        exchange=p.exchange,
        symbol=p.symbol,
        target=p.target,
        ts=p.ts,
        horizon=p.horizon,
        role=p.role,
        model=p.model,
        version=p.version,
        truth=truth,
        error=error,
        abs_error=abs(error),
        sq_error=error * error,
        naive_abs_error=abs(truth),
        direction_hit=direction_hit(p.point, truth),
        inside=inside(p.levels, p.quantiles, truth),
        pinball=pinball_mean(p.levels, p.quantiles, truth),
        signal=signal,
        signal_return=signal_return(signal, truth, rule),
        scored_at=scored_at,
    )


# -- rolling aggregates --------------------------------------------------------------------


class Aggregate(NamedTuple):
    """One (symbol, role, horizon) over one window of origin times, (end - window, end]."""

    symbol: str
    role: str
    model: str  # of the newest score in the window
    version: str
    horizon: int
    window: str
    start_ts: int  # exclusive
    end_ts: int  # inclusive: the newest origin scored for the symbol
    n: int
    mae: float
    rmse: float
    naive_mae: float
    mase: float  # mae / naive_mae: below 1 beats the no-change forecast
    direction: float  # share of hits among scores with a direction
    pinball: float
    coverage: dict[str, float]  # nominal coverage ("0.8") -> share of truths inside
    signal_return: float  # summed over the window, log-return units
    trades: int
    return_per_trade: float
    unscored: int  # predictions of the window that got no score (any reason)


class Sums(NamedTuple):
    """What an aggregate is made of; the store sums these in SQL over a window."""

    n: int
    abs_error: float
    sq_error: float
    naive_abs_error: float
    hits: float
    directed: int
    pinball: float
    pinball_n: int  # scores with known quantiles
    inside: tuple[float, ...]  # per interval: truths inside
    inside_n: tuple[int, ...]  # per interval: scores with known bounds
    signal_return: float
    trades: int


def finish(
    key: tuple[str, str, str, str, int],
    window: str,
    span: tuple[int, int],
    s: Sums,
    nominal: Sequence[float],
    unscored: int,
) -> Aggregate:
    """Sums -> the aggregate's means and ratios (NaN where a denominator is zero)."""
    symbol, role, model, version, horizon = key

    def ratio(a: float, b: float) -> float:
        return a / b if b else math.nan

    mae = ratio(s.abs_error, s.n)
    naive = ratio(s.naive_abs_error, s.n)
    return Aggregate(
        symbol=symbol,
        role=role,
        model=model,
        version=version,
        horizon=horizon,
        window=window,
        start_ts=span[0],
        end_ts=span[1],
        n=s.n,
        mae=mae,
        rmse=math.sqrt(ratio(s.sq_error, s.n)) if s.n else math.nan,
        naive_mae=naive,
        mase=ratio(mae, naive) if s.n else math.nan,
        direction=ratio(s.hits, s.directed),
        pinball=ratio(s.pinball, s.pinball_n),
        coverage={
            f"{nom:g}": ratio(k, m)
            for nom, k, m in zip(nominal, s.inside, s.inside_n, strict=False)
        },
        signal_return=s.signal_return,
        trades=s.trades,
        return_per_trade=ratio(s.signal_return, s.trades),
        unscored=unscored,
    )
