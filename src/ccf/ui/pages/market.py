"""Market data: what the collector stores, per symbol.

The order book's depth and spread, candles, the trade tape, news headlines, the gap
timeline, and the status of every stream and news feed.
"""

from __future__ import annotations

import time

import streamlit as st

from ccf.config import Settings
from ccf.ui import cache
from ccf.ui.charts.market import basis, candles, depth, gap_timeline, spread
from ccf.ui.common import header, reachable, symbol_picker, waiting, when
from ccf.ui.common import settings as current_settings
from ccf.ui.data.db import Store, exists
from ccf.ui.data.market import candles_from_trades

BARS = {"10 s": "10s", "1 min": "1min", "5 min": "5min"}
BAR_SPAN_S = {"10s": 1200, "1min": 4 * 3600, "5min": 24 * 3600}  # trades read per bar size


def render(settings: Settings) -> None:
    header(settings, "Market data")
    st.fragment(reachable(_market), run_every=settings.ui.refresh_s)(settings)


def _market(settings: Settings) -> None:
    c1, c2, _ = st.columns([1, 1, 2])
    with c1:
        symbol = symbol_picker(settings, "market_symbol")
    bar = BARS[c2.selectbox("candle size", list(BARS), index=1, key="market_bar")]
    db, ex = Store(settings, "raw"), settings.exchange
    if not exists(db):
        waiting(
            f"No market data yet: the collector has written nothing to `{db.where}` (start "
            "it with `ccf collect` or `ccf run`)."
        )
        return
    st.caption(f"venue: {ex} (the records' exchange)")
    _book(settings, symbol)
    _basis(settings, symbol)
    st.subheader("Candles")
    stored = cache.candles(db, ex, symbol)
    if stored.empty:
        bars = candles_from_trades(cache.recent_trades(db, ex, symbol, BAR_SPAN_S[bar]), bar)
        note = f"{bar} bars built from the stored trades (no kline stream is collected)"
    else:
        bars, note = stored, f"{stored.attrs.get('interval')} klines as collected"
    if bars.empty:
        waiting("No trades or candles stored for this symbol yet.")
    else:
        st.plotly_chart(candles(bars), key="market_candles")
        st.caption(note)
    left, right = st.columns(2)
    with left:
        st.subheader("Trade tape")
        tape = cache.trades(db, ex, symbol, 40)
        if tape.empty:
            waiting("No trades stored yet.")
        else:
            st.dataframe(
                tape[["time", "side", "price", "qty", "notional"]],
                hide_index=True,
                width="stretch",
                height=420,
                column_config={
                    "time": st.column_config.DatetimeColumn(format="HH:mm:ss.SSS"),
                    "price": st.column_config.NumberColumn(format="%.2f"),
                    "qty": st.column_config.NumberColumn(format="%.5f"),
                    "notional": st.column_config.NumberColumn(format="%.2f"),
                },
            )
    with right:
        st.subheader("News")
        _news(settings)
    _gaps(settings)
    _status(settings)


def _book(settings: Settings, symbol: str) -> None:
    db, ex = Store(settings, "raw"), settings.exchange
    levels = cache.book(db, ex, symbol, settings.features.book_source)
    left, right = st.columns(2)
    with left:
        st.subheader("Order book depth")
        if levels.empty:
            waiting("No book stored yet for this symbol.")
        else:
            bid = levels[levels["side"] == "bid"]["price"].max()
            ask = levels[levels["side"] == "ask"]["price"].min()
            st.plotly_chart(depth(levels), key="market_depth")
            st.caption(
                f"{levels.attrs['source']} book at {when(levels.attrs['ts'])}: bid {bid:,.2f}, "
                f"ask {ask:,.2f}, {len(levels) // 2} levels a side"
            )
    with right:
        st.subheader("Spread")
        sp = cache.spread(db, ex, symbol, 3000, settings.features.book_source)
        if sp.empty:
            waiting("No book stored yet for this symbol.")
        else:
            st.plotly_chart(spread(sp), key="market_spread")
            st.caption(
                f"newest {len(sp):,} book records; now {sp['spread_bps'].iloc[-1]:.3f} bps, "
                f"median {sp['spread_bps'].median():.3f} bps"
            )


