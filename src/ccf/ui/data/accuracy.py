"""Forecast accuracy from the monitor's store: rolling aggregates, scores, skill, returns.

The ``accuracy`` table holds one row per computation (every few seconds), symbol, role,
horizon and window; its x axis here is ``end_ts``, the newest origin scored, so a replay
draws its history at the market's times. Skill and the signal's return come straight from
the ``scores`` (one per forecast), binned in time.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ccf.features.buckets import parse_duration
from ccf.ui.data.db import Store, readonly, to_time

SECOND = 1_000_000_000
BPS = 1e4


def windows(store: Store) -> list[str]:
    """The rolling windows the monitor computes (``monitor.windows`` when it ran), shortest
    first."""
    with readonly(store) as r:
        if r is None or "accuracy" not in r.tables():
            return []
        rows = r.query(
            'SELECT DISTINCT "window" FROM accuracy WHERE computed_at = '
            "(SELECT max(computed_at) FROM accuracy)"
        )
    return sorted((r[0] for r in rows), key=parse_duration)


def rolling(store: Store, symbol: str, role: str, window: str, span_s: float) -> pd.DataFrame:
    """The rolling aggregates of one role and window over the last ``span_s`` seconds of
    computations; errors in basis points, coverage one column per nominal level."""
    with readonly(store) as r:
        if r is None or "accuracy" not in r.tables():
            return pd.DataFrame()
        df = r.frame(
            "SELECT computed_at, end_ts, horizon, model, version, n, mae, rmse, naive_mae, mase, "
            "direction, pinball, coverage, signal_return, trades, unscored FROM accuracy "
            "WHERE computed_at >= (SELECT max(computed_at) FROM accuracy) - ? "
            'AND symbol = ? AND role = ? AND "window" = ? ORDER BY computed_at, horizon',
            (int(span_s * SECOND), symbol, role, window),
        )
    return _expand(df)


def _expand(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    cov = pd.DataFrame([json.loads(c) if c else {} for c in df["coverage"]], index=df.index)
    for nominal in cov.columns:
        df[f"coverage_{nominal}"] = pd.to_numeric(cov[nominal], errors="coerce")
    for col in ("mae", "rmse", "naive_mae", "pinball"):
        df[f"{col}_bps"] = df[col] * BPS
    df["skill"] = 1 - df["mase"]
    df["time"] = to_time(df["end_ts"])
    return df.drop(columns=["coverage"])


def latest(store: Store, symbol: str, window: str) -> pd.DataFrame:
    """The newest computation of every role and horizon for one window."""
    with readonly(store) as r:
        if r is None or "accuracy" not in r.tables():
            return pd.DataFrame()
        df = r.frame(
            "SELECT role, horizon, model, version, n, mae, rmse, naive_mae, mase, direction, "
            "pinball, coverage, signal_return, trades, unscored, computed_at, end_ts "
            "FROM accuracy WHERE computed_at = (SELECT max(computed_at) FROM accuracy "
            'WHERE symbol = ?) AND symbol = ? AND "window" = ? ORDER BY role, horizon',
            (symbol, symbol, window),
        )
    return _expand(df)


def scores(store: Store, symbol: str, role: str, span_s: float) -> pd.DataFrame:
    """The scores of one role over the last ``span_s`` seconds of origins."""
    with readonly(store) as r:
        if r is None or "scores" not in r.tables():
            return pd.DataFrame()
        df = r.frame(
            "SELECT ts, horizon, truth, abs_error, naive_abs_error, direction_hit, pinball, "
            "signal, signal_return FROM scores WHERE symbol = ? AND role = ? AND ts >= "
            "(SELECT max(ts) FROM scores WHERE symbol = ?) - ? ORDER BY ts, horizon",
            (symbol, role, symbol, int(span_s * SECOND)),
        )
    df["time"] = to_time(df["ts"])
    return df


NICE_BINS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


def bin_size_s(scores_df: pd.DataFrame, bins: int = 40) -> float:
    """A round time bin giving about ``bins`` columns over the scores' span.

    >>> bin_size_s(pd.DataFrame({"ts": [0, 300 * SECOND]}))
    10
    """
    span = (scores_df["ts"].max() - scores_df["ts"].min()) / SECOND if len(scores_df) else 0
    return next((b for b in NICE_BINS_S if b >= span / bins), NICE_BINS_S[-1])


def skill_grid(scores_df: pd.DataFrame, bin_s: float) -> pd.DataFrame:
    """Skill against the no-change forecast, 1 - MAE / naive MAE, per horizon (rows) and
    time bin of ``bin_s`` seconds (columns): above 0 the model beat naive in that bin."""
    if scores_df.empty:
        return pd.DataFrame()
    df = scores_df.assign(bin=scores_df["ts"] // int(bin_s * SECOND) * int(bin_s * SECOND))
    g = df.groupby(["horizon", "bin"])[["abs_error", "naive_abs_error"]].sum()
    skill = 1 - g["abs_error"] / g["naive_abs_error"].replace(0, np.nan)
    grid = skill.unstack("bin").sort_index()
    grid.columns = to_time(pd.Series(grid.columns)).tolist()
    return grid


def cumulative_return(scores_df: pd.DataFrame) -> pd.DataFrame:
    """The signal's cumulative return after fees (bps) per horizon, over origins: each
    forecast that passes the threshold is one round trip held for its horizon."""
    if scores_df.empty:
        return pd.DataFrame(columns=["time", "horizon", "cum_bps", "trades"])
    df = scores_df.sort_values(["horizon", "ts"]).copy()
    df["cum_bps"] = df.groupby("horizon")["signal_return"].cumsum() * BPS
    df["trades"] = (df["signal"] != 0).groupby(df["horizon"]).cumsum()
    return df[["time", "horizon", "cum_bps", "trades"]]
