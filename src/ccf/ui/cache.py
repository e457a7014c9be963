"""The readers as the pages call them: cached for a moment, so a page refreshing every few
seconds, several open tabs and several charts of one page share one read.

Live figures live for :data:`LIVE_TTL_S`; the monitor's aggregates (written every ten
seconds) for :data:`SLOW_TTL_S`; the registry and its reports (MLflow is slow to ask)
for :data:`REGISTRY_TTL_S`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from ccf.config import Settings
from ccf.ui.data import accuracy, forecasts, market, models, parts, quality, streams
from ccf.ui.data.db import Store

LIVE_TTL_S = 1.0
SLOW_TTL_S = 5.0
REGISTRY_TTL_S = 30.0
REPORT_TTL_S = 3600.0
MAX_ENTRIES = 256  # per reader: bounds the memory of many symbols and tabs
_HASH = {Settings: lambda s: s.model_dump_json(), Store: lambda s: s.key}
F = TypeVar("F", bound=Callable[..., Any])


def _cached(ttl_s: float) -> Callable[[F], F]:
    return st.cache_data(  # type: ignore[return-value]
        ttl=ttl_s, show_spinner=False, hash_funcs=_HASH, max_entries=MAX_ENTRIES
    )


_live = _cached(LIVE_TTL_S)
_slow = _cached(SLOW_TTL_S)


last_price = _live(market.last_price)
book = _live(market.book)
spread = _live(market.spread)
basis = _live(market.basis)
trades = _live(market.trades)
candles = _live(market.candles)
recent_trades = _live(market.recent_trades)
news = _slow(market.news)
gaps = _live(market.gaps)
feeds = _slow(market.feeds)
dead_letters = _live(market.dead_letters)
stream_status = streams.streams  # keyed by the wall clock too

newest_origin = _live(forecasts.newest_origin)
predictions = _live(forecasts.predictions)
realized = _live(forecasts.realized)
newest_bucket = _live(forecasts.newest_bucket)
stored_buckets = _live(forecasts.stored_buckets)
serving = _live(forecasts.serving)

accuracy_windows = _slow(accuracy.windows)
rolling = _slow(accuracy.rolling)
latest_accuracy = _slow(accuracy.latest)
scores = _slow(accuracy.scores)

drift_runs = _slow(quality.drift_runs)
column_checks = _slow(quality.column_checks)
alerts = _live(quality.alerts)
heartbeats = parts.heartbeats  # keyed by the wall clock: nothing to share

versions = _cached(REGISTRY_TTL_S)(models.versions)
report = _cached(REPORT_TTL_S)(models.report)  # a run's report never changes
