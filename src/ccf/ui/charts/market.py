"""The Market data page's charts: order book depth, spread, candles, the gap timeline."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ccf.ui.charts import ASK, BID, layout, rgba


def depth(book: pd.DataFrame) -> go.Figure:
    """Cumulative quantity from the touch outwards, bids left and asks right."""
    fig = go.Figure()
    for side, color, shape in (("bid", BID, "vh"), ("ask", ASK, "hv")):
        d = book[book["side"] == side].sort_values("price")
        fig.add_trace(
            go.Scatter(
                x=d["price"],
                y=d["cum_qty"],
                mode="lines",
                name=f"{side}s",
                fill="tozeroy",
                line={"color": color, "shape": shape},
                fillcolor=rgba(color, 0.25),
            )
        )
    fig.update_xaxes(title_text="price", tickformat=",.2f")
    fig.update_yaxes(title_text="cumulative quantity")
    fig.update_layout(hovermode="closest")
    return layout(fig, height=330)


def spread(df: pd.DataFrame) -> go.Figure:
    """The quoted spread in basis points of the mid, over the newest book records."""
    fig = go.Figure(
        go.Scatter(
            x=df["time"],
            y=df["spread_bps"],
            mode="lines",
            name="spread",
            line={"color": "#9467bd", "width": 1.2, "shape": "hv"},
        )
    )
    fig.update_yaxes(title_text="spread (bps of mid)")
    return layout(fig, height=330)


def basis(df: pd.DataFrame) -> go.Figure:
    """The perpetual-spot basis in basis points of the spot mid."""
    fig = go.Figure(
        go.Scatter(
            x=df["time"],
            y=df["basis_bps"],
            mode="lines",
            name="basis",
            line={"color": "#2ca02c", "width": 1.2, "shape": "hv"},
        )
    )
    fig.update_yaxes(title_text="perp - spot (bps of spot mid)")
    return layout(fig, height=330)


def candles(df: pd.DataFrame) -> go.Figure:
    """OHLC bars with volume below."""
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03
    )
    fig.add_trace(
        go.Candlestick(
            x=df["time"],
            open=df["open"],
            high=df["high"],
            low=df["low"],
            close=df["close"],
            name="price",
            increasing_line_color=BID,
            decreasing_line_color=ASK,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=df["time"], y=df["volume"], name="volume", marker_color="#8c8c8c"),
        row=2,
        col=1,
    )
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_yaxes(tickformat=",.2f", row=1, col=1)
    return layout(fig, height=420)


def gap_timeline(gaps: pd.DataFrame) -> go.Figure:
    """Each gap as a bar from its start to its end (an open one to the newest record),
    one lane per symbol and stream."""
    df = gaps.assign(
        lane=gaps["symbol"] + " · " + gaps["stream"],
        status=gaps["open"].map({True: "open", False: "closed"}),
    )
    fig = px.timeline(
        df,
        x_start="start",
        x_end="end",
        y="lane",
        color="reason",
        hover_data={"detail": True, "status": True, "filled": True, "lane": False},
    )
    fig.update_yaxes(title_text=None)
    fig.update_layout(hovermode="closest")
    return layout(fig, height=max(180, 60 + 40 * df["lane"].nunique()))
