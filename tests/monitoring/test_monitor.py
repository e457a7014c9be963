"""The monitor over the recorded feature rows: rolling aggregates equal pandas, and a
`ccf monitor` killed with SIGKILL resumes and scores every prediction exactly once."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccf.features.engine import FeatureRow
from ccf.monitoring.monitor import Monitor
from ccf.monitoring.store import MonitorStore
from ccf.records import Prediction
from ccf.status import gather_status
from tests.monitoring import (
    SECOND,
    build_features,
    copy_data,
    features,
    frame,
    prediction,
    write_predictions,
)

SYMBOLS = ("btcusdt", "ethusdt")
WAITING = 2 * 2 * (1 + 10)  # symbols x roles x origins whose target is past the last bucket


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("recorded")
    build_features(data)
    return data


def forecasts(settings, horizons=(1, 5), roles=("champion", "naive"), every=1) -> list[Prediction]:
    """Deterministic forecasts at every ``every``-th origin of both symbols; one origin in
    fifty is flagged without a forecast, as the predictor does while warming up."""
    rng = np.random.default_rng(7)
    out = []
    for sym in SYMBOLS:
        f = frame(settings, sym)
        for i, t in enumerate(f.index[::every]):
            for h in horizons:
                for role in roles:
                    if i % 50 == 0:
                        q = (math.nan,) * 5
                        out.append(prediction(sym, t, h, f.m_p[t], q, role, "warming_up"))
                        continue
                    mid = 0.0 if role == "naive" else float(rng.normal(0, 3e-4))
                    half = abs(float(rng.normal(4e-4, 1e-4)))
                    q = (mid - 2 * half, mid - half, mid, mid + half, mid + 2 * half)
                    out.append(prediction(sym, t, h, f.m_p[t], q, role))
    return out


def expected(settings, preds: list[Prediction], windows: dict[str, int]) -> pd.DataFrame:
    """The aggregates computed directly: predictions joined with the feature rows in pandas."""
    df = pd.DataFrame(preds, columns=Prediction._fields)
    mids = pd.concat({s: frame(settings, s).m_p for s in SYMBOLS}, names=["symbol", "ts"])
    value = mids.reindex(pd.MultiIndex.from_arrays([df.symbol, df.target_ts])).to_numpy()
    df["truth"] = np.log(value / df.last_value)
    has = df.point.notna() & np.isfinite(df.truth)
    q = np.array(df.quantiles.tolist())
    err = df.point - df.truth
    df["ae"], df["se"], df["nae"] = err.abs(), err**2, df.truth.abs()
    df["hit"] = np.where(
        (df.point == 0) | (df.truth == 0), np.nan, (np.sign(df.point) == np.sign(df.truth)) * 1.0
    )
    levels = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    d = df.truth.to_numpy()[:, None] - q
    df["pin"] = np.maximum(levels * d, (levels - 1) * d).mean(axis=1)
    df["in80"] = ((q[:, 0] <= df.truth) & (df.truth <= q[:, 4])) * 1.0
    df["in50"] = ((q[:, 1] <= df.truth) & (df.truth <= q[:, 3])) * 1.0
    side = np.where(df.point * 1e4 > 2.0, 1, np.where(df.point * 1e4 < -2.0, -1, 0))
    df["side"] = side
    df["ret"] = np.where(side != 0, side * df.truth - 7.5e-4, 0.0)
    rows = []
    for sym, g in df.groupby("symbol"):
        end = g.ts.max()
        for name, length in windows.items():
            w = g[(g.ts > end - length) & (g.ts <= end)]
            for (role, h), x in w.groupby(["role", "horizon"]):
                s = x[has[x.index]]
                mae, naive = s.ae.mean(), s.nae.mean()
                rows.append(
                    {
                        "symbol": sym,
                        "role": role,
                        "horizon": h,
                        "window": name,
                        "n": len(s),
                        "mae": mae,
                        "rmse": math.sqrt(s.se.mean()),
                        "naive_mae": naive,
                        "mase": mae / naive,
                        "direction": s.hit.mean(),
                        "pinball": s.pin.mean(),
                        "cov80": s.in80.mean(),
                        "cov50": s.in50.mean(),
                        "signal_return": s.ret.sum(),
                        "trades": int((s.side != 0).sum()),
                        "unscored": len(x) - len(s),
                    }
                )
    return pd.DataFrame(rows).set_index(["symbol", "role", "horizon", "window"]).sort_index()


def test_rolling_aggregates_equal_a_direct_pandas_computation(
    recorded: Path, tmp_path: Path
) -> None:
    settings = copy_data(recorded, tmp_path / "data", "monitor.windows=[30s,2m,1h]")
    preds = forecasts(settings, every=2)
    write_predictions(settings, preds)
    monitor = Monitor(settings)
    monitor.open()
    try:
        result = monitor.score_pass()
        assert result.read == len(preds) and result.waiting > 0  # the last buckets' targets
        aggs = monitor.aggregate(now=123)
        got = monitor.store.frame("accuracy")
    finally:
        monitor.close()
    assert len(aggs) == len(got) == 2 * 3 * 2 * 2  # symbols x windows x roles x horizons
    assert (got.computed_at == 123).all()
    got["cov80"] = [eval_cov(c, "0.8") for c in got.coverage]
    got["cov50"] = [eval_cov(c, "0.5") for c in got.coverage]
    got = got.set_index(["symbol", "role", "horizon", "window"]).sort_index()
    # the waiting predictions (targets past the last bucket) are in neither
    resolved = {(p.symbol, p.ts, p.horizon, p.role) for p in preds} - {
        (p.symbol, p.ts, p.horizon, p.role) for p in monitor._pending
    }
    want = expected(
        settings,
        [p for p in preds if (p.symbol, p.ts, p.horizon, p.role) in resolved],
        {"30s": 30 * SECOND, "2m": 120 * SECOND, "1h": 3600 * SECOND},
    )
    assert list(got.index) == list(want.index)
    for col in want.columns:
        np.testing.assert_allclose(got[col].astype(float), want[col].astype(float), rtol=1e-9)
    assert (want.loc[(slice(None), "naive"), "trades"] == 0).all()
    assert (got.loc[(slice(None), "champion"), "trades"] > 0).all()
    # the same figures on the monitor's Prometheus gauges
    one = got.loc[("btcusdt", "champion", 5, "2m")]
    gauge = monitor.metrics.registry.get_sample_value(
        "ccf_forecast_mae",
        {"symbol": "btcusdt", "role": "champion", "horizon": "5", "window": "2m"},
    )
    assert gauge == pytest.approx(one.mae)


def eval_cov(text: str, key: str) -> float:
    import json

    return json.loads(text)[key]


# -- kill -9 and resume --------------------------------------------------------------------


def counts(path: Path) -> tuple[int, int, int]:
    if not path.exists():
        return (0, 0, 0)
    store = MonitorStore(path, readonly=True)
    try:
        if not store._con.execute("SELECT 1 FROM sqlite_master WHERE name='pending'").fetchone():
            return (0, 0, 0)
        return store.count("scores"), store.count("unscored"), store.count("pending")
    finally:
        store.close()


def wait_for(check, timeout_s: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"ccf monitor exited with {proc.returncode}: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {log.read_text()[-3000:]}")
        time.sleep(0.05)


def start(settings, log: Path) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "ccf",
        "monitor",
        f"data_dir={settings.data_dir}",
        "metrics.ports.monitor=0",
        "monitor.poll_interval_s=0.05",
        "monitor.drift_every=24h",
        "monitor.drift_rows=100",
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def test_a_killed_monitor_resumes_and_scores_every_prediction_once(
    recorded: Path, tmp_path: Path
) -> None:
    settings = copy_data(recorded, tmp_path / "data")
    preds = forecasts(settings, horizons=(1, 10))
    # the feature store lacks its last minute: those targets wait (pending) across the kill
    store = features(settings)
    tail = []
    for sym in SYMBOLS:
        f = store.frame([sym])
        cut = int(f.ts.iloc[-60])
        cols = list(store.set.float_columns)
        tail += [
            FeatureRow(sym, int(t), int(e), tuple(v))
            for t, e, v in zip(
                f.ts[f.ts >= cut], f.ts_end[f.ts >= cut], f[cols][f.ts >= cut].values, strict=True
            )
        ]
        store._con.execute(
            f"DELETE FROM {store.set.table} WHERE symbol = ? AND ts >= ?", (sym, cut)
        )
    store.close()
    log = tmp_path / "monitor.log"
    chunks = [preds[i : i + 500] for i in range(0, len(preds), 500)]
    write_predictions(settings, chunks[0])
    proc = start(settings, log)
    try:
        wait_for(lambda: counts(settings.monitor_path)[0] > 0, 30, "first scores", proc, log)
        for chunk in chunks[1 : len(chunks) // 2]:
            write_predictions(settings, chunk)
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no chance to flush anything
        proc.wait()
        before = counts(settings.monitor_path)
        assert 0 < before[0] + before[1] < len(preds)
        for chunk in chunks[len(chunks) // 2 :]:
            write_predictions(settings, chunk)
        store = features(settings)
        store.write(tail)
        store.close()
        proc = start(settings, log)
        wait_for(
            lambda: sum(counts(settings.monitor_path)[:2]) >= len(preds) - WAITING,
            30,
            "every prediction resolved",
            proc,
            log,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "resuming after prediction rowid" in log.read_text()
    mon = MonitorStore(settings.monitor_path, readonly=True)
    scores = mon.frame("scores")
    unscored = mon.frame("unscored")
    pending = mon.count("pending")
    mon.close()
    key = ["symbol", "ts", "horizon", "role"]
    keys = [tuple(k) for k in pd.concat([scores[key], unscored[key]]).itertuples(index=False)]
    assert len(keys) == len(set(keys))  # none scored twice, none both scored and unscored
    # all but the targets past the last bucket (the last 10 s for horizon 10, 1 s for 1)
    want = {(p.symbol, p.ts, p.horizon, p.role) for p in preds}
    assert set(keys) <= want and len(want) - len(keys) == pending == WAITING
    assert set(unscored.reason) == {"no_forecast"}
    # the same scores as one uninterrupted run over the same data
    again = copy_data(settings.data_dir, tmp_path / "again")
    write_predictions(again, preds)
    monitor = Monitor(again)
    monitor.open()
    monitor.score_pass()
    straight = monitor.store.frame("scores")
    monitor.close()
    cols = ["truth", "error", "pinball", "signal_return", "direction_hit"]
    a = scores.set_index(key).sort_index()[cols]
    b = straight.set_index(key).sort_index()[cols]
    pd.testing.assert_frame_equal(a, b)
    (part,) = [p for p in gather_status(settings)["parts"] if p["part"] == "monitor"]
    assert part["state"] == "stopped"
    assert part["detail"]["metrics"]["ccf_events_out_total{symbol=btcusdt}"] > 0
