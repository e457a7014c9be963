"""Made-up records and tiny feature kinds for the engine's tests.

The kinds here are registered under ``t_*`` names so the engine's tests do not
depend on the real kinds' math; the equality tests run the real default set.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from ccf.config import load_settings
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.kinds.base import REGISTRY, Row, kind
from ccf.features.spec import FeatureSet, feature_set
from ccf.records import Book, Candle, Gap, NewsItem, Trade

S = 1_000_000_000
MS = 1_000_000
SYM = "btcusdt"
NAN = math.nan


class _Mid:
    def step(self, row: Row) -> None:
        row["t_mid"] = (row["a_p_0"] + row["b_p_0"]) / 2


class _Rows:
    """Stateful: how many rows this symbol has closed (proves one object per symbol)."""

    def __init__(self) -> None:
        self.n = 0

    def step(self, row: Row) -> None:
        self.n += 1
        row["t_rows"] = float(self.n)


def _register() -> None:
    if "t_mid" in REGISTRY:
        return

    @kind("t_mid")
    def t_mid(params: Mapping[str, Any], columns: Sequence[str]) -> Any:
        """Test kind: the mid of the best levels.

        Config: {kind: t_mid}
        """
        return ("t_mid",), _Mid

    @kind("t_rows")
    def t_rows(params: Mapping[str, Any], columns: Sequence[str]) -> Any:
        """Test kind: rows closed so far for the symbol.

        Config: {kind: t_rows}
        """
        return ("t_rows",), _Rows


_register()


def tiny_set(**overrides: Any) -> FeatureSet:
    """A feature set of the tiny kinds; ``overrides`` are features.* keys. The watermark
    is the lateness rule unless asked (its tests are in test_watermark.py)."""
    items = {
        "features.features": "[{kind: t_mid}, {kind: t_rows}]",
        "features.book_depth": "2",
        "features.allowed_lateness": "500ms",
        "features.watermark": "lateness",
        **{f"features.{k}": str(v) for k, v in overrides.items()},
    }
    return feature_set(load_settings([f"{k}={v}" for k, v in items.items()], environ={}).features)


def book(ts: int, uid: int, ask: float = 101.0, bid: float = 99.0, sym: str = SYM) -> Book:
    """A two-level book: ask/bid at level 0, one tick out at level 1."""
    return Book(
        "binance", sym, "diff", uid, ts, ts, (ask, 1.0, ask + 1, 2.0, bid, 3.0, bid - 1, 4.0)
    )


def trade(ts: int, tid: int, price: float, qty: float, side: str, sym: str = SYM) -> Trade:
    return Trade("binance", sym, tid, price, qty, side, ts, ts)  # type: ignore[arg-type]


def gap(start: int, end: int | None, stream: str = "book", sym: str = SYM) -> Gap:
    return Gap("binance", sym, stream, start, end, "disconnect", "test", start)


def news(ingested_at: int, item: str, published_at: int | None = None) -> NewsItem:
    return NewsItem(
        item, "feed", item, "t", "", "", "[]", "[]", published_at, "", "", "t", ingested_at
    )


def candle(open_time: int, o: float, h: float, lo: float, c: float, v: float) -> Candle:
    return Candle(
        "binance",
        SYM,
        "1m",
        open_time,
        open_time + 60 * S - MS,
        o,
        h,
        lo,
        c,
        v,
        v * c,
        None,
        0.0,
        0.0,
        True,
        open_time + 60 * S,
        open_time + 60 * S,
    )


def run(
    fs: FeatureSet, records: Sequence[Any], symbols: Sequence[str] = (SYM,)
) -> tuple[list[FeatureRow], FeatureEngine]:
    engine = FeatureEngine(fs, symbols)
    rows: list[FeatureRow] = []
    for r in records:
        rows += engine.push(r)
    return rows, engine


def as_dicts(fs: FeatureSet, rows: Sequence[FeatureRow]) -> list[dict[str, float]]:
    return [
        {"ts": r.ts, "ts_end": r.ts_end, **dict(zip(fs.float_columns, r.values, strict=True))}
        for r in rows
    ]


def bits(rows: Sequence[FeatureRow]) -> list[tuple[str, int, int, bytes]]:
    """Rows as exact bytes: equal means equal to the last bit, NaN equal to NaN."""
    return [(r.symbol, r.ts, r.ts_end, struct.pack(f"<{len(r.values)}d", *r.values)) for r in rows]
