"""`ccf train`, `ccf evaluate` and the retrain loop as a user runs them, on real candles:
models fitted, walked forward, reported, logged to MLflow and registered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ccf.cli import app
from tests.ml.data import BTC, ETH

CCF = [sys.executable, "-m", "ccf"]
QUICK = (
    "ml.params.lightgbm.n_estimators=30",
    "ml.train.max_train_samples=4000",
    "ml.train.progress_bar=false",
    "ml.train.num_threads=1",  # LightGBM's OpenMP threads crawl on a busy two-core machine
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data dir (and MLflow store) for the module: creating the store takes seconds."""
    yield tmp_path_factory.mktemp("ml") / "data"
    import logging

    logging.basicConfig(force=True)  # the CLI's handlers wrote to CliRunner's streams


@pytest.fixture(scope="module")
def unseen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A candle file CCF has never seen: ETH's last 4000 bars, prices halved, as Parquet."""
    df = pd.read_csv(ETH).iloc[-4000:].reset_index(drop=True)
    for c in ("open", "high", "low", "close"):
        df[c] = df[c] / 2
    path = tmp_path_factory.mktemp("unseen") / "ETHUSDT-1m-unseen.parquet"
    df.to_parquet(path)
    return path


def ccf(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_train_on_a_real_candle_file_registers_both_models(data_dir: Path) -> None:
    from mlflow import MlflowClient

    code, out = ccf(
        "train", "--candles", str(BTC), f"data_dir={data_dir}", "ml.models=[naive,lightgbm]", *QUICK
    )
    assert code == 0, out
    assert "naive: version 1" in out and "lightgbm: version 2" in out
    assert "aliases: challenger=2, champion=" in out  # challenger: the round's best non-naive
    assert "DM vs naive" in out and "b/e" in out  # the headline table

    uri = f"sqlite:///{data_dir.resolve() / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    versions = {str(v.version): v for v in client.search_model_versions("name = 'ccf-candles'")}
    assert set(versions) == {"1", "2"}
    gbm = versions["2"]
    champion = client.get_model_version_by_alias("ccf-candles", "champion")
    # the first champion: lightgbm if the DM test says it beats naive, else naive itself
    assert str(champion.version) == ("2" if gbm.tags["beats_naive"] == "true" else "1")
    assert champion.tags["reason"].startswith("first champion")
    assert gbm.tags["kind"] == "lightgbm" and "challenger_at" in gbm.tags

    run = client.get_run(gbm.run_id)
    p, m, tags = run.data.params, run.data.metrics, run.data.tags
    assert p["kind"] == "lightgbm" and p["seed"] == "42" and p["model.n_estimators"] == "30"
    assert p["train.max_train_samples"] == "4000" and p["feature_set"] == "candles"
    assert p["data.symbols"] == "btcusdt" and int(p["data.windows_test"]) > 3000
    assert p["data.first_bucket"].startswith("2026-03-23")
    for key in ("skill", "beats_naive", "mae_h5", "ic_h5", "coverage80_h5", "mase_h15"):
        assert key in m, key
    assert tags["ccf.command"] == "train" and tags["ccf.source"].startswith("candles:BTCUSDT")
    files = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.json", "report/report.html"} <= files
    assert any(f.endswith(".png") for f in files)
    assert (data_dir / "training").is_dir() and (data_dir / "reports").is_dir()


def test_evaluate_a_registered_model_on_an_unseen_file(data_dir: Path, unseen: Path) -> None:
    out_dir = data_dir.parent / "eval"
    code, out = ccf(
        "evaluate",
        "--candles",
        str(unseen),
        "--model-uri",
        "models:/ccf-candles@challenger",
        "--out",
        str(out_dir),
        f"data_dir={data_dir}",
    )
    assert code == 0, out
    assert "symbols=ethusdt" in out and "lightgbm" in out and "naive" in out
    assert (out_dir / "report.json").exists() and (out_dir / "report.html").exists()

    code, out = ccf(
        "evaluate",
        "--candles",
        str(unseen),
        "--models",
        "naive,lightgbm",
        "--refit-every",
        "200",
        f"data_dir={data_dir}",
        *QUICK,
    )
    assert code == 0, out
    assert "refits={'naive': 2, 'lightgbm': 2}" in out  # 600 test origins: 3 segments


def test_evaluate_several_registered_models_on_a_whole_new_file(
    data_dir: Path, unseen: Path
) -> None:
    """Naive and LightGBM as registered, on every origin of a file they never saw, in one
    report: the registered naive is the yardstick, nothing is refitted."""
    import json

    out_dir = data_dir.parent / "eval-all"
    code, out = ccf(
        "evaluate",
        "--candles",
        str(unseen),
        "--model-uri",
        "models:/ccf-candles/1",
        "--model-uri",
        "models:/ccf-candles@challenger",
        "--test",
        "all",
        "--out",
        str(out_dir),
        f"data_dir={data_dir}",
    )
    assert code == 0, out
    report = json.loads((out_dir / "report.json").read_text())
    meta = report["meta"]
    assert set(report["models"]) == {"naive", "lightgbm@challenger"}
    assert meta["yardstick"].startswith("the naive model given") and meta["refits"] == {
        "naive": 0,
        "lightgbm@challenger": 0,
    }
    assert meta["origins"] == 4000 - 60 + 1  # every full window of the file
    assert meta["tests"]["holm_family_size"] == 3
    assert "cov80 (lo/mid/hi)" in out and "yardstick: the naive model given" in out
    # only the LightGBM: the yardstick is the online naive, its warm-up left out
    code, out = ccf(
        "evaluate",
        "--candles",
        str(unseen),
        "--model-uri",
        "models:/ccf-candles@challenger",
        "--test",
        "all",
        "--out",
        str(out_dir),
        f"data_dir={data_dir}",
        "ml.evaluate.min_history=1000",
    )
    assert code == 0, out
    report = json.loads((out_dir / "report.json").read_text())
    assert report["meta"]["yardstick"].startswith("online naive")
    assert 2800 < report["meta"]["origins"] < 4000 - 1000
    code, out = ccf(
        "evaluate", "--candles", str(unseen), "--models", "naive", "--test", "all",
        f"data_dir={data_dir}",
    )  # fmt: skip
    assert code == 1 and "--test all scores registered models" in out


def test_a_tiny_split_is_refused_with_a_clear_message(data_dir: Path, unseen: Path) -> None:
    code, out = ccf(
        "evaluate",
        "--candles",
        str(unseen),
        "--model-uri",
        "models:/ccf-candles@challenger",
        f"data_dir={data_dir}",
        "ml.split.train=0.05",
        "ml.split.val=0",
        "ml.split.test=0.95",
    )
    assert code == 1 and "to estimate the naive yardstick's intervals from" in out, out
    assert "--test all" in out


def test_bad_candle_files_fail_at_once_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    empty = tmp_path / "BTCUSDT-1m-empty.csv"
    empty.write_bytes(b"")
    truncated = tmp_path / "BTCUSDT-1m-cut.csv.gz"
    truncated.write_bytes(BTC.read_bytes()[:20000])
    nocol = tmp_path / "BTCUSDT-1m-nocol.csv"
    nocol.write_text("open_time_ms,open,close\n1,2,3\n")
    cases = {
        tmp_path / "missing.csv": "candle file not found",
        empty: "the candle file is empty",
        truncated: "the gzip file is truncated",
        nocol: "lacks columns ['high', 'low', 'volume']",
        tmp_path: "not a file",
    }
    for path, message in cases.items():
        for command in ("train", "evaluate"):
            started = time.monotonic()
            code, out = ccf(command, "--candles", str(path), f"data_dir={data}")
            assert code == 1 and message in out and str(path) in out, out
            assert time.monotonic() - started < 20  # at once (no model loaded, no store made)
        assert not (data / "mlflow.db").exists()


def test_bad_configuration_names_the_key(data_dir: Path) -> None:
    code, out = ccf("train", "--candles", str(BTC), f"data_dir={data_dir}", "ml.horizons=[5,1]")
    assert code == 2 and "ml.horizons" in out
    code, out = ccf(
        "train", "--candles", str(BTC), f"data_dir={data_dir}", "ml.params.lightgbm.leaves=3"
    )
    assert code == 1 and "ml.params.lightgbm: unknown keys ['leaves']" in out
    code, out = ccf("train", "--candles", str(BTC), f"data_dir={data_dir}", "--models", "xgb")
    assert code == 1 and "ml.models: unknown model 'xgb'" in out
    code, out = ccf("tune", "--candles", str(BTC), f"data_dir={data_dir}", "--model", "naive")
    assert code == 1 and "nothing to tune" in out
    code, out = ccf("train", "--candles", str(BTC), f"data_dir={data_dir}", "--every", "soon")
    assert code == 2 and "--every" in out


def test_the_retrain_loop_stops_cleanly_between_rounds(data_dir: Path, tmp_path: Path) -> None:
    """Two rounds on fresh data, the second challenger judged by the promotion rule, then
    SIGTERM: the loop ends after the round, exit 0."""
    small = tmp_path / "BTCUSDT-1m-small.csv"
    pd.read_csv(BTC).iloc[:3000].to_csv(small, index=False)
    log = tmp_path / "loop.log"
    args = [
        "train",
        "--every",
        "1s",
        "--candles",
        str(small),
        f"data_dir={data_dir}",
        "ml.registry.model_name=ccf-loop",
        "ml.models=[naive]",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CCF, *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while log.read_text().count("loop round=") < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "first champion: no model beats naive" in text
    assert "challenger 2 not promoted: challenger does not beat naive" in text
    assert "stopped after" in text
