"""Plotly figures for the dashboard: pure functions from the readers' frames to figures.

Plotly draws in SVG (no WebGL), so the charts render the same in any browser, headless
ones included; Streamlit gives them its theme.
"""

from __future__ import annotations

import plotly.graph_objects as go

ROLE_COLORS = {"champion": "#1f77b4", "challenger": "#ff7f0e", "naive": "#7f7f7f"}
HORIZON_COLORS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
REALIZED = "#111111"
BID, ASK = "#2ca02c", "#d62728"


def horizon_color(i: int) -> str:
    return HORIZON_COLORS[i % len(HORIZON_COLORS)]


def rgba(hex_color: str, alpha: float) -> str:
    """``#rrggbb`` -> ``rgba(r,g,b,alpha)`` (band fills)."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def layout(fig: go.Figure, *, height: int = 380, title: str | None = None) -> go.Figure:
    """The dashboard's common layout: compact margins, legend on top."""
    fig.update_layout(
        height=height,
        title=title,
        margin={"l": 10, "r": 10, "t": 40 if title or fig.layout.annotations else 10, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        hovermode="x unified",
    )
    return fig
