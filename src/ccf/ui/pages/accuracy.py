"""Accuracy: how the served forecasts score once the truth arrives (``ccf monitor``).

Rolling MAE, MASE against naive, directional accuracy and interval coverage over time by
horizon; skill by horizon and time; the BUY/SELL signal's cumulative return after fees.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ccf.config import Settings
from ccf.ui import cache
from ccf.ui.charts.accuracy import cumulative, rolling, skill_heatmap
from ccf.ui.common import header, reachable, symbol_picker, waiting
from ccf.ui.common import settings as current_settings
from ccf.ui.data.accuracy import bin_size_s, cumulative_return, skill_grid
from ccf.ui.data.db import Store

SPANS = {"15 min": 900, "1 h": 3600, "6 h": 6 * 3600, "24 h": 86400}
ROLES = ("champion", "challenger", "naive")
SLOWER = 5  # the monitor aggregates every ten seconds: no need to re-read as often as Live


def render(settings: Settings) -> None:
    header(settings, "Accuracy")
    st.fragment(reachable(_accuracy), run_every=settings.ui.refresh_s * SLOWER)(settings)


def _accuracy(settings: Settings) -> None:
    monitor = Store(settings, "monitor")
    windows = cache.accuracy_windows(monitor) or list(settings.monitor.windows)
    # the longest window by default: the steadiest lines
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        symbol = symbol_picker(settings, "acc_symbol")
    role = c2.selectbox("role", ROLES, key="acc_role")
    window = c3.selectbox("rolling window", windows, index=len(windows) - 1, key="acc_window")
    span_s = SPANS[c4.selectbox("history", list(SPANS), index=1, key="acc_span")]
    df = cache.rolling(monitor, symbol, role, window, span_s)
    if df.empty:
        waiting(
            "No accuracy yet: the monitor scores each forecast once its target bucket has "
            f"closed, and rolls the scores up every few seconds (`ccf monitor` writes "
            f"`{monitor.where}`)."
        )
        return
    now = cache.latest_accuracy(monitor, symbol, window)
    _latest(now)
    st.subheader(f"Rolling {window} window over time, by horizon (buckets)")
    st.plotly_chart(rolling(df), key="acc_rolling")
    scores = cache.scores(monitor, symbol, role, span_s)
    st.subheader("Skill by horizon and time")
    bin_s = bin_size_s(scores)
    grid = skill_grid(scores, bin_s)
    if grid.empty:
        waiting("No scores in this span yet.")
    else:
        st.plotly_chart(skill_heatmap(grid), key="acc_skill")
        st.caption(
            f"Skill = 1 - MAE / MAE of the no-change forecast on the same targets, per {bin_s} s "
            "bin of forecast origins: above 0 (blue) the model beat naive there."
        )
    st.subheader("Signal: cumulative return after fees")
    ev = settings.ml.evaluate
    st.plotly_chart(cumulative(cumulative_return(scores), ev.fee_bps), key="acc_return")
    st.caption(
        f"Every forecast whose median passes ±{ev.threshold_bps:g} bps is one round trip held "
        f"for its horizon (as scored by the monitor), paying {ev.fee_bps:g} bps."
    )


def _latest(now: pd.DataFrame) -> None:
    """The newest aggregate of every role and horizon."""
    if now.empty:
        return
    cover = [c for c in now.columns if c.startswith("coverage_")]
    st.subheader("Newest figures")
    table = now[
        [
            "role",
            "horizon",
            "n",
            "mae_bps",
            "mase",
            "direction",
            *cover,
            "pinball_bps",
            "signal_return",
            "trades",
            "unscored",
        ]
    ].copy()
    table["signal_return"] = table["signal_return"] * 1e4
    st.dataframe(
        table.rename(
            columns={
                "signal_return": "signal bps",
                "mae_bps": "MAE bps",
                "pinball_bps": "pinball bps",
                "mase": "MASE",
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "MAE bps": st.column_config.NumberColumn(format="%.3f"),
            "MASE": st.column_config.NumberColumn(format="%.3f"),
            "direction": st.column_config.NumberColumn(format="%.3f"),
            "pinball bps": st.column_config.NumberColumn(format="%.3f"),
            "signal bps": st.column_config.NumberColumn(format="%+.2f"),
            **{c: st.column_config.NumberColumn(format="%.3f") for c in cover},
        },
    )


if __name__ == "__main__":
    render(current_settings())
