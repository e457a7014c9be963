"""The replay exchange's own Prometheus figures, read from its state at each scrape.

The exchange has none of a collector's figures (events in, lags, gaps): its
endpoint exports what it does instead, as counters and gauges in
Prometheus' base units:

- ``ccf_exchange_open_connections``, ``ccf_exchange_connections_opened_total``
- ``ccf_exchange_frames_sent_total{kind}``: frames queued to clients per
  stream kind (``depth_100ms``, ``depth_1000ms``, ``partial_depth``,
  ``trade``, ``agg_trade``, ``book_ticker``, ``kline``, ``ticker``, ...)
- ``ccf_exchange_rest_requests_total{endpoint,status}``,
  ``ccf_exchange_rest_weight_total`` and ``ccf_exchange_rest_weight_used_1m``
- ``ccf_exchange_faults_injected_total{fault}``
- ``ccf_exchange_replay_passes_total`` and ``ccf_exchange_frames_played_total``

Nothing is counted twice: the collector reads the exchange's own running
counts, which only the event loop writes (copied whole under the GIL).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ccf.config import MetricsConfig, Settings
from ccf.monitoring.metrics import PartMetrics

if TYPE_CHECKING:
    from ccf.sources.replay.exchange import ReplayExchange

_SUFFIX_KIND = {
    "trade": "trade",
    "aggTrade": "agg_trade",
    "bookTicker": "book_ticker",
    "ticker": "ticker",
    "miniTicker": "mini_ticker",
    "avgPrice": "avg_price",
    "depth@100ms": "depth_100ms",
    "depth": "depth_1000ms",
    "depth@1000ms": "depth_1000ms",
}


def stream_kind(stream: str) -> str:
    """``btcusdt@depth5@100ms`` -> ``partial_depth``; a label with few values per stream."""
    if stream.startswith("!"):
        return "ticker_arr" if stream.startswith("!ticker") else "mini_ticker_arr"
    suffix = stream.partition("@")[2]
    if suffix.startswith("kline_"):
        return "kline"
    if suffix.startswith("depth") and suffix[5:6].isdigit():
        return "partial_depth"
    return _SUFFIX_KIND.get(suffix, "other")


class ExchangeCollector(Collector):
    """Figures of one running exchange, at scrape time."""

    def __init__(self, ex: ReplayExchange) -> None:
        self._ex = ex

    def collect(self) -> Iterator[Metric]:
        ex = self._ex
        hub = ex.hub
        yield GaugeMetricFamily(
            "ccf_exchange_open_connections", "Websocket connections open", len(hub.conns)
        )
        yield CounterMetricFamily(
            "ccf_exchange_connections_opened",
            "Websocket connections accepted",
            hub.connections_total,
        )
        frames = CounterMetricFamily(
            "ccf_exchange_frames_sent", "Frames queued to clients, per stream kind", labels=["kind"]
        )
        by_kind: Counter[str] = Counter()
        for stream, n in dict(hub.sent_by_stream).items():
            by_kind[stream_kind(stream)] += n
        for kind, n in sorted(by_kind.items()):
            frames.add_metric([kind], n)
        yield frames
        rest = CounterMetricFamily(
            "ccf_exchange_rest_requests",
            "REST requests answered, per endpoint and HTTP status",
            labels=["endpoint", "status"],
        )
        for (endpoint, status), n in sorted(dict(ex.rest.requests).items()):
            rest.add_metric([endpoint, str(status)], n)
        yield rest
        yield CounterMetricFamily(
            "ccf_exchange_rest_weight", "REST request weight charged", ex.rest.weight_total
        )
        yield GaugeMetricFamily(
            "ccf_exchange_rest_weight_used_1m",
            "REST weight used in the current minute (X-MBX-USED-WEIGHT-1M)",
            ex.limiter.used,
        )
        faults = CounterMetricFamily(
            "ccf_exchange_faults_injected", "Faults injected, per kind", labels=["fault"]
        )
        for name, n in sorted(dict(ex.faults.counts).items()):
            faults.add_metric([name], n)
        yield faults
        yield CounterMetricFamily(
            "ccf_exchange_replay_passes",
            "Loop passes of the recordings started",
            ex.market.pass_index + (1 if ex.started else 0),
        )
        yield CounterMetricFamily(
            "ccf_exchange_frames_played", "Recorded frames played", ex.frames_dispatched
        )


class ExchangeMetrics(PartMetrics):
    """The exchange part's endpoint: process figures plus :class:`ExchangeCollector`'s."""

    def __init__(self, config: MetricsConfig | Settings) -> None:
        super().__init__("exchange", config, stream_counters=False)

    def attach(self, ex: ReplayExchange) -> None:
        """Export ``ex``'s figures from now on (call once, when it has started)."""
        self.registry.register(ExchangeCollector(ex))
