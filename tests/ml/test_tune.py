"""`ccf tune` killed with SIGKILL in its second trial, then rerun: the study resumes, the
killed trial is failed and not counted, the study ends with exactly ``trials`` completed
trials, and the best parameters are trained and registered."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.ml.data import BTC

CCF = [sys.executable, "-m", "ccf"]
TRIALS = 3


def query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def trial_states(db: Path) -> dict[int, str]:
    return dict(query(db, "SELECT number, state FROM trials ORDER BY number"))


def beating(db: Path) -> list[int]:
    """Running trials that have recorded a heartbeat (their process has started beating)."""
    return [
        n
        for (n,) in query(
            db,
            "SELECT t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
            "WHERE t.state = 'RUNNING'",
        )
    ]


def test_a_killed_study_resumes_and_registers_its_best_model(tmp_path: Path) -> None:
    candles = tmp_path / "BTCUSDT-1m-head.csv"
    pd.read_csv(BTC).iloc[:4000].to_csv(candles, index=False)
    data = tmp_path / "data"
    args = [
        *CCF,
        "tune",
        "--model",
        "lightgbm",
        "--trials",
        str(TRIALS),
        "--candles",
        str(candles),
        f"data_dir={data}",
        "ml.params.lightgbm.n_estimators=60",
        "ml.train.num_threads=1",
    ]
    db = data / "optuna.db"
    log = tmp_path / "first.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while 1 not in beating(db):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        proc.kill()  # SIGKILL in the second trial: no chance to tidy up
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert trial_states(db) == {0: "COMPLETE", 1: "RUNNING"}

    log = tmp_path / "again.log"
    with open(log, "wb") as out:
        try:
            again = subprocess.run(args, stdout=subprocess.PIPE, stderr=out, text=True, timeout=240)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the rerun did not finish: {log.read_text()[-5000:]}")
    assert again.returncode == 0, again.stdout + log.read_text()
    states = trial_states(db)
    assert states[1] == "FAIL"  # the killed trial: failed once its heartbeat went stale
    assert sorted(states.values()).count("COMPLETE") == TRIALS
    assert len(states) == TRIALS + 1  # only the missing trials were run
    assert f"{TRIALS} complete, 0 pruned, 1 failed (2 run now)" in again.stdout

    from mlflow import MlflowClient

    uri = f"sqlite:///{data / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    best = client.get_model_version_by_alias("ccf-candles", "challenger")
    assert best.tags["kind"] == "lightgbm" and best.tags["command"] == "tune"
    run = client.get_run(best.run_id)
    assert run.data.tags["ccf.study"].startswith("ccf-lightgbm-candles-")
    best_trial = int(run.data.tags["ccf.best_trial"])
    assert states[best_trial] == "COMPLETE"
    import optuna

    study = optuna.load_study(
        study_name=run.data.tags["ccf.study"], storage=f"sqlite:///{data / 'optuna.db'}"
    )
    for key, value in study.best_trial.params.items():  # the best trial's parameters were trained
        assert float(run.data.params[f"model.{key}"]) == float(value)
