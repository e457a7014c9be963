"""Candle features for bar data (open, high, low, close, volume per bucket).

Buckets without a candle (a book/trade source, or a missing bar) have NaN OHLCV, and
so does every feature that needs them; lengths count buckets, which are bars when the
bucket equals the bar interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import NAN, log_ratio, ratio
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params
from ccf.features.kinds.windows import Lags, RollingSum


@kind("candle_return")
def candle_return(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Log return of the close over ``periods`` buckets = log(close_t / close_t-p).

    NaN for the first p buckets and when either close is missing.

    Config: {kind: candle_return, periods: [1, 5]}
    Columns: candle_return_<p>
    Example: closes 100, 110 -> candle_return_1 = log(1.1) = 0.0953.
    """
    p = Params(params, columns)
    periods = p.integers("periods", [1])
    p.finish()
    p.require("close")
    names = tuple(f"candle_return_{k}" for k in periods)
    return names, lambda: _CandleReturn(names, periods)


class _CandleReturn:
    __slots__ = ("_outs", "_closes")

    def __init__(self, names: tuple[str, ...], periods: tuple[int, ...]) -> None:
        self._outs = tuple(zip(names, periods, strict=True))
        self._closes = Lags(max(periods))

    def step(self, row: Row) -> None:
        close = row["close"]
        for name, k in self._outs:
            row[name] = log_ratio(close, self._closes.ago(k))
        self._closes.push(close)


@kind("candle_range")
def candle_range(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """The bar's range: (high - low) / close, and log(high / low) (Parkinson's volatility input).

    Config: {kind: candle_range}
    Columns: candle_range, candle_log_range
    Example: high 105, low 100, close 104 -> 5 / 104 = 0.048077, log(1.05) = 0.04879.
    """
    p = Params(params, columns)
    p.finish()
    p.require("high", "low", "close")
    return ("candle_range", "candle_log_range"), _CandleRange


class _CandleRange:
    __slots__ = ()

    def step(self, row: Row) -> None:
        high, low = row["high"], row["low"]
        row["candle_range"] = ratio(high - low, row["close"])
        row["candle_log_range"] = log_ratio(high, low)


@kind("volume_zscore")
def volume_zscore(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """How unusual this bucket's volume is: (v_t - mean) / std over the last w buckets (incl. t).

    Sample std (ddof 1). Exact rolling sums of v and v² (see
    :class:`~ccf.features.kinds.windows.RollingSum`), so a long stream neither drifts
    nor cancels: a flat window has std exactly 0, and then the z-score is NaN.
    NaN until w buckets without a missing volume.

    Config: {kind: volume_zscore, window: 20}
    Columns: volume_zscore_<w>
    Example: volumes 1, 2, 6 (w = 3): mean 3, std sqrt((4 + 1 + 9) / 2) = sqrt(7)
    -> (6 - 3) / sqrt(7) = 1.1339.
    """
    p = Params(params, columns)
    windows = p.windows(minimum=2)
    p.finish()
    p.require("volume")
    names = tuple(f"volume_zscore_{w}" for w in windows)
    return names, lambda: _VolumeZscore(names, windows)


class _VolumeZscore:
    __slots__ = ("_outs",)

    def __init__(self, names: tuple[str, ...], windows: tuple[int, ...]) -> None:
        self._outs = tuple(
            (name, RollingSum(w, squares=True)) for name, w in zip(names, windows, strict=True)
        )

    def step(self, row: Row) -> None:
        v = row["volume"]
        for name, window in self._outs:
            window.push(v)
            if window.full():
                row[name] = ratio(v - window.mean(), math.sqrt(window.variance()))
            else:
                row[name] = NAN
