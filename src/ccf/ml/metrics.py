"""Forecast scores as pure functions of arrays.

Point errors, rank correlation, direction, quantile (pinball) loss, interval
coverage, volatility regimes, the Diebold-Mariano test with a Newey-West
variance and the Harvey-Leybourne-Newbold correction, Holm's step-down
correction, and the threshold trading signal. Nothing here knows a dataset or
a model: :mod:`ccf.ml.evaluate` slices the arrays, this module scores them.

Conventions: ``y`` are realized log returns, ``pred`` point forecasts (the 0.5
quantile); a loss differential is ``loss(model) - loss(base)``, so a negative
DM statistic means the model's loss is lower.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

BPS = 1e4  # log-return units -> basis points


def pinball(y: np.ndarray, qpred: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantile loss per origin and quantile, (n, Q): q*(y-f) above f, (1-q)*(f-y) below."""
    diff = y[:, None] - qpred
    return np.maximum(q * diff, (q - 1) * diff)


def mae(err: np.ndarray) -> float:
    return float(np.mean(np.abs(err))) if err.size else math.nan


def rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err * err))) if err.size else math.nan


def rank_ic(pred: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation (ties take their mean rank); NaN when either side is constant,
    as the naive forecast's zero is: a constant carries no ranking."""
    if pred.size < 3 or np.ptp(pred) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(stats.rankdata(pred), stats.rankdata(y))[0, 1])


class Direction(NamedTuple):
    accuracy: float  # share of scored origins whose forecast sign was the move's
    n: int  # origins scored: move and forecast both non-zero
    mean_abs: float  # E|r| over those origins, log-return units


def direction(pred: np.ndarray, y: np.ndarray) -> Direction:
    """Directional accuracy; a zero move or a zero forecast says nothing about direction,
    so both are left out rather than counted as misses or hits."""
    ok = (pred != 0) & (y != 0)
    n = int(ok.sum())
    if n == 0:
        return Direction(math.nan, 0, math.nan)
    hit = np.sign(pred[ok]) == np.sign(y[ok])
    return Direction(float(hit.mean()), n, float(np.mean(np.abs(y[ok]))))


def breakeven(fee: float, mean_abs: float) -> float:
    """Hit rate a trader needs to break even: win |r| when right, lose |r| when wrong, pay
    ``fee`` either way: p|r| - (1-p)|r| = fee gives p* = 1/2 + fee / (2 E|r|). Above 1 means
    no hit rate pays the fee at this horizon."""
    if not mean_abs > 0:
        return math.nan
    return 0.5 + fee / (2 * mean_abs)


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of outcomes inside [lo, hi]."""
    return float(np.mean((y >= lo) & (y <= hi))) if y.size else math.nan


class Interval(NamedTuple):
    label: str  # "80" for the 0.1/0.9 pair
    nominal: float
    lo: int  # index of the lower quantile
    hi: int


def intervals(quantiles: tuple[float, ...] | np.ndarray) -> list[Interval]:
    """Central intervals from quantile pairs (q, 1-q), narrowest first."""
    q = [float(x) for x in quantiles]
    out = []
    for i, a in enumerate(q):
        if a >= 0.5:
            continue
        j = min(range(len(q)), key=lambda k: abs(q[k] - (1 - a)))
        if abs(q[j] - (1 - a)) < 1e-9:
            nominal = round(1 - 2 * a, 9)
            out.append(Interval(f"{nominal * 100:g}", nominal, i, j))
    return sorted(out, key=lambda v: v.nominal)


REGIMES = ("low", "mid", "high")


def vol_edges(scale: np.ndarray) -> np.ndarray:
    """Tercile edges of ``scale`` (vol at the origin): the low/mid/high regime boundaries."""
    return np.quantile(scale, [1 / 3, 2 / 3]) if scale.size else np.array([np.inf, np.inf])


def vol_regime(scale: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """0/1/2 (low/mid/high) for each origin's ``scale`` against tercile ``edges``."""
    return np.searchsorted(edges, scale, side="right")


# -- Diebold-Mariano ---------------------------------------------------------------------


def hac_lags(h: int, step: int) -> int:
    """Newey-West lags for h-bucket targets at origins ``step`` buckets apart: targets of
    origins closer than h overlap, so ceil(h/step) - 1 autocovariances are non-zero."""
    return max(0, math.ceil(h / step) - 1)


def hac_variance(d: np.ndarray, lags: int) -> float:
    """Long-run variance of ``d`` (Newey-West, Bartlett weights 1 - k/(lags+1)):
    gamma_0 + 2 sum_k w_k gamma_k, gamma_k = 1/n sum_t (d_t - mean)(d_{t-k} - mean).
    The variance of the mean of d is this divided by n."""
    n = d.size
    e = d - d.mean()
    v = float(e @ e) / n
    for k in range(1, min(lags, n - 1) + 1):
        v += 2 * (1 - k / (lags + 1)) * float(e[k:] @ e[:-k]) / n
    return v


