"""Prometheus metrics per part: a registry of its own and an endpoint on its own port.

Every part (``exchange``, ``collect``, ``features``, ``predict``, ``monitor``)
makes one :class:`PartMetrics`; nothing goes into prometheus_client's global
registry, so parts in one process (tests, notebooks) never share state. The
same figures go into the part's heartbeat (:meth:`PartMetrics.snapshot`), so
``ccf status`` and the dashboard read them without scraping.

>>> m = PartMetrics("predict", MetricsConfig(ports={"predict": 0}))
>>> m.count_in("btcusdt"); m.observe_lag("prediction", 0.2, "btcusdt")
>>> m.snapshot()["ccf_events_in_total{symbol=btcusdt}"]
1.0
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ccf.config import MetricsConfig, Settings

if TYPE_CHECKING:
    from wsgiref.types import StartResponse
    from wsgiref.types import WSGIApplication as WSGIApp

    from ccf.monitoring.drift import DriftResult
    from ccf.monitoring.scoring import Aggregate

log = logging.getLogger(__name__)

# exchange time -> receive is milliseconds; -> feature about the lateness; a backlog, minutes
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800)
STAGES = ("receive", "feature", "prediction", "score")
LEAD_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.12, 0.15, 0.2, 0.25, 0.4, 0.6, 1, 2, 5, 10)
LEFT_BUCKETS = (-1.0, 0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
_SKIP_SUFFIXES = ("_bucket", "_created")


class MetricsPortError(RuntimeError):
    """The part's metrics port cannot be opened; the message names the key to change."""


class _ProcessCollector(Collector):
    """CPU and memory of this process and the machine, read at scrape time (psutil)."""

    def __init__(self) -> None:
        self._proc = psutil.Process(os.getpid())
        self._proc.cpu_percent(None)  # the first call only starts the interval
        self._cores = psutil.cpu_count() or 1

    def collect(self) -> Iterator[Metric]:
        p = self._proc
        with p.oneshot():
            cpu = p.cpu_times()
            mem = p.memory_info()
            threads = p.num_threads()
            percent = p.cpu_percent(None)
        yield CounterMetricFamily(
            "ccf_process_cpu_seconds",
            "CPU time of the process (user + system)",
            cpu.user + cpu.system,
        )
        # Prometheus' base unit is a ratio, not a percent: 1 = every core of the machine busy
        yield GaugeMetricFamily(
            "ccf_process_cpu_usage_ratio",
            "Share of the machine's CPU time the process used since the last read (0-1)",
            percent / 100 / self._cores,
        )
        yield GaugeMetricFamily("ccf_process_resident_memory_bytes", "Resident memory", mem.rss)
        yield GaugeMetricFamily("ccf_process_threads", "Threads of the process", threads)
        yield GaugeMetricFamily(
            "ccf_system_memory_used_ratio",
            "Share of the machine's memory in use",
            psutil.virtual_memory().percent / 100,
        )


def _with_head(app: WSGIApp) -> WSGIApp:
    """prometheus_client answers HEAD with 405; probes and some scrapers send it: answer it
    like GET, without the body."""

    def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "HEAD":
            return app(environ, start_response)
        body = b"".join(app({**environ, "REQUEST_METHOD": "GET"}, _keep(environ)))
        status, headers = environ["ccf.response"]
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return []

    return wrapped


def _keep(environ: dict[str, Any]) -> StartResponse:
    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        environ["ccf.response"] = (status, headers)
        return lambda _data: None

    return start  # type: ignore[return-value]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Scrapes are not worth a line each."""


def _start_server(host: str, port: int, registry: Collector) -> WSGIServer:
    """The metrics endpoint (GET, HEAD, OPTIONS /metrics) in a daemon thread."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(
        host, port, _with_head(make_wsgi_app(registry)), Server, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="ccf-metrics", daemon=True).start()
    return server


class _Refreshed(Collector):
    """The part's registry, brought up to date by its refresh hooks before each read."""

    def __init__(self, registry: CollectorRegistry, hooks: list[Callable[[], None]]) -> None:
        self._registry = registry
        self._hooks = hooks

    def collect(self) -> Iterator[Metric]:
        for hook in self._hooks:
            hook()
        yield from self._registry.collect()


