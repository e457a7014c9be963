"""Health: every part's state and figures from its heartbeat (lag, throughput, reconnects,
dead letters, CPU, memory), the newest drift and quality reports, and active alerts."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from ccf.config import Settings
from ccf.ui import cache
from ccf.ui.charts.health import drift_columns, resources
from ccf.ui.common import header, reachable, waiting, when
from ccf.ui.common import settings as current_settings
from ccf.ui.data.db import Store
from ccf.ui.data.parts import lags, leads, part_figures


def render(settings: Settings) -> None:
    header(settings, "Health")
    st.fragment(reachable(_health), run_every=settings.ui.refresh_s)(settings)


def _health(settings: Settings) -> None:
    raw = Store(settings, "raw")
    beats = cache.heartbeats(raw, time.time_ns())
    alerts = cache.alerts(Store(settings, "monitor"))
    states = beats["state"].value_counts() if not beats.empty else {}
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("parts running", int(states.get("running", 0)))
    c2.metric("not responding", int(states.get("not responding", 0)))
    c3.metric("stopped", int(states.get("stopped", 0)))
    c4.metric("active alerts", int(alerts["active"].sum()) if not alerts.empty else 0)
    _alerts(alerts)
    st.subheader("Parts")
    if beats.empty:
        waiting(
            "No part has reported yet: each part writes a heartbeat to "
            f"`{raw.where}` every few seconds once it runs (`ccf run` starts them all)."
        )
    else:
        _parts(beats)
    st.subheader("Drift and data quality")
    _drift(settings)


def _alerts(alerts: pd.DataFrame) -> None:
    active = alerts[alerts["active"]] if not alerts.empty else alerts
    if active.empty:
        st.success("No active alerts.", icon=":material/check_circle:")
    for _, a in active.iterrows():
        st.error(
            f"**{a['symbol']} {a['kind']}** (since {when(a['raised'])}): {a['message']}",
            icon=":material/warning:",
        )
    cleared = alerts[~alerts["active"]] if not alerts.empty else alerts
    if not cleared.empty:
        with st.expander(f"{len(cleared)} cleared alert(s)"):
            st.dataframe(cleared, hide_index=True, width="stretch")


def _parts(beats: pd.DataFrame) -> None:
    figures = part_figures(beats)
    table = beats[["part", "state", "pid", "since", "heartbeat_age_s"]].merge(
        figures.drop(columns="state"), on="part"
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "heartbeat_age_s": st.column_config.NumberColumn("heartbeat (s ago)", format="%.1f"),
            "in_per_s": st.column_config.NumberColumn("in /s", format="%.1f"),
            "out_per_s": st.column_config.NumberColumn("out /s", format="%.1f"),
            "cpu_pct": st.column_config.NumberColumn("CPU %", format="%.1f"),
            "memory_mb": st.column_config.NumberColumn("memory MiB", format="%.0f"),
            "since": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )
    st.caption(
        "Throughput: events read (in) and records written (out) per second since the part "
        "started; reconnects, dead letters, gaps and resyncs: totals since it started."
    )
    left, right = st.columns(2)
    with left:
        st.plotly_chart(resources(figures), key="health_resources")
    with right:
        lag = lags(beats)
        st.markdown("**Lag from exchange time to each stage** (mean)")
        if lag.empty:
            waiting("No lag measured yet.")
        else:
            st.dataframe(
                lag,
                hide_index=True,
                width="stretch",
                column_config={"mean_lag_s": None},
            )
            if lag["mean_lag_s"].max() > 3600:
                st.caption(
                    "Lags of hours or days: the rows carry old exchange times (recordings "
                    "not rebased to now, `replay.rebase_time=false`, or a backfill)."
                )
    lead = leads(beats)
    st.markdown("**Lead time of the stored forecasts** (exchange clock)")
    if lead.empty:
        waiting("No forecast stored yet.")
    else:
        st.dataframe(lead, hide_index=True, width="stretch")
        st.caption(
            "Delay from the origin bucket's end to the stored forecast, on the exchange "
            "clock (right at any replay speed); after_target: forecasts stored after their "
            "target bucket had closed (should be 0); horizon_left_min: the least share of "
            "a horizon still ahead when a forecast was stored."
        )


def _drift(settings: Settings) -> None:
    monitor = Store(settings, "monitor")
    runs = cache.drift_runs(monitor)
    if runs.empty:
        waiting(
            "No drift report yet: the monitor compares the newest feature rows with the "
            "champion's training data every `monitor.drift_every`."
        )
        return
    st.dataframe(
        runs.drop(columns=["computed_at", "html", "json"]),
        hide_index=True,
        width="stretch",
        column_config={"share": st.column_config.ProgressColumn(format="%.2f", min_value=0)},
    )
    symbol = st.selectbox(
        "columns of", runs["symbol"].tolist(), key="health_drift_symbol", format_func=str.upper
    )
    run = runs[runs["symbol"] == symbol].iloc[0]
    checks = cache.column_checks(monitor, symbol, int(run["computed_at"]))
    left, right = st.columns([3, 2])
    with left:
        if checks.empty:
            waiting("This run checked no column.")
        else:
            st.plotly_chart(drift_columns(checks), key="health_drift")
            st.caption(f"against the {run['reference']}; red: drifted")
    with right:
        quality = (
            checks[
                (checks["missing_share"] > 0)
                | (checks["constant"] > 0)
                | (checks["out_of_range_share"] > 0)
            ]
            if not checks.empty
            else checks
        )
        st.markdown(
            f"**Quality**: {len(quality)} column(s) with missing, constant or out-of-range values"
        )
        if not quality.empty:
            st.dataframe(
                quality[
                    [
                        "column",
                        "missing_share",
                        "ref_missing_share",
                        "constant",
                        "out_of_range_share",
                    ]
                ],
                hide_index=True,
                width="stretch",
                height=260,
            )
        for kind in ("html", "json"):
            path = run[kind]
            if isinstance(path, str) and Path(path).exists():
                st.download_button(
                    f"{kind.upper()} report ({Path(path).name})",
                    partial(Path(path).read_bytes),  # read only when asked: reports are MBs
                    file_name=Path(path).name,
                    key=f"health_{kind}_{symbol}",
                    on_click="ignore",
                )


if __name__ == "__main__":
    render(current_settings())
