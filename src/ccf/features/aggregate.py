"""One symbol's open bucket: raw events in, the bucket's base row out.

Events arrive already in their final order (the engine sorts them), so
each ``add_*`` is O(1) and floats are summed in one order on every path.
What outlives a bucket (the last book, the last trade, the last close) is
carried into the next one; the counters start again at zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ccf.features.kinds.base import Row
from ccf.records import book_columns

NAN = math.nan


def level_indexes(stored_depth: int, depth: int) -> list[int]:
    """Where the first ``depth`` levels sit in a flat book of ``stored_depth`` levels
    (:func:`~ccf.records.book_columns` order); -1 for a level the record lacks.

    >>> level_indexes(3, 2)
    [0, 1, 2, 3, 6, 7, 8, 9]
    """
    out = []
    for side in (0, 1):
        for i in range(depth):
            base = side * 2 * stored_depth + 2 * i
            out += [base, base + 1] if i < stored_depth else [-1, -1]
    return out


class Bucket:
    """Accumulates one bucket of one symbol and remembers what carries over."""

    __slots__ = (
        "book_names",
        "depth",
        "candles",
        "_index",
        "levels",
        "book_updates",
        "buy_count",
        "buy_qty",
        "buy_notional",
        "sell_count",
        "sell_qty",
        "sell_notional",
        "last_trade_ts",
        "last_trade_price",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "n_candles",
        "news_count",
    )

    def __init__(self, depth: int, candles: bool = False) -> None:
        self.book_names = tuple(book_columns(depth))
        self.depth = depth
        self.candles = candles  # source=candle: empty buckets carry the last close
        self._index: dict[int, list[int]] = {}
        self.levels: Sequence[float | None] | None = None
        self.last_trade_ts: float | int = NAN
        self.last_trade_price = NAN
        self.close = NAN
        self._reset()

    def _reset(self) -> None:
        self.book_updates = 0
        self.buy_count = self.sell_count = 0
        self.buy_qty = self.buy_notional = self.sell_qty = self.sell_notional = 0.0
        self.n_candles = 0
        self.open = self.high = self.low = NAN
        self.volume = 0.0
        self.news_count = 0

    # -- events, in order ---------------------------------------------------------------------

    def add_book(self, levels: Sequence[float | None]) -> None:
        self.levels = levels
        self.book_updates += 1

    def add_trade(self, price: float, qty: float, buy: bool, ts: int) -> None:
        if buy:
            self.buy_count += 1
            self.buy_qty += qty
            self.buy_notional += price * qty
        else:
            self.sell_count += 1
            self.sell_qty += qty
            self.sell_notional += price * qty
        self.last_trade_ts = ts
        self.last_trade_price = price

    def add_candle(self, o: float, h: float, lo: float, c: float, v: float) -> None:
        if self.n_candles == 0:
            self.open, self.high, self.low = o, h, lo
        else:
            self.high = max(self.high, h)
            self.low = min(self.low, lo)
        self.close = c
        self.volume += v
        self.n_candles += 1

    def add_news(self) -> None:
        self.news_count += 1

    # -- closing --------------------------------------------------------------------------------

    def _book_values(self) -> list[float]:
        lv = self.levels
        if lv is None:
            return [NAN] * len(self.book_names)
        idx = self._index.get(len(lv))
        if idx is None:
            idx = self._index[len(lv)] = level_indexes(len(lv) // 4, self.depth)
        out = []
        for i in idx:
            v = lv[i] if i >= 0 else None
            out.append(NAN if v is None else v)
        return out

    def close_row(self, start: int, end: int, gap: bool) -> Row:
        """The base row of [start, end); then the next bucket starts empty."""
        row: Row = {"ts": start, "ts_end": end}  # type: ignore[dict-item]  (ints: exact ns)
        row.update(zip(self.book_names, self._book_values(), strict=True))
        if self.candles:
            carried = self.n_candles == 0
            if carried:  # a flat bar at the last close, no volume
                self.open = self.high = self.low = self.close
        else:
            carried = self.book_updates == 0
        row["book_updates"] = float(self.book_updates)
        row["carried"] = 1.0 if carried else 0.0
        row["gap"] = 1.0 if gap else 0.0
        row["buy_count"] = float(self.buy_count)
        row["buy_qty"] = self.buy_qty
        row["buy_notional"] = self.buy_notional
        row["sell_count"] = float(self.sell_count)
        row["sell_qty"] = self.sell_qty
        row["sell_notional"] = self.sell_notional
        row["last_trade_ts"] = self.last_trade_ts  # type: ignore[assignment]  (int ns or NaN)
        row["last_trade_price"] = self.last_trade_price
        if self.candles:
            row["open"], row["high"], row["low"] = self.open, self.high, self.low
            row["close"], row["volume"] = self.close, self.volume
        else:
            row["open"] = row["high"] = row["low"] = row["close"] = row["volume"] = NAN
        row["news_count"] = float(self.news_count)
        self._reset()
        return row
