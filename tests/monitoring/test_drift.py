"""Drift and quality on the recorded feature rows: a planted drift (the ETH rows under the
BTC name, against the BTC rows the champion trained on) raises an alert, an undrifted
copy does not, and planted missing values raise the missing-value alert."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

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
        assert report["evidently"]["metrics"][0]["value"]["share"] == results["btcusdt"].share
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
