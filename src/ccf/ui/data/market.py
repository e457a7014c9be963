"""Market data from the raw store: prices, the book, spread, trades, candles, news, gaps.

The busy tables (book, trade, quote) are keyed by symbol and an id that grows with event
time, so "the newest N rows" is one descending index range: every read here is bounded
that way instead of scanning the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ccf.ui.data.db import Reader, Store, distinct, readonly, to_time

SECOND = 1_000_000_000
_GAP = "symbol, stream, start_ts, end_ts, reason, detail, ts_recv, filled"
_NEWS = "item_id, published_at, ingested_at, title, link, date_flag"
_NEWS_N = ", ".join(f"n.{c}" for c in _NEWS.split(", "))  # PostgreSQL groups by each


def book_source(r: Reader, exchange: str, symbol: str, prefer: str) -> str | None:
    sources = distinct(r, "book", "source", exchange, symbol)
    if not sources:
        return None
    return prefer if prefer in sources else sources[0]


def last_price(store: Store, exchange: str, symbol: str, prefer: str = "diff") -> dict | None:
    """The newest mid of the book (or the newest trade's price): {price, ts, what}."""
    with readonly(store) as r:
        if r is None:
            return None
        have = r.tables()
        best: dict | None = None
        if "book" in have and (src := book_source(r, exchange, symbol, prefer)):
            row = r.one(
                "SELECT ts_event, a_p_0, b_p_0 FROM book WHERE exchange = ? AND symbol = ? "
                "AND source = ? ORDER BY update_id DESC LIMIT 1",
                (exchange, symbol, src),
            )
            if row and row[1] is not None and row[2] is not None:
                best = {"ts": row[0], "price": (row[1] + row[2]) / 2, "what": "book mid"}
        if "trade" in have:
            row = r.one(
                "SELECT ts_event, price FROM trade WHERE exchange = ? AND symbol = ? "
                "ORDER BY trade_id DESC LIMIT 1",
                (exchange, symbol),
            )
            if row and (best is None or row[0] > best["ts"]):
                best = {"ts": row[0], "price": row[1], "what": "last trade"}
        return best


def book(store: Store, exchange: str, symbol: str, prefer: str = "diff") -> pd.DataFrame:
    """The newest book, one row per level and side, with the cumulative quantity from the
    touch outwards (what a depth chart draws); ``attrs["ts"]`` is its event time."""
    with readonly(store) as r:
        if r is None or "book" not in r.tables():
            return pd.DataFrame(columns=["side", "level", "price", "qty", "cum_qty"])
        src = book_source(r, exchange, symbol, prefer)
        if src is None:
            return pd.DataFrame(columns=["side", "level", "price", "qty", "cum_qty"])
        df = r.frame(
            "SELECT * FROM book WHERE exchange = ? AND symbol = ? AND source = ? "
            "ORDER BY update_id DESC LIMIT 1",
            (exchange, symbol, src),
        )
        levels = sum(c.startswith("a_p_") for c in r.columns("book"))
    row = df.iloc[0]
    out = []
    for side, prefix in (("bid", "b"), ("ask", "a")):
        for i in range(levels):
            p, q = row[f"{prefix}_p_{i}"], row[f"{prefix}_q_{i}"]
            if p is not None and q is not None and not (np.isnan(p) or np.isnan(q)):
                out.append((side, i, float(p), float(q)))
    levels_df = pd.DataFrame(out, columns=["side", "level", "price", "qty"])
    levels_df["cum_qty"] = levels_df.groupby("side")["qty"].cumsum()
    levels_df.attrs.update(ts=int(row["ts_event"]), source=src)
    return levels_df


def spread(
    store: Store, exchange: str, symbol: str, rows: int = 3000, prefer: str = "diff"
) -> pd.DataFrame:
    """Touch prices, mid and spread (bps of mid) of the newest ``rows`` book records."""
    cols = ["ts", "time", "bid", "ask", "mid", "spread_bps"]
    with readonly(store) as r:
        if r is None or "book" not in r.tables():
            return pd.DataFrame(columns=cols)
        src = book_source(r, exchange, symbol, prefer)
        if src is None:
            return pd.DataFrame(columns=cols)
        df = r.frame(
            "SELECT ts_event AS ts, b_p_0 AS bid, a_p_0 AS ask FROM book WHERE exchange = ? "
            "AND symbol = ? AND source = ? ORDER BY update_id DESC LIMIT ?",
            (exchange, symbol, src, rows),
        )
    df = df.iloc[::-1].reset_index(drop=True)
    df["mid"] = (df["bid"] + df["ask"]) / 2
    df["spread_bps"] = (df["ask"] - df["bid"]) / df["mid"] * 1e4
    df["time"] = to_time(df["ts"])
    return df[cols]


def basis(
    store: Store,
    spot: tuple[str, str],
    perp: tuple[str, str],
    rows: int = 3000,
    prefer: str = "diff",
) -> pd.DataFrame:
    """The perpetual-spot basis over the newest ``rows`` spot book records: each spot mid
    against the perpetual's latest mid at or before it (venue, symbol given for each), in
    basis points of the spot mid. Empty while either venue has no book."""
    cols = ["ts", "time", "spot", "perp", "basis_bps"]
    a = spread(store, *spot, rows=rows, prefer=prefer)
    b = spread(store, *perp, rows=rows, prefer=prefer)
    if a.empty or b.empty:
        return pd.DataFrame(columns=cols)
    joined = pd.merge_asof(
        a[["ts", "mid"]].rename(columns={"mid": "spot"}),
        b[["ts", "mid"]].rename(columns={"mid": "perp"}),
        on="ts",
        direction="backward",
    ).dropna()
    joined["basis_bps"] = (joined["perp"] - joined["spot"]) / joined["spot"] * 1e4
    joined["time"] = to_time(joined["ts"])
    return joined[cols].reset_index(drop=True)


def trades(store: Store, exchange: str, symbol: str, limit: int = 50) -> pd.DataFrame:
    """The newest trades, newest first, with their notional."""
    cols = ["time", "side", "price", "qty", "notional", "trade_id", "ts"]
    with readonly(store) as r:
        if r is None or "trade" not in r.tables():
            return pd.DataFrame(columns=cols)
        df = r.frame(
            "SELECT ts_event AS ts, trade_id, side, price, qty FROM trade WHERE exchange = ? "
            "AND symbol = ? ORDER BY trade_id DESC LIMIT ?",
            (exchange, symbol, limit),
        )
    df["notional"] = df["price"] * df["qty"]
    df["time"] = to_time(df["ts"])
    return df[cols]


def candles(store: Store, exchange: str, symbol: str, limit: int = 240) -> pd.DataFrame:
    """The newest stored candles (klines) of the shortest stored interval, oldest first."""
    cols = ["time", "open", "high", "low", "close", "volume"]
    with readonly(store) as r:
        if r is None or "candle" not in r.tables():
            return pd.DataFrame(columns=cols)
        row = r.one(
            'SELECT "interval" FROM candle WHERE exchange = ? AND symbol = ? '
            "ORDER BY close_time - open_time LIMIT 1",
            (exchange, symbol),
        )
        if row is None:
            return pd.DataFrame(columns=cols)
        df = r.frame(
            "SELECT open_time, open, high, low, close, volume FROM candle WHERE exchange = ? "
            'AND symbol = ? AND "interval" = ? ORDER BY open_time DESC LIMIT ?',
            (exchange, symbol, row[0], limit),
        )
    df = df.iloc[::-1].reset_index(drop=True)
    df["time"] = to_time(df["open_time"])
    df.attrs["interval"] = row[0]
    return df[cols]


def recent_trades(
    store: Store, exchange: str, symbol: str, span_s: float, max_rows: int = 50_000
) -> pd.DataFrame:
    """Trades of the last ``span_s`` seconds before the newest one (at most ``max_rows``)."""
    with readonly(store) as r:
        if r is None or "trade" not in r.tables():
            return pd.DataFrame(columns=["ts", "price", "qty"])
        df = r.frame(
            "SELECT ts_event AS ts, price, qty FROM trade WHERE exchange = ? AND symbol = ? "
            "ORDER BY trade_id DESC LIMIT ?",
            (exchange, symbol, max_rows),
        )
    if df.empty:
        return df
    return df[df["ts"] > df["ts"].iloc[0] - span_s * SECOND].iloc[::-1].reset_index(drop=True)


def candles_from_trades(trades_df: pd.DataFrame, freq: str) -> pd.DataFrame:
    """OHLCV bars of ``freq`` (e.g. ``10s``, ``1min``) from trades: what the Market page
    draws when no kline stream is collected."""
    cols = ["time", "open", "high", "low", "close", "volume"]
    if trades_df.empty:
        return pd.DataFrame(columns=cols)
    s = trades_df.set_index(to_time(trades_df["ts"]))
    bars = s["price"].resample(freq).ohlc()
    bars["volume"] = s["qty"].resample(freq).sum()
    bars = bars.dropna(subset=["open"]).reset_index(names="time")
    return bars[cols]


def news(store: Store, limit: int = 30) -> pd.DataFrame:
    """The newest stories by ingestion, with every feed that carried them."""
    cols = ["published", "ingested", "sources", "title", "link", "date_flag"]
    with readonly(store) as r:
        if r is None or not {"news", "news_source"} <= r.tables():
            return pd.DataFrame(columns=cols)
        df = r.frame(
            f"SELECT n.published_at, n.ingested_at, n.title, n.link, n.date_flag, "
            f"{r.group_concat('s.source')} AS sources FROM (SELECT {_NEWS} FROM news "
            "ORDER BY ingested_at DESC, item_id DESC LIMIT ?) AS n "
            f"LEFT JOIN news_source s ON s.item_id = n.item_id GROUP BY {_NEWS_N} "
            "ORDER BY coalesce(n.published_at, n.ingested_at) DESC, n.item_id DESC",
            (limit,),
        )
    # the feeds in name order: the aggregate's own order differs between the backends
    df["sources"] = [",".join(sorted(s.split(","))) if s else s for s in df["sources"]]
    df["published"] = to_time(df["published_at"])
    df["ingested"] = to_time(df["ingested_at"])
    return df[cols]


def gaps(store: Store, limit: int = 500) -> pd.DataFrame:
    """The newest gaps (open ones always), with an end for drawing: an open gap runs to the
    newest gap record's receive time or its own start, whichever is later."""
    cols = ["symbol", "stream", "reason", "start", "end", "open", "filled", "detail"]
    with readonly(store) as r:
        if r is None or "gap" not in r.tables():
            return pd.DataFrame(columns=cols)
        df = r.frame(
            f"SELECT {_GAP} FROM (SELECT {_GAP} FROM gap ORDER BY start_ts DESC LIMIT ?) "
            f"AS g UNION SELECT {_GAP} FROM gap WHERE end_ts IS NULL "
            "ORDER BY start_ts, symbol, stream",
            (limit,),
        )
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["open"] = df["end_ts"].isna()
    newest = int(max(df["ts_recv"].max(), df["start_ts"].max()))
    end = df["end_ts"].fillna(newest).astype("int64")
    df["start"] = to_time(df["start_ts"])
    df["end"] = to_time(end.where(end > df["start_ts"], df["start_ts"] + SECOND))
    df["filled"] = df["filled"].astype(bool)
    return df[cols]


def feeds(store: Store) -> pd.DataFrame:
    """Every news feed's health, as the news collector last wrote it."""
    cols = [
        "feed",
        "state",
        "last_success",
        "last_error",
        "failures",
        "items_seen",
        "new_items",
        "new_total",
        "next_poll",
        "url",
    ]
    with readonly(store) as r:
        if r is None or "feed_status" not in r.tables():
            return pd.DataFrame(columns=cols)
        df = r.frame("SELECT * FROM feed_status ORDER BY feed")
    df["last_success"] = to_time(df["last_success_at"])
    df["next_poll"] = to_time(df["next_poll_at"])
    df["failures"] = df["consecutive_failures"]
    return df[cols]


def dead_letters(store: Store) -> pd.DataFrame:
    """Frames kept as dead letters, per symbol and reason, with the newest one's time."""
    cols = ["symbol", "reason", "frames", "last"]
    with readonly(store) as r:
        if r is None or "dead_letter" not in r.tables():
            return pd.DataFrame(columns=cols)
        df = r.frame(
            "SELECT symbol, reason, count(*) AS frames, max(ts_recv) AS last_ts FROM dead_letter "
            "GROUP BY symbol, reason ORDER BY symbol, reason",
        )
    df["last"] = to_time(df["last_ts"])
    return df[cols]
