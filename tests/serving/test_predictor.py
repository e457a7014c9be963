"""The live predictor on feature rows of the real recordings, with a real MLflow registry.

Feature rows are computed once from the recorded streams, then handed to the
predictor's store a few buckets at a time, as the live feature part would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccf.config import Settings, load_settings
from ccf.features.engine import FeatureRow
from ccf.features.runner import run_backfill
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.ml.pipeline import train_round
from ccf.ml.prepare import Source
from ccf.ml.registry import Registry
from ccf.serving.predictor import Predictor
from ccf.serving.source import RegistrySource
from ccf.serving.store import PredictionStore
from tests.features.test_runner import fill

S = 10**9
SYMBOLS = ("btcusdt", "ethusdt")


def settings_at(data_dir: Path, *extra: str) -> Settings:
    return load_settings(
        [
            f"data_dir={data_dir}",
            f"symbols=[{','.join(SYMBOLS)}]",
            "log_level=WARNING",
            "features.print_every_s=0",
            "serve.print_every_s=0",
            "serve.poll_interval_s=0.05",
            "serve.alias_check_s=0.2",
            "serve.max_input_lag_s=1e12",  # recorded in 2024: not stale for these tests
            "ml.evaluate.step=5",
            *extra,
        ],
        environ={},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A data dir whose registry holds naive (champion) and lightgbm (challenger), trained
    on the recorded feature rows; and those rows."""
    root = tmp_path_factory.mktemp("serving")
    settings = settings_at(root / "train")
    fill(settings)
    run_backfill(settings)
    rnd = train_round(settings, Source(), ("naive", "lightgbm"))
    assert rnd.aliases.keys() >= {"champion", "challenger"}
    rows = FeatureStore(settings.features_path, feature_set(settings.features)).frame()
    return root / "train", rows


def live_dir(trained: tuple[Path, pd.DataFrame], tmp_path: Path) -> Settings:
    """Settings sharing the trained registry, with an empty feature store to fill."""
    train_dir, _ = trained
    s = settings_at(tmp_path, f"ml.registry.tracking_uri=sqlite:///{train_dir / 'mlflow.db'}")
    return s


def feed(settings: Settings, rows: pd.DataFrame, upto_ts: int, since_ts: int = -1) -> int:
    """Write the recorded feature rows with bucket start in (since, upto] to the live store."""
    fs = feature_set(settings.features)
    store = FeatureStore(settings.features_path, fs)
    part = rows[(rows.ts > since_ts) & (rows.ts <= upto_ts)]
    cols = list(fs.float_columns)
    values = part[cols].to_numpy()
    out = [
        FeatureRow(sym, int(ts), int(te), tuple(v))
        for sym, ts, te, v in zip(part.symbol, part.ts, part.ts_end, values, strict=True)
    ]
    n = store.write(out)
    store.close()
    return n


def stores(settings: Settings) -> tuple[FeatureStore, PredictionStore]:
    fs = feature_set(settings.features)
    return FeatureStore(settings.features_path, fs, readonly=True), PredictionStore(
        settings.predictions_path
    )


def test_every_closed_bucket_is_forecast_once_and_a_promotion_switches_between_buckets(
    trained, tmp_path: Path
) -> None:
    _, rows = trained
    settings = live_dir(trained, tmp_path)
    buckets = np.sort(rows.ts.unique())
    start = int(buckets[100])
    feed(settings, rows, start)
    predictor = Predictor(settings, RegistrySource(settings))
    features, preds = stores(settings)
    predictor._refresh_models(features, preds)
    predictor._resume(features, preds)
    champion_v = predictor.served["champion"].version
    reg = Registry(settings)
    # the round registered naive and lightgbm as versions 1 and 2: move to the other one
    challenger_v = {"1", "2"}.difference({champion_v}).pop()
    switched_at = None
    since = start
    for i, upto in enumerate(buckets[110::10]):
        feed(settings, rows, int(upto), since)
        since = int(upto)
        if i == 20:  # promote the challenger mid-run
            reg.set_alias("champion", challenger_v, "test: an alias move during the run")
        predictor._refresh_models(features, preds)
        if switched_at is None and predictor.served["champion"].version == challenger_v:
            switched_at = predictor.state["btcusdt"].next_ts
        predictor.step(features, preds)
    df = preds.frame()
    champ = df[df.role == "champion"]
    for sym in SYMBOLS:
        c = champ[champ.symbol == sym]
        origins = np.sort(c.ts.unique())
        # every bucket from the first one served to the newest, none skipped ...
        assert np.array_equal(origins, buckets[(buckets >= start) & (buckets <= since)])
        # ... and none forecast twice: one row per origin and horizon
        assert len(c) == len(origins) * 3
        before = c[c.ts < switched_at]
        after = c[c.ts >= switched_at]
        assert set(before.version) == {champion_v} and set(after.version) == {challenger_v}
        assert len(before) and len(after)
        # the naive yardstick beside it at every origin, and the challenger in shadow
        for role in ("naive", "challenger"):
            r = df[(df.role == role) & (df.symbol == sym)]
            assert np.array_equal(np.sort(r.ts.unique()), origins)
    assert predictor.switches == 1
    ok = champ[champ.flag.isna()]
    assert len(ok) > 0.8 * len(champ)
    q = ok[[c for c in ok.columns if c.startswith("q")]].to_numpy()
    assert np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    assert (ok.target_ts == ok.ts + ok.horizon * S).all()
    # the last observed value is the mid of the origin bucket, as the feature rows hold it
    merged = ok.merge(rows[["symbol", "ts", "m_p"]], on=["symbol", "ts"])
    assert np.allclose(merged.last_value, merged.m_p, rtol=1e-12)
    serving = preds.serving()
    assert serving["champion"].version == challenger_v and serving["champion"].trained_to
    assert serving["champion"].from_ts == switched_at


