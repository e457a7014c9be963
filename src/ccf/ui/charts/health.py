"""The Health page's charts: resources per part, drift per column."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ccf.ui.charts import layout


def resources(figures: pd.DataFrame) -> go.Figure:
    """CPU (percent of one core) and resident memory (MiB) of each part's process."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["CPU %", "memory (MiB)"])
    fig.add_trace(
        go.Bar(x=figures["part"], y=figures["cpu_pct"], name="CPU %", marker_color="#1f77b4"),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=figures["part"], y=figures["memory_mb"], name="memory", marker_color="#ff7f0e"),
        row=1,
        col=2,
    )
    fig.update_layout(showlegend=False, hovermode="closest")
    return layout(fig, height=280)


def drift_columns(checks: pd.DataFrame, top: int = 16) -> go.Figure:
    """Drift score of the most drifted columns against the method's threshold."""
    d = checks.dropna(subset=["drift_score"]).head(top).iloc[::-1]
    colors = ["#d62728" if x else "#2ca02c" for x in d["drifted"].fillna(0).astype(bool)]
    fig = go.Figure(go.Bar(x=d["drift_score"], y=d["column"], orientation="h", marker_color=colors))
    if not d.empty and d["drift_threshold"].notna().any():
        fig.add_vline(
            x=float(d["drift_threshold"].dropna().iloc[0]), line_dash="dash", line_color="#555"
        )
    fig.update_xaxes(title_text=f"{d['drift_method'].dropna().iloc[0] if len(d) else ''} score")
    fig.update_layout(hovermode="closest")
    return layout(fig, height=max(220, 24 * len(d) + 60))
