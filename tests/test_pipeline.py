"""The live pipeline end to end, every part its own process under ``ccf run``.

The replay exchange serves the real recordings; the collector, features, the
predictor (serving a model trained beforehand on the same feature set) and the
monitor run as separate processes. During the run the champion alias moves and
the predictor is killed; the supervisor restarts it. Afterwards every closed
bucket has exactly one forecast per horizon, the version switched between two
buckets, the scores equal a hand computation from the feature rows, and the
Prometheus endpoints answered a scrape.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccf.config import load_settings
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.ml.registry import Registry
from ccf.serving.store import PredictionStore
from ccf.ui.data.db import has_tables
from tests.serving.test_predictor import trained  # noqa: F401  (the module fixture)
from tests.test_cli import free_port, wait_for

S = 10**9
HORIZONS = (1, 5, 10)


def heartbeat(db: Path, part: str) -> dict | None:
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT pid, detail FROM part_status WHERE part = ?", (part,)).fetchone()
    except sqlite3.OperationalError:
        return None  # no table yet
    finally:
        con.close()
    return None if row is None else {"pid": row[0], **json.loads(row[1] or "{}")}


def champion_origins(path: Path) -> pd.DataFrame:
    # the predictor creates the file a moment before its tables: wait for both
    if not has_tables(path, "predictions"):
        return pd.DataFrame(columns=["symbol", "ts", "version"])
    p = PredictionStore(path, readonly=True)
    try:
        return p.frame(role="champion")
    finally:
        p.close()


def count(path: Path, sql: str) -> int:
    """A count from a store another process writes (0 before its table exists)."""
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # no table yet
    finally:
        con.close()


CHAMPION_SCORES = "SELECT count(*) FROM scores WHERE role = 'champion'"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_the_parts_as_processes_forecast_and_score_every_bucket(trained, tmp_path: Path) -> None:  # noqa: F811
    train_dir, _ = trained
    data = tmp_path / "live"
    port = free_port()
    overrides = [
        f"data_dir={data}",
        "symbols=[btcusdt,ethusdt]",
        f"ml.registry.tracking_uri=sqlite:///{train_dir / 'mlflow.db'}",
        f"replay.port={port}",
        "replay.speed=4",
        "run.parts=[exchange,collect,features,predict,monitor]",
        "run.status_every_s=5",
        "serve.first_start=oldest",
        "serve.max_input_lag_s=1e9",
        "serve.alias_check_s=0.5",
        "monitor.poll_interval_s=0.5",
        "metrics.enabled=true",
        "metrics.ports.exchange=0",
        "metrics.ports.collect=0",
        "metrics.ports.features=0",
        "metrics.ports.predict=0",
        "metrics.ports.monitor=0",
    ]
    settings = load_settings(overrides, environ={})
    reg = Registry(settings)
    first = reg.aliases()["champion"]
    other = {"1", "2"}.difference({first}).pop()
    log = open(tmp_path / "run.log", "w")
    env = {**os.environ, "CCF__METRICS__ENABLED": "true"}
    run = subprocess.Popen(
        [sys.executable, "-m", "ccf", "run", *overrides],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        # forecasts flow; then the champion alias moves
        wait_for(
            lambda: len(champion_origins(settings.predictions_path).ts.unique()) > 60,
            120,
            "the first forecasts",
        )
        reg.set_alias("champion", other, "test: promotion during the run")
        wait_for(
            lambda: other in set(champion_origins(settings.predictions_path).version),
            60,
            "the new version to take over",
        )
        # the Prometheus endpoints answer a scrape
        for part, names in (
            (
                "predict",
                (
                    "ccf_events_out_total",
                    'ccf_lag_seconds_bucket{le="1.0",stage="prediction"',
                    "ccf_forecast_delay_seconds_bucket",  # the lead time, a histogram
                    "ccf_forecast_horizon_left_ratio_bucket",
                ),
            ),
            ("monitor", ("ccf_forecast_mae", "ccf_process_resident_memory_bytes")),
            ("collect", ("ccf_events_in_total", "ccf_reconnects_total")),
        ):
            wait_for(
                lambda part=part: (heartbeat(settings.db_path, part) or {}).get("metrics_url"),
                60,
                f"{part}'s metrics endpoint",
            )
            text = scrape(heartbeat(settings.db_path, part)["metrics_url"])
            for name in names:
                assert name in text, (part, name)
        # a killed predictor is restarted by the supervisor and resumes where it stopped
        pid = heartbeat(settings.db_path, "predict")["pid"]
        killed_at = champion_origins(settings.predictions_path).ts.max()
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: (
                (heartbeat(settings.db_path, "predict") or {}).get("pid") not in (None, pid)
                and champion_origins(settings.predictions_path).ts.max() > killed_at + 30 * S
            ),
            90,
            "the restarted predictor to go on",
        )
        wait_for(lambda: count(settings.monitor_path, CHAMPION_SCORES) >= 300, 90, "300 scores")
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(90)
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    text = (tmp_path / "run.log").read_text()
    assert "part predict exited with code -9" in text and "restart 1" in text

    features = FeatureStore(settings.features_path, feature_set(settings.features), readonly=True)
    rows = features.frame()
    champ = champion_origins(settings.predictions_path)
    switch = None
    for sym in ("btcusdt", "ethusdt"):
        c = champ[champ.symbol == sym].sort_values(["ts", "horizon"])
        buckets = np.sort(rows[rows.symbol == sym].ts.to_numpy())
        origins = np.sort(c.ts.unique())
        # every closed bucket from the first to the last forecast, once per horizon
        assert np.array_equal(origins, buckets[(buckets >= origins[0]) & (buckets <= origins[-1])])
        assert len(c) == 3 * len(origins)
        versions = c.drop_duplicates("ts").version.to_numpy()
        changes = np.flatnonzero(versions[1:] != versions[:-1])
        assert len(changes) == 1 and versions[0] == first and versions[-1] == other
        switch = origins[changes[0] + 1]
    assert switch is not None

    # lead time: every forecast records it on the exchange clock (replay.speed=4: a wall
    # clock would be minutes off), never negative
    assert champ.delay_s.notna().all() and (champ.delay_s >= 0).all()
    assert np.allclose(champ.horizon_left, 1 - champ.delay_s / champ.horizon)  # 1 s buckets
    # once caught up (one origin per store write, not the backlog after a start, a model
    # switch or the kill), no forecast is stored after its target bucket closed, at every
    # horizon of at least 1 s of wall time at this speed (5 and 10 buckets). A 1-bucket
    # horizon is 250 ms of wall time at 4x: inside the pipeline's budget on an idle machine,
    # not on a loaded 2-core one, so there it is counted, not asserted (docs/benchmarks.md,
    # "Issue 12", has the 1x figures)
    per_write = champ.groupby(["symbol", "made_at"]).ts.transform("nunique")
    steady = champ[per_write == 1]
    assert set(steady.horizon) == set(HORIZONS)
    speed = 4
    late = steady[(steady.horizon_left <= 0) & (steady.horizon >= speed)]
    assert late.empty, late[["symbol", "ts", "horizon", "delay_s", "horizon_left"]]
    short = int(((steady.horizon_left <= 0) & (steady.horizon < speed)).sum())
    print(f"1-bucket forecasts stored after their target at 4x: {short} of {len(steady) // 3}")
    beat = heartbeat(settings.db_path, "predict")
    assert beat is not None and beat["symbols"]["btcusdt"]["lead"]["n"] > 0

    # scores equal a hand computation from the feature rows
    con = sqlite3.connect(f"file:{settings.monitor_path}?mode=ro", uri=True)
    scores = pd.read_sql(
        "SELECT symbol, ts, horizon, role, truth, error, abs_error, naive_abs_error, "
        "direction_hit FROM scores WHERE role = 'champion'",
        con,
    )
    con.close()
    assert len(scores) > 300
    mid = rows.set_index(["symbol", "ts"])["m_p"]
    merged = scores.merge(champ, on=["symbol", "ts", "horizon", "role"])
    checked = 0
    for r in merged.itertuples():
        end = mid.get((r.symbol, r.ts + r.horizon * S))
        truth = math.log(end / mid[(r.symbol, r.ts)])
        assert r.truth == pytest.approx(truth, abs=1e-15)
        assert r.error == pytest.approx(r.point - truth, abs=1e-15)
        assert r.abs_error == pytest.approx(abs(r.point - truth), abs=1e-15)
        assert r.naive_abs_error == pytest.approx(abs(truth), abs=1e-15)
        if truth != 0 and r.point != 0:
            assert r.direction_hit == float(np.sign(truth) == np.sign(r.point))
        checked += 1
    assert checked == len(scores)
