"""The Live page's price chart: realized price, the forecast fans as they were made, the
naive and challenger forecasts beside them, and the newest forecast ahead of now."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from ccf.ui.charts import REALIZED, ROLE_COLORS, layout, rgba
from ccf.ui.data.forecasts import bands, model_label

BAND_ALPHA = (0.12, 0.25, 0.35)  # widest interval palest


def _band(
    fig: go.Figure, x, lo, hi, color: str, alpha: float, name: str, group: str, legend: bool = True
) -> None:
    """A filled band between two lines; NaN (a flagged forecast) leaves a hole."""
    fig.add_trace(
        go.Scatter(
            x=x,
            y=lo,
            mode="lines",
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            legendgroup=group,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=hi,
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor=rgba(color, alpha),
            name=name,
            legendgroup=group,
            hoverinfo="skip",
            showlegend=legend,
        )
    )


def fan(
    realized: pd.DataFrame, preds: pd.DataFrame, horizon: int, threshold_bps: float
) -> go.Figure:
    """Realized price; the champion's central intervals for ``horizon``, each drawn at its
    target time as made ``horizon`` buckets before (never re-forecast); the naive and
    challenger medians; the newest origin's fan over every horizon, with the BUY/SELL
    threshold around its price."""
    fig = go.Figure()
    h = preds[preds["horizon"] == horizon] if not preds.empty else preds
    champ = h[h["role"] == "champion"].sort_values("target_ts") if not h.empty else h
    color = ROLE_COLORS["champion"]
    if not champ.empty:
        for i, (lo, hi, nominal) in enumerate(bands(champ)):
            _band(
                fig,
                champ["target_time"],
                champ[lo],
                champ[hi],
                color,
                BAND_ALPHA[min(i, len(BAND_ALPHA) - 1)],
                f"champion {nominal:.0%} interval (h={horizon})",
                f"band{i}",
            )
    if not realized.empty:
        fig.add_trace(
            go.Scatter(
                x=realized["time"],
                y=realized["value"],
                mode="lines",
                name="realized",
                line={"color": REALIZED, "width": 1.6},
            )
        )
    for role in ("champion", "challenger", "naive"):
        r = h[h["role"] == role].sort_values("target_ts") if not h.empty else h
        if r.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=r["target_time"],
                y=r["price"],
                mode="lines",
                name=f"{role} median ({model_label(r['model'].iloc[-1], r['version'].iloc[-1])})",
                line={
                    "color": ROLE_COLORS[role],
                    "width": 1.3,
                    "dash": {"champion": "solid", "challenger": "dash", "naive": "dot"}[role],
                },
            )
        )
    _ahead(fig, preds, threshold_bps)
    fig.update_yaxes(title_text="price", tickformat=",.2f")
    return layout(fig, height=470)


def _ahead(fig: go.Figure, preds: pd.DataFrame, threshold_bps: float) -> None:
    """The newest champion origin's fan out to every horizon."""
    if preds.empty:
        return
    champ = preds[preds["role"] == "champion"]
    if champ.empty:
        return
    last = champ[champ["ts"] == champ["ts"].max()].sort_values("horizon")
    if last["point"].isna().all():
        return
    origin = last["origin_time"].iloc[0]
    value = float(last["last_value"].iloc[0])
    x = [origin, *last["target_time"]]
    color = "#9467bd"
    for i, (lo, hi, nominal) in enumerate(bands(last)):
        _band(
            fig,
            x,
            [value, *last[lo]],
            [value, *last[hi]],
            color,
            BAND_ALPHA[min(i, len(BAND_ALPHA) - 1)],
            f"newest forecast, {nominal:.0%}",
            "ahead",
            legend=False,
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[value, *last["price"]],
            mode="lines+markers",
            name="newest forecast",
            line={"color": color, "width": 1.5},
            marker={"size": 5},
            legendgroup="ahead",
        )
    )
    step = math.exp(threshold_bps / 1e4)
    for side, factor in (("BUY above", step), ("SELL below", 1 / step)):
        fig.add_trace(
            go.Scatter(
                x=[x[0], x[-1]],
                y=[value * factor] * 2,
                mode="lines",
                name=f"BUY/SELL threshold (±{threshold_bps:g} bps)",
                legendgroup="threshold",
                showlegend=side.startswith("BUY"),
                line={"color": "#555555", "width": 1, "dash": "dot"},
            )
        )
