"""Prometheus endpoints of running parts answer real HTTP scrapes; every part has its own
registry; a port in use stops a part with a message naming the key."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccf.config import MetricsConfig, ReplayConfig
from ccf.features.runner import FeatureRunner
from ccf.monitoring.metrics import MetricsPortError, MonitorMetrics, PartMetrics
from ccf.monitoring.monitor import Monitor
from ccf.sources.collector import Collector
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.timeline import load_timeline
from ccf.status import gather_status
from tests import parts
from tests.features.test_runner import caught_up, fill
from tests.monitoring import build_features, frame, prediction, settings_for, write_predictions
from tests.sources.recorded import recording_files

COMMON = {
    "ccf_part_info",
    "ccf_part_start_time_seconds",
    "ccf_events_in_total",
    "ccf_events_out_total",
    "ccf_lag_seconds_bucket",
    "ccf_lag_seconds_count",
    "ccf_gaps_total",
    "ccf_resyncs_total",
    "ccf_reconnects_total",
    "ccf_dead_letters_total",
    "ccf_process_cpu_seconds_total",
    "ccf_process_cpu_usage_ratio",
    "ccf_process_resident_memory_bytes",
    "ccf_process_threads",
    "ccf_system_memory_used_ratio",
}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed from a real HTTP scrape."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_parts_in_one_process_keep_their_own_registries() -> None:
    cfg = MetricsConfig(ports={"collect": 0, "features": 0})
    a, b = PartMetrics("collect", cfg), PartMetrics("collect", cfg)
    c = PartMetrics("features", cfg)
    try:
        for m in (a, b, c):
            m.serve()
        a.count_in("btcusdt", 5)
        b.count_in("btcusdt", 2)
        c.observe_lag("feature", 0.3, "btcusdt")
        got = [scrape(m.url) for m in (a, b, c)]
    finally:
        for m in (a, b, c):
            m.close()
    assert len({a.port, b.port, c.port}) == 3
    assert [value(s, "ccf_events_in_total", symbol="btcusdt") for s in got[:2]] == [5, 2]
    assert value(got[2], "ccf_lag_seconds_count", stage="feature", symbol="btcusdt") == 1
    assert value(got[2], "ccf_part_info", part="features") == 1
    labelled = {"ccf_events_in_total", "ccf_events_out_total", "ccf_lag_seconds_bucket"}
    assert all(COMMON - labelled - {"ccf_lag_seconds_count"} <= names(s) for s in got)


async def test_a_running_collector_answers_a_scrape(tmp_path: Path) -> None:
    timeline = load_timeline(recording_files())
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        ex.set_faults(drop_after_frames=20_000)  # reconnects, gaps and resyncs to count
        settings = settings_for(
            tmp_path / "data",
            f"replay.port={ex.port}",
            "collect.print_every_s=0",
            "collect.reconnect.base_s=0.05",
            "collect.reconnect.cap_s=0.2",
        )
        metrics = PartMetrics("collect", settings)
        metrics.serve()
        seen: dict = {}

        def done(c: Collector) -> bool:
            trades = c.counts[("btcusdt", "trade")]
            if sum(x.connects for x in c.connections) >= 2 and trades > 3000:
                seen.update(scrape(metrics.url))  # while it runs
                return True
            return False

        try:
            collector = await parts.run_until(
                Collector(settings, metrics=metrics), done, 120, lambda c: c.status()
            )
        finally:
            metrics.close()
    assert COMMON <= names(seen)
    assert value(seen, "ccf_part_info", part="collect") == 1
    market = sum(collector.counts[("btcusdt", k)] for k in ("book", "trade", "quote", "candle"))
    assert 0 < value(seen, "ccf_events_in_total", symbol="btcusdt") <= market
    assert value(seen, "ccf_lag_seconds_count", stage="receive", symbol="btcusdt") > 0
    for counter in ("ccf_reconnects_total", "ccf_gaps_total", "ccf_resyncs_total"):
        assert value(seen, counter) >= 1, counter
    assert value(seen, "ccf_process_resident_memory_bytes") > 10_000_000
    # the heartbeat carries the same figures for the dashboard
    (part,) = [p for p in gather_status(settings)["parts"] if p["part"] == "collect"]
    beat = part["detail"]["metrics"]
    assert beat["ccf_events_in_total{symbol=btcusdt}"] == market
    assert beat["ccf_reconnects_total"] >= 1


async def test_a_running_feature_runner_answers_a_scrape(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path / "data",
        "symbols=[btcusdt]",
        "features.print_every_s=0",
        "features.poll_interval_s=0.05",
    )
    fill(settings)
    metrics = PartMetrics("features", settings)
    metrics.serve()
    seen: dict = {}

    def done(r: FeatureRunner) -> bool:
        if caught_up(r, settings):
            seen.update(scrape(metrics.url))
            return True
        return False

    try:
        runner = await parts.run_until(
            FeatureRunner(settings, metrics=metrics), done, 60, lambda r: r.status()
        )
    finally:
        metrics.close()
    rows = runner.rows_written["btcusdt"]
    assert COMMON <= names(seen)
    assert value(seen, "ccf_events_out_total", symbol="btcusdt") == rows > 600
    assert (
        value(seen, "ccf_events_in_total", symbol="btcusdt")
        == runner.engine.stats("btcusdt").events
    )
    assert value(seen, "ccf_lag_seconds_count", stage="feature", symbol="btcusdt") == rows


async def test_a_running_monitor_answers_a_scrape(tmp_path: Path) -> None:
    settings = build_features(tmp_path / "data")
    btc = frame(settings, "btcusdt")
    q = (-4e-4, -1e-4, 4e-4, 6e-4, 9e-4)
    preds = [prediction("btcusdt", t, 1, btc.m_p[t], q) for t in btc.index[100:200]]
    write_predictions(settings, preds)
    metrics = MonitorMetrics(settings)
    metrics.serve()
    seen: dict = {}

    def done(m: Monitor) -> bool:
        if m.counts[("btcusdt", "scored")] == len(preds) and m.last_drift:
            seen.update(scrape(metrics.url))
            return True
        return False

    try:
        await parts.run_until(Monitor(settings, metrics), done, 60, lambda m: m.status())
    finally:
        metrics.close()
    assert COMMON <= names(seen)
    assert value(seen, "ccf_events_out_total", symbol="btcusdt") == len(preds)
    assert value(seen, "ccf_lag_seconds_count", stage="score", symbol="btcusdt") == len(preds)
    labels = {"symbol": "btcusdt", "role": "champion", "horizon": "1", "window": "5m"}
    assert value(seen, "ccf_forecast_count", **labels) == len(preds)
    assert value(seen, "ccf_forecast_coverage", interval="0.8", **labels) >= 0
    assert 0 <= value(seen, "ccf_drift_share", symbol="btcusdt") <= 1
    assert {"ccf_forecast_mae", "ccf_forecast_mase", "ccf_missing_share"} <= names(seen)


def test_a_port_in_use_names_the_key(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MetricsPortError, match=r"metrics\.ports\.collect: .*127\.0\.0\.1:"):
            PartMetrics("collect", MetricsConfig(ports={"collect": port})).serve()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "ccf",
                "monitor",
                f"data_dir={tmp_path}",
                f"metrics.ports.monitor={port}",
                "metrics.enabled=true",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2, out.stderr
    assert f"metrics.ports.monitor: cannot serve metrics on 127.0.0.1:{port}" in out.stderr
    assert PartMetrics("monitor", MetricsConfig(enabled=False)).serve() is None
    with pytest.raises(MetricsPortError, match=r"metrics\.ports\.replay"):
        PartMetrics("replay", MetricsConfig())
