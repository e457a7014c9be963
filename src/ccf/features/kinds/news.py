"""News features from the count of items *ingested* per bucket (never by publish time).

Counting by ingestion keeps training honest: a model only ever sees what had arrived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import NAN
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params
from ccf.features.kinds.windows import RollingSum

NS = 1e9


@kind("news_count")
def news_count(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """News items ingested over the last w buckets = Σ news_count, one column per window.

    NaN until w buckets have been seen (a short window would undercount).

    Config: {kind: news_count, windows: [60, 600]}
    Columns: news_count_<w>
    Example: news_count 0, 2, 1 -> news_count_2 = NaN, 2, 3.
    """
    p = Params(params, columns)
    windows = p.windows()
    p.finish()
    p.require("news_count")
    names = tuple(f"news_count_{w}" for w in windows)
    return names, lambda: _NewsCount(names, windows)


class _NewsCount:
    __slots__ = ("_outs",)

    def __init__(self, names: tuple[str, ...], windows: tuple[int, ...]) -> None:
        self._outs = tuple((name, RollingSum(w)) for name, w in zip(names, windows, strict=True))

    def step(self, row: Row) -> None:
        n = row["news_count"]
        for name, window in self._outs:
            window.push(n)
            row[name] = window.total() if window.full() else NAN


@kind("news_recency")
def news_recency(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Seconds since the latest bucket with news = (ts_end - ts_end of that bucket) / 1e9.

    0 in a bucket with news (news_count > 0); NaN before the first.

    Config: {kind: news_recency}
    Columns: news_recency
    Example: 1 s buckets, news in the bucket ending at 5 s -> 0.0 there, 3.0 in the one
    ending at 8 s.
    """
    p = Params(params, columns)
    p.finish()
    p.require("ts_end", "news_count")
    return ("news_recency",), _NewsRecency


class _NewsRecency:
    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = NAN  # ts_end of the latest bucket with news

    def step(self, row: Row) -> None:
        if row["news_count"] > 0:
            self._last = row["ts_end"]
        row["news_recency"] = (row["ts_end"] - self._last) / NS
