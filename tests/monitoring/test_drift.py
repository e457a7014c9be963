"""Drift and quality on the recorded feature rows: a planted drift (the ETH rows under the
BTC name, against the BTC rows the champion trained on) raises an alert, an undrifted
copy does not, and planted missing values raise the missing-value alert."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccf.features.engine import FeatureRow
from ccf.ml.dataset import make_spec, stationary_inputs
from ccf.monitoring import drift
from ccf.monitoring.monitor import Monitor
from ccf.serving.store import PredictionStore, ServingInfo
from tests.monitoring import SECOND, build_features, copy_data, features


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("recorded")
    build_features(data)
    return data


def append_copy(settings, source: str, name: str, nan_every: dict[str, int] | None = None) -> int:
    """Append ``source``'s rows after the recording under ``name`` (every k-th value of the
    named columns made NaN); returns the shift in ns."""
    store = features(settings)
    cols = list(store.set.float_columns)
    f = store.frame([source])
    first, last = int(f.ts.min()), int(f.ts.max())
    shift = last - first + SECOND
    for c, k in (nan_every or {}).items():
        f.loc[f.index[::k], c] = math.nan
    store.write(
        [
            FeatureRow(name, int(t) + shift, int(e) + shift, tuple(v))
            for t, e, v in zip(f.ts, f.ts_end, f[cols].to_numpy(), strict=True)
        ]
    )
    store.close()
    return shift


def serve_champion(settings, start: int, end: int, version: str = "3") -> None:
    """The champion's serving record as the predictor writes it: its spec and window."""
    store = features(settings)
    f = store.frame(["btcusdt"], start, end + SECOND)
    s = store.set
    spec = stationary_inputs(f, make_spec(settings.ml, s.name, s.version, s.bucket_ns, s.columns))
    store.close()
    preds = PredictionStore(settings.predictions_path)
    preds.set_serving(
        ServingInfo(
            "champion",
            "ccf-default",
            version,
            "lightgbm",
            start,
            end,
            time.time_ns(),
            end,
            spec.to_json(),
        )
    )
    preds.close()


