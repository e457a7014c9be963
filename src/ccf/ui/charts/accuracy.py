"""The Accuracy page's charts: rolling errors over time by horizon, skill heatmap, the
signal's cumulative return after fees."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ccf.ui.charts import horizon_color, layout

PANELS = (
    ("mae_bps", "MAE (bps of log return)", None),
    ("mase", "MASE: MAE / naive MAE (below 1 beats naive)", 1.0),
    ("direction", "directional accuracy", 0.5),
)


def rolling(df: pd.DataFrame) -> go.Figure:
    """MAE, MASE, direction and interval coverage over time, one line per horizon; the
    dashed lines are what no skill (MASE 1, direction 0.5) and the nominal coverage read."""
    cover = sorted((c for c in df.columns if c.startswith("coverage_")), reverse=True)
    titles = [t for _, t, _ in PANELS] + [
        "coverage of the " + ", ".join(f"{float(c[9:]):.0%}" for c in cover) + " intervals"
    ]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, vertical_spacing=0.16)
    horizons = sorted(df["horizon"].unique())
    for i, h in enumerate(horizons):
        d = df[df["horizon"] == h]
        color = horizon_color(i)
        for k, (col, _, _) in enumerate(PANELS):
            fig.add_trace(
                go.Scatter(
                    x=d["time"],
                    y=d[col],
                    mode="lines",
                    name=f"h={h}",
                    legendgroup=f"h{h}",
                    showlegend=k == 0,
                    line={"color": color, "width": 1.4},
                ),
                row=k // 2 + 1,
                col=k % 2 + 1,
            )
        for j, c in enumerate(cover):
            fig.add_trace(
                go.Scatter(
                    x=d["time"],
                    y=d[c],
                    mode="lines",
                    name=f"h={h} {float(c[9:]):.0%}",
                    legendgroup=f"h{h}",
                    showlegend=False,
                    line={"color": color, "width": 1.4, "dash": ("solid", "dot", "dash")[j % 3]},
                ),
                row=2,
                col=2,
            )
    for k, (_, _, ref) in enumerate(PANELS):
        if ref is not None:
            fig.add_hline(y=ref, line_dash="dash", line_color="#888", row=k // 2 + 1, col=k % 2 + 1)
    for c in cover:
        fig.add_hline(y=float(c[9:]), line_dash="dash", line_color="#888", row=2, col=2)
    layout(fig, height=580)
    # above the panel titles, not on them
    fig.update_layout(legend={"y": 1.09}, margin={"t": 70})
    return fig


def skill_heatmap(grid: pd.DataFrame) -> go.Figure:
    """Skill (1 - MAE / naive MAE) per horizon and time bin; blue beat naive, red lost."""
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=list(grid.columns),
            y=[f"h={h}" for h in grid.index],
            colorscale="RdBu",
            zmid=0,
            colorbar={"title": "skill"},
            hovertemplate="%{x}<br>%{y}<br>skill %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(hovermode="closest")
    return layout(fig, height=260)


def cumulative(df: pd.DataFrame, fee_bps: float) -> go.Figure:
    """The signal's cumulative return after fees, per horizon (bps)."""
    fig = go.Figure()
    for i, (h, d) in enumerate(df.groupby("horizon")):
        fig.add_trace(
            go.Scatter(
                x=d["time"],
                y=d["cum_bps"],
                mode="lines",
                name=f"h={h} ({int(d['trades'].iloc[-1])} trades)",
                line={"color": horizon_color(i), "width": 1.5},
            )
        )
    fig.add_hline(y=0, line_dash="dash", line_color="#888")
    fig.update_yaxes(title_text=f"bps after {fee_bps:g} bps per trade")
    return layout(fig, height=320)
