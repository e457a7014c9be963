"""A filled data dir for the dashboard tests: every store the UI reads, written by the real
parts from the recorded Binance streams.

Raw store (books, trades, a gap, a dead letter, news from the saved feeds with their feed
health), the feature store (backfill, then the live feature runner's heartbeat), a registry
holding naive and LightGBM (trained on those rows), predictions made bucket by bucket by
the live predictor, and the monitor's scores, rolling accuracy, drift run and alerts,
written pass by pass as the predictions arrive.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ccf.config import FeedConfig, Settings, load_settings
from ccf.features.runner import FeatureRunner, run_backfill
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.ml.pipeline import train_round
from ccf.ml.prepare import Source
from ccf.monitoring.monitor import Monitor
from ccf.records import DeadLetter, Gap
from ccf.serving import predictor as predictor_mod
from ccf.serving.predictor import Predictor
from ccf.serving.source import RegistrySource
from ccf.serving.store import PredictionStore
from ccf.sources.news.dedupe import DedupeIndex, assign
from ccf.sources.news.health import initial_status, on_failure, on_success
from ccf.sources.news.parse import parse_feed
from ccf.storage import SqliteStore
from tests import parts
from tests.features.test_runner import fill
from tests.sources.news_fixtures import COINDESK, COINTELEGRAPH

SYMBOLS = ("btcusdt", "ethusdt")
S = 10**9
CHUNK = 30  # origins per predictor step: the monitor then aggregates over time


def overrides(data_dir: Path) -> list[str]:
    """What the dashboard must be started with to read ``data_dir`` as it was written."""
    return [
        f"data_dir={data_dir}",
        f"symbols=[{','.join(SYMBOLS)}]",
        "ml.evaluate.threshold_bps=0.5",  # the models' small forecasts pass it at times
        "monitor.windows=[30s,2m]",
        "ml.evaluate.step=5",  # the promotion check walks forward every 5th origin
    ]


def settings_at(data_dir: Path, *extra: str) -> Settings:
    return load_settings(
        [
            *overrides(data_dir),
            "log_level=WARNING",
            "features.print_every_s=0",
            "features.poll_interval_s=0.05",
            "serve.print_every_s=0",
            "serve.max_input_lag_s=1e12",  # recorded in 2024: not stale here
            "monitor.drift_rows=200",
            "metrics.enabled=false",
            # the pages' expectations (promotion verdicts, rolling scores) were set on rows
            # cut by the lateness rule; the per-stream rule drops ~40 late trades of these
            # recordings, enough to change a model's skill by a hair: keep these rows
            "features.watermark=lateness",
            # five minutes of forecasts: a small pool, so the calibration takes over
            "serve.calibration.window=200",
            "serve.calibration.min_scores=30",
            *extra,
        ],
        environ={},
    )


def _news(settings: Settings) -> None:
    """The saved feeds parsed and deduplicated as the news collector does; one feed ok, a
    third one failing."""
    raw = SqliteStore(settings.db_path)
    index = DedupeIndex(3 * 86400 * S)
    now = time.time_ns()
    statuses = []
    for i, (name, path) in enumerate((("coindesk", COINDESK), ("cointelegraph", COINTELEGRAPH))):
        at = now - (2 - i) * 60 * S
        url = f"https://example.invalid/{name}.xml"
        parsed = parse_feed(path.read_bytes(), source=name, url=url, ingested_at=at)
        out = assign(index, parsed.entries, at)
        raw.write([*out.items, *out.sources])
        st = initial_status(FeedConfig(name=name, url=url), at)
        statuses.append(
            on_success(
                st,
                now=at,
                http_status=200,
                items_seen=len(parsed.entries),
                new_items=len(out.items),
                bozo=parsed.bozo,
                etag="",
                last_modified="",
            )
        )
    broken = initial_status(FeedConfig(name="decrypt", url="https://example.invalid/x"), now)
    statuses.append(on_failure(broken, now=now, error="HTTP 503", http_status=503))
    raw.write(statuses)
    raw.close()


def _incidents(settings: Settings) -> None:
    """A closed gap and an open one, and a dead letter, at the recordings' times."""
    raw = SqliteStore(settings.db_path)
    (first, last) = raw.query("SELECT min(ts_event), max(ts_event) FROM trade")[0]
    mid = (first + last) // 2
    raw.write(
        [
            Gap("binance", "btcusdt", "book", mid, mid + 3 * S, "disconnect", "test: 3 s", mid),
            Gap("binance", "ethusdt", "trade", last - 20 * S, None, "sequence_gap", "ids", last),
            DeadLetter("binance", "btcusdt", "malformed", '{"stream": ', last),
        ]
    )
    raw.close()


def _features_heartbeat(settings: Settings) -> None:
    """The live feature runner, caught up at once after the backfill: its heartbeat."""
    runner = FeatureRunner(settings)
    asyncio.run(parts.run_until(runner, lambda r: r.caught_up, 60, lambda r: r.status()))


def build(data_dir: Path) -> Settings:
    """Fill ``data_dir`` with every store the dashboard reads (30 to 50 s, mostly MLflow)."""
    settings = settings_at(data_dir)
    fill(settings)
    _incidents(settings)
    _news(settings)
    run_backfill(settings)
    _features_heartbeat(settings)
    rnd = train_round(settings, Source(), ("naive", "lightgbm"))
    assert {"champion", "challenger"} <= rnd.aliases.keys()
    predictor = Predictor(settings, RegistrySource(settings))
    fs = FeatureStore(settings.features_path, feature_set(settings.features), readonly=True)
    preds = PredictionStore(settings.predictions_path)
    raw = SqliteStore(settings.db_path)
    monitor = Monitor(settings)
    monitor.open()
    try:
        predictor._refresh_models(fs, preds)
        # forecast the newest ~5 minutes, a few buckets at a time, as the live part would
        for sym in SYMBOLS:
            predictor.state[sym].next_ts = fs.last_bucket(sym) - 300 * S
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(predictor_mod, "MAX_ORIGINS", CHUNK)
            while predictor.step(fs, preds):
                monitor.score_pass()
                monitor.aggregate()
        monitor.check_drift()
        predictor._heartbeat(raw, "running")
        monitor._heartbeat(raw, "running")
    finally:
        monitor.close()
        raw.close()
        preds.close()
        fs.close()
    return settings