def test_untrustworthy_windows_are_flagged_with_the_reason(trained, tmp_path: Path) -> None:
    _, rows = trained
    rows = rows.copy()
    buckets = np.sort(rows.ts.unique())
    gap_bucket = int(buckets[300])
    rows.loc[rows.ts == gap_bucket, "gap"] = 1.0  # the collector lost data in this bucket
    settings = live_dir(trained, tmp_path)
    feed(settings, rows, int(buckets[200]))
    predictor = Predictor(settings, RegistrySource(settings))
    features, preds = stores(settings)
    predictor._refresh_models(features, preds)
    predictor._resume(features, preds)
    feed(settings, rows, int(buckets[400]), int(buckets[200]))
    predictor.step(features, preds)
    df = preds.frame(symbols=["btcusdt"], role="champion")
    enc = predictor.served["champion"].model.spec.encoder_length
    flagged = df[df.flag == "gap_in_window"]
    # every window holding the gap bucket, and only those: flagged, with no forecast
    assert sorted(flagged.ts.unique()) == [int(b) for b in buckets[300 : 300 + enc]]
    assert flagged[[c for c in df.columns if c.startswith("q")]].isna().all().all()
    assert predictor.status()["symbols"]["btcusdt"]["flagged"] == {"gap_in_window": enc}
    # recorded data is hours old for the default input lag, and a 1 ns old model is stale
    for name, setting, flag in (
        ("stale", "serve.max_input_lag_s=30", "stale_input"),
        ("old", "serve.max_model_age=1ns", "stale_model"),
    ):
        other = settings_at(
            tmp_path / name, f"ml.registry.tracking_uri={settings.tracking_uri}", setting
        )
        assert set(forecast_range(other, rows, buckets[100], buckets[120]).flag) == {flag}


