"""Drift and quality reports and alerts, from the monitor's store."""

from __future__ import annotations

import pandas as pd

from ccf.ui.data.db import Store, readonly, to_time


def drift_runs(store: Store) -> pd.DataFrame:
    """The newest drift run of every symbol: share drifted, reference, report files."""
    cols = [
        "symbol",
        "computed",
        "share",
        "drifted",
        "columns",
        "reference",
        "ref_rows",
        "cur_rows",
        "html",
        "json",
        "computed_at",
    ]
    with readonly(store) as r:
        if r is None or "drift_runs" not in r.tables():
            return pd.DataFrame(columns=cols)
        df = r.frame(
            "SELECT d.* FROM drift_runs d JOIN (SELECT symbol, max(computed_at) AS t "
            "FROM drift_runs GROUP BY symbol) m ON d.symbol = m.symbol AND d.computed_at = m.t "
            "ORDER BY d.symbol",
        )
    df["computed"] = to_time(df["computed_at"])
    return df[cols]


def column_checks(store: Store, symbol: str, computed_at: int) -> pd.DataFrame:
    """Per column of one drift run: drift score and verdict, missing shares, constancy."""
    with readonly(store) as r:
        if r is None or "column_checks" not in r.tables():
            return pd.DataFrame()
        return r.frame(
            "SELECT column_name AS column, drift_method, drift_score, drift_threshold, drifted, "
            "missing_share, ref_missing_share, constant, out_of_range_share FROM column_checks "
            "WHERE symbol = ? AND computed_at = ? "
            "ORDER BY drift_score IS NULL, drift_score DESC, column_name",
            (symbol, computed_at),
        )


def alerts(store: Store, limit: int = 50) -> pd.DataFrame:
    """Active alerts first, then the newest cleared ones."""
    cols = ["active", "part", "symbol", "kind", "message", "raised", "updated", "cleared"]
    with readonly(store) as r:
        if r is None or "alerts" not in r.tables():
            return pd.DataFrame(columns=cols)
        df = r.frame(
            "SELECT * FROM alerts ORDER BY active DESC, updated_at DESC, id DESC LIMIT ?",
            (limit,),
        )
    df["active"] = df["active"].astype(bool)
    df["raised"] = to_time(df["ts"])
    df["updated"] = to_time(df["updated_at"])
    df["cleared"] = to_time(df["cleared_at"])
    return df[cols]
