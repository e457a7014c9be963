"""The registry against a real MLflow tracking server: versions and aliases, the promotion
rule (naive first, a model that cannot beat naive refused, --force recorded, a better
model promoted), and a model loaded by alias forecasting exactly as it did in memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ccf.cli import app
from ccf.config import Settings, load_settings
from ccf.ml import pipeline, pyfunc, registry
from ccf.ml.dataset import Dataset, Origins
from ccf.ml.models import base
from ccf.ml.models.naive import Naive
from ccf.ml.prepare import Source
from ccf.ml.sources import CANDLE_PRESET
from tests.ml.data import BTC

MLFLOW = Path(sys.executable).with_name("mlflow")


class Oracle(Naive):
    """Sees the future: naive's quantiles moved halfway to the realized return. Only a test
    builds it; it must beat naive, and by the rule it may then take the champion alias."""

    kind = "oracle"

    def predict(self, data: Dataset, origins: Origins) -> np.ndarray:
        y = np.nan_to_num(data.targets(origins))
        return super().predict(data, origins) + 0.5 * y[..., None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
            return r.status == 200
    except (URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "wb") as out:
        proc = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--default-artifact-root",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its workers share our process group id: stop them all
        )
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "MLflow server did not come up"
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def oracle_kind() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(base.KINDS, "oracle", f"{__name__}:Oracle")
        yield


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("candles") / "BTCUSDT-1m-head.csv"
    pd.read_csv(BTC).iloc[:4000].to_csv(path, index=False)
    return path


def overrides(tmp: Path, url: str, name: str) -> list[str]:
    return [
        f"data_dir={tmp}",
        f"ml.registry.tracking_uri={url}",
        f"ml.registry.model_name={name}",
        "ml.params.lightgbm.n_estimators=30",
        "ml.train.num_threads=1",
        "ml.train.progress_bar=false",
    ]


def settings_for(tmp: Path, url: str, name: str) -> Settings:
    return load_settings(overrides(tmp, url, name), [CANDLE_PRESET], environ={})


def promote(tmp: Path, url: str, name: str, candles: Path, *args: str, answer: str = "") -> str:
    result = CliRunner().invoke(
        app,
        ["promote", "--candles", str(candles), *args, *overrides(tmp, url, name)],
        input=answer,
    )
    assert not result.exception or isinstance(result.exception, SystemExit), result.output
    return f"exit={result.exit_code}\n{result.output}"


def test_aliases_move_only_by_the_promotion_rule(
    server: str, oracle_kind: None, candles: Path, tmp_path: Path
) -> None:
    name = "ccf-rule"
    settings = settings_for(tmp_path, server, name)
    src = Source((candles,))
    reg = registry.Registry(settings)

    first = pipeline.train_round(settings, src, ("naive",))
    assert first.aliases == {"champion": "1", "challenger": "1"}
    v1 = reg.version("1")
    assert v1.kind == "naive"
    assert v1.tags["reason"] == "first champion: no model beats naive, so the naive forecast serves"
    assert v1.tags["promoted_at"] and v1.tags["forced"] == "false"

    second = pipeline.train_round(settings, src, ("naive",))
    assert second.aliases == {"champion": "1", "challenger": "2"}

    out = promote(tmp_path, server, name, candles, "--yes")
    assert out.startswith("exit=1") and "refused: challenger does not beat naive" in out, out
    assert "DM vs naive" in out  # the comparison is printed
    assert reg.aliases()["champion"] == "1"

    out = promote(tmp_path, server, name, candles, "--force", "--yes")
    assert out.startswith("exit=0") and "forced: the skill check was skipped" in out, out
    v2 = reg.version("2")
    assert reg.aliases()["champion"] == "2"
    assert v2.tags["forced"] == "true" and v2.tags["reason"].startswith("forced")
    assert "demoted_at" in reg.version("1").tags

    third = pipeline.train_round(settings, src, ("oracle",))
    assert third.trained[0].beats_naive
    assert third.aliases == {"champion": "2", "challenger": "3"}  # a champion exists: no move

    out = promote(tmp_path, server, name, candles, answer="n\n")
    assert "allowed: beats naive" in out and "nothing changed" in out, out
    assert reg.aliases()["champion"] == "2"
    out = promote(tmp_path, server, name, candles, answer="y\n")
    assert out.startswith("exit=0") and "champion -> version 3" in out, out
    v3 = reg.version("3")
    assert reg.aliases()["champion"] == "3"
    assert v3.tags["reason"].startswith("beats naive") and v3.tags["forced"] == "false"

    out = promote(tmp_path, server, name, candles, "--version", "1", "--yes")
    assert out.startswith("exit=1") and "refused" in out  # naive cannot beat the champion


def test_first_champion_is_the_best_that_beats_naive(
    server: str, oracle_kind: None, candles: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, server, "ccf-first")
    rnd = pipeline.train_round(settings, Source((candles,)), ("naive", "oracle"))
    assert rnd.aliases == {"champion": "2", "challenger": "2"}
    v = registry.Registry(settings).version("2")
    assert v.kind == "oracle" and v.beats_naive
    assert v.tags["reason"].startswith("first champion: beats naive")


def test_a_model_loaded_by_alias_forecasts_as_in_memory(
    server: str, candles: Path, tmp_path: Path
) -> None:
    import mlflow

    settings = settings_for(tmp_path, server, "ccf-load")
    rnd = pipeline.train_round(settings, Source((candles,)), ("lightgbm",))
    trained = rnd.trained[0]
    assert rnd.aliases == {"challenger": "1"}  # nothing to be champion: naive was not trained
    with pytest.raises(LookupError, match="no version with alias 'champion'"):
        registry.load_forecaster(settings, "champion")

    model, version = registry.load_forecaster(settings, "challenger")
    assert version == "1" and model.kind == "lightgbm"
    assert model.trained_range == trained.model.trained_range
    rows = rnd.rows.frame.iloc[-300:]
    expected = pyfunc.forecast_frame(trained.model, rows)
    assert len(expected) == (300 - 60 + 1) * 3 and list(expected.columns[-6:]) == [
        "q0.1",
        "q0.25",
        "q0.5",
        "q0.75",
        "q0.9",
        "point",
    ]
    pd.testing.assert_frame_equal(pyfunc.forecast_frame(model, rows), expected)
    served = mlflow.pyfunc.load_model("models:/ccf-load@challenger").predict(rows)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), expected)

    run = mlflow.MlflowClient(server, server).get_run(trained.run_id)
    assert run.data.tags["ccf.kind"] == "lightgbm"
    assert {"skill", "mae_h5", "ic_h5", "coverage80_h5"} <= set(run.data.metrics)