class PartMetrics:
    """One part's metrics. The predictor's use::

    metrics = PartMetrics("predict", settings)   # or settings.metrics
    metrics.serve()                              # metrics.host:metrics.ports.predict
    metrics.count_in(symbol)                     # a feature row read
    metrics.count_out(symbol, len(predictions))  # predictions written
    metrics.observe_lag("prediction", (made_at - bucket_end) / 1e9, symbol)
    detail["metrics"] = metrics.snapshot()       # into the heartbeat
    metrics.close()
    """

    def __init__(
        self, part: str, config: MetricsConfig | Settings, *, stream_counters: bool = True
    ) -> None:
        """``stream_counters=False`` leaves out the events/lag/gaps/... families, for a part
        (the replay exchange) that has none of them and exports figures of its own."""
        cfg = config.metrics if isinstance(config, Settings) else config
        if part not in cfg.ports:
            raise MetricsPortError(
                f"metrics.ports.{part}: no port configured for part {part!r}; add one "
                f"(metrics.ports.{part}=9105, or 0 for a free port)"
            )
        self.part = part
        self.config = cfg
        self.port: int | None = None  # once served
        self._server: WSGIServer | None = None
        self._totals: dict[tuple[int, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()  # advance() runs in the scrape thread too
        self._hooks: list[Callable[[], None]] = []
        self._lead: Histogram | None = None  # made on the first forecast (observe_lead)
        self._left: Histogram | None = None
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._exposed = _Refreshed(r, self._hooks)
        info = Gauge("ccf_part_info", "The part this endpoint belongs to", ["part"], registry=r)
        info.labels(part).set(1)
        started = Gauge("ccf_part_start_time_seconds", "When the part started", registry=r)
        started.set(time.time())
        self.events_in = Counter(
            "ccf_events_in", "Events the part read, per symbol", ["symbol"], registry=r
        )
        self.events_out = Counter(
            "ccf_events_out", "Records the part wrote, per symbol", ["symbol"], registry=r
        )
        self.lag = Histogram(
            "ccf_lag_seconds",
            "Delay from exchange time to each stage: receive (collector), feature (row "
            "written), prediction (forecast made), score (forecast scored)",
            ["stage", "symbol"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.gaps = Counter("ccf_gaps", "Gaps opened in the data", registry=r)
        self.resyncs = Counter("ccf_resyncs", "Order books resynchronized", registry=r)
        self.reconnects = Counter("ccf_reconnects", "Exchange connections re-opened", registry=r)
        self.dead_letters = Counter("ccf_dead_letters", "Frames kept as dead letters", registry=r)
        if not stream_counters:  # kept as attributes, never exported
            for family in (self.events_in, self.events_out, self.lag, self.gaps):
                r.unregister(family)
            for family in (self.resyncs, self.reconnects, self.dead_letters):
                r.unregister(family)
        r.register(_ProcessCollector())
        self._base = {
            "ccf_events_in",
            "ccf_events_out",
            "ccf_lag_seconds",
            "ccf_gaps",
            "ccf_resyncs",
            "ccf_reconnects",
            "ccf_dead_letters",
            "ccf_process_cpu_seconds",
            "ccf_process_cpu_usage_ratio",
            "ccf_process_resident_memory_bytes",
            "ccf_process_threads",
        }

    # -- updates ----------------------------------------------------------------------------

    def count_in(self, symbol: str, n: int = 1) -> None:
        if n:
            self.events_in.labels(symbol).inc(n)

    def count_out(self, symbol: str, n: int = 1) -> None:
        if n:
            self.events_out.labels(symbol).inc(n)

    def observe_lag(self, stage: str, seconds: float, symbol: str) -> None:
        """One delay from exchange time to ``stage`` (see :data:`STAGES`)."""
        if not math.isnan(seconds):
            self.lag.labels(stage, symbol).observe(seconds)

    def observe_lags(self, stage: str, seconds: Iterable[float], symbol: str) -> None:
        child = self.lag.labels(stage, symbol)
        for s in seconds:
            child.observe(s)

    def observe_lead(self, symbol: str, horizon: int, delay_s: float, left: float) -> None:
        """A stored forecast's lead time (:mod:`ccf.serving.lead`): the delay after its
        origin bucket's end on the event clock, and the share of its horizon left."""
        if self._lead is None:
            r = self.registry
            self._lead = Histogram(
                "ccf_forecast_delay_seconds",
                "Event-clock delay from the origin bucket's end to the stored forecast "
                "(exchange seconds: right at any replay speed)",
                ["symbol", "horizon"],
                buckets=LEAD_BUCKETS,
                registry=r,
            )
            self._left = Histogram(
                "ccf_forecast_horizon_left_ratio",
                "Share of the horizon still ahead when the forecast was stored (<= 0: stored "
                "after its target bucket closed)",
                ["symbol", "horizon"],
                buckets=LEFT_BUCKETS,
                registry=r,
            )
            self._base |= {"ccf_forecast_delay_seconds", "ccf_forecast_horizon_left_ratio"}
        h = str(horizon)
        self._lead.labels(symbol, h).observe(delay_s)
        assert self._left is not None
        self._left.labels(symbol, h).observe(left)

    def advance(self, counter: Counter, total: float, *labels: str) -> None:
        """Bring a counter up to a running total the part keeps itself (a restart of that
        total, which only happens with a new part, is never counted down)."""
        key = (id(counter), labels)
        with self._lock:
            delta = total - self._totals.get(key, 0.0)
            self._totals[key] = total
            if delta > 0:
                (counter.labels(*labels) if labels else counter).inc(delta)

    def add_refresh(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before every scrape and snapshot: a part that keeps its own running
        counts moves them into the counters there (with :meth:`advance`), not on its hot
        path. It runs in the endpoint's thread: it must only read the part's state."""
        self._hooks.append(hook)

    # -- the endpoint -----------------------------------------------------------------------

    def serve(self) -> int | None:
        """Open the endpoint on metrics.host:metrics.ports.<part> (0: a free port); returns
        the port, or None with ``metrics.enabled=false``. A port in use raises
        :class:`MetricsPortError` naming the key."""
        if not self.config.enabled:
            log.info("part=%s symbol=- metrics endpoint off (metrics.enabled=false)", self.part)
            return None
        host, port = self.config.host, self.config.ports[self.part]
        try:
            server = _start_server(host, port, self._exposed)
        except OSError as e:
            raise MetricsPortError(
                f"metrics.ports.{self.part}: cannot serve metrics on {host}:{port} "
                f"({e.strerror or e}); another process holds the port: stop it, choose another "
                f"(metrics.ports.{self.part}=<port>, 0 for a free one) or turn the endpoints "
                "off (metrics.enabled=false)"
            ) from None
        self._server = server
        self.port = server.server_address[1]
        log.info("part=%s symbol=- metrics on http://%s:%d/metrics", self.part, host, self.port)
        return self.port

    @property
    def url(self) -> str | None:
        return None if self.port is None else f"http://{self.config.host}:{self.port}/metrics"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- for the heartbeat ------------------------------------------------------------------

    def snapshot(self) -> dict[str, float]:
        """The part's common figures as ``name{label=value,...} -> value`` (histograms as
        their _sum and _count): what the heartbeat carries for the dashboard."""
        out: dict[str, float] = {}
        for family in self._exposed.collect():
            if family.name not in self._base:
                continue
            for s in family.samples:
                if s.name.endswith(_SKIP_SUFFIXES):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in s.labels.items())
                out[f"{s.name}{{{labels}}}" if labels else s.name] = round(s.value, 6)
        return out


class MonitorMetrics(PartMetrics):
    """The monitor's part metrics plus forecast accuracy, drift, quality and alerts."""

    def __init__(self, config: MetricsConfig | Settings) -> None:
        super().__init__("monitor", config)
        r = self.registry
        acc = ["symbol", "role", "horizon", "window"]
        self.unscored = Counter(
            "ccf_unscored",
            "Predictions that got no score, per reason (no_forecast, gap, missing, ...)",
            ["symbol", "reason"],
            registry=r,
        )
        self.pending = Gauge(
            "ccf_pending_predictions", "Predictions waiting for their target bucket", registry=r
        )
        self.accuracy = {
            name: Gauge(f"ccf_forecast_{name}", text, acc, registry=r)
            for name, text in (
                ("mae", "Mean absolute error of the point forecast (log return)"),
                ("rmse", "Root mean squared error of the point forecast"),
                ("mase", "MAE over the naive (no change) forecast's MAE"),
                ("direction_accuracy", "Share of forecasts with the move's sign"),
                ("pinball", "Mean pinball loss over the quantiles"),
                ("signal_return", "Summed return of the BUY/SELL signal after fees"),
                ("return_per_trade", "Signal return per trade after fees"),
                ("trades", "BUY/SELL signals in the window"),
                ("count", "Scores in the window"),
            )
        }
        self.coverage = Gauge(
            "ccf_forecast_coverage",
            "Share of truths inside the central interval of nominal coverage `interval`",
            [*acc, "interval"],
            registry=r,
        )
        self.drift_share = Gauge(
            "ccf_drift_share", "Share of the checked columns that drifted", ["symbol"], registry=r
        )
        self.drift_score = Gauge(
            "ccf_drift_score",
            "Drift score per column (normed Wasserstein distance to the reference)",
            ["symbol", "column"],
            registry=r,
        )
        self.missing_share = Gauge(
            "ccf_missing_share", "Share of missing values", ["symbol", "column"], registry=r
        )
        self.out_of_range_share = Gauge(
            "ccf_out_of_range_share",
            "Share of values outside the reference's range",
            ["symbol", "column"],
            registry=r,
        )
        self.constant_columns = Gauge(
            "ccf_constant_columns", "Columns constant in the recent rows", ["symbol"], registry=r
        )
        self.alerts = Counter("ccf_alerts", "Alerts raised", ["symbol", "kind"], registry=r)
        self.alert_active = Gauge(
            "ccf_alert_active", "1 while an alert is active", ["symbol", "kind"], registry=r
        )
        self._base |= {"ccf_unscored", "ccf_pending_predictions", "ccf_drift_share", "ccf_alerts"}

    def set_accuracy(self, rows: Iterable[Aggregate]) -> None:
        for a in rows:
            labels = (a.symbol, a.role, str(a.horizon), a.window)
            g = self.accuracy
            g["mae"].labels(*labels).set(a.mae)
            g["rmse"].labels(*labels).set(a.rmse)
            g["mase"].labels(*labels).set(a.mase)
            g["direction_accuracy"].labels(*labels).set(a.direction)
            g["pinball"].labels(*labels).set(a.pinball)
            g["signal_return"].labels(*labels).set(a.signal_return)
            g["return_per_trade"].labels(*labels).set(a.return_per_trade)
            g["trades"].labels(*labels).set(a.trades)
            g["count"].labels(*labels).set(a.n)
            for interval, share in a.coverage.items():
                self.coverage.labels(*labels, interval).set(share)

    def set_drift(self, r: DriftResult) -> None:
        s = r.symbol
        self.drift_share.labels(s).set(r.share)
        self.constant_columns.labels(s).set(sum(c.constant for c in r.columns))
        for c in r.columns:
            if c.drifted is not None:
                self.drift_score.labels(s, c.column).set(c.drift_score)
            self.missing_share.labels(s, c.column).set(c.missing_share)
            self.out_of_range_share.labels(s, c.column).set(c.out_of_range_share)
