"""The status of every stream: per record kind and symbol, the newest event, how long ago it
arrived and the open gaps.

``ccf status`` counts every row (a full scan of each table); the dashboard re-reads this
every few seconds, so it asks only for the newest row of each (kind, symbol) along the
table's key, and leaves the counts to ``ccf status``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ccf.ui.data.db import Reader, Store, distinct, readonly, to_time
from ccf.ui.data.units import readable_s

# kind -> (the key column a table groups by, or None; the id that grows with event time)
_NEWEST_BY = {
    "book": ("source", "update_id"),
    "trade": (None, "trade_id"),
    "agg_trade": (None, "agg_id"),
    "quote": (None, "update_id"),
    "candle": ("interval", "open_time"),
}


def _newest(r: Reader, kind: str, exchange: str, symbol: str) -> tuple[int, int] | None:
    """(event time, receive time) of the newest row of ``kind`` for ``symbol``."""
    group, order = _NEWEST_BY[kind]
    found: list[tuple[int, int]] = []
    values = distinct(r, kind, group, exchange, symbol) if group else [None]
    for v in values:
        where = "exchange = ? AND symbol = ?" + (f" AND {group} = ?" if group else "")
        params = (exchange, symbol) + ((v,) if group else ())
        row = r.one(
            f"SELECT ts_event, ts_recv FROM {kind} WHERE {where} ORDER BY {order} DESC LIMIT 1",
            params,
        )
        if row is not None:
            found.append((row[0], row[1]))
    return max(found) if found else None


def streams(store: Store, exchange: str, symbols: Sequence[str], now_ns: int) -> pd.DataFrame:
    """One row per stored (kind, symbol): last event, receive age and event lag (s), gaps."""
    cols = [
        "kind",
        "symbol",
        "last_event",
        "received",
        "receive_age_s",
        "event_lag_s",
        "gaps",
        "open_gaps",
    ]
    with readonly(store) as r:
        if r is None:
            return pd.DataFrame(columns=cols)
        have = r.tables()
        gaps = (
            r.frame(
                "SELECT stream AS kind, symbol, count(*) AS gaps, "
                "count(*) - count(end_ts) AS open_gaps FROM gap GROUP BY stream, symbol",
            )
            if "gap" in have
            else pd.DataFrame(columns=["kind", "symbol", "gaps", "open_gaps"])
        )
        rows = []
        for kind in _NEWEST_BY:
            if kind not in have:
                continue
            for sym in symbols:
                newest = _newest(r, kind, exchange, sym)
                if newest is not None:
                    event, recv = newest
                    rows.append((kind, sym, event, (now_ns - recv) / 1e9, (recv - event) / 1e9))
    df = pd.DataFrame(rows, columns=["kind", "symbol", "ts", "receive_age_s", "event_lag_s"])
    df = df.merge(gaps, on=["kind", "symbol"], how="left")
    df[["gaps", "open_gaps"]] = df[["gaps", "open_gaps"]].fillna(0).astype(int)
    df["last_event"] = to_time(df["ts"])
    df["received"] = [readable_s(a) + " ago" for a in df["receive_age_s"]]
    return df[cols]