class DMResult(NamedTuple):
    stat: float  # HLN-corrected DM statistic; negative = the model's loss is lower
    p_two: float  # two-sided: the losses differ
    p_better: float  # one-sided: the model's loss is lower
    n: int
    mean_diff: float  # mean of loss(model) - loss(base)
    lags: int


def diebold_mariano(loss_model: np.ndarray, loss_base: np.ndarray, lags: int) -> DMResult:
    """Diebold-Mariano test of equal expected loss, with the Harvey-Leybourne-Newbold
    small-sample factor sqrt((n + 1 - 2h + h(h-1)/n) / n), h = lags + 1, and Student-t
    with n-1 degrees of freedom. Identical losses give stat 0, p_two 1, p_better 1/2."""
    d = np.asarray(loss_model, float) - np.asarray(loss_base, float)
    n = d.size
    h = lags + 1
    if n < 2:
        return DMResult(math.nan, math.nan, math.nan, n, math.nan, lags)
    mean = float(d.mean())
    if np.all(d == d[0]):
        if mean == 0:
            return DMResult(0.0, 1.0, 0.5, n, 0.0, lags)
        stat = math.copysign(math.inf, mean)  # a constant non-zero difference: certain
    else:
        lrv = hac_variance(d, lags)
        hln = (n + 1 - 2 * h + h * (h - 1) / n) / n
        if lrv <= 0 or hln <= 0:
            return DMResult(math.nan, math.nan, math.nan, n, mean, lags)
        stat = mean / math.sqrt(lrv / n) * math.sqrt(hln)
    p_better = float(stats.t.cdf(stat, n - 1))
    p_two = float(min(1.0, 2 * stats.t.sf(abs(stat), n - 1)))
    return DMResult(float(stat), p_two, p_better, n, mean, lags)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error); NaNs are not tests and stay
    NaN. Sorted ascending, p_(i) becomes max_{j<=i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adj)
    return out


def mean_by_time(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One value per distinct origin time (the mean over symbols), in time order: the loss
    differential of a multi-symbol evaluation as the single time series DM needs."""
    uts, inv = np.unique(ts, return_inverse=True)
    return uts, np.bincount(inv, weights=values) / np.bincount(inv)


# -- signal and skill over time ----------------------------------------------------------


class Trades(NamedTuple):
    side: np.ndarray  # +1 BUY, -1 SELL, 0 HOLD, per origin
    pnl_bps: np.ndarray  # side * r in bps minus the fee where a trade was made, else 0


def trades(pred: np.ndarray, y: np.ndarray, threshold_bps: float, fee_bps: float) -> Trades:
    """BUY when the point forecast is above +threshold, SELL below -threshold, else HOLD;
    each trade earns side * r and pays ``fee_bps`` (the round trip)."""
    side = np.where(pred * BPS > threshold_bps, 1, np.where(pred * BPS < -threshold_bps, -1, 0))
    pnl = np.where(side != 0, side * y * BPS - fee_bps, 0.0)
    return Trades(side, pnl)


class SignalSummary(NamedTuple):
    buy: int
    sell: int
    hold: int
    hit_buy: float  # share of BUYs followed by a rise
    hit_sell: float
    mean_bps: float  # per trade, after the fee
    total_bps: float


def signal_summary(t: Trades, y: np.ndarray) -> SignalSummary:
    buy, sell = t.side == 1, t.side == -1
    made = buy | sell
    n = int(made.sum())
    return SignalSummary(
        int(buy.sum()),
        int(sell.sum()),
        int((~made).sum()),
        float(np.mean(y[buy] > 0)) if buy.any() else math.nan,
        float(np.mean(y[sell] < 0)) if sell.any() else math.nan,
        float(t.pnl_bps[made].mean()) if n else math.nan,
        float(t.pnl_bps.sum()),
    )


class Blocks(NamedTuple):
    start: np.ndarray  # index of each block's first origin
    mae_ratio: np.ndarray  # MAE(model) / MAE(base) per block
    pinball_skill: np.ndarray  # 1 - mean pinball(model) / mean pinball(base) per block


def block_skill(
    abs_model: np.ndarray,
    abs_base: np.ndarray,
    pin_model: np.ndarray,
    pin_base: np.ndarray,
    blocks: int,
) -> Blocks:
    """Skill in ``blocks`` consecutive, equal-count blocks of origins (in time order): does
    an edge hold over the period, or is it one lucky stretch?"""
    n = abs_model.size
    b = max(1, min(blocks, n))
    edges = np.linspace(0, n, b + 1).astype(int)
    ratio, skill = np.full(b, np.nan), np.full(b, np.nan)
    for i in range(b):
        s = slice(edges[i], edges[i + 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio[i] = abs_model[s].sum() / abs_base[s].sum()
            skill[i] = 1 - pin_model[s].sum() / pin_base[s].sum()
    return Blocks(edges[:-1], ratio, skill)