def test_a_planted_drift_raises_an_alert_and_an_undrifted_copy_does_not(
    recorded: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = copy_data(recorded, tmp_path / "data", "monitor.drift_rows=600")
    btc = features(settings).frame(["btcusdt"])
    first, last = int(btc.ts.min()), int(btc.ts.max())
    append_copy(settings, "ethusdt", "btcusdt")  # BTC's newest rows are ETH's: drift
    shift = append_copy(settings, "ethusdt", "ethusdt")  # ETH's are ETH's again: none
    serve_champion(settings, first, last)  # trained on the recording

    monitor = Monitor(settings)
    monitor.open()
    try:
        with caplog.at_level(logging.WARNING, logger="ccf.monitoring.monitor"):
            results = {r.symbol: r for r in monitor.check_drift(now=1_000)}
        assert results["btcusdt"].share >= 0.5 > results["ethusdt"].share
        assert results["ethusdt"].drifted == ()
        assert len(results["btcusdt"].drift_columns) == drift.MAX_COLUMNS
        (alert,) = monitor.store.alerts(active_only=True)
        assert (alert.part, alert.symbol, alert.kind, alert.ts) == (
            "monitor",
            "btcusdt",
            "drift",
            1_000,
        )
        assert "champion ccf-default v3" in alert.message
        (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "symbol=btcusdt alert=drift" in line
        assert all(c in line for c in results["btcusdt"].drifted)
        runs = monitor.store.frame("drift_runs").set_index("symbol")
        assert runs.loc["btcusdt", "reference"].startswith("training window of the champion")
        assert (runs.loc["btcusdt", "ref_from"], runs.loc["btcusdt", "ref_to"]) == (first, last)
        report = json.loads(Path(runs.loc["btcusdt", "json"]).read_text())
        assert report["drift_share"] == results["btcusdt"].share
        # Evidently's own verdicts (a fixed 0.1) flag at least what the autocorrelation-aware
        # thresholds do
        assert report["evidently"]["metrics"][0]["value"]["share"] >= results["btcusdt"].share
        assert Path(runs.loc["btcusdt", "html"]).stat().st_size > 10_000
        checks = monitor.store.frame("column_checks", "btcusdt").set_index("column_name")
        assert checks.loc["a_q_0", "drifted"] == 1 and pd.isna(checks.loc["m_p", "drift_method"])
        assert checks.loc["m_p", "out_of_range_share"] == 1.0  # ETH's price is not BTC's
        reg = monitor.metrics.registry
        assert (
            reg.get_sample_value("ccf_drift_share", {"symbol": "btcusdt"})
            == results["btcusdt"].share
        )
        assert reg.get_sample_value("ccf_alerts_total", {"symbol": "btcusdt", "kind": "drift"}) == 1
        assert reg.get_sample_value("ccf_alert_active", {"symbol": "ethusdt", "kind": "drift"}) == 0
        assert reg.get_sample_value(
            "ccf_drift_score", {"symbol": "btcusdt", "column": "a_q_0"}
        ) == pytest.approx(checks.loc["a_q_0", "drift_score"])

        # a new champion trained on the new rows: nothing drifted, the alert clears
        serve_champion(settings, first + shift, last + shift, version="4")
        again = {r.symbol: r for r in monitor.check_drift(now=2_000)}
        assert again["btcusdt"].share < 0.5
        (old,) = monitor.store.alerts()
        assert (old.active, old.cleared_at) == (False, 2_000)
        assert reg.get_sample_value("ccf_alert_active", {"symbol": "btcusdt", "kind": "drift"}) == 0
    finally:
        monitor.close()


def test_missing_values_raise_an_alert_against_the_first_half_of_history(
    recorded: Path, tmp_path: Path
) -> None:
    settings = copy_data(recorded, tmp_path / "data", "symbols=[btcusdt]", "monitor.drift_rows=300")
    append_copy(settings, "btcusdt", "btcusdt", {"sell_qty": 2, "ofi_1": 3})  # no champion
    monitor = Monitor(settings)
    monitor.open()
    try:
        (result,) = monitor.check_drift()
        (alert,) = [a for a in monitor.store.alerts() if a.kind == "missing"]
    finally:
        monitor.close()
    assert result.reference.label.startswith("first half of the stored history")
    missing = {c.column: c.missing_share for c in result.columns}
    assert missing["sell_qty"] == pytest.approx(0.5, abs=0.01)
    assert "sell_qty (0.50)" in alert.message and "ofi_1 (0.33)" in alert.message
    # columns the feature set never fills (candles in a book set) are no news
    assert missing["close"] == 1.0 and "close" not in alert.message
    assert alert.symbol == "btcusdt" and alert.active


def test_reports_keep_the_newest(tmp_path: Path) -> None:
    rows = drift.Rows(pd.DataFrame({"x": [1.0, 2.0]}), "test", 0, 1)
    result = drift.DriftResult("btcusdt", rows, rows, (), math.nan, (), {})
    for now in range(5):
        drift.write_reports(result, None, tmp_path, now * 1_000_000, keep=2)
    assert [p.name for p in sorted(tmp_path.iterdir())] == [
        "drift_btcusdt_19700101T000000003Z.json",
        "drift_btcusdt_19700101T000000004Z.json",
    ]


def drift_alerts(monitor: Monitor) -> list:
    return [a for a in monitor.store.alerts(active_only=True) if a.kind == "drift"]


def test_before_a_champion_exists_drift_is_reported_and_never_alerted(
    recorded: Path, tmp_path: Path
) -> None:
    settings = copy_data(recorded, tmp_path / "data", "monitor.drift_rows=600")
    append_copy(settings, "ethusdt", "btcusdt")  # the planted drift of the test above
    monitor = Monitor(settings)
    monitor.open()
    try:
        results = {r.symbol: r for r in monitor.check_drift(now=1_000)}
        assert results["btcusdt"].share >= 0.5  # measured and stored ...
        assert results["btcusdt"].reference.label.endswith("(no serving champion)")
        assert len(monitor.store.frame("drift_runs")) == 2
        assert drift_alerts(monitor) == []  # ... and no alert: no model to drift from
        # once a champion serves, the same rows do raise it
        btc = features(settings).frame(["btcusdt"])
        serve_champion(settings, int(btc.ts.min()), int(btc.ts.min()) + 600 * SECOND)
        monitor.check_drift(now=2_000)
        assert [a.symbol for a in drift_alerts(monitor)] == ["btcusdt"]
    finally:
        monitor.close()


def test_replaying_the_same_recording_twice_raises_no_alert(recorded: Path, tmp_path: Path) -> None:
    settings = copy_data(recorded, tmp_path / "data", "monitor.drift_rows=600")
    btc = features(settings).frame(["btcusdt"])
    first, last = int(btc.ts.min()), int(btc.ts.max())
    for sym in ("btcusdt", "ethusdt"):
        append_copy(settings, sym, sym)  # the recording replayed after itself
    serve_champion(settings, first, last)  # trained on the first pass
    monitor = Monitor(settings)
    monitor.open()
    try:
        results = monitor.check_drift(now=1_000)
        assert {r.symbol for r in results} == {"btcusdt", "ethusdt"}
        for r in results:
            assert r.current.start > last  # the second pass against the first
            assert r.share < 0.5, (r.symbol, r.drifted)
        assert drift_alerts(monitor) == []
    finally:
        monitor.close()


def test_a_fresh_pipeline_does_not_cry_wolf(recorded: Path, tmp_path: Path) -> None:
    """The first two minutes of a run: a champion trained on the first minute, the
    current rows all of it (``make run`` a minute in). A fixed 0.1-std threshold calls
    most columns drifted; a hundred autocorrelated rows carry too little information for
    the autocorrelation-aware test to call any."""
    settings = copy_data(recorded, tmp_path / "data", "symbols=[btcusdt]")
    store = features(settings)
    table = store.set.table
    first = int(store.frame(["btcusdt"]).ts.min())
    store.close()
    with sqlite3.connect(settings.features_path) as con:
        con.execute(f"DELETE FROM {table} WHERE ts >= ?", (first + 120 * SECOND,))
    serve_champion(settings, first, first + 59 * SECOND)
    monitor = Monitor(settings)
    monitor.open()
    try:
        (result,) = monitor.check_drift(now=1_000)
        runs = monitor.store.frame("drift_runs")
        report = json.loads(Path(runs["json"].iloc[0]).read_text())
        fixed = report["evidently"]["metrics"][0]["value"]["share"]
        assert fixed >= 0.5  # the wolf: Evidently's fixed threshold on the same columns
        assert result.share < 0.5 and drift_alerts(monitor) == []
    finally:
        monitor.close()


def test_a_planted_shift_in_one_column_is_found_and_its_twin_is_not() -> None:
    """Pure: an AR(1) series (autocorrelation 0.95) against a later stretch of itself,
    and against the same stretch shifted by one standard deviation."""
    rng = np.random.default_rng(7)
    n = 4000
    x = np.zeros(n)
    e = rng.normal(size=n)
    for i in range(1, n):
        x[i] = 0.95 * x[i - 1] + e[i]
    ts = np.arange(n) * SECOND
    ref = pd.DataFrame({"ts": ts[:2000], "a": x[:2000], "b": x[:2000]})
    cur = pd.DataFrame({"ts": ts[2000:], "a": x[2000:], "b": x[2000:] + x[:2000].std()})
    decided = drift.drift_decision(ref, cur, ["a", "b"])
    score_a, threshold_a, drifted_a = decided["a"]
    assert not drifted_a and threshold_a > drift.THRESHOLD  # wider than a fixed 0.1
    assert decided["b"][2] and decided["b"][0] > 0.8
    # white noise has an autocorrelation time of about 1, an AR(1) of (1+phi)/(1-phi) = 39
    assert drift.autocorrelation_time(e) < 1.3
    assert 20 < drift.autocorrelation_time(x) < 60