def perp_of(settings: Settings, symbol: str) -> tuple[str, str] | None:
    """The (venue, symbol) of a configured perpetual on ``symbol``'s instrument, if any."""
    from ccf.sources import venues

    spot = venues.get(settings.exchange)
    try:
        want = spot.instrument(symbol) + "-perp"
    except ValueError:
        return None
    for v in settings.venue_list():
        venue = venues.get(v.name)
        if venue.market == "perp":
            for s in v.symbols:
                if venue.instrument(s) == want:
                    return v.name, s
    return None


def _basis(settings: Settings, symbol: str) -> None:
    perp = perp_of(settings, symbol)
    if perp is None:
        return  # no perpetual collected for this instrument
    db = Store(settings, "raw")
    st.subheader("Perpetual-spot basis")
    df = cache.basis(db, (settings.exchange, symbol), perp, 3000, settings.features.book_source)
    if df.empty:
        waiting(f"No books of both {settings.exchange} and {perp[0]} stored yet for {symbol}.")
        return
    st.plotly_chart(basis(df), key="market_basis")
    st.caption(
        f"{perp[0]} {perp[1]} against {settings.exchange} {symbol}: now "
        f"{df['basis_bps'].iloc[-1]:.2f} bps, median {df['basis_bps'].median():.2f} bps"
    )


def _news(settings: Settings) -> None:
    items = cache.news(Store(settings, "raw"), 30)
    if items.empty:
        waiting(
            "No news yet: `ccf collect` polls the feeds in `news.feeds` with "
            "`news.enabled=true` (off by default, so the offline demo stays offline)."
        )
        return
    st.dataframe(
        items[["published", "sources", "title", "link", "ingested"]],
        hide_index=True,
        width="stretch",
        height=420,
        column_config={
            "published": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            "ingested": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "link": st.column_config.LinkColumn(display_text="open"),
            "title": st.column_config.TextColumn(width="large"),
        },
    )


def _gaps(settings: Settings) -> None:
    st.subheader("Gaps")
    gaps = cache.gaps(Store(settings, "raw"))
    if gaps.empty:
        st.success("No gaps recorded: every stream has been continuous.", icon=":material/check:")
        return
    st.plotly_chart(gap_timeline(gaps), key="market_gaps")
    open_n = int(gaps["open"].sum())
    st.caption(f"{len(gaps)} gaps, {open_n} open (an open gap is drawn to the newest record).")
    st.dataframe(
        gaps.sort_values("start", ascending=False),
        hide_index=True,
        width="stretch",
        column_config={
            "start": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss.SSS"),
            "end": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss.SSS"),
        },
    )


def _status(settings: Settings) -> None:
    st.subheader("Streams")
    now = time.time_ns()
    raw = Store(settings, "raw")
    table = cache.stream_status(raw, settings.exchange, settings.symbols, now)
    if table.empty:
        waiting("No stream has stored anything yet.")
    else:
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                "last_event": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss.SSS"),
                "receive_age_s": None,  # shown as "received", readable
                "event_lag_s": st.column_config.NumberColumn("event lag (s)", format="%.3f"),
            },
        )
    dead = cache.dead_letters(raw)
    if not dead.empty:
        st.warning(
            f"{int(dead['frames'].sum())} frame(s) kept as dead letters (malformed or "
            "unexpected; stored verbatim in `dead_letter`).",
            icon=":material/mail:",
        )
        st.dataframe(dead, hide_index=True)
    st.subheader("News feeds")
    feeds = cache.feeds(raw)
    if feeds.empty:
        waiting("No news feed has been polled (`news.enabled=true` turns them on).")
        return
    failing = feeds[feeds["state"] == "failing"]
    for _, f in failing.iterrows():
        st.error(f"feed {f['feed']} failing: {f['last_error']} ({f['failures']} in a row)")
    st.dataframe(feeds, hide_index=True, width="stretch")


if __name__ == "__main__":
    render(current_settings())