def forecast_range(settings: Settings, rows: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    """Start a predictor on the rows up to ``first``, hand it the rows up to ``last``, and
    return its champion's predictions."""
    feed(settings, rows, int(first))
    p = Predictor(settings, RegistrySource(settings))
    features, preds = stores(settings)
    p._refresh_models(features, preds)
    p._resume(features, preds)
    feed(settings, rows, int(last), int(first))
    p.step(features, preds)
    return preds.frame(role="champion")


def test_without_a_champion_the_predictor_says_what_to_do(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    fill(settings)
    run_backfill(settings)
    env = {**os.environ, "CCF__LOG_LEVEL": "WARNING"}
    out = subprocess.run(
        [sys.executable, "-m", "ccf", "predict", f"data_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2
    assert "no model with alias 'champion'" in out.stderr and "ccf train" in out.stderr


def test_a_killed_predictor_resumes_where_it_stopped(trained, tmp_path: Path) -> None:
    _, rows = trained
    settings = live_dir(trained, tmp_path)
    buckets = np.sort(rows.ts.unique())
    feed(settings, rows, int(buckets[150]))
    args = [
        sys.executable,
        "-m",
        "ccf",
        "predict",
        f"data_dir={tmp_path}",
        f"ml.registry.tracking_uri={settings.tracking_uri}",
        "serve.max_input_lag_s=1e12",
        "serve.poll_interval_s=0.05",
        "log_level=INFO",
    ]

    def newest() -> int | None:
        try:
            p = PredictionStore(settings.predictions_path, readonly=True)
        except FileNotFoundError:
            return None  # the predictor has not made its store (file and tables) yet
        try:
            return p.last_ts("btcusdt") if p.count() else None
        finally:
            p.close()

    def wait_for(ts: int, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 120
        while (newest() or 0) < ts:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"predictions stuck at {newest()}"
            time.sleep(0.1)

    log1 = open(tmp_path / "p1.log", "w")
    proc = subprocess.Popen(args, stdout=log1, stderr=subprocess.STDOUT, text=True)
    since = int(buckets[150])
    try:
        wait_for(since, proc)
        for upto in buckets[160:400:10]:
            feed(settings, rows, int(upto), since)
            since = int(upto)
            wait_for(since, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    killed_at = newest()
    feed(settings, rows, int(buckets[-1]), since)  # the features go on while it is down
    log2 = open(tmp_path / "p2.log", "w")
    proc = subprocess.Popen(args, stdout=log2, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(int(buckets[-1]), proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    resumed = (tmp_path / "p2.log").read_text()
    assert f"resuming after origin {killed_at}" in resumed
    p = PredictionStore(settings.predictions_path, readonly=True)
    df = p.frame(role="champion")
    for sym in SYMBOLS:
        c = df[df.symbol == sym]
        expect = buckets[buckets >= buckets[150]]
        assert np.array_equal(np.sort(c.ts.unique()), expect)
        assert len(c) == 3 * len(expect)  # no bucket lost to the kill, none doubled


def _serve(settings: Settings, rows: pd.DataFrame, upto: list[int], since: int = -1) -> None:
    """Feed the recorded rows after ``since`` up to each of ``upto`` in turn, forecasting
    after each, with one predictor (a restart is two calls)."""
    feed(settings, rows, upto[0], since)
    predictor = Predictor(settings, RegistrySource(settings))
    features, preds = stores(settings)
    predictor._refresh_models(features, preds)
    predictor._resume(features, preds)
    predictor.step(features, preds)
    for prev, u in zip(upto, upto[1:], strict=False):
        feed(settings, rows, u, prev)
        predictor.step(features, preds)
    features.close()
    preds.close()


def test_served_quantiles_are_calibrated_and_a_restart_rebuilds_the_calibration(
    trained, tmp_path: Path
) -> None:
    """Both quantile sets are stored; the calibration learns from the truth the predictor
    reads; a predictor restarted mid-run serves what one that ran through serves."""
    _, rows = trained
    buckets = np.sort(rows.ts.unique())
    steps = [int(b) for b in buckets[100::10]]
    mid = len(steps) // 2
    extra = ("serve.calibration.window=120", "serve.calibration.min_scores=30")
    through = settings_at(
        tmp_path / "through",
        f"ml.registry.tracking_uri=sqlite:///{trained[0] / 'mlflow.db'}",
        "serve.first_start=oldest",
        *extra,
    )
    restarted = through.model_copy(update={"data_dir": tmp_path / "restarted"})
    _serve(through, rows, steps)
    _serve(restarted, rows, steps[:mid])
    _serve(restarted, rows, steps[mid:], steps[mid - 1])  # a new predictor, from the stores
    frames = {}
    for name, s in (("through", through), ("restarted", restarted)):
        p = PredictionStore(s.predictions_path, readonly=True)
        frames[name] = (p.frame(role="champion"), p.frame(role="champion", kind="raw"))
        p.close()
    cal, raw = frames["through"]
    qcols = [c for c in cal.columns if c.startswith("q")]
    key = ["symbol", "ts", "horizon"]
    assert len(cal) == len(raw) and (cal[key].to_numpy() == raw[key].to_numpy()).all()
    ok = cal.flag.isna().to_numpy()
    c, r = cal[qcols].to_numpy()[ok], raw[qcols].to_numpy()[ok]
    changed = ~np.isclose(c, r).all(axis=1)
    # warm-up served the model's own; once 30 forecasts per stream were resolved, calibrated
    assert not changed[:30].any() and changed.mean() > 0.5
    assert (np.diff(c, axis=1) >= -1e-15).all()  # never crossing
    assert np.array_equal(c[:, 2], r[:, 2])  # the median is the model's
    # the restart: same origins, same raw quantiles, the same calibrated ones
    cal2, raw2 = frames["restarted"]
    assert np.array_equal(cal2.ts, cal.ts)
    assert np.array_equal(raw2[qcols].to_numpy(), raw[qcols].to_numpy(), equal_nan=True)
    after = cal.ts.to_numpy() >= steps[mid - 1]
    a, b = cal[qcols].to_numpy()[after & ok], cal2[qcols].to_numpy()[after & ok]
    # equal but for the volatility at each origin, recomputed from a read that starts
    # elsewhere (a few parts in ten thousand): now and then that moves a resolved forecast
    # across a tercile edge of these small pools (40 per regime), and an order statistic
    width = a[:, 4] - a[:, 0]
    close = np.abs(a - b).max(axis=1) <= 1e-3 * width
    assert close.mean() > 0.9, close.mean()
    assert np.median(np.abs(a - b).max(axis=1) / width) < 1e-4
